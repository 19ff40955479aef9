"""Checks on a config's addressing: IPAM ranges and addresses, and route lists.

Every value is read defensively: a config is user input, and lint must say what is
wrong with it, never fail on it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import netaddr

from .findings import Finding
from .source import Source

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Addr = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE = {
    "10.0.0.0/8": "private (RFC 1918)",
    "172.16.0.0/12": "private (RFC 1918)",
    "192.168.0.0/16": "private (RFC 1918)",
}
NEVER_ROUTED = {
    "169.254.0.0/16": "link-local",
    "127.0.0.0/8": "loopback",
}
_CIDR_CHARS = re.compile(r"[0-9A-Fa-f:./]+")


def net(value: object) -> Net | None:
    """A CIDR as Go's ParseCIDR reads it (host bits allowed), or None."""
    try:
        return ipaddress.ip_network(str(value), strict=False) if "/" in str(value) else None
    except ValueError:
        return None


def addr(value: object) -> Addr | None:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        return None


def _salvage(value: object) -> Net | None:
    """The CIDR inside a value with stray characters (``$10.10.8.0/24``), to go on checking."""
    found = _CIDR_CHARS.findall(str(value))
    return net(max(found, key=len)) if found else None


def ranges(ipam: dict[str, Any]) -> list[dict[str, Any]]:
    """Every range of an IPAM config: the legacy flat one, then those of ``ranges``."""
    out = [ipam] if "subnet" in ipam else []
    sets = ipam.get("ranges")
    for rset in sets if isinstance(sets, list) else []:
        out += [r for r in (rset if isinstance(rset, list) else []) if isinstance(r, dict)]
    return out


def _check_range_shape(ipam: dict[str, Any], src: Source) -> list[Finding]:
    sets = ipam.get("ranges")
    if sets is None or (isinstance(sets, list) and all(isinstance(s, list) for s in sets)):
        return []
    if isinstance(sets, list) and any(isinstance(s, dict) for s in sets):
        msg = (
            "ipam.ranges is a flat list of ranges (the form before August 2017): host-local "
            "and mh-ipam refuse it; write a list of range sets, [[{...}], [{...}]]"
        )
    else:
        msg = "ipam.ranges must be a list of range sets (lists of ranges)"
    return [Finding("error", src.line_of('"ranges"'), msg)]


def _edge_address(value: Addr, subnet: Net) -> str:
    """Why ``value`` cannot be handed out in ``subnet`` (IPv4 below /31), or ''."""
    if subnet.version != 4 or subnet.prefixlen >= 31:
        return ""
    if value == subnet.network_address:
        return "network"
    return "broadcast" if value == subnet.broadcast_address else ""


def _bound(key: str, value: object, subnet: Net, src: Source) -> tuple[Addr | None, list[Finding]]:
    """One of a range's addresses: parsed, of the subnet's family, and its faults."""
    line = src.line_of(str(value))
    ip = addr(value)
    if ip is None:
        return None, [Finding("error", line, f"invalid {key} {value!r}")]
    if ip.version != subnet.version:
        return None, [Finding("error", line, f"{key} {ip} is outside its subnet {subnet}")]
    if ip not in subnet:
        return ip, [Finding("error", line, f"{key} {ip} is outside its subnet {subnet}")]
    edge = _edge_address(ip, subnet)
    if edge and key != "gateway":
        msg = (
            f"{key} {ip} is the {edge} address of {subnet}: host-local hands it out, "
            f"multihome never does (end the range one address earlier)"
        )
        return ip, [Finding("warning", line, msg)]
    return ip, []


def _check_range(rng: dict[str, Any], src: Source) -> tuple[list[Finding], netaddr.IPSet | None]:
    out = []
    subnet = net(rng.get("subnet"))
    if subnet is None:
        value = rng.get("subnet")
        out.append(Finding("error", src.line_of(str(value)), f"invalid subnet {value!r}"))
        subnet = _salvage(value)
        if subnet is None:
            return out, None
    bounds: dict[str, Addr] = {}
    for key in ("gateway", "rangeStart", "rangeEnd"):
        if rng.get(key):
            ip, found = _bound(key, rng[key], subnet, src)
            out += found
            if ip is not None:
                bounds[key] = ip
    start = bounds.get("rangeStart", subnet[0])
    end = bounds.get("rangeEnd", subnet[-1])
    if int(start) > int(end):
        out.append(
            Finding(
                "error",
                src.line_of(str(rng.get("rangeStart"))),
                f"rangeStart {start} is above rangeEnd {end}: the range is empty",
            )
        )
        return out, None
    if start not in subnet or end not in subnet:
        return out, None
    return out, netaddr.IPSet(netaddr.IPRange(str(start), str(end)))


def check_ipam(ipam: dict[str, Any], src: Source) -> list[Finding]:
    """Range shape, each range's bounds, overlaps, static addresses and their gateways."""
    out = _check_range_shape(ipam, src)
    seen: list[tuple[netaddr.IPSet, str]] = []
    for rng in ranges(ipam):
        found, span = _check_range(rng, src)
        out += found
        if span is None:
            continue
        for other, where in seen:
            if span & other:
                line = src.line_of(str(rng.get("subnet")))
                out.append(Finding("error", line, f"range {rng.get('subnet')} overlaps {where}"))
        seen.append((span, str(rng.get("subnet"))))
    addresses = ipam.get("addresses")
    for entry in addresses if isinstance(addresses, list) else []:
        if not isinstance(entry, dict):
            continue
        try:
            iface = ipaddress.ip_interface(str(entry.get("address")))
        except ValueError:
            line = src.line_of(str(entry.get("address")))
            out.append(Finding("error", line, f"invalid address {entry.get('address')!r}"))
            continue
        gw = addr(entry.get("gateway")) if entry.get("gateway") else None
        if entry.get("gateway") and (gw is None or gw not in iface.network):
            out.append(
                Finding(
                    "error",
                    src.line_of(str(entry["gateway"])),
                    f"gateway {entry['gateway']} is outside {iface.network}",
                )
            )
    return out


def interface_subnets(ipam: dict[str, Any]) -> list[Net]:
    """The subnets an IPAM config puts on the interface (for on-link gateways)."""
    out = [n for n in (net(r.get("subnet")) for r in ranges(ipam)) if n is not None]
    addresses = ipam.get("addresses")
    for entry in addresses if isinstance(addresses, list) else []:
        if isinstance(entry, dict):
            try:
                out.append(ipaddress.ip_interface(str(entry.get("address"))).network)
            except ValueError:
                continue
    return out


def check_gateways(routes: list[Any], subnets: list[Net], src: Source) -> list[Finding]:
    """A route's gateway must be on one of the interface's subnets (else ENETUNREACH)."""
    out = []
    for route in routes:
        gw = addr(route.get("gw")) if isinstance(route, dict) and route.get("gw") else None
        family = [n for n in subnets if gw is not None and n.version == gw.version]
        if gw is None or not family or any(gw in n for n in family):
            continue
        out.append(
            Finding(
                "error",
                src.line_of(str(route["gw"])),
                f"route {route.get('dst')} via {gw}: the gateway is on none of the "
                f"interface's subnets ({', '.join(map(str, family))}); the kernel refuses it "
                "(network is unreachable)",
            )
        )
    return out


def check_routes(routes: list[Any], src: Source, cluster: list[Net]) -> list[Finding]:
    """Defaults, cluster and private space, and near-miss public route sets."""
    dicts = [r for r in routes if isinstance(r, dict)]
    from multihome.plugins import routesets

    for r in dicts:
        presets = r.get("presets")
        for name in presets if isinstance(presets, list) else [presets] if presets else []:
            if not isinstance(name, str) or name not in routesets.PRESETS:
                known = ", ".join(routesets.PRESETS)
                line = src.line_of(f'"{name}"')
                return [Finding("error", line, f"unknown route preset {name!r}; known: {known}")]
    for r in dicts:
        if r.get("dst") is not None and net(r["dst"]) is None:
            return [Finding("error", src.line_of(str(r["dst"])), f"invalid route dst {r['dst']!r}")]
    v4 = [r for r in dicts if (n := net(r.get("dst"))) is not None and n.version == 4]
    out = []
    for r in v4:
        if net(r["dst"]) == ipaddress.ip_network("0.0.0.0/0"):
            out.append(
                Finding(
                    "warning",
                    src.line_of(str(r["dst"])),
                    f"default route {r['dst']} through the secondary interface: it goes in "
                    "ahead of eth0's; cluster traffic follows it unless eth0 has more specific "
                    "routes",
                )
            )
    v4 = [r for r in v4 if net(r["dst"]) != ipaddress.ip_network("0.0.0.0/0")]
    covered = netaddr.IPSet([str(net(r["dst"])) for r in v4])
    out += _check_space(v4, covered, src, cluster)
    out += _check_public_set(v4, covered, src)
    return out


def _check_space(
    v4: list[dict[str, Any]], covered: netaddr.IPSet, src: Source, cluster: list[Net]
) -> list[Finding]:
    out = []
    blocks = [(str(c), "the cluster's", "error") for c in cluster if c.version == 4]
    blocks += [(b, w, "error") for b, w in NEVER_ROUTED.items()]
    blocks += [(b, w, "warning") for b, w in PRIVATE.items()]
    for block, what, level in blocks:
        hit = covered & netaddr.IPSet([block])
        if not hit:
            continue
        first = next(r for r in v4 if netaddr.IPSet([str(net(r["dst"]))]) & hit)
        if level == "error" and what == "the cluster's":
            why = "cluster traffic breaks"
        elif level == "error":
            why = f"{what} space is never routed through a gateway"
        else:
            why = "fine for a private network behind it; wrong if the cluster uses that space"
        out.append(
            Finding(
                level,
                src.line_of(str(first["dst"])),
                f"route {first['dst']} sends {block} ({what}) through the secondary gateway: {why}",
            )
        )
    return out


def near_public(covered: netaddr.IPSet) -> netaddr.IPSet | None:
    """The public-ipv4 set when ``covered`` holds more than half of it (a list meant to
    be that set), else None."""
    from multihome.plugins import routesets

    public = netaddr.IPSet([str(n) for n in routesets.compute(["public-ipv4"])])
    return public if (covered & public).size > public.size // 2 else None


def _check_public_set(
    v4: list[dict[str, Any]], covered: netaddr.IPSet, src: Source
) -> list[Finding]:
    public = near_public(covered)
    if public is None:
        return []
    missing = [str(c) for c in (public - covered).iter_cidrs()]
    if not missing:
        return []
    return [
        Finding(
            "error",
            src.line_of(str(v4[0]["dst"])),
            f"this looks like a public route set but leaves out "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; "
            'name the set instead: {"presets": ["public-ipv4"]} as the one route entry',
        )
    ]
