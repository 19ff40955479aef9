"""Reading a NetworkAttachmentDefinition or a conflist file and linting each config in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checks import Finding, check_config
from .source import Source, strip_comments


def _strip_raw_comments(raw: str) -> tuple[str, list[int]]:
    """Take ``#`` comments out of the scalar's source lines (YAML would fold them in)."""
    lines, found = [], []
    for number, line in enumerate(raw.split("\n")):
        cleaned, comments = strip_comments(line)
        if comments:
            found.append(number)
        lines.append(cleaned)
    return "\n".join(lines), found


def _nad_findings(node: Any, namespace: str) -> list[Finding]:
    import yaml

    mark = node.start_mark
    raw = mark.buffer[mark.pointer : node.end_mark.pointer] if mark.buffer else node.value
    src = Source(raw, mark.line + 1)
    out: list[Finding] = []
    text = node.value
    cleaned_raw, comment_lines = _strip_raw_comments(raw)
    for number in comment_lines:
        comment = raw.split("\n")[number].split("#", 1)[1].strip()
        out.append(
            Finding(
                "error",
                src.first_line + number,
                "spec.config is not JSON: a "
                f"comment ('# {comment[:40]}'); Multus rejects the whole network",
            )
        )
    if comment_lines:
        text = str(yaml.safe_load(cleaned_raw))  # the same scalar, without the comments
    try:
        conf = json.loads(text)
    except ValueError as exc:
        pos = getattr(exc, "pos", 0)
        token = text[pos : pos + 12].strip()
        line = src.line_of(token) if token and token in raw else src.first_line
        out.append(Finding("error", line, f"spec.config is not JSON near {token!r}: {exc}"))
        return out
    return out + check_config(conf, src, namespace, nad=True)


def lint_file(path: Path) -> list[Finding]:
    text = path.read_text()
    if path.suffix in (".conflist", ".conf", ".json"):
        try:
            conf = json.loads(text)
        except ValueError as exc:
            return [Finding("error", getattr(exc, "lineno", 1), f"not JSON: {exc}")]
        return check_config(conf, Source(text, 1))
    import yaml

    out: list[Finding] = []
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return [Finding("error", mark.line + 1 if mark else 1, f"not YAML: {exc}")]
    for doc in documents:
        if doc is None or not isinstance(doc, yaml.MappingNode):
            continue
        data = {k.value: v for k, v in doc.value if isinstance(k, yaml.ScalarNode)}
        if "kind" not in data or data["kind"].value != "NetworkAttachmentDefinition":
            continue
        meta = {k.value: v for k, v in getattr(data.get("metadata"), "value", [])}
        namespace = meta["namespace"].value if "namespace" in meta else ""
        spec = {k.value: v for k, v in getattr(data.get("spec"), "value", [])}
        config = spec.get("config")
        if not isinstance(config, yaml.ScalarNode):
            out.append(Finding("error", doc.start_mark.line + 1, "no spec.config"))
            continue
        out += _nad_findings(config, namespace)
    return out


def format_findings(path: str, findings: list[Finding]) -> str:
    return "\n".join(
        f"{path}:{f.line}: {f.level}: {f.message}"
        for f in sorted(findings, key=lambda f: (f.line, f.level))
    )
