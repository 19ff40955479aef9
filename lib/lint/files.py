"""Reading a NetworkAttachmentDefinition or a conflist file and linting each config in it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import pods
from .addressing import Net
from .checks import check_config
from .findings import Finding
from .source import Source, load_json, strip_comments


def _strip_raw_comments(raw: str) -> tuple[str, list[int]]:
    """Take ``#`` comments out of the scalar's source lines (YAML would fold them in)."""
    lines, found = [], []
    for number, line in enumerate(raw.split("\n")):
        cleaned, comments = strip_comments(line)
        if comments:
            found.append(number)
        lines.append(cleaned)
    return "\n".join(lines), found


def _parse(
    text: str, raw: str, src: Source, what: str, text_line: int | None = None
) -> tuple[Any, list[str], list[Finding]]:
    """The JSON document, its duplicate keys, or an error naming the line and the token.

    ``text_line``: the line of ``text``'s first line, when its lines are the source's
    one for one (a file, a literal block scalar): the error's own line is then exact."""
    try:
        conf, duplicates = load_json(text)
    except ValueError as exc:
        pos = getattr(exc, "pos", 0) or 0
        token = text[pos : pos + 12].strip()
        line = src.line_of(token) if token and token in raw else src.first_line
        if text_line is not None and hasattr(exc, "lineno"):
            line = text_line + exc.lineno - 1
        near = f" near {token!r}" if token else ""
        return None, [], [Finding("error", line, f"{what} is not JSON{near}: {exc}")]
    except RecursionError:
        return None, [], [Finding("error", src.first_line, f"{what} nests too deeply")]
    return conf, duplicates, []


def _config_findings(
    text: str,
    src: Source,
    namespace: str,
    cluster: list[Net],
    *,
    uncomment: Callable[[str], str | None],
    text_line: int | None,
) -> list[Finding]:
    """spec.config's findings; ``src.raw`` is its source, ``uncomment`` re-reads that
    source with the comments taken out (None: it cannot)."""
    raw = src.raw
    out: list[Finding] = []
    cleaned_raw, comment_lines = _strip_raw_comments(raw)
    raw_lines = raw.split("\n") if comment_lines else []
    for number in comment_lines:
        comment = raw_lines[number].split("#", 1)[1].strip()
        out.append(
            Finding(
                "error",
                src.first_line + number,
                "spec.config is not JSON: a "
                f"comment ('# {comment[:40]}'); Multus rejects the whole network",
            )
        )
    if comment_lines:
        uncommented = uncomment(cleaned_raw)  # the same scalar, without the comments
        if uncommented is None:
            return out
        text = uncommented
    conf, duplicates, errors = _parse(text, raw, src, "spec.config", text_line)
    if errors:
        return out + errors
    return out + check_config(
        conf, src, namespace, nad=True, cluster=cluster, duplicates=duplicates
    )


def _nad_findings(node: Any, namespace: str, cluster: list[Net]) -> list[Finding]:
    import yaml

    def uncomment(cleaned_raw: str) -> str | None:
        try:
            return str(yaml.safe_load(cleaned_raw))
        except yaml.YAMLError:
            return None

    mark = node.start_mark
    raw = mark.buffer[mark.pointer : node.end_mark.pointer] if mark.buffer else node.value
    literal = mark.line + 2 if node.style == "|" else None  # its text starts a line below
    return _config_findings(
        str(node.value),
        Source(raw, mark.line + 1),
        namespace,
        cluster,
        uncomment=uncomment,
        text_line=literal,
    )


def lint_config(text: str, namespace: str = "", cluster: list[Net] | None = None) -> list[Finding]:
    """A NAD's ``spec.config`` as the API server holds it (the string, after YAML), with
    the checks lint runs on a NAD file; line 1 is the string's first line."""
    src = Source(text, 1)
    return _config_findings(text, src, namespace, cluster or [], uncomment=lambda t: t, text_line=1)


def _mapping(node: Any) -> dict[str, Any]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _scalar(node: Any) -> str:
    import yaml

    return str(node.value) if isinstance(node, yaml.ScalarNode) else ""


def _document_findings(doc: Any, cluster: list[Net]) -> list[Finding]:
    """A NAD (or a bare ``spec.config``, as pasted into issues), or a Pod's annotation."""
    import yaml

    data = _mapping(doc)
    kind = _scalar(data.get("kind"))
    meta = _mapping(data.get("metadata"))
    if kind == "Pod":
        return pods.annotation_findings(_mapping(meta.get("annotations")))
    spec = _mapping(data.get("spec"))
    if kind != "NetworkAttachmentDefinition" and (kind or "config" not in spec):
        return []
    config = spec.get("config")
    if not isinstance(config, yaml.ScalarNode):
        return [Finding("error", doc.start_mark.line + 1, "no spec.config")]
    return _nad_findings(config, _scalar(meta.get("namespace")), cluster)


def lint_file(path: Path, cluster: list[Net] | None = None) -> list[Finding]:
    """Every finding in a conflist, a conf, or a YAML file of NADs (and Pods)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        return [Finding("error", 1, f"not text: {exc}")]
    if path.suffix in (".conflist", ".conf", ".json"):
        src = Source(text, 1)
        conf, duplicates, errors = _parse(text, text, src, "file", 1)
        if errors:
            return errors
        return check_config(conf, src, cluster=cluster, duplicates=duplicates)
    import yaml

    out: list[Finding] = []
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        return [Finding("error", mark.line + 1 if mark else 1, f"not YAML: {problem}")]
    for doc in documents:
        if isinstance(doc, yaml.MappingNode):
            out += _document_findings(doc, cluster or [])
    return out


def format_findings(path: str, findings: list[Finding]) -> str:
    return "\n".join(
        f"{path}:{f.line}: {f.level}: {f.message}"
        for f in sorted(findings, key=lambda f: (f.line, f.level))
    )
