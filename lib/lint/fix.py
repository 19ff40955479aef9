"""``multihome lint --fix``: rewrite a reference NAD or conflist into ours, in place.

- reference types become their drop-ins (``macvlan`` -> ``mh-macvlan``, ``host-local``
  -> ``mh-ipam``, ...; the 2019 ``route-overwrite`` -> ``mh-route``);
- an IPAM ``routes`` list that pastes a public route set becomes the one entry that
  names it (``{"presets": ["public-ipv4", "default-ipv6"]}``); a list that nearly is
  one is left alone, with the prefixes it gets wrong named;
- a key in another case than the known one (``datadir``) gets the known spelling.

Edits are made on the text, value by value: comments, quoting, indentation and
every other line stay as they were. Only a replaced route list is rewritten whole.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import netaddr

from .addressing import near_public, net
from .checks import DROP_IN, OBSOLETE
from .findings import Finding
from .source import Source, scan, strip_comments

TYPES = {**DROP_IN, **{old: DROP_IN[new] for old, new in OBSOLETE.items()}}
_TYPE = re.compile(r'("type"\s*:\s*")([A-Za-z0-9_.-]+)(")')
SETS = ("public-ipv4", "global-ipv4")


def _array_end(text: str, start: int) -> int:
    """The index after the ``]`` closing the array that opens at ``start``."""
    depth = 0
    for i, ch, code in scan(text, start):
        if not code:
            continue
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _gateways(conf: Any) -> set[str]:
    """Every gateway the config gives its ranges and addresses."""
    out: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("gateway"), str):
                out.add(value["gateway"])
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(conf)
    return out


def _pasted(routes: list[Any]) -> tuple[list[str], list[Any]] | None:
    """A list that can be a pasted set: (its IPv4 prefixes, its gateways), with one IPv4
    gateway, at least 8 prefixes, no IPv4 default, at most ``::/0`` for IPv6."""
    if not all(isinstance(r, dict) and set(r) <= {"dst", "gw"} for r in routes):
        return None
    nets = [net(r.get("dst")) for r in routes]
    v4 = [(str(n), r.get("gw")) for r, n in zip(routes, nets, strict=True) if n and n.version == 4]
    v6 = [(str(n), r.get("gw")) for r, n in zip(routes, nets, strict=True) if n and n.version == 6]
    if None in nets or len(v4) < 8 or "0.0.0.0/0" in {d for d, _ in v4}:
        return None
    if len({g for _, g in v4}) != 1 or [d for d, _ in v6] not in ([], ["::/0"]):
        return None
    return [d for d, _ in v4], [v4[0][1]] + [g for _, g in v6]


def _as_set(routes: list[Any], gateways: set[str]) -> tuple[dict[str, Any] | None, str]:
    """The entry naming the set these routes paste, or (None, why it is not one)."""
    from multihome.plugins import routesets

    pasted = _pasted(routes)
    if pasted is None:
        return None, ""
    prefixes, gws = pasted
    covered = netaddr.IPSet(prefixes)
    for name in SETS:
        if covered == netaddr.IPSet([str(n) for n in routesets.compute([name])]):
            entry: dict[str, Any] = {"presets": [name] + (["default-ipv6"] if gws[1:] else [])}
            own = [g for g in gws if g is not None and g not in gateways]
            if own:
                entry["gw"] = own if len(own) > 1 else own[0]
            return entry, ""
    public = near_public(covered)
    if public is None:
        return None, ""
    missing = [str(c) for c in (public - covered).iter_cidrs()]
    extra = [str(c) for c in (covered - public).iter_cidrs()]
    why = "this route list is nearly the public-ipv4 set; not replaced: it"
    if missing:
        why += f" leaves out {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}"
    if extra:
        why += f"{' and' if missing else ''} adds {', '.join(extra[:6])}"
    return None, why


def _fix_routes(raw: str, src: Source, conf: Any) -> tuple[str, list[Finding]]:
    notes: list[Finding] = []
    gateways = _gateways(conf)
    pos = 0
    while (key := raw.find('"routes"', pos)) >= 0:
        start = raw.find("[", key)
        end = _array_end(raw, start) if start >= 0 and raw[key + 8 : start].strip() == ":" else -1
        if end < 0:
            pos = key + 8
            continue
        try:
            routes = json.loads(strip_comments(raw[start:end])[0])
        except ValueError:
            pos = end
            continue
        entry, why = _as_set(routes if isinstance(routes, list) else [], gateways)
        line = src.line_of('"routes"', key)
        if entry is not None:
            new = "[" + json.dumps(entry) + "]"
            raw = raw[:start] + new + raw[end:]
            end = start + len(new)
            notes.append(
                Finding("fixed", line, f"{len(routes)} pasted routes -> {json.dumps(entry)}")
            )
        elif why:
            notes.append(Finding("warning", line, why))
        pos = end
    return raw, notes


def _commented(raw: str) -> list[tuple[int, int]]:
    """The spans of ``#`` comments (outside strings) in ``raw``."""
    out = []
    for start in strip_comments(raw)[1]:
        end = raw.find("\n", start)
        out.append((start, len(raw) if end < 0 else end))
    return out


def _fix_types(raw: str, src: Source) -> tuple[str, list[Finding]]:
    notes = []
    comments = _commented(raw)

    def swap(match: re.Match[str]) -> str:
        old = match.group(2)
        if old not in TYPES or any(a <= match.start() < b for a, b in comments):
            return match.group(0)
        line = src.line_of(match.group(0))
        notes.append(Finding("fixed", line, f"type {old} -> {TYPES[old]}"))
        return f"{match.group(1)}{TYPES[old]}{match.group(3)}"

    return _TYPE.sub(swap, raw), notes


def _case_pairs(conf: Any) -> dict[str, str]:
    """Keys in another case than the one their plugin (or IPAM) knows: wrong -> right."""
    from .checks import PLUGIN_KEYS, known_keys

    keys = known_keys()
    plugins = conf.get("plugins") if isinstance(conf, dict) and "plugins" in conf else [conf]
    pairs: dict[str, str] = {}
    for plugin in plugins if isinstance(plugins, list) else []:
        if not isinstance(plugin, dict):
            continue
        ptype = str(plugin.get("type", ""))
        ipam = plugin.get("ipam")
        sections = [(plugin, keys.get(TYPES.get(ptype, ptype)), PLUGIN_KEYS)]
        if isinstance(ipam, dict):
            itype = str(ipam.get("type", ""))
            sections.append((ipam, keys.get(f"ipam:{TYPES.get(itype, itype)}"), set()))
        for section, known, extra in sections:
            if known is None:
                continue
            lower = {k.lower(): k for k in known | extra}
            for key in section:
                right = lower.get(str(key).lower())
                if right is not None and right != key:
                    pairs[str(key)] = right
    return pairs


def _fix_key_case(raw: str, src: Source, conf: Any) -> tuple[str, list[Finding]]:
    notes = []
    comments = _commented(raw)
    for wrong, right in _case_pairs(conf).items():
        pattern = re.compile(rf'"{re.escape(wrong)}"(\s*:)')

        def swap(match: re.Match[str], wrong: str = wrong, right: str = right) -> str:
            if any(a <= match.start() < b for a, b in comments):
                return match.group(0)
            notes.append(Finding("fixed", src.line_of(match.group(0)), f"key {wrong} -> {right}"))
            return f'"{right}"{match.group(1)}'

        raw = pattern.sub(swap, raw)
    return raw, notes


def fix_config(raw: str, first_line: int) -> tuple[str, list[Finding]]:
    """One config's text, fixed; what was changed or left, by line."""
    src = Source(raw, first_line)
    try:
        conf = json.loads(strip_comments(raw)[0])
    except ValueError:
        return raw, []  # lint says why; nothing to fix safely
    raw, notes = _fix_routes(raw, src, conf)
    raw, more = _fix_key_case(raw, Source(raw, first_line), conf)
    raw, most = _fix_types(raw, Source(raw, first_line))
    return raw, notes + more + most


def _config_spans(text: str) -> list[tuple[int, int, int]]:
    """(start, end, first line) of each NAD's spec.config scalar in a YAML file."""
    import yaml

    spans = []
    for doc in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if not isinstance(doc, yaml.MappingNode):
            continue
        data = {k.value: v for k, v in doc.value if isinstance(k, yaml.ScalarNode)}
        spec = data.get("spec")
        if not isinstance(spec, yaml.MappingNode):
            continue
        for key, value in spec.value:
            if key.value != "config" or not isinstance(value, yaml.ScalarNode):
                continue
            start, end = value.start_mark.index, value.end_mark.index
            if value.style == "'":
                start, end = start + 1, end - 1  # inside the quotes
            elif value.style in ("|", ">"):
                start = text.find("\n", start) + 1 or end  # after the indicator line
            elif value.style == '"':
                continue  # JSON in a double-quoted scalar is escaped: left alone
            spans.append((start, end, text.count("\n", 0, start) + 1))
    return spans


def fix_file(path: Path) -> list[Finding]:
    """Rewrite ``path`` in place when something was fixed; what was done, by line."""
    text = path.read_text()
    notes: list[Finding] = []
    if path.suffix in (".conflist", ".conf", ".json"):
        fixed, notes = fix_config(text, 1)
    else:
        import yaml

        try:
            spans = _config_spans(text)
        except yaml.YAMLError:
            return []  # lint says why
        fixed = text
        for start, end, line in reversed(spans):
            new, found = fix_config(fixed[start:end], line)
            fixed = fixed[:start] + new + fixed[end:]
            notes = found + notes
    if fixed != text:
        path.write_text(fixed)
    return notes
