"""The checks on a parsed CNI config: one place for ``multihome lint`` and its callers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import addressing
from .findings import Finding
from .source import Source

if TYPE_CHECKING:
    from multihome.ipam.config import LeaseStoreConf

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
VERSIONS = {"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
OBSOLETE = {
    "route-overwrite": "route-override",
    "routing-override": "route-override",
    "routing-overwrite": "route-override",
}
NEEDS_PREV_RESULT = {"mh-route", "mh-sbr"}
INTERFACE_TYPES = {"mh-macvlan", "mh-ipvlan", "bridge", "ptp", "host-device", "vlan", "tap"}


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


# ---- keys -------------------------------------------------------------------------------


def canonical_keys(
    section: dict[str, Any], known: set[str], where: str, src: Source
) -> tuple[dict[str, Any], list[Finding]]:
    """``section`` with each key that matches a known one case-insensitively taken for it
    (as Go's encoding/json does, and our plugins too), and a warning for each."""
    lower = {k.lower(): k for k in known}
    out: dict[str, Any] = {}
    found = []
    for key, value in section.items():
        name = key if key in known else lower.get(key.lower(), key)
        if name != key:
            found.append(
                Finding(
                    "warning",
                    src.line_of(f'"{key}"'),
                    f"{where}: key {key!r} is read as {name!r} (keys match case-insensitively, "
                    f"as in Go); write {name!r}",
                )
            )
        out[name] = value
    return out, found


def _unknown(section: dict[str, Any], known: set[str], where: str, src: Source) -> list[Finding]:
    out = []
    for key in section:
        if key not in known and not key.startswith("cni.dev/"):
            hint = " (ipvlan shares the master's MAC)" if key in ("mac", "bcqueuelen") else ""
            out.append(
                Finding(
                    "warning",
                    src.line_of(f'"{key}"'),
                    f"{where}: unknown or ignored key {key!r}{hint}",
                )
            )
    return out


def _check_plugin_keys(
    plugin: dict[str, Any], src: Source, keys: dict[str, set[str]]
) -> tuple[dict[str, Any], list[Finding]]:
    """Type and key findings; the plugin with its keys (and its ipam's) made canonical."""
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
    if known is not None:
        plugin, found = canonical_keys(plugin, known | PLUGIN_KEYS, ptype, src)
        out += found + _unknown(plugin, known | PLUGIN_KEYS, ptype, src)
    ipam = plugin.get("ipam")
    if isinstance(ipam, dict) and ipam.get("type"):
        itype = DROP_IN.get(str(ipam["type"]), str(ipam["type"]))
        ikeys = keys.get(f"ipam:{itype}")  # an IPAM we do not know: no opinion
        if ikeys is not None:
            where = f"ipam {ipam['type']}"
            ipam, found = canonical_keys(ipam, ikeys, where, src)
            out += found + _unknown(ipam, ikeys, where, src)
            plugin = {**plugin, "ipam": ipam}
    return plugin, out


# ---- the lease store ----------------------------------------------------------------------


def _check_store(ipam: dict[str, Any], src: Source) -> list[Finding]:
    """mh-ipam's ``store``: what the plugin would refuse, and etcd spoken in clear."""
    store = ipam.get("store")
    if store is None or ipam.get("type") != "mh-ipam":
        return []
    if not isinstance(store, dict):
        return [Finding("error", src.line_of('"store"'), "ipam.store must be an object")]
    from pydantic import ValidationError

    from multihome.ipam.config import LeaseStoreConf, TLSConf
    from multihome.lib.models import describe

    line = src.line_of('"store"')
    out = []
    for keys, model, where in (
        (store, LeaseStoreConf, "store"),
        (store.get("tls"), TLSConf, "store.tls"),
    ):
        known = _model_keys(model)
        for key in keys if isinstance(keys, dict) else []:
            if key not in known:
                out.append(
                    Finding(
                        "warning", src.line_of(f'"{key}"'), f"ipam.{where}: unknown key {key!r}"
                    )
                )
    try:
        conf = LeaseStoreConf.model_validate(store)
    except ValidationError as exc:
        return [*out, Finding("error", line, f"ipam.store: {describe(exc)}")]
    return out + (_check_etcd_store(conf, src, line) if conf.type == "etcd" else [])


def _check_etcd_store(conf: LeaseStoreConf, src: Source, line: int) -> list[Finding]:
    """A NAD names a profile of the node file: never credentials, never other keys."""
    import os

    from multihome.ipam.config import (
        DEFAULT_ETCD_CONF,
        ETCD_PREFIX_ROOT,
        etcd_conf_path,
        etcd_settings,
    )

    from ..errors import CNIError

    out = []
    if conf.tls is not None:
        out.append(
            Finding(
                "error",
                src.line_of('"tls"'),
                "ipam.store.tls: a NAD cannot name etcd credentials; they come from the node's "
                f"profile in {DEFAULT_ETCD_CONF}: name it with ipam.store.profile",
            )
        )
    if conf.prefix and not conf.prefix.rstrip("/").startswith(ETCD_PREFIX_ROOT.rstrip("/")):
        out.append(
            Finding(
                "error",
                src.line_of('"prefix"'),
                f"ipam.store.prefix {conf.prefix!r}: the plugin writes only under its "
                f"profile's prefix, which is under {ETCD_PREFIX_ROOT}",
            )
        )
    path = etcd_conf_path()
    if out or not os.path.exists(path):
        return out  # the profile is the node's: checked where the node file is
    try:
        settings = etcd_settings(conf)
    except CNIError as exc:
        return [Finding("error", line, exc.msg)]
    if settings and any(url.startswith("http://") for url in settings.endpoints):
        out.append(
            Finding(
                "warning",
                line,
                f"ipam.store: profile {conf.profile!r} of {path} has an http:// etcd endpoint, "
                "which carries leases in clear and lets any client write them; use https:// "
                "with tls client certificates",
            )
        )
    return out


# ---- one config ---------------------------------------------------------------------------


def _check_top(
    conf: dict[str, Any], src: Source, nad: bool, duplicates: list[str]
) -> list[Finding]:
    out = []
    for key in duplicates:
        first = src.raw.find(f'"{key}"')
        out.append(
            Finding(
                "warning",
                src.line_of(f'"{key}"', first + 1),
                f"key {key!r} appears twice in one object: the last one wins (as in Go), "
                "the first is silently dropped",
            )
        )
    if not conf.get("name") and not nad:  # (Multus names a NAD's network after it)
        out.append(Finding("warning", src.first_line, "no network name"))
    if "type" not in conf and "plugins" not in conf:
        return out  # an IPAM fragment
    version = conf.get("cniVersion")
    if version is None:
        out.append(
            Finding(
                "warning",
                src.first_line,
                "no cniVersion: it is taken as 0.1.0, whose result has one address per family "
                '("ip4"/"ip6"); say "1.0.0"',
            )
        )
    elif str(version) not in VERSIONS:
        hint = " (a template placeholder: render it first)" if "{" in str(version) else ""
        out.append(
            Finding(
                "error",
                src.line_of('"cniVersion"'),
                f"cniVersion {version!r} is not a CNI version{hint}",
            )
        )
    if "plugins" in conf and "capabilities" in conf:
        out.append(
            Finding(
                "warning",
                src.line_of('"capabilities"'),
                "capabilities at the conflist level are ignored by libcni: put them in the "
                "plugin that reads them (runtimeConfig.ips then never arrives)",
            )
        )
    return out


def _check_type(plugin: dict[str, Any], index: int, src: Source) -> list[Finding]:
    ptype = str(plugin.get("type", ""))
    ours = DROP_IN.get(ptype, ptype)
    line = src.line_of(f'"{ptype}"') if ptype else src.first_line
    if not ptype:
        return [Finding("error", line, "a plugin without a type")]
    if ptype in OBSOLETE:
        return [
            Finding(
                "error",
                line,
                f"type {ptype!r} is an old name: the plugin is {OBSOLETE[ptype]!r} "
                f"(or {DROP_IN[OBSOLETE[ptype]]!r})",
            )
        ]
    if ours in NEEDS_PREV_RESULT and index == 0:
        return [
            Finding(
                "error",
                line,
                f"{ptype} must be chained after an interface plugin (it changes that "
                "interface, from the prevResult): alone it has nothing to work on",
            )
        ]
    if ours in ("mh-macvlan", "mh-ipvlan") and not plugin.get("master"):
        return [
            Finding("warning", line, "no master: the node's default-route interface will be used")
        ]
    return []


def _check_ipam_section(
    plugin: dict[str, Any], src: Source, namespace: str, cluster: list[addressing.Net]
) -> list[Finding]:
    ipam = plugin.get("ipam")
    if not isinstance(ipam, dict) or not ipam:
        return []  # ("ipam": {} is an L2-only interface)
    ptype = DROP_IN.get(str(plugin.get("type")), str(plugin.get("type")))
    if not ipam.get("type"):
        return [
            Finding(
                "error",
                src.line_of('"ipam"'),
                f"ipam has keys ({', '.join(map(repr, list(ipam)[:3]))}) but no type: the "
                "reference plugins give an interface with no address and no error, "
                'multihome refuses it (code 7); add "type": "host-local" (or mh-ipam)',
            )
        ]
    out = []
    if ptype == "mh-ipvlan" and ipam.get("type") == "dhcp":
        out.append(
            Finding(
                "warning",
                src.line_of('"dhcp"'),
                "ipvlan with dhcp: the interface shares the master's MAC, so DHCP servers "
                "cannot tell pods apart (unsupported upstream); use a static or pooled IPAM",
            )
        )
    routes: list[Any] = ipam["routes"] if isinstance(ipam.get("routes"), list) else []
    out += addressing.check_ipam(ipam, src)
    out += _check_store(ipam, src)
    out += addressing.check_routes(routes, src, cluster)
    out += addressing.check_gateways(routes, addressing.interface_subnets(ipam), src)
    store = ipam.get("store")
    cluster_wide = isinstance(store, dict) and store.get("type") == "etcd"
    shared = namespace in SHARED_NAMESPACES and not cluster_wide
    if ipam.get("type") in ("host-local", "mh-ipam") and shared:
        out.append(
            Finding(
                "warning",
                src.line_of(f'"{ipam["type"]}"'),
                f"a pool in {namespace} shared by every node, on a per-node "
                "store: two nodes can hand out the same address (give each "
                "node its own range, or use mh-ipam's etcd store)",
            )
        )
    return out


def check_config(
    conf: Any,
    src: Source,
    namespace: str = "",
    *,
    nad: bool = False,
    cluster: list[addressing.Net] | None = None,
    duplicates: list[str] | None = None,
) -> list[Finding]:
    """All findings for one parsed CNI config (a conflist or a single plugin).

    ``cluster``: the cluster's own CIDRs (pods, services); a route sending them
    through the secondary gateway is an error, other private space a warning.
    """
    if not isinstance(conf, dict):
        return [Finding("error", src.first_line, "the config must be a JSON object")]
    keys = known_keys()
    out = _check_top(conf, src, nad, duplicates or [])
    if "plugins" not in conf and "type" not in conf:
        plugins: Any = [conf] if isinstance(conf.get("ipam"), dict) else []  # an IPAM fragment
    else:
        plugins = conf.get("plugins") if "plugins" in conf else [conf]
    if not isinstance(plugins, list):
        return [*out, Finding("error", src.line_of('"plugins"'), "plugins must be a list")]
    for index, given in enumerate(plugins):
        if not isinstance(given, dict):
            out.append(Finding("error", src.first_line, f"plugin {index} is not an object"))
            continue
        if "type" in given or "plugins" in conf:
            out += _check_type(given, index, src)
        plugin, found = _check_plugin_keys(given, src, keys)
        out += found
        out += _check_ipam_section(plugin, src, namespace, cluster or [])
        addroutes = plugin.get("addroutes")
        if isinstance(addroutes, list):
            out += addressing.check_routes(addroutes, src, cluster or [])
    return out
