"""Computed route sets: a universe minus exclusions, as the minimal CIDR list.

Pure and root-free: ``compute(["public-ipv4"], exclude=[...])`` returns the
exact complement, aggregated (adjacent blocks merge, no prefix is listed
twice), with the standard library alone: a plugin that names a set does not
pay for netaddr's import (about 17 ms); the tests check it against netaddr.
The plugin, the ``multihome routes`` command and the tests all use it; nobody
writes these lists by hand.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

# (not models.IPNetwork: this module stays free of pydantic, for a quick CLI)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 1918 private space, link-local, loopback and "this network".
NOT_PUBLIC_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
)
# IANA IPv4 Special-Purpose Address Registry (RFC 6890 and updates): the blocks
# that are not globally reachable, plus multicast (not in the registry, never
# a unicast destination) and the deprecated 6to4 relay anycast (RFC 7526).
NOT_GLOBAL_V4 = (
    *NOT_PUBLIC_V4,
    "100.64.0.0/10",  # shared address space (carrier-grade NAT), RFC 6598
    "192.0.0.0/24",  # IETF protocol assignments, RFC 6890
    "192.0.2.0/24",  # TEST-NET-1, RFC 5737
    "192.88.99.0/24",  # 6to4 relay anycast, deprecated by RFC 7526
    "198.18.0.0/15",  # benchmarking, RFC 2544
    "198.51.100.0/24",  # TEST-NET-2, RFC 5737
    "203.0.113.0/24",  # TEST-NET-3, RFC 5737
    "224.0.0.0/4",  # multicast, RFC 5771
    "240.0.0.0/4",  # reserved, RFC 1112; includes 255.255.255.255/32
)
PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "public-ipv4": ("0.0.0.0/0", NOT_PUBLIC_V4),
    "global-ipv4": ("0.0.0.0/0", NOT_GLOBAL_V4),
    "default-ipv6": ("::/0", ()),
    "global-ipv6": ("2000::/3", ()),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def compute(presets: Sequence[str], exclude: Sequence[str | IPNetwork] = ()) -> list[IPNetwork]:
    """The union of the presets minus their own and the user's exclusions, minimal.

    IPv4 prefixes come first, then IPv6, each in address order. Every pod of a
    network asks for the same set, so results are cached (a warm daemon
    computes each set once).
    """
    return list(_compute(tuple(presets), tuple(str(n) for n in exclude)))


@functools.lru_cache(maxsize=256)
def _compute(presets: tuple[str, ...], exclude: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset {unknown[0]!r}; known: {', '.join(PRESETS)}")
    total: list[IPNetwork] = []
    for name in presets:
        universe, excluded = PRESETS[name]
        total += _minus([ipaddress.ip_network(universe)], excluded)
    total = _minus(_merge(total), exclude)
    return tuple(_merge(total))


def _minus(nets: list[IPNetwork], exclude: Sequence[str]) -> list[IPNetwork]:
    """``nets`` without the addresses of ``exclude`` (host bits allowed, as Go's)."""
    for text in exclude:
        cut = ipaddress.ip_network(text, strict=False)
        out: list[IPNetwork] = []
        for net in nets:
            if net.version != cut.version or not net.overlaps(cut):
                out.append(net)
            elif cut.supernet_of(net):  # type: ignore[arg-type]  # (same version here)
                continue
            else:
                out.extend(net.address_exclude(cut))  # type: ignore[arg-type]
        nets = out
    return nets


def _merge(nets: list[IPNetwork]) -> list[IPNetwork]:
    """The minimal CIDR list of a union: IPv4 first, then IPv6, in address order."""
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def universe(presets: Sequence[str]) -> list[IPNetwork]:
    """Everything the presets start from (for checking partitions)."""
    return _merge([ipaddress.ip_network(PRESETS[name][0]) for name in presets])


def nad_routes(
    presets: Sequence[str], exclude: Sequence[str], via: Sequence[str]
) -> list[dict[str, str]]:
    """A ready-to-paste NAD ``routes`` list: each prefix via the gateway(s) of its family."""
    gws: dict[int, list[str]] = {}
    for gw in via:
        gws.setdefault(ipaddress.ip_address(gw).version, []).append(gw)
    out = []
    for net in compute(presets, exclude):
        for gw in gws.get(net.version, [""]):
            out.append({"dst": str(net), "gw": gw} if gw else {"dst": str(net)})
    return out
