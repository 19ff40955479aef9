"""Put a Result on an interface, and check that the kernel still matches it.

Like the reference's ``ipam.ConfigureIface``: the first gateway of each family
is the gateway of every route that has none; addresses and routes are sent
to the kernel in one batch. Unlike it, IPv6 does not stall the pod: by
default addresses use optimistic DAD (usable at once, duplicates still
detected) or, where the kernel lacks it, ``IFA_F_NODAD``. ``dad="wait"`` keeps
the reference's behaviour: wait until no address is tentative, fail on a
DAD failure.

Run the sysctl helpers with the calling thread inside the pod's namespace:
``/proc/sys/net`` shows the namespace of the thread that opens it.
"""

from __future__ import annotations

import ipaddress
import os
import time

from . import crashpoint, rtnl
from .errors import CHECK_FAILED, KERNEL_REFUSED, CNIError
from .models import IPAddress
from .result import Result, Route

DAD_MODES = ("optimistic", "nodad", "wait")
DAD_TIMEOUT = 5.0
_SYS = "/proc/sys/net"


def write_sysctl(path: str, value: str) -> bool:
    """Write one sysctl under /proc/sys/net; False if the kernel has no such knob."""
    try:
        fd = os.open(f"{_SYS}/{path}", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    return True


def prepare_sysctls(ifname: str, result: Result, dad: str) -> int:
    """Gratuitous ARP/NA on up, IPv6 enabled if needed; returns the IPv6 address flags.

    Optimistic DAD needs both the interface's ``optimistic_dad`` sysctl and the
    IFA_F_OPTIMISTIC flag on each address we add (the sysctl alone covers only
    addresses the kernel makes, such as the link-local one).
    """
    write_sysctl(f"ipv4/conf/{ifname}/arp_notify", "1")
    if not os.path.exists(f"{_SYS}/ipv6/conf/{ifname}"):
        return 0
    write_sysctl(f"ipv6/conf/{ifname}/ndisc_notify", "1")
    if any(ip.address.version == 6 for ip in result.ips):
        for name in ("lo", ifname):
            write_sysctl(f"ipv6/conf/{name}/disable_ipv6", "0")
        write_sysctl(f"ipv6/conf/{ifname}/keep_addr_on_down", "1")
    if dad == "optimistic":
        if write_sysctl(f"ipv6/conf/{ifname}/optimistic_dad", "1"):
            write_sysctl(f"ipv6/conf/{ifname}/use_optimistic", "1")
            return rtnl.IFA_F_OPTIMISTIC
        return rtnl.IFA_F_NODAD  # a kernel without CONFIG_IPV6_OPTIMISTIC_DAD
    return rtnl.IFA_F_NODAD if dad == "nodad" else 0


def gateways(result: Result) -> dict[int, IPAddress]:
    """The first gateway of each IP family in ``result``."""
    out: dict[int, IPAddress] = {}
    for ip in result.ips:
        if ip.gateway is not None:
            out.setdefault(ip.gateway.version, ip.gateway)
    return out


def _gateway(route: Route, default_gw: dict[int, IPAddress]) -> IPAddress | None:
    """A route's own gateway, else its family's gateway from the result's IPs."""
    return route.gw if route.gw is not None else default_gw.get(route.dst.version)


def route_spec(route: Route, oif: int, default_gw: dict[int, IPAddress]) -> rtnl.RouteSpec:
    return rtnl.RouteSpec(
        route.dst,
        gw=_gateway(route, default_gw),
        oif=oif,
        table=route.table or rtnl.RT_TABLE_MAIN,
        priority=route.priority or 0,
        scope=route.scope,
        mtu=route.mtu or 0,
        advmss=route.advmss or 0,
    )


def raise_first(errors: list[rtnl.NetlinkError | None], what: list[str]) -> None:
    """Raise a batch's first failure as code 102, naming what it was."""
    for err, label in zip(errors, what, strict=True):
        if err is not None:
            raise CNIError(KERNEL_REFUSED, f"{label}: {err.strerror}")


def configure(sock: rtnl.Rtnl, index: int, ifname: str, result: Result, dad: str) -> None:
    """Addresses, link up, then routes, as one batch each; thread inside the netns."""
    v6_flags = prepare_sysctls(ifname, result, dad)
    requests, what = [], []
    for ip in result.ips:
        flags = v6_flags if ip.address.version == 6 else 0
        requests.append(rtnl.addr_add(index, ip.address, flags))
        what.append(f"adding address {ip.address} to {ifname}")
    requests.append(rtnl.link_set(index, up=True))
    what.append(f"setting {ifname} up")
    raise_first(sock.batch(requests), what)
    crashpoint.here("ifconfig.addresses")
    install_routes(sock, index, ifname, result.routes, gateways(result))
    if dad == "wait" and any(ip.address.version == 6 for ip in result.ips):
        settle(sock, index, ifname)


def install_routes(
    sock: rtnl.Rtnl, index: int, ifname: str, routes: list[Route], default_gw: dict[int, IPAddress]
) -> None:
    """Routes via ``ifname``; a repeated destination becomes an extra path (ECMP).

    As the reference's ``ConfigureIface``, without NLM_F_EXCL: a default route via
    ``ifname`` in a pod whose eth0 has one lands ahead of eth0's. It goes with the
    link on DEL, and eth0's stays.
    """
    seen: set[tuple[object, ...]] = set()
    requests, what = [], []
    for route in routes:
        spec = route_spec(route, index, default_gw)
        requests.append(rtnl.route_add(spec, append=spec.key() in seen, exclusive=False))
        seen.add(spec.key())
        what.append(f"adding route {route.dst} via {spec.gw or ifname}")
    raise_first(sock.batch(requests), what)
    crashpoint.here("ifconfig.routes")


def settle(sock: rtnl.Rtnl, index: int, ifname: str, timeout: float = DAD_TIMEOUT) -> None:
    """The reference's behaviour: wait for DAD on every IPv6 address of the link."""
    deadline = time.monotonic() + timeout
    while True:
        addrs = sock.addrs(index, 6)
        failed = [a for a in addrs if a.flags & rtnl.IFA_F_DADFAILED]
        if failed:
            raise CNIError(
                KERNEL_REFUSED, f"duplicate address detected on {ifname}: {failed[0].interface.ip}"
            )
        if not any(a.flags & rtnl.IFA_F_TENTATIVE for a in addrs):
            return
        if time.monotonic() >= deadline:
            link = sock.link(ifname)
            if link is None or link.operstate != rtnl.OPER_UP:
                return  # as the reference since v1.9: no carrier, nothing to wait for
            raise CNIError(
                KERNEL_REFUSED, f"IPv6 addresses on {ifname} still tentative after {timeout:g}s"
            )
        time.sleep(0.05)


# ---- CHECK -------------------------------------------------------------------


def check_addresses(
    sock: rtnl.Rtnl, index: int, ifname: str, result: Result, iface_index: int
) -> None:
    present = {a.interface for a in sock.addrs(index)}
    for ip in result.ips:
        if ip.interface not in (None, iface_index):
            continue
        if ip.address not in present:
            raise CNIError(CHECK_FAILED, f"address {ip.address} is missing on {ifname}")


def _ours(route: Route, subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return route.gw is None or any(route.gw in net for net in subnets)


def check_routes(sock: rtnl.Rtnl, index: int, ifname: str, result: Result) -> None:
    """Every route of ``result`` through this interface exists, in whichever table.

    A later chained plugin (source-based routing, route sets) may have moved
    routes out of the main table; a 1.1 result says which table, and older
    results are matched in any table.
    """
    subnets = [ip.address.network for ip in result.ips]
    default_gw = gateways(result)
    for version in (4, 6):
        wanted = [r for r in result.routes if r.dst.version == version and _ours(r, subnets)]
        if not wanted:
            continue
        present = sock.routes(version)
        for route in wanted:
            gw = _gateway(route, default_gw)
            if not any(
                r.dst == route.dst
                and (gw, index) in r.paths()  # a single path, or one of an ECMP route's
                and (route.table is None or r.table == route.table)
                for r in present
            ):
                raise CNIError(CHECK_FAILED, f"route {route.dst} via {gw or ifname} is missing")
