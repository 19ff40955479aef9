"""rtnetlink, spoken directly: the only module that talks to the kernel's routing stack.

Messages are packed with ``struct`` and sent on an ``AF_NETLINK`` socket. A
socket belongs to the network namespace of the thread that opened it, so
``Rtnl()`` inside ``with NetNS(...)`` talks to that namespace even after the
block ends. Requests are batched: sent in windows of a few dozen per ``sendmsg``,
each window's ACKs read before the next is sent, so a batch of any size never
overflows the socket's receive queue (ENOBUFS) nor its send limit (EMSGSIZE).

Why not pyroute2: importing it costs about 300 ms per process, encoding costs
about 0.4 ms per message (a 40-route set would cost more than the whole Go
plugin), and 0.9.7 cannot encode IFLA_MACVLAN_BC_QUEUE_LEN. This module does
what the plugins need in well under a millisecond per ADD.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator, Mapping
from typing import NamedTuple

from .netns import NetNS

# ---- constants from linux/netlink.h, rtnetlink.h, if_link.h, if_addr.h, fib_rules.h ----
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 270, 10, 11, 12
NLA_F_NESTED = 0x8000

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD, IFLA_LINK_NETNSID = 16, 18, 20, 28, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_MACVLAN_MODE, IFLA_MACVLAN_BC_QUEUE_LEN = 1, 7
IFLA_IPVLAN_MODE = 1
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
OPER_UP = 6

IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
IFA_F_NODAD, IFA_F_OPTIMISTIC, IFA_F_DADFAILED = 0x02, 0x04, 0x08
IFA_F_TENTATIVE, IFA_F_PERMANENT = 0x40, 0x80

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_METRICS, RTA_MULTIPATH, RTA_TABLE = 8, 9, 15
RTAX_MTU, RTAX_ADVMSS = 2, 8
RT_TABLE_MAIN = 254
IP6_DEFAULT_METRIC = 1024  # what the kernel gives an IPv6 route added without one
RTPROT_BOOT, RTPROT_STATIC = 3, 4
SCOPE_UNIVERSE, SCOPE_LINK, SCOPE_HOST, SCOPE_NOWHERE = 0, 253, 254, 255
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4  # rtm_flags of a single path, rtnh_flags of a multipath hop

FRA_DST, FRA_SRC, FRA_PRIORITY, FRA_TABLE = 1, 2, 6, 15
FR_ACT_TO_TBL = 1

_HDR = struct.Struct("=LHHLL")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")  # also fib_rule_hdr: same layout
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_RTNH = struct.Struct("=HBBi")  # struct rtnexthop
_DUMP_RETRIES = 5
# Requests per write. Each ACK takes about 1 KiB of the receive buffer (its skb),
# and the default buffer (208 KiB) overflowed at about 250: 64 keeps well clear.
_WINDOW = 64
_WINDOW_BYTES = 32768

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetlinkError(OSError):
    """A request the kernel refused; ``errno`` says why, ``strerror`` adds its message."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, data: bytes) -> bytes:
    size = _ATTR.size + len(data)
    return _ATTR.pack(size, kind) + data + b"\0" * (_align(size) - size)


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def attr_str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def parse_attrs(data: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """{type: payload} of a run of rtattrs (the nested flag stripped)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while offset + 4 <= end:
        size, kind = _ATTR.unpack_from(data, offset)
        if size < 4:
            break
        out[kind & 0x3FFF] = bytes(data[offset + 4 : offset + size])
        offset += _align(size)
    return out


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _ip_bytes(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return ip.packed


def family_of(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


# ---- parsed objects ----------------------------------------------------------


class Link:
    __slots__ = (
        "alias",
        "data",
        "flags",
        "index",
        "kind",
        "link",
        "mac",
        "mtu",
        "name",
        "operstate",
    )

    def __init__(self, body: bytes) -> None:
        _, _, self.index, self.flags, _ = _IFINFO.unpack_from(body)
        attrs = parse_attrs(body, _IFINFO.size)
        self.name = _cstr(attrs.get(IFLA_IFNAME, b""))
        self.alias = _cstr(attrs.get(IFLA_IFALIAS, b""))
        self.mtu = _U32.unpack(attrs[IFLA_MTU])[0] if IFLA_MTU in attrs else 0
        raw_mac = attrs.get(IFLA_ADDRESS, b"")
        self.mac = ":".join(f"{b:02x}" for b in raw_mac)
        self.link = _U32.unpack(attrs[IFLA_LINK])[0] if IFLA_LINK in attrs else 0
        self.operstate = attrs.get(IFLA_OPERSTATE, b"\0")[0]
        info = parse_attrs(attrs.get(IFLA_LINKINFO, b""))
        self.kind = _cstr(info.get(IFLA_INFO_KIND, b""))
        self.data = parse_attrs(info.get(IFLA_INFO_DATA, b""))

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    def mode(self) -> str:
        """The macvlan or ipvlan mode name, or ''."""
        if self.kind == "macvlan" and IFLA_MACVLAN_MODE in self.data:
            value = _U32.unpack(self.data[IFLA_MACVLAN_MODE][:4])[0]
            return next((k for k, v in MACVLAN_MODES.items() if v == value), str(value))
        if self.kind == "ipvlan" and IFLA_IPVLAN_MODE in self.data:
            value = _U16.unpack(self.data[IFLA_IPVLAN_MODE][:2])[0]
            return next((k for k, v in IPVLAN_MODES.items() if v == value), str(value))
        return ""

    def macvlan_bc_queue_len(self) -> int | None:
        raw = self.data.get(IFLA_MACVLAN_BC_QUEUE_LEN)
        return _U32.unpack(raw[:4])[0] if raw else None


class Addr:
    __slots__ = ("flags", "index", "interface", "scope")

    def __init__(self, body: bytes) -> None:
        family, prefixlen, flags, self.scope, self.index = _IFADDR.unpack_from(body)
        attrs = parse_attrs(body, _IFADDR.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS, b"")
        self.flags = _U32.unpack(attrs[IFA_FLAGS])[0] if IFA_FLAGS in attrs else flags
        ip = ipaddress.ip_address(raw) if raw else ipaddress.ip_address(0)
        self.interface = ipaddress.ip_interface(f"{ip}/{prefixlen}")
        del family


class NextHop(NamedTuple):
    """One path of a multipath route. ``oif`` 0 means the route's own ``oif``;
    ``flags`` keeps only RTNH_F_ONLINK (the kernel reports state flags too)."""

    gw: IP | None
    oif: int = 0
    weight: int = 1
    flags: int = 0


class RouteEntry:
    __slots__ = (
        "advmss",
        "dst",
        "family",
        "flags",
        "gw",
        "mtu",
        "nexthops",
        "oif",
        "prefsrc",
        "priority",
        "protocol",
        "scope",
        "table",
        "type",
    )

    def __init__(self, body: bytes) -> None:
        (self.family, dst_len, _, _, table, self.protocol, self.scope, self.type, flags) = (
            _RTMSG.unpack_from(body)
        )
        self.flags = flags & RTNH_F_ONLINK
        attrs = parse_attrs(body, _RTMSG.size)
        self.table = _U32.unpack(attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table
        zero = "0.0.0.0" if self.family == socket.AF_INET else "::"  # noqa: S104 - an address
        dst = (
            ipaddress.ip_address(attrs[RTA_DST]) if RTA_DST in attrs else ipaddress.ip_address(zero)
        )
        self.dst = ipaddress.ip_network(f"{dst}/{dst_len}", strict=False)
        self.gw = ipaddress.ip_address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
        self.oif = _U32.unpack(attrs[RTA_OIF])[0] if RTA_OIF in attrs else 0
        self.priority = _U32.unpack(attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0
        self.prefsrc = ipaddress.ip_address(attrs[RTA_PREFSRC]) if RTA_PREFSRC in attrs else None
        self.nexthops = _parse_multipath(attrs.get(RTA_MULTIPATH, b""))
        metrics = parse_attrs(attrs.get(RTA_METRICS, b""))
        self.mtu = _U32.unpack(metrics[RTAX_MTU])[0] if RTAX_MTU in metrics else 0
        self.advmss = _U32.unpack(metrics[RTAX_ADVMSS])[0] if RTAX_ADVMSS in metrics else 0

    def paths(self) -> frozenset[tuple[object, int]]:
        """(gateway, interface index) of every path: one, or several for ECMP."""
        if self.nexthops:
            return frozenset((h.gw, h.oif) for h in self.nexthops)
        return frozenset({(self.gw, self.oif)})


def _parse_multipath(data: bytes) -> list[NextHop]:
    out: list[NextHop] = []
    offset = 0
    while offset + _RTNH.size <= len(data):
        size, flags, hops, ifindex = _RTNH.unpack_from(data, offset)
        if size < _RTNH.size:
            break
        inner = parse_attrs(data[offset + _RTNH.size : offset + size])
        gw = ipaddress.ip_address(inner[RTA_GATEWAY]) if RTA_GATEWAY in inner else None
        out.append(NextHop(gw, ifindex, hops + 1, flags & RTNH_F_ONLINK))
        offset += _align(size)
    return out


class Rule:
    __slots__ = ("dst", "family", "priority", "src", "table")

    def __init__(self, body: bytes) -> None:
        self.family, dst_len, src_len, _, table, _, _, _, _ = _RTMSG.unpack_from(body)
        attrs = parse_attrs(body, _RTMSG.size)
        self.table = _U32.unpack(attrs[FRA_TABLE])[0] if FRA_TABLE in attrs else table
        self.priority = _U32.unpack(attrs[FRA_PRIORITY])[0] if FRA_PRIORITY in attrs else 0
        self.src = (
            ipaddress.ip_network(f"{ipaddress.ip_address(attrs[FRA_SRC])}/{src_len}")
            if FRA_SRC in attrs
            else None
        )
        self.dst = (
            ipaddress.ip_network(f"{ipaddress.ip_address(attrs[FRA_DST])}/{dst_len}")
            if FRA_DST in attrs
            else None
        )


# ---- message builders (pure: bytes in, bytes out) ----------------------------


class Request:
    """One netlink request: a message type, flags and its body."""

    __slots__ = ("body", "flags", "type")

    def __init__(self, type_: int, flags: int, body: bytes) -> None:
        self.type = type_
        self.flags = flags
        self.body = body


def link_create(
    name: str,
    kind: str,
    master: int,
    data: bytes,
    *,
    mtu: int = 0,
    mac: bytes = b"",
    netns_fd: int = -1,
) -> Request:
    """A new stacked link. (The kernel ignores IFLA_IFALIAS here: see ``link_set``.)"""
    attrs = [attr_str(IFLA_IFNAME, name), attr_u32(IFLA_LINK, master)]
    if mtu:
        attrs.append(attr_u32(IFLA_MTU, mtu))
    if mac:
        attrs.append(attr(IFLA_ADDRESS, mac))
    if netns_fd >= 0:
        attrs.append(attr_u32(IFLA_NET_NS_FD, netns_fd))
    attrs.append(
        nested(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, kind), nested(IFLA_INFO_DATA, data))
    )
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + b"".join(attrs)
    return Request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)


def link_set(
    index: int, *, name: str = "", up: bool | None = None, alias: str | None = None
) -> Request:
    """Change a link: its name, its up flag, its alias (IFLA_IFALIAS, which only an
    existing link takes)."""
    flags = change = 0
    if up is not None:
        flags, change = (IFF_UP if up else 0), IFF_UP
    attrs = attr_str(IFLA_IFNAME, name) if name else b""
    if alias is not None:
        attrs += attr_str(IFLA_IFALIAS, alias)
    return Request(RTM_NEWLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change) + attrs)


def link_delete(index: int) -> Request:
    return Request(RTM_DELLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0))


def addr_add(
    index: int, interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface, flags: int = 0
) -> Request:
    ip = interface.ip
    family = family_of(ip.version)
    attrs = attr(IFA_LOCAL, _ip_bytes(ip)) + attr(IFA_ADDRESS, _ip_bytes(ip))
    if ip.version == 4 and interface.network.prefixlen < 31:
        attrs += attr(4, _ip_bytes(interface.network.broadcast_address))  # IFA_BROADCAST
    attrs += attr_u32(IFA_FLAGS, flags | IFA_F_PERMANENT)
    body = _IFADDR.pack(family, interface.network.prefixlen, flags & 0xFF, SCOPE_UNIVERSE, index)
    return Request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body + attrs)


class RouteSpec:
    """What to install: the kernel fields of a CNI route.

    ``nexthops`` make one multipath (ECMP) route; a hop without an ``oif`` goes
    via the route's. ``flags`` (RTNH_F_ONLINK) and ``protocol`` are replayed as
    read, so a route taken from the kernel goes back exactly as it was.
    """

    __slots__ = (
        "advmss",
        "dst",
        "flags",
        "gw",
        "mtu",
        "nexthops",
        "oif",
        "prefsrc",
        "priority",
        "protocol",
        "scope",
        "table",
    )

    def __init__(
        self,
        dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
        *,
        gw: IP | None = None,
        oif: int = 0,
        table: int = RT_TABLE_MAIN,
        priority: int = 0,
        scope: int | None = None,
        prefsrc: IP | None = None,
        mtu: int = 0,
        advmss: int = 0,
        nexthops: tuple[NextHop, ...] = (),
        flags: int = 0,
        protocol: int = RTPROT_BOOT,
    ) -> None:
        self.dst, self.gw, self.oif, self.table, self.priority = dst, gw, oif, table, priority
        routed = gw is not None or bool(nexthops)
        self.scope = scope if scope is not None else (SCOPE_UNIVERSE if routed else SCOPE_LINK)
        self.prefsrc, self.mtu, self.advmss = prefsrc, mtu, advmss
        self.nexthops = nexthops
        self.flags, self.protocol = flags & RTNH_F_ONLINK, protocol

    def paths(self) -> frozenset[tuple[object, int]]:
        if self.nexthops:
            return frozenset((h.gw, h.oif or self.oif) for h in self.nexthops)
        return frozenset({(self.gw, self.oif)})

    def key(self) -> tuple[object, ...]:
        return (self.dst, self.table, self.priority)

    @classmethod
    def from_entry(cls, entry: RouteEntry) -> RouteSpec:
        """The spec that re-creates a route read from the kernel."""
        return cls(
            entry.dst,
            gw=entry.gw,
            oif=entry.oif,
            table=entry.table,
            priority=entry.priority,
            scope=entry.scope,
            prefsrc=entry.prefsrc,
            mtu=entry.mtu,
            advmss=entry.advmss,
            nexthops=tuple(entry.nexthops),
            flags=entry.flags,
            protocol=entry.protocol,
        )

    def to_dict(self, names: Mapping[int, str]) -> dict[str, object]:
        """A JSON form naming interfaces (indexes do not survive re-creation)."""
        return {
            "dst": str(self.dst),
            "gw": str(self.gw) if self.gw else None,
            "dev": names.get(self.oif, "") if self.oif else "",
            "table": self.table,
            "priority": self.priority,
            "scope": self.scope,
            "prefsrc": str(self.prefsrc) if self.prefsrc else None,
            "mtu": self.mtu,
            "advmss": self.advmss,
            "flags": self.flags,
            "protocol": self.protocol,
            "nexthops": [
                {
                    "gw": str(h.gw) if h.gw else None,
                    "dev": names.get(h.oif or self.oif, ""),
                    "weight": h.weight,
                    "flags": h.flags,
                }
                for h in self.nexthops
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object], indexes: Mapping[str, int]) -> RouteSpec:
        """The spec of ``to_dict``'s form, with today's interface ``indexes``.

        Paths via interfaces that are gone are left out; KeyError if none is left.
        (A hop given as a bare gateway, as older records have them, goes via ``dev``.)
        """

        def ip(value: object) -> IP | None:
            return ipaddress.ip_address(str(value)) if value else None

        def num(key: str, default: int = 0) -> int:
            value = doc.get(key)
            return value if isinstance(value, int) else default

        dev = str(doc.get("dev") or "")
        oif = indexes.get(dev, 0) if dev else 0
        hops: list[NextHop] = []
        raw_hops = doc.get("nexthops")
        for raw in raw_hops if isinstance(raw_hops, list) else []:
            hop = raw if isinstance(raw, dict) else {"gw": raw}
            hop_dev = str(hop.get("dev") or dev)
            if hop_dev in indexes:
                weight, flags = hop.get("weight"), hop.get("flags")
                hops.append(
                    NextHop(
                        ip(hop.get("gw")),
                        indexes[hop_dev],
                        weight if isinstance(weight, int) and weight > 0 else 1,
                        flags if isinstance(flags, int) else 0,
                    )
                )
        if (raw_hops and not hops) or (not raw_hops and dev not in indexes):
            raise KeyError(dev)
        return cls(
            ipaddress.ip_network(str(doc["dst"])),
            gw=ip(doc.get("gw")),
            oif=oif,
            table=num("table") or RT_TABLE_MAIN,
            priority=num("priority"),
            scope=num("scope"),
            prefsrc=ip(doc.get("prefsrc")),
            mtu=num("mtu"),
            advmss=num("advmss"),
            nexthops=tuple(hops),
            flags=num("flags"),
            protocol=num("protocol", RTPROT_BOOT),
        )


def identity(route: RouteEntry | RouteSpec) -> tuple[object, ...]:
    """What tells one route from another: destination, table, metric and paths."""
    # The kernel gives IPv6 routes added without a metric the metric 1024.
    priority = route.priority or (IP6_DEFAULT_METRIC if route.dst.version == 6 else 0)
    return (route.dst, route.table, priority, route.paths())


def _multipath(spec: RouteSpec) -> bytes:
    hops = b""
    for hop in spec.nexthops:
        inner = attr(RTA_GATEWAY, _ip_bytes(hop.gw)) if hop.gw is not None else b""
        head = _RTNH.pack(
            _RTNH.size + len(inner), hop.flags & RTNH_F_ONLINK, hop.weight - 1, hop.oif or spec.oif
        )
        hops += head + inner
    return attr(RTA_MULTIPATH, hops)


def _route_body(spec: RouteSpec, protocol: int | None = None, scope: int | None = None) -> bytes:
    family = family_of(spec.dst.version)
    head = _RTMSG.pack(
        family,
        spec.dst.prefixlen,
        0,
        0,
        spec.table if spec.table < 256 else 0,
        spec.protocol if protocol is None else protocol,
        spec.scope if scope is None else scope,
        RTN_UNICAST,
        spec.flags & RTNH_F_ONLINK,
    )
    attrs = [attr_u32(RTA_TABLE, spec.table)]
    if spec.dst.prefixlen:
        attrs.append(attr(RTA_DST, _ip_bytes(spec.dst.network_address)))
    if spec.nexthops:
        attrs.append(_multipath(spec))
    else:
        if spec.gw is not None:
            attrs.append(attr(RTA_GATEWAY, _ip_bytes(spec.gw)))
        if spec.oif:
            attrs.append(attr_u32(RTA_OIF, spec.oif))
    if spec.priority:
        attrs.append(attr_u32(RTA_PRIORITY, spec.priority))
    if spec.prefsrc is not None:
        attrs.append(attr(RTA_PREFSRC, _ip_bytes(spec.prefsrc)))
    metrics = b""
    if spec.mtu:
        metrics += attr_u32(RTAX_MTU, spec.mtu)
    if spec.advmss:
        metrics += attr_u32(RTAX_ADVMSS, spec.advmss)
    if metrics:
        attrs.append(attr(RTA_METRICS, metrics))
    return head + b"".join(attrs)


def route_add(spec: RouteSpec, append: bool = False, exclusive: bool = True) -> Request:
    """Add a route; ``append`` adds another path to the same destination (ECMP).

    ``exclusive=False`` adds as the reference's IPAM routes do (no NLM_F_EXCL): a
    route to a destination the table already has (eth0's default) goes in ahead of
    it for IPv4, beside it as another path for IPv6; only an identical one fails.
    """
    if append:
        flags = NLM_F_CREATE | NLM_F_APPEND
    else:
        flags = NLM_F_CREATE | (NLM_F_EXCL if exclusive else 0)
    return Request(RTM_NEWROUTE, flags, _route_body(spec))


def route_replace(spec: RouteSpec) -> Request:
    """Add the route, or replace the one with the same destination, table and metric."""
    return Request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, _route_body(spec))


def route_delete(spec: RouteSpec) -> Request:
    """Delete the route matching ``spec`` (any protocol and scope, as ``ip route del``)."""
    return Request(RTM_DELROUTE, 0, _route_body(spec, protocol=0, scope=SCOPE_NOWHERE))


def rule_request(
    add: bool, src: ipaddress.IPv4Network | ipaddress.IPv6Network, table: int, priority: int = 0
) -> Request:
    family = family_of(src.version)
    head = _RTMSG.pack(
        family, 0, src.prefixlen, 0, table if table < 256 else 0, 0, 0, FR_ACT_TO_TBL, 0
    )
    attrs = attr(FRA_SRC, _ip_bytes(src.network_address)) + attr_u32(FRA_TABLE, table)
    if priority:
        attrs += attr_u32(FRA_PRIORITY, priority)
    kind, flags = (RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL) if add else (RTM_DELRULE, 0)
    return Request(kind, flags, head + attrs)


# ---- the socket ---------------------------------------------------------------


class Rtnl:
    """A NETLINK_ROUTE socket in the calling thread's current network namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self.sock.bind((0, 0))
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            try:  # noqa: SIM105 - contextlib is not needed on this path
                self.sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError:
                pass  # older kernels: full-size error ACKs, plain errors, unfiltered dumps
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, requests: list[Request], extra_flags: int) -> list[int]:
        seqs, chunks = [], []
        for req in requests:
            self.seq += 1
            seqs.append(self.seq)
            size = _HDR.size + len(req.body)
            flags = NLM_F_REQUEST | req.flags | extra_flags
            chunks.append(_HDR.pack(size, req.type, flags, self.seq, 0) + req.body)
        self.sock.sendall(b"".join(chunks))
        return seqs

    def _messages(self) -> list[tuple[int, int, int, memoryview]]:
        data = memoryview(self.sock.recv(1 << 20))
        out, offset = [], 0
        while offset + _HDR.size <= len(data):
            size, kind, flags, seq, _ = _HDR.unpack_from(data, offset)
            if size < _HDR.size:
                break
            out.append((kind, flags, seq, data[offset + _HDR.size : offset + size]))
            offset += _align(size)
        return out

    @staticmethod
    def _error(body: memoryview, flags: int) -> NetlinkError | None:
        code = -struct.unpack_from("=i", body)[0]
        if code == 0:
            return None
        message = os.strerror(code)
        if flags & NLM_F_ACK_TLVS:
            inner = _HDR.unpack_from(body, 4)[0]
            tlvs = parse_attrs(body, 4 + inner if flags & 0x100 == 0 else 4 + _HDR.size)
            if NLMSGERR_ATTR_MSG in tlvs:
                message = f"{message}: {_cstr(tlvs[NLMSGERR_ATTR_MSG])}"
        return NetlinkError(code, message)

    def batch(self, requests: list[Request]) -> list[NetlinkError | None]:
        """Each request's error (None = done), in order.

        Sent in windows of at most ``_WINDOW`` requests (``_WINDOW_BYTES``), each
        window's ACKs read before the next goes out. An OSError (the socket's own,
        not a request's) leaves it unknown which requests were done: read the
        kernel's state back to learn it.
        """
        out: list[NetlinkError | None] = []
        start = 0
        while start < len(requests):
            end, size = start + 1, len(requests[start].body)
            while end < len(requests) and end - start < _WINDOW:
                size += len(requests[end].body)
                if size > _WINDOW_BYTES:
                    break
                end += 1
            out.extend(self._window(requests[start:end]))
            start = end
        return out

    def _window(self, requests: list[Request]) -> list[NetlinkError | None]:
        seqs = self._send(requests, NLM_F_ACK)
        wanted = set(seqs)
        results: dict[int, NetlinkError | None] = {}
        while len(results) < len(seqs):
            for kind, flags, seq, body in self._messages():
                if kind == NLMSG_ERROR and seq in wanted:
                    results[seq] = self._error(body, flags)
        return [results[s] for s in seqs]

    def call(self, request: Request) -> None:
        """One request; raise NetlinkError if the kernel refuses it."""
        err = self.batch([request])[0]
        if err is not None:
            raise err

    def dump(self, kind: int, body: bytes) -> list[bytes]:
        """A dump request's replies, retried when the kernel flags it interrupted."""
        for _ in range(_DUMP_RETRIES):
            seq = self._send([Request(kind, NLM_F_DUMP, body)], 0)[0]
            replies: list[bytes] = []
            interrupted = done = False
            while not done:
                for mtype, flags, mseq, mbody in self._messages():
                    if mseq != seq:
                        continue
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)  # on NLMSG_DONE too
                    if mtype == NLMSG_DONE:
                        done = True
                    elif mtype == NLMSG_ERROR:
                        err = self._error(mbody, flags)
                        if err is not None:
                            raise err
                        done = True
                    else:
                        replies.append(bytes(mbody))
            if not interrupted:
                return replies
        raise NetlinkError(_errno.EINTR, "netlink dump kept being interrupted")

    # ---- queries ---------------------------------------------------------------

    def links(self) -> list[Link]:
        return [Link(b) for b in self.dump(RTM_GETLINK, _IFINFO.pack(0, 0, 0, 0, 0))]

    def _get_link(self, body: bytes) -> Link | None:
        """One link, asked for by name or by index; None if there is none."""
        want = self._send([Request(RTM_GETLINK, 0, body)], 0)[0]
        while True:
            for kind, flags, seq, mbody in self._messages():
                if seq != want:
                    continue
                if kind == NLMSG_ERROR:
                    err = self._error(mbody, flags)
                    if err is None or err.errno in (_errno.ENODEV, _errno.ENOENT):
                        return None
                    raise err
                return Link(bytes(mbody))

    def link(self, name: str) -> Link | None:
        return self._get_link(
            _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr_str(IFLA_IFNAME, name)
        )

    def link_by_index(self, index: int) -> Link | None:
        return self._get_link(_IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    def addrs(self, index: int = 0, version: int = 0) -> list[Addr]:
        family = family_of(version) if version else socket.AF_UNSPEC
        found = [Addr(b) for b in self.dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, index))]
        return [a for a in found if not index or a.index == index]

    def routes(self, version: int, table: int = 0) -> list[RouteEntry]:
        """Unicast routes of one family, in ``table`` (0 = every table)."""
        body = _RTMSG.pack(family_of(version), 0, 0, 0, table if table < 256 else 0, 0, 0, 0, 0)
        if table >= 256:
            body += attr_u32(RTA_TABLE, table)
        found = [RouteEntry(b) for b in self.dump(RTM_GETROUTE, body)]
        return [r for r in found if r.type == RTN_UNICAST and (not table or r.table == table)]

    def rules(self, version: int) -> list[Rule]:
        body = _RTMSG.pack(family_of(version), 0, 0, 0, 0, 0, 0, 0, 0)
        return [Rule(b) for b in self.dump(RTM_GETRULE, body)]


@contextlib.contextmanager
def in_netns(path: str) -> Iterator[tuple[NetNS, Rtnl]]:
    """The namespace at ``path`` and a socket in it (CNIError code 3 if it is gone).

    The calling thread stays in its own namespace: only the socket lives there;
    ``with ns:`` enters it where a thread must (sysctls under /proc/sys/net).
    """
    ns = NetNS(path)
    try:
        with ns:
            sock = Rtnl()
        with sock:
            yield ns, sock
    finally:
        ns.close()
