"""mh-sbr: source-based routing, chained after a main plugin.

For each pod address of ``CNI_IFNAME``: a rule ``from <ip>/32`` (or /128)
pointing at a table of its own (the first unused from 100, or ``table``);
the interface's routes copied into that table; and a default route via the
gateway from prevResult or the ``gateways`` option (the reference makes none
when static IPAM got ``ips`` without a gateway). The main table then loses
the interface's routes, as with the reference, or keeps its link routes with
``src`` hints under ``addSourceHints``.

The plan is a pure function of the addresses, the main table's routes and
the tables in use; applying and undoing it is the kernel edge. Both run
under a lock on the pod's namespace, so two interfaces of one pod never get
the same table.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pydantic import Field, field_validator

from multihome.lib import crashpoint, ifconfig, rtnl
from multihome.lib.errors import CHECK_FAILED, INVALID_CONFIG, CNIError
from multihome.lib.log import log
from multihome.lib.models import Address, IPAddress, IPInterface, IPNetwork, parse
from multihome.lib.netconf import NetConf
from multihome.lib.netns import NetNS
from multihome.lib.request import Request
from multihome.lib.result import Result, Route

FIRST_TABLE = 100
LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/64")
_RESERVED_TABLES = {0, 253, 254, 255}


class SbrConf(NetConf):
    table: int | None = Field(None, ge=1, le=0xFFFFFFFF)
    gateways: list[Address] = []
    add_source_hints: bool = Field(False, alias="addSourceHints")

    @field_validator("table")
    @classmethod
    def _table(cls, value: int | None) -> int | None:
        if value in _RESERVED_TABLES:
            raise ValueError("tables 253 (default), 254 (main) and 255 (local) are the kernel's")
        return value

    @field_validator("gateways")
    @classmethod
    def _one_per_family(cls, value: list[IPAddress]) -> list[IPAddress]:
        if len({gw.version for gw in value}) != len(value):
            raise ValueError("at most one IPv4 and one IPv6 gateway")
        return value


# ---- the plan (pure) -----------------------------------------------------------


@dataclass
class SbrPlan:
    tables: dict[IPInterface, int] = field(default_factory=dict)
    rules: list[tuple[IPNetwork, int]] = field(default_factory=list)
    table_routes: list[rtnl.RouteSpec] = field(default_factory=list)
    main_deletes: list[rtnl.RouteSpec] = field(default_factory=list)
    main_hints: list[rtnl.RouteSpec] = field(default_factory=list)


def host_net(ip: IPInterface) -> IPNetwork:
    return ipaddress.ip_network(f"{ip.ip}/{ip.max_prefixlen}")


def _belongs(route: rtnl.RouteSpec, ip: IPInterface) -> bool:
    """The reference's rule: src or gateway in the address's subnet, or neither set."""
    if route.dst.version != ip.version:
        return False
    if route.prefsrc is None and route.gw is None:
        return True
    return any(x is not None and x in ip.network for x in (route.prefsrc, route.gw))


def _next_table(used: set[int], start: int) -> int:
    table = start
    while table in used or table in _RESERVED_TABLES:
        table += 1
    return table


def plan(
    ips: list[tuple[IPInterface, IPAddress | None]],
    main: list[rtnl.RouteSpec],
    used_tables: set[int],
    conf: SbrConf,
    oif: int,
) -> SbrPlan:
    """Rules, table contents and main-table edits for the interface ``oif``."""
    out = SbrPlan()
    used = set(used_tables)
    gateways = {gw.version: gw for gw in conf.gateways}
    for ip, prev_gw in ips:
        table = conf.table or _next_table(used, FIRST_TABLE)
        used.add(table)
        out.tables[ip] = table
        out.rules.append((host_net(ip), table))
        copies = [r for r in main if _belongs(r, ip)]
        if ip.version == 6 and not any(r.dst == LINK_LOCAL_V6 for r in copies):
            # fe80::/64 appears with the link-local address: add it ourselves rather
            # than depend on when the kernel makes it (reference issue #1096)
            copies.append(rtnl.RouteSpec(LINK_LOCAL_V6, oif=oif, scope=rtnl.SCOPE_LINK))
        for r in copies:
            out.table_routes.append(
                rtnl.RouteSpec(
                    r.dst,
                    gw=r.gw,
                    oif=oif,
                    table=table,
                    priority=r.priority,
                    scope=r.scope,
                    prefsrc=r.prefsrc,
                    mtu=r.mtu,
                    advmss=r.advmss,
                    nexthops=r.nexthops,
                )
            )
        gw = gateways.get(ip.version) or prev_gw
        if gw is not None and not any(
            r.dst.prefixlen == 0 and r.table == table for r in out.table_routes
        ):
            zero = ipaddress.ip_network("0.0.0.0/0" if ip.version == 4 else "::/0")
            out.table_routes.append(rtnl.RouteSpec(zero, gw=gw, oif=oif, table=table))
    for r in main:
        if r.dst == LINK_LOCAL_V6:
            continue  # link-local keeps working in main too
        link_route = r.gw is None and not r.nexthops  # (IPv6 routes carry no link scope)
        if conf.add_source_hints and link_route:
            owner = next(
                (ip for ip, _ in ips if r.dst.version == ip.version and r.dst.overlaps(ip.network)),
                None,
            )
            if owner is not None:
                out.main_hints.append(
                    rtnl.RouteSpec(
                        r.dst, oif=oif, priority=r.priority, scope=rtnl.SCOPE_LINK, prefsrc=owner.ip
                    )
                )
            continue
        out.main_deletes.append(r)
    return out


def result_for(prev: Result, the_plan: SbrPlan, version: str) -> Result:
    """prevResult, with the moved routes and the new defaults scoped to their tables (1.1)."""
    if version != "1.1.0":
        return prev
    result = prev.model_copy(deep=True)
    by_family = {ip.version: t for ip, t in the_plan.tables.items()}
    routes: list[Route] = []
    for route in result.routes:
        table = by_family.get(route.dst.version)
        ours = route.gw is None or any(route.gw in ip.network for ip in the_plan.tables)
        if table is not None and ours and route.table is None:
            route.table = table
        routes.append(route)
    for spec in the_plan.table_routes:
        if (
            spec.dst.prefixlen == 0
            and spec.gw is not None
            and not any(r.dst == spec.dst and r.table == spec.table for r in routes)
        ):
            routes.append(Route(dst=spec.dst, gw=spec.gw, table=spec.table))
    result.routes = routes
    return result


# ---- the kernel edge -----------------------------------------------------------------


@contextlib.contextmanager
def locked(ns: NetNS) -> Iterator[None]:
    """Serialise sbr runs in one pod: flock on the namespace's own inode."""
    fcntl.flock(ns.fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(ns.fd, fcntl.LOCK_UN)


def pod_ips(prev: Result, ifname: str) -> list[tuple[IPInterface, IPAddress | None]]:
    """prevResult's addresses of ``ifname`` (those with no interface index count too)."""
    index = next((i for i, iface in enumerate(prev.interfaces) if iface.name == ifname), None)
    return [
        (ip.address, ip.gateway) for ip in prev.ips if ip.interface is None or ip.interface == index
    ]


_SHARED_TABLES = {rtnl.RT_TABLE_MAIN, 255, 253}  # main, local, default: never one's own


def _via(route: rtnl.RouteEntry, oif: int) -> bool:
    return oif in {o for _, o in route.paths()}


def survey(sock: rtnl.Rtnl, oif: int) -> tuple[list[rtnl.RouteSpec], set[int]]:
    """The main table's routes through ``oif``, and every table in use (by a rule or a
    route), from one route dump per family."""
    used = {rule.table for v in (4, 6) for rule in sock.rules(v)}
    main: list[rtnl.RouteSpec] = []
    for v in (4, 6):
        for r in sock.routes(v):
            used.add(r.table)
            if r.table == rtnl.RT_TABLE_MAIN and _via(r, oif):
                main.append(rtnl.RouteSpec.from_entry(r))
    return main, used


def _batch(
    sock: rtnl.Rtnl, requests: list[rtnl.Request], done: Callable[[], list[bool]]
) -> list[rtnl.NetlinkError | None]:
    """``sock.batch``; if the socket itself fails part-way, each request's outcome
    as the kernel shows it (``done`` reads it back), the ones not done as failed."""
    try:
        return sock.batch(requests)
    except OSError as exc:
        lost = rtnl.NetlinkError(exc.errno or errno.EIO, f"batch cut short: {exc.strerror}")
        return [None if ok else lost for ok in done()]


def _present(sock: rtnl.Rtnl, specs: list[rtnl.RouteSpec]) -> list[bool]:
    have = {rtnl.identity(r) for v in (4, 6) for r in sock.routes(v)}
    return [rtnl.identity(s) in have for s in specs]


def _rules_present(sock: rtnl.Rtnl, rules: list[tuple[IPNetwork, int]]) -> list[bool]:
    have = {(r.src, r.table) for v in (4, 6) for r in sock.rules(v)}
    return [rule in have for rule in rules]


def apply(sock: rtnl.Rtnl, the_plan: SbrPlan) -> None:
    """Table routes, then rules, then main-table edits; undone on any failure."""
    done_routes: list[rtnl.RouteSpec] = []
    done_rules: list[tuple[IPNetwork, int]] = []
    deleted: list[rtnl.RouteSpec] = []
    try:
        errors = _batch(
            sock,
            [rtnl.route_replace(r) for r in the_plan.table_routes],
            lambda: _present(sock, the_plan.table_routes),
        )
        done_routes = [r for r, e in zip(the_plan.table_routes, errors, strict=True) if e is None]
        crashpoint.here("sbr.table-routes")
        ifconfig.raise_first(
            errors, [f"route {r.dst} in table {r.table}" for r in the_plan.table_routes]
        )
        errors = _batch(
            sock,
            [rtnl.rule_request(True, s, t) for s, t in the_plan.rules],
            lambda: _rules_present(sock, the_plan.rules),
        )
        done_rules = [x for x, e in zip(the_plan.rules, errors, strict=True) if e is None]
        crashpoint.here("sbr.rules")
        ifconfig.raise_first(errors, [f"rule from {s} lookup {t}" for s, t in the_plan.rules])
        errors = _batch(
            sock,
            [rtnl.route_delete(r) for r in the_plan.main_deletes],
            lambda: [not x for x in _present(sock, the_plan.main_deletes)],
        )
        deleted = [r for r, e in zip(the_plan.main_deletes, errors, strict=True) if e is None]
        crashpoint.here("sbr.main-deletes")
        errors = sock.batch([rtnl.route_replace(r) for r in the_plan.main_hints])
        crashpoint.here("sbr.main-hints")
        ifconfig.raise_first(
            errors, [f"route {r.dst} src {r.prefsrc}" for r in the_plan.main_hints]
        )
    except BaseException:
        sock.batch([rtnl.rule_request(False, s, t) for s, t in done_rules])
        sock.batch([rtnl.route_delete(r) for r in done_routes])
        sock.batch([rtnl.route_add(r) for r in deleted])
        raise


def remove(sock: rtnl.Rtnl, ips: list[IPInterface], oif: int | None) -> None:
    """DEL: the rules of these addresses, and this interface's routes in their tables.

    A rule whose table routes through another interface is that interface's, even
    from the same address (two networks of a pod may lease from overlapping ranges):
    it stays. (The reference's sbr removes every rule from the address.)"""
    tables: set[int] = set()
    wanted = {host_net(ip) for ip in ips}
    rules = [(r.src, r.table) for v in (4, 6) for r in sock.rules(v) if r.src in wanted]
    if not rules:
        return  # (a repeated DEL: no route dump)
    routes = {v: sock.routes(v) for v in (4, 6)}
    others = {
        r.table
        for v in (4, 6)
        for r in routes[v]
        if r.table not in _SHARED_TABLES and any(o != oif for _, o in r.paths())
    }
    for src, table in rules:
        if table not in others:
            tables.add(table)
            err = sock.batch([rtnl.rule_request(False, src, table)])[0]
            crashpoint.here("sbr.rule-removed")
            if err is not None and err.errno not in (errno.ENOENT, errno.ESRCH):
                log(f"DEL: rule from {src}: {err.strerror}")
    if oif is None or not tables:
        return  # (no link: the kernel dropped its routes with it)
    for version in (4, 6):
        mine = [
            rtnl.RouteSpec.from_entry(r)
            for r in routes[version]
            if r.table in tables and _via(r, oif)
        ]
        sock.batch([rtnl.route_delete(r) for r in mine])


# ---- the plugin ---------------------------------------------------------------------------


class SbrPlugin:
    def add(self, req: Request) -> Result:
        conf = parse(SbrConf, req.conf)
        prev = req.chained_prev_result()
        ips = pod_ips(prev, req.ifname)
        if not ips:
            raise CNIError(INVALID_CONFIG, f"prevResult has no address for {req.ifname}")
        with rtnl.in_netns(req.netns) as (ns, sock), locked(ns):
            link = sock.link(req.ifname)
            if link is None:
                raise CNIError(INVALID_CONFIG, f"interface {req.ifname} not found in the pod")
            main, used = survey(sock, link.index)
            the_plan = plan(ips, main, used, conf, link.index)
            apply(sock, the_plan)
        return result_for(prev, the_plan, req.cni_version)

    def delete(self, req: Request) -> None:
        parse(SbrConf, req.conf)  # JSON only
        if not req.netns:
            return
        try:
            with rtnl.in_netns(req.netns) as (ns, sock), locked(ns):
                link = sock.link(req.ifname)
                prev = req.prev_result
                ips = [ip for ip, _ in pod_ips(prev, req.ifname)] if prev else []
                if not ips and link is not None:  # no cached result: what the link has now
                    ips = [
                        a.interface
                        for a in sock.addrs(link.index)
                        if not a.interface.ip.is_link_local
                    ]
                remove(sock, ips, link.index if link else None)
        except CNIError as exc:
            if exc.code not in (3, 8):  # the namespace is gone, and the rules with it
                raise

    def check(self, req: Request) -> None:
        conf = parse(SbrConf, req.conf)
        prev = req.chained_prev_result()
        ips = pod_ips(prev, req.ifname)
        gateways = {gw.version: gw for gw in conf.gateways}
        with rtnl.in_netns(req.netns) as (_, sock):
            link = sock.link(req.ifname)
            if link is None:
                raise CNIError(CHECK_FAILED, f"interface {req.ifname} is missing")
            rules = {r.src: r.table for v in (4, 6) for r in sock.rules(v)}
            for ip, gw in ips:
                table = rules.get(host_net(ip))
                if table is None:
                    raise CNIError(CHECK_FAILED, f"no rule from {ip.ip}")
                present = sock.routes(ip.version, table)
                has_subnet = ip.network.prefixlen < ip.max_prefixlen
                if has_subnet and not any(
                    r.dst.overlaps(ip.network) and r.gw is None for r in present
                ):
                    raise CNIError(CHECK_FAILED, f"table {table} lacks the route to {ip.network}")
                want = gateways.get(ip.version) or gw
                if want is not None and not any(
                    r.dst.prefixlen == 0 and (want, link.index) in r.paths() for r in present
                ):
                    raise CNIError(CHECK_FAILED, f"table {table} lacks the default via {want}")

    def status(self, req: Request) -> None:
        parse(SbrConf, req.conf)

    def gc(self, req: Request) -> None:
        """Rules and tables live in the pod's namespace and go with it."""


PLUGIN = SbrPlugin()
