"""The checks on a parsed CNI config: one place for ``multihome lint`` and its callers."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import netaddr

from .source import Source

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

    from ..errors import CNIError

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
