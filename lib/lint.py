"""``multihome lint``: find the faults in a NetworkAttachmentDefinition or a conflist.

Each finding names its place (``file:line``) and says what is wrong:

- ``spec.config`` that is not JSON (``#`` comments, placeholders); Multus rejects it.
  A commented config is analysed further with the comments taken out.
- keys the plugin does not know, or would ignore (``mac`` on ipvlan);
- route sets that send private or link-local ranges through the secondary
  gateway, or that look like "all public space" but leave some of it out;
- overlapping IPAM ranges, gateways outside their subnet, a missing master;
- a per-node IPAM store in a pool that every node shares.

Reference types (``macvlan``, ``host-local``, ``sbr`` ...) are checked against
their multihome drop-ins, whose keys are a superset.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr

PRIVATE = {
    "10.0.0.0/8": "private (RFC 1918)",
    "172.16.0.0/12": "private (RFC 1918)",
    "192.168.0.0/16": "private (RFC 1918)",
    "169.254.0.0/16": "link-local",
    "127.0.0.0/8": "loopback",
}
CONF_KEYS = {
    "cniVersion",
    "cniVersions",
    "name",
    "plugins",
    "disableCheck",
    "disableGC",
    "loadOnlyInlinedPlugins",
}
PLUGIN_KEYS = {
    "type",
    "name",
    "cniVersion",
    "capabilities",
    "ipam",
    "dns",
    "runtimeConfig",
    "args",
    "prevResult",
    "ipMasq",
}
DROP_IN = {
    "macvlan": "mh-macvlan",
    "ipvlan": "mh-ipvlan",
    "host-local": "mh-ipam",
    "static": "mh-static",
    "sbr": "mh-sbr",
    "route-override": "mh-route",
}
SHARED_NAMESPACES = {"kube-system", "default"}


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    line: int
    message: str


def _model_keys(model: Any) -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
    return keys


def known_keys() -> dict[str, set[str]]:
    """Every key each multihome type reads, from the config models themselves."""
    from multihome.ipam.config import IPAMConf
    from multihome.ipam.static import StaticIPAM
    from multihome.plugins.link import LinkConf
    from multihome.plugins.route import RouteConf
    from multihome.plugins.sbr import SbrConf

    link = _model_keys(LinkConf)
    return {
        "mh-macvlan": link,
        "mh-ipvlan": link - {"mac", "bcqueuelen"},
        "mh-route": _model_keys(RouteConf),
        "mh-sbr": _model_keys(SbrConf),
        "mh-noop": PLUGIN_KEYS,
        "ipam:mh-ipam": _model_keys(IPAMConf),
        "ipam:mh-static": _model_keys(StaticIPAM),
    }


# ---- locating things in the source ----------------------------------------------------


class Source:
    """The text of a JSON config and where it starts in the file, for line numbers."""

    def __init__(self, raw: str, first_line: int) -> None:
        self.raw = raw
        self.first_line = first_line

    def line_of(self, needle: str, start: int = 0) -> int:
        index = self.raw.find(needle, start)
        return self.first_line + (self.raw.count("\n", 0, index) if index >= 0 else 0)


def strip_comments(text: str) -> tuple[str, list[int]]:
    """Drop ``#`` comments outside JSON strings; return the text and their offsets."""
    out, found, in_string, escaped, i = [], [], False, False, 0
    while i < len(text):
        ch = text[i]
        if in_string:
            escaped = not escaped and ch == "\\"
            in_string = escaped or ch != '"'
        elif ch == '"':
            in_string = True
        elif ch == "#":
            found.append(i)
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out), found


# ---- checks on a parsed config --------------------------------------------------------


def _check_keys(plugin: dict[str, Any], src: Source, keys: dict[str, set[str]]) -> list[Finding]:
    out = []
    ptype = str(plugin.get("type", ""))
    ours = DROP_IN.get(ptype, ptype)
    if ptype in DROP_IN:
        out.append(
            Finding(
                "warning",
                src.line_of(f'"{ptype}"'),
                f"type {ptype}: {ours} is a drop-in with the same keys",
            )
        )
    known = keys.get(ours)
    if known is None:
        return out
    for key in plugin:
        if key not in known | PLUGIN_KEYS and not key.startswith("cni.dev/"):
            hint = " (ipvlan shares the master's MAC)" if key in ("mac", "bcqueuelen") else ""
            out.append(
                Finding(
                    "warning",
                    src.line_of(f'"{key}"'),
                    f"{ptype}: unknown or ignored key {key!r}{hint}",
                )
            )
    ipam = plugin.get("ipam")
    if isinstance(ipam, dict) and ipam.get("type"):
        itype = DROP_IN.get(str(ipam["type"]), str(ipam["type"]))
        ikeys = keys.get(f"ipam:{itype}", set(ipam))  # an IPAM we do not know: no opinion
        for key in ipam:
            if key not in ikeys:
                out.append(
                    Finding(
                        "warning",
                        src.line_of(f'"{key}"'),
                        f"ipam {ipam['type']}: unknown or ignored key {key!r}",
                    )
                )
    return out


def _ranges(ipam: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    out = [
        (r, i) for i, rs in enumerate(ipam.get("ranges") or []) for r in rs if isinstance(r, dict)
    ]
    if ipam.get("subnet"):
        out.insert(0, (ipam, -1))
    return out


def _check_ipam(ipam: dict[str, Any], src: Source) -> list[Finding]:
    out = []
    seen: list[tuple[netaddr.IPSet, str]] = []
    for rng, _ in _ranges(ipam):
        try:
            subnet = ipaddress.ip_network(str(rng["subnet"]), strict=False)
        except (ValueError, KeyError):
            out.append(
                Finding(
                    "error",
                    src.line_of(str(rng.get("subnet", "subnet"))),
                    f"invalid subnet {rng.get('subnet')!r}",
                )
            )
            continue
        for key in ("gateway", "rangeStart", "rangeEnd"):
            value = rng.get(key)
            if value and ipaddress.ip_address(str(value)) not in subnet:
                out.append(
                    Finding(
                        "error",
                        src.line_of(str(value)),
                        f"{key} {value} is outside its subnet {subnet}",
                    )
                )
        span = netaddr.IPSet(
            netaddr.IPRange(
                str(rng.get("rangeStart") or subnet[0]), str(rng.get("rangeEnd") or subnet[-1])
            )
        )
        for other, where in seen:
            if span & other:
                out.append(
                    Finding(
                        "error", src.line_of(str(rng["subnet"])), f"range {subnet} overlaps {where}"
                    )
                )
        seen.append((span, str(subnet)))
    for addr in ipam.get("addresses") or []:
        if isinstance(addr, dict) and addr.get("gateway") and addr.get("address"):
            net = ipaddress.ip_interface(str(addr["address"])).network
            if ipaddress.ip_address(str(addr["gateway"])) not in net:
                out.append(
                    Finding(
                        "error",
                        src.line_of(str(addr["gateway"])),
                        f"gateway {addr['gateway']} is outside {net}",
                    )
                )
    return out


def _check_store(ipam: dict[str, Any], src: Source) -> list[Finding]:
    """mh-ipam's ``store``: what the plugin would refuse, and etcd spoken in clear."""
    store = ipam.get("store")
    if store is None or ipam.get("type") != "mh-ipam":
        return []
    if not isinstance(store, dict):
        return [Finding("error", src.line_of('"store"'), "ipam.store must be an object")]
    from pydantic import ValidationError

    from multihome.ipam.config import LeaseStoreConf, TLSConf, etcd_settings
    from multihome.lib.models import describe

    from .errors import CNIError

    line = src.line_of('"store"')
    out = []
    for keys, model, where in (
        (store, LeaseStoreConf, "store"),
        (store.get("tls"), TLSConf, "store.tls"),
    ):
        for key in keys if isinstance(keys, dict) else []:
            if key not in _model_keys(model):
                out.append(
                    Finding(
                        "warning", src.line_of(f'"{key}"'), f"ipam.{where}: unknown key {key!r}"
                    )
                )
    try:
        settings = etcd_settings(LeaseStoreConf.model_validate(store))
    except ValidationError as exc:
        return [*out, Finding("error", line, f"ipam.store: {describe(exc)}")]
    except CNIError as exc:
        return [*out, Finding("error", line, exc.msg)]
    if settings and any(url.startswith("http://") for url in settings.endpoints):
        out.append(
            Finding(
                "warning",
                line,
                "ipam.store: an http:// etcd endpoint carries leases in clear and lets any "
                "client write them; use https:// with tls client certificates",
            )
        )
    return out


def _check_routes(routes: list[Any], src: Source) -> list[Finding]:
    out = []
    v4 = [r for r in routes if isinstance(r, dict) and ":" not in str(r.get("dst", ":"))]
    defaults = [r for r in v4 if str(r.get("dst", "")).endswith("/0")]
    for r in defaults:
        out.append(
            Finding(
                "warning",
                src.line_of(str(r["dst"])),
                f"default route {r['dst']} through the secondary interface: cluster "
                "traffic follows it unless eth0 has more specific routes",
            )
        )
    v4 = [r for r in v4 if r not in defaults]
    covered = netaddr.IPSet([str(r["dst"]) for r in v4])
    for block, what in PRIVATE.items():
        hit = covered & netaddr.IPSet([block])
        if hit:
            first = next(r for r in v4 if netaddr.IPSet([str(r["dst"])]) & hit)
            out.append(
                Finding(
                    "error",
                    src.line_of(str(first["dst"])),
                    f"route {first['dst']} sends {block} ({what}) through the "
                    f"secondary gateway: cluster traffic breaks",
                )
            )
    from multihome.plugins import routesets

    public = netaddr.IPSet([str(n) for n in routesets.compute(["public-ipv4"])])
    if (covered & public).size > public.size // 2:
        missing = [str(c) for c in (public - covered).iter_cidrs()]
        if missing:
            out.append(
                Finding(
                    "error",
                    src.line_of(str(v4[0]["dst"])),
                    f"this looks like a public route set but leaves out "
                    f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
                    'use mh-route with "presets": ["public-ipv4"]',
                )
            )
    return out


def check_config(conf: Any, src: Source, namespace: str = "", nad: bool = False) -> list[Finding]:
    """All findings for one parsed CNI config (a conflist or a single plugin)."""
    if not isinstance(conf, dict):
        return [Finding("error", src.first_line, "the config must be a JSON object")]
    keys = known_keys()
    plugins = conf.get("plugins") if "plugins" in conf else [conf]
    out: list[Finding] = []
    if not conf.get("name") and not nad:  # (Multus names a NAD's network after it)
        out.append(Finding("warning", src.first_line, "no network name"))
    for plugin in plugins if isinstance(plugins, list) else []:
        if not isinstance(plugin, dict):
            continue
        ptype = DROP_IN.get(str(plugin.get("type")), str(plugin.get("type")))
        out += _check_keys(plugin, src, keys)
        if ptype in ("mh-macvlan", "mh-ipvlan") and not plugin.get("master"):
            out.append(
                Finding(
                    "warning",
                    src.line_of(f'"{plugin.get("type")}"'),
                    "no master: the node's default-route interface will be used",
                )
            )
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict):
            out += _check_ipam(ipam, src)
            out += _check_store(ipam, src)
            out += _check_routes(ipam.get("routes") or [], src)
            store = ipam.get("store")
            cluster_wide = isinstance(store, dict) and store.get("type") == "etcd"
            if (
                ipam.get("type") in ("host-local", "mh-ipam")
                and namespace in SHARED_NAMESPACES
                and not cluster_wide
            ):
                out.append(
                    Finding(
                        "warning",
                        src.line_of(f'"{ipam["type"]}"'),
                        f"a pool in {namespace} shared by every node, on a per-node "
                        "store: two nodes can hand out the same address (give each "
                        "node its own range, or use mh-ipam's etcd store)",
                    )
                )
        out += _check_routes(plugin.get("addroutes") or [], src)
    return out


# ---- files ------------------------------------------------------------------------------


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
