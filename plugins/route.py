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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from multihome.lib import crashpoint, rtnl, validate
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
from .sbr import locked  # one lock per pod for every plugin that edits its routes

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

# {"container", "ifname", "added": [route, ...], "removed": [route, ...]}, each route
# in RouteSpec.to_dict's form
State = dict[str, Any]
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV)


def _all_routes(sock: rtnl.Rtnl) -> list[rtnl.RouteEntry]:
    return sock.routes(4) + sock.routes(6)


def _metric(dst: IPNetwork, priority: int | None) -> int:
    # The kernel gives IPv6 routes added without a metric the metric 1024.
    return priority or (rtnl.IP6_DEFAULT_METRIC if dst.version == 6 else 0)


def _victims(routes: list[rtnl.RouteEntry], plan_: Plan, index: int) -> list[rtnl.RouteEntry]:
    # A planned main-table route takes the place of another interface's route with the
    # same destination and metric (e.g. default-ipv6's ::/0 in a pod whose eth0 has an
    # IPv6 default): that one is removed, recorded, and put back by DEL.
    main = (None, rtnl.RT_TABLE_MAIN)
    taken = {(a.dst, _metric(a.dst, a.priority)) for a in plan_.add if a.table in main}
    out = []
    for r in routes:
        if r.table != rtnl.RT_TABLE_MAIN:
            continue
        on_iface = r.oif == index
        if not on_iface and (r.dst, _metric(r.dst, r.priority)) in taken:
            out.append(r)
            continue
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
        multi = tuple(rtnl.NextHop(gw) for gw in gws) if len(gws) > 1 else ()
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


def describe(spec: rtnl.RouteSpec, names: Mapping[int, str]) -> str:
    """A route in ``ip route``'s words: ``0.0.0.0/0 via 10.0.0.1 dev eth0 onlink``."""

    def path(gw: object, oif: int, flags: int) -> str:
        words = [f"via {gw}"] if gw is not None else []
        words.append(f"dev {names.get(oif, oif)}")
        if flags & rtnl.RTNH_F_ONLINK:
            words.append("onlink")
        return " ".join(words)

    if spec.nexthops:
        via = " ".join(f"nexthop {path(h.gw, h.oif or spec.oif, h.flags)}" for h in spec.nexthops)
    else:
        via = path(spec.gw, spec.oif, spec.flags)
    table = f" table {spec.table}" if spec.table != rtnl.RT_TABLE_MAIN else ""
    metric = f" metric {spec.priority}" if spec.priority else ""
    return f"{spec.dst} {via}{table}{metric}"


def _raise_first(
    specs: list[rtnl.RouteSpec],
    errors: list[rtnl.NetlinkError | None],
    doing: str,
    names: Mapping[int, str],
    ifname: str,
) -> None:
    for spec, err in zip(specs, errors, strict=True):
        if err is None:
            continue
        hint = ""
        if doing == "adding" and err.errno == errno.ENETUNREACH:
            hint = (
                f"the gateway is not on a route of {ifname} in that table; a chained "
                "mh-sbr removes the subnet route from main unless addSourceHints is set"
            )
        raise CNIError(
            KERNEL_REFUSED, f"{doing} route {describe(spec, names)}: {err.strerror}", hint
        )


def apply(sock: rtnl.Rtnl, plan_: Plan, ifname: str, container: str = "") -> State:
    """Remove, then add, in two batches; on any failure, undo what the kernel shows done."""
    link = sock.link(ifname)
    if link is None:
        raise CNIError(INVALID_CONFIG, f"interface {ifname} not found in the pod")
    names = _names(sock)
    before = _all_routes(sock)
    victims = [rtnl.RouteSpec.from_entry(r) for r in _victims(before, plan_, link.index)]
    specs = _specs(plan_.add, link.index)
    try:
        errors = sock.batch([rtnl.route_delete(v) for v in victims])
        crashpoint.here("route.removed")
        _raise_first(victims, errors, "removing", names, ifname)
        errors = sock.batch([rtnl.route_add(s) for s in specs])
        crashpoint.here("route.added")
        _raise_first(specs, errors, "adding", names, ifname)
    except OSError as exc:  # the socket's own failure: which requests were done is unknown
        _roll_back(sock, before, victims, specs, names)
        raise CNIError(KERNEL_REFUSED, f"route batch failed: {exc.strerror}") from None
    except BaseException:
        _roll_back(sock, before, victims, specs, names)
        raise
    return {
        "container": container,
        "ifname": ifname,
        "added": [s.to_dict(names) for s in specs],
        "removed": [s.to_dict(names) for s in victims],
    }


def _roll_back(
    sock: rtnl.Rtnl,
    before: list[rtnl.RouteEntry],
    victims: list[rtnl.RouteSpec],
    specs: list[rtnl.RouteSpec],
    names: Mapping[int, str],
) -> None:
    """Undo a failed ADD from the routes read back: a batch cut short leaves only the
    kernel knowing which of its requests were done."""
    try:
        now = {rtnl.identity(r) for r in _all_routes(sock)}
    except OSError as exc:
        log(f"error: rollback cannot read the routes back: {exc.strerror}")
        return
    had = {rtnl.identity(r) for r in before}
    added = [s for s in specs if rtnl.identity(s) in now - had]
    removed = [v for v in victims if rtnl.identity(v) not in now]
    for spec, err in undo(sock, added, removed):
        log(f"error: rollback cannot restore route {describe(spec, names)}: {err.strerror}")


def undo(
    sock: rtnl.Rtnl, added: list[rtnl.RouteSpec], removed: list[rtnl.RouteSpec]
) -> list[tuple[rtnl.RouteSpec, rtnl.NetlinkError]]:
    """Delete what was added, put back what was removed. Added routes already gone
    are fine (so is a route already back); returns the restores the kernel refused."""
    names: dict[int, str] = {}
    for spec, err in zip(added, sock.batch([rtnl.route_delete(s) for s in added]), strict=True):
        if err is not None and err.errno not in _GONE:
            names = names or _names(sock)
            log(f"error: cannot delete route {describe(spec, names)}: {err.strerror}")
    errors = sock.batch([rtnl.route_add(s) for s in removed])
    failed = [(s, e) for s, e in zip(removed, errors, strict=True) if e is not None]
    if any(e.errno == errno.EEXIST for _, e in failed):
        have = {rtnl.identity(r) for r in _all_routes(sock)}
        failed = [(s, e) for s, e in failed if rtnl.identity(s) not in have]
    return failed


def _resolve(
    sock: rtnl.Rtnl, state: State, names: Mapping[int, str] | None = None
) -> tuple[list[rtnl.RouteSpec], list[rtnl.RouteSpec]]:
    """A state record's added and removed routes, with today's interface indexes.

    Added routes whose interface is gone went with it. A removed route that cannot
    come back whole (an interface of it is gone) is logged.
    """
    indexes = {name: index for index, name in (names or _names(sock)).items()}

    def specs(key: str) -> list[rtnl.RouteSpec]:
        out = []
        for doc in state.get(key, []):
            try:
                spec = rtnl.RouteSpec.from_dict(doc, indexes)
            except KeyError:
                spec = None
            except (TypeError, ValueError):
                log(f"ignoring a malformed route in the state record: {doc!r}")
                continue
            hops = doc.get("nexthops") or []
            if key == "removed" and (spec is None or len(spec.nexthops) < len(hops)):
                gone = {str(h.get("dev")) for h in hops if isinstance(h, dict)} - set(indexes)
                gone = gone or {str(doc.get("dev"))}
                what = "cannot restore" if spec is None else "restoring only part of"
                dead = ", ".join(sorted(gone))
                log(f"error: {what} route {doc.get('dst')}: interface {dead} is gone")
            if spec is not None:
                out.append(spec)
        return out

    return specs("added"), specs("removed")


# ---- DEL: putting routes back ----------------------------------------------------------


def _slot(route: rtnl.RouteEntry | rtnl.RouteSpec) -> tuple[object, ...]:
    """Destination, table and metric: the kernel holds one route per slot (added
    exclusively), so putting one back fails while another occupies its slot."""
    return rtnl.identity(route)[:3]


def _identities(docs: object, indexes: Mapping[str, int]) -> set[tuple[object, ...]]:
    out = set()
    for doc in docs if isinstance(docs, list) else []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            out.add(rtnl.identity(rtnl.RouteSpec.from_dict(doc, indexes)))
    return out


def _siblings(conf: RouteConf, req: Request, own: str) -> list[tuple[str, State]]:
    """The state records of this pod's other attachments (any network, same stateDir)."""
    out = []
    try:
        with os.scandir(conf.state_dir) as nets:
            dirs = [e.path for e in nets if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    for directory in dirs:
        with contextlib.suppress(OSError), os.scandir(directory) as entries:
            paths = [e.path for e in entries if e.name.endswith(".json") and e.path != own]
        for path in paths:
            state = read_state(path)
            if state is None:
                continue
            holder = state.get("container")
            if holder == req.container_id or (
                holder is None and os.path.basename(path).startswith(f"{req.container_id}-")
            ):
                out.append((path, state))
    return out


def _hand_on(
    sock: rtnl.Rtnl,
    spec: rtnl.RouteSpec,
    mine: set[tuple[object, ...]],
    siblings: list[tuple[str, State]],
    names: Mapping[int, str],
) -> str:
    """Give a restore that another attachment's route blocks to that attachment's
    record, in place of the route of ours it recorded as removed; its DEL then puts
    ours back. Returns the attachment's interface, or '' if none holds the slot."""
    slot = _slot(spec)
    holders = {rtnl.identity(r) for r in _all_routes(sock) if _slot(r) == slot}
    indexes = {name: index for index, name in names.items()}
    for path, state in siblings:
        if not holders & _identities(state.get("added"), indexes):
            continue
        removed = state.get("removed")
        kept = [
            doc
            for doc in (removed if isinstance(removed, list) else [])
            if not _identities([doc], indexes) & mine
        ]
        state["removed"] = [*kept, spec.to_dict(names)]
        try:
            write_state(path, state)
        except OSError as exc:
            log(f"error: cannot hand a restore on to {path}: {exc.strerror}")
            return ""
        return str(state.get("ifname") or os.path.basename(path))
    return ""


def restore(sock: rtnl.Rtnl, conf: RouteConf, req: Request, path: str, state: State) -> None:
    """DEL's kernel step: undo the record; hand blocked restores on, log the rest."""
    names = _names(sock)
    added, removed = _resolve(sock, state, names)
    failed = undo(sock, added, removed)
    if not failed:
        return
    siblings = _siblings(conf, req, path)
    mine = {rtnl.identity(s) for s in added}
    for spec, err in failed:
        holder = "" if err.errno != errno.EEXIST else _hand_on(sock, spec, mine, siblings, names)
        if holder:
            log(
                f"route {describe(spec, names)} waits for {holder}'s DEL: its route holds "
                "that destination now"
            )
        else:
            log(f"error: cannot restore route {describe(spec, names)}: {err.strerror}")


# ---- the state file ----------------------------------------------------------------


def state_path(conf: RouteConf, req: Request) -> str:
    # network, container ID and ifname are validated names: safe as path parts
    return os.path.join(conf.state_dir, req.network, f"{req.container_id}-{req.ifname}.json")


def write_state(path: str, state: State) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"  # one per attachment, under the pod's lock: DEL finds a killed write's
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    crashpoint.here("route.state-tmp")
    os.rename(tmp, path)
    crashpoint.here("route.state-written")


def read_state(path: str) -> State | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # missing, or a symlink (ELOOP): not ours to follow
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
        with rtnl.in_netns(req.netns) as (ns, sock), locked(ns):
            state = apply(sock, the_plan, req.ifname, req.container_id)
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}.tmp")  # an ADD killed between its write and its rename
        if not os.path.lexists(path):
            return
        if req.netns:
            try:
                # under the pod's lock: another attachment's DEL may hand a restore
                # on to this record, and must not do so while it is being undone
                with rtnl.in_netns(req.netns) as (ns, sock), locked(ns):
                    state = read_state(path)
                    if state is not None:
                        restore(sock, conf, req, path, state)
                        crashpoint.here("route.undone")
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
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
            for r in _all_routes(sock):
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
                # (and the .tmp a killed ADD of such an attachment left)
                stale = [
                    e.name
                    for e in entries
                    if e.name.removesuffix(".tmp").endswith(".json")
                    and e.name.removesuffix(".tmp") not in keep
                ]
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
