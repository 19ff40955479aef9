"""mh-route: computed route sets and route-override's edits, chained after a main plugin.

``presets`` (see routesets.py) become routes via the interface's gateway of
each family (from prevResult, or ``gw``), optionally in a ``table`` with a
``metric``. route-override's ``flushroutes``, ``flushgateway``, ``delroutes``
and ``addroutes`` work as there (also from ``args.cni``), with ECMP and metrics
added. What ADD removed and added is recorded in a small state file, so DEL
puts back exactly what was there, and CHECK verifies exactly what was done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import dataclass, field

from pydantic import Field

from multihome.lib import rtnl, validate
from multihome.lib.errors import CHECK_FAILED, INVALID_CONFIG, KERNEL_REFUSED, CNIError
from multihome.lib.log import log
from multihome.lib.models import (
    Address,
    IPAddress,
    IPNetwork,
    Model,
    Network,
    StrictNetwork,
    parse,
)
from multihome.lib.netconf import NetConf
from multihome.lib.request import Request
from multihome.lib.result import Result, Route

from . import routesets

DEFAULT_STATE_DIR = "/var/lib/cni/multihome/mh-route"
# Keys a pod may also set through args.cni (route-override's, and ours).
ARGS_KEYS = (
    "flushroutes",
    "flushgateway",
    "delroutes",
    "addroutes",
    "skipcheck",
    "presets",
    "exclude",
    "gw",
    "table",
    "metric",
)


class AddRoute(Model):
    dst: Network
    gw: Address | list[Address] | None = None
    metric: int | None = Field(None, ge=0)
    table: int | None = Field(None, ge=1, le=0xFFFFFFFF)


class DelRoute(Model):
    dst: Network


class RouteConf(NetConf):
    presets: list[str] = []
    exclude: list[StrictNetwork] = []
    gw: Address | list[Address] | None = None
    table: int | None = Field(None, ge=1, le=0xFFFFFFFF)
    metric: int | None = Field(None, ge=0)
    flushroutes: bool = False
    flushgateway: bool = False
    delroutes: list[DelRoute] = []
    addroutes: list[AddRoute] = []
    skipcheck: bool = False
    state_dir: str = Field(DEFAULT_STATE_DIR, alias="stateDir")


def _as_list(value: IPAddress | list[IPAddress] | None) -> list[IPAddress]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def load(req: Request) -> RouteConf:
    """The config, with any ``args.cni`` keys taking precedence (as route-override)."""
    doc = dict(req.conf)
    doc.update({k: v for k, v in req.cni_conf_args.items() if k in ARGS_KEYS})
    conf = parse(RouteConf, doc)
    unknown = [p for p in conf.presets if p not in routesets.PRESETS]
    if unknown:
        raise CNIError(
            INVALID_CONFIG,
            f"unknown preset {unknown[0]!r}",
            f"known: {', '.join(routesets.PRESETS)}",
        )
    validate.store_path("stateDir", conf.state_dir)
    return conf


# ---- the plan (pure) -------------------------------------------------------------


@dataclass
class Plan:
    add: list[Route] = field(default_factory=list)
    flush_routes: bool = False
    flush_gateway: bool = False
    delete_dsts: list[IPNetwork] = field(default_factory=list)
    result: Result = field(default_factory=Result)


def iface_gateways(prev: Result, ifname: str) -> dict[int, list[IPAddress]]:
    """The gateways prevResult gives ``ifname``, by IP family."""
    index = next((i for i, iface in enumerate(prev.interfaces) if iface.name == ifname), None)
    out: dict[int, list[IPAddress]] = {}
    for ip in prev.ips:
        if ip.gateway is not None and (ip.interface is None or ip.interface == index):
            family = out.setdefault(ip.gateway.version, [])
            if ip.gateway not in family:
                family.append(ip.gateway)
    return out


def plan(conf: RouteConf, prev: Result, ifname: str) -> Plan:
    """Which routes to add and remove, and the result to return. No kernel access."""
    explicit = _as_list(conf.gw)
    gws: dict[int, list[IPAddress]] = {}
    if explicit:
        for gw in explicit:
            gws.setdefault(gw.version, []).append(gw)
    else:
        gws = iface_gateways(prev, ifname)
    add: list[Route] = []
    for net in routesets.compute(conf.presets, conf.exclude):
        if net.version not in gws:
            raise CNIError(
                INVALID_CONFIG,
                f"no IPv{net.version} gateway for the presets on {ifname}",
                "prevResult has none for this interface; set gw",
            )
        add.extend(
            Route(dst=net, gw=gw, table=conf.table, priority=conf.metric) for gw in gws[net.version]
        )
    for extra in conf.addroutes:
        targets: list[IPAddress | None] = [*_as_list(extra.gw)] or [None]
        add.extend(
            Route(dst=extra.dst, gw=gw, table=extra.table, priority=extra.metric) for gw in targets
        )
    result = prev.model_copy(deep=True)
    delete_dsts = [d.dst for d in conf.delroutes if any(r.dst == d.dst for r in prev.routes)]
    if conf.flushroutes:
        result.routes = []
    else:
        result.routes = [r for r in result.routes if r.dst not in delete_dsts]
    if conf.flushgateway:
        result.routes = [r for r in result.routes if r.dst.prefixlen != 0]
        for ip in result.ips:
            ip.gateway = None
    result.routes.extend(add)
    return Plan(
        add=add,
        flush_routes=conf.flushroutes,
        flush_gateway=conf.flushgateway,
        delete_dsts=delete_dsts,
        result=result,
    )


# ---- the kernel edge ---------------------------------------------------------------


def _victims(sock: rtnl.Rtnl, plan_: Plan, index: int) -> list[rtnl.RouteEntry]:
    main = sock.routes(4, rtnl.RT_TABLE_MAIN) + sock.routes(6, rtnl.RT_TABLE_MAIN)
    out = []
    for r in main:
        on_iface = r.oif == index
        flushable = (
            on_iface
            and r.gw is not None
            and r.scope != rtnl.SCOPE_LINK
            and not r.dst.network_address.is_link_local
        )
        if (
            (plan_.flush_routes and flushable)
            or (on_iface and r.dst in plan_.delete_dsts)
            or (plan_.flush_gateway and r.dst.prefixlen == 0)
        ):
            out.append(r)
    return out


def _specs(routes: list[Route], index: int) -> list[rtnl.RouteSpec]:
    """One kernel route per (dst, table, metric); several gateways make it ECMP."""
    groups: dict[tuple[object, int, int], list[Route]] = {}
    for route in routes:
        key = (route.dst, route.table or rtnl.RT_TABLE_MAIN, route.priority or 0)
        groups.setdefault(key, []).append(route)
    out = []
    for (_, table, priority), group in groups.items():
        gws = tuple(dict.fromkeys(r.gw for r in group if r.gw is not None))
        multi = gws if len(gws) > 1 else ()
        out.append(
            rtnl.RouteSpec(
                group[0].dst,
                gw=None if multi else group[0].gw,
                oif=index,
                table=table,
                priority=priority,
                nexthops=multi,
            )
        )
    return out


def _names(sock: rtnl.Rtnl) -> dict[int, str]:
    return {link.index: link.name for link in sock.links()}


def apply(sock: rtnl.Rtnl, plan_: Plan, ifname: str) -> dict[str, list[dict[str, object]]]:
    """Remove, then add, in two batches; undo everything if any step fails."""
    link = sock.link(ifname)
    if link is None:
        raise CNIError(INVALID_CONFIG, f"interface {ifname} not found in the pod")
    names = _names(sock)
    victims = [rtnl.RouteSpec.from_entry(r) for r in _victims(sock, plan_, link.index)]
    removed: list[rtnl.RouteSpec] = []
    added: list[rtnl.RouteSpec] = []
    try:
        for spec, err in zip(
            victims, sock.batch([rtnl.route_delete(v) for v in victims]), strict=True
        ):
            if err is None:
                removed.append(spec)
        specs = _specs(plan_.add, link.index)
        errors = sock.batch([rtnl.route_add(s) for s in specs])
        added = [s for s, e in zip(specs, errors, strict=True) if e is None]
        failed = next(((s, e) for s, e in zip(specs, errors, strict=True) if e), None)
        if failed is not None:
            spec, err = failed
            hint = ""
            if err.errno == errno.ENETUNREACH:
                hint = (
                    f"the gateway is not on a route of {ifname} in that table; a chained "
                    "mh-sbr removes the subnet route from main unless addSourceHints is set"
                )
            raise CNIError(
                KERNEL_REFUSED,
                f"adding route {spec.dst} via {spec.gw or ifname}: {err.strerror}",
                hint,
            )
    except BaseException:
        undo(sock, added, removed)
        raise
    return {
        "added": [s.to_dict(ifname) for s in added],
        "removed": [s.to_dict(names.get(s.oif, "")) for s in removed],
    }


def undo(sock: rtnl.Rtnl, added: list[rtnl.RouteSpec], removed: list[rtnl.RouteSpec]) -> None:
    """Delete what was added, put back what was removed; missing pieces are fine."""
    for err in sock.batch([rtnl.route_delete(s) for s in added]):
        if err is not None and err.errno not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
            log(f"undo: deleting a route: {err.strerror}")
    for err in sock.batch([rtnl.route_add(s) for s in removed]):
        if err is not None and err.errno not in (errno.EEXIST, errno.ENODEV, errno.ENETUNREACH):
            log(f"undo: restoring a route: {err.strerror}")


def _resolve(
    sock: rtnl.Rtnl, state: dict[str, list[dict[str, object]]]
) -> tuple[list[rtnl.RouteSpec], list[rtnl.RouteSpec]]:
    """A state record's added and removed routes, with today's interface indexes
    (routes on interfaces that are gone are left out)."""
    indexes = {name: index for index, name in _names(sock).items()}

    def specs(key: str) -> list[rtnl.RouteSpec]:
        return [
            rtnl.RouteSpec.from_dict(d, indexes[str(d["dev"])])
            for d in state.get(key, [])
            if str(d.get("dev")) in indexes
        ]

    return specs("added"), specs("removed")


# ---- the state file ----------------------------------------------------------------


def state_path(conf: RouteConf, req: Request) -> str:
    # network, container ID and ifname are validated names: safe as path parts
    return os.path.join(conf.state_dir, req.network, f"{req.container_id}-{req.ifname}.json")


def write_state(path: str, state: dict[str, list[dict[str, object]]]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    os.rename(tmp, path)


def read_state(path: str) -> dict[str, list[dict[str, object]]] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as fh:
        try:
            doc = json.load(fh)
        except ValueError:
            log(f"ignoring a corrupt state file {path}")
            return None
    return doc if isinstance(doc, dict) else None


# ---- the plugin ---------------------------------------------------------------------


class RoutePlugin:
    def add(self, req: Request) -> Result:
        conf = load(req)
        the_plan = plan(conf, req.chained_prev_result(), req.ifname)
        path = state_path(conf, req)
        with rtnl.in_netns(req.netns) as (_, sock):
            state = apply(sock, the_plan, req.ifname)
            try:
                write_state(path, state)
            except OSError as exc:
                undo(sock, *_resolve(sock, state))
                raise CNIError(
                    KERNEL_REFUSED, f"cannot record state in {path}: {exc.strerror}"
                ) from None
        return the_plan.result

    def delete(self, req: Request) -> None:
        conf = parse(RouteConf, req.conf)  # JSON only
        path = state_path(conf, req)
        state = read_state(path)
        if state is None:
            return
        if req.netns:
            try:
                with rtnl.in_netns(req.netns) as (_, sock):
                    undo(sock, *_resolve(sock, state))
            except CNIError:
                pass  # the namespace is gone, and the routes with it
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def check(self, req: Request) -> None:
        conf = load(req)
        req.chained_prev_result()
        if conf.skipcheck:
            return
        state = read_state(state_path(conf, req))
        if state is None:
            raise CNIError(CHECK_FAILED, "mh-route has no record of an ADD for this attachment")
        with rtnl.in_netns(req.netns) as (_, sock):
            tables: dict[tuple[object, ...], set[int]] = {}
            for r in (r for v in (4, 6) for r in sock.routes(v)):
                tables.setdefault(_route_key(r), set()).add(r.table)
            added, removed = _resolve(sock, state)
            for spec in added:
                found = tables.get(_route_key(spec), set())
                # a later chained mh-sbr may have moved main-table routes to its own table
                if not found or (spec.table != rtnl.RT_TABLE_MAIN and spec.table not in found):
                    raise CNIError(CHECK_FAILED, f"route {spec.dst} via {spec.gw} is missing")
            for spec in removed:
                if spec.table in tables.get(_route_key(spec), set()):
                    raise CNIError(CHECK_FAILED, f"removed route {spec.dst} is back")

    def status(self, req: Request) -> None:
        load(req)

    def gc(self, req: Request) -> None:
        valid = req.valid_attachments()
        if valid is None:
            return
        try:
            conf = parse(RouteConf, req.conf)
        except CNIError:
            return
        keep = {f"{cid}-{ifname}.json" for cid, ifname in valid}
        directory = os.path.join(conf.state_dir, req.network)
        try:
            with os.scandir(directory) as entries:
                stale = [e.name for e in entries if e.name.endswith(".json") and e.name not in keep]
        except FileNotFoundError:
            return
        for name in stale:  # their pods are gone: nothing left to restore
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def _route_key(r: rtnl.RouteEntry | rtnl.RouteSpec) -> tuple[object, ...]:
    """What identifies a route apart from its table."""
    # The kernel gives IPv6 routes added without a metric the metric 1024.
    priority = r.priority or (rtnl.IP6_DEFAULT_METRIC if r.dst.version == 6 else 0)
    return (r.dst, r.paths(), priority)


PLUGIN = RoutePlugin()
