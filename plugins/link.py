"""mh-macvlan and mh-ipvlan: one module, two link kinds.

The two plugins differ only in the link kind, its modes, and two details:
macvlan takes a MAC address and a broadcast queue length; ipvlan, when
chained, defaults its master to prevResult's interface and can re-use
prevResult's addresses. Everything else (creating the link directly in the
pod's namespace, IPAM, addresses and routes, rollback, DEL, CHECK, STATUS) is
shared, unlike the reference plugins, which copy it between them.
"""

from __future__ import annotations

import contextlib
import errno
import zlib
from dataclasses import dataclass

from pydantic import Field, field_validator

from multihome.lib import crashpoint, delegate, ifconfig, rtnl
from multihome.lib.errors import (
    CHECK_FAILED,
    INTERFACE_EXISTS,
    INVALID_CONFIG,
    KERNEL_REFUSED,
    NOT_AVAILABLE,
    CNIError,
)
from multihome.lib.log import log
from multihome.lib.models import parse
from multihome.lib.netconf import NetConf
from multihome.lib.netns import NetNS
from multihome.lib.request import Request
from multihome.lib.result import Iface, IPConfig, Result


@dataclass(frozen=True)
class Kind:
    """What differs between macvlan and ipvlan."""

    name: str
    modes: dict[str, int]
    default_mode: str
    has_mac: bool
    mode_attr_size: int  # IFLA_MACVLAN_MODE is u32, IFLA_IPVLAN_MODE u16

    def data(self, mode: str, bc_queue_len: int | None) -> bytes:
        value = self.modes[mode]
        raw = value.to_bytes(self.mode_attr_size, "little")
        out = rtnl.attr(1, raw)  # IFLA_MACVLAN_MODE / IFLA_IPVLAN_MODE
        if bc_queue_len is not None:
            out += rtnl.attr_u32(rtnl.IFLA_MACVLAN_BC_QUEUE_LEN, bc_queue_len)
        return out


MACVLAN = Kind("macvlan", rtnl.MACVLAN_MODES, "bridge", True, 4)
IPVLAN = Kind("ipvlan", rtnl.IPVLAN_MODES, "l2", False, 2)


class LinkConf(NetConf):
    master: str = ""
    mode: str = ""
    mtu: int = Field(0, ge=0, le=65535)
    mac: str = ""
    link_in_container: bool = Field(False, alias="linkInContainer")
    bcqueuelen: int | None = Field(None, ge=0, le=1 << 31)
    ipv6_dad: str = Field("optimistic", alias="ipv6DAD")

    @field_validator("ipv6_dad")
    @classmethod
    def _dad(cls, value: str) -> str:
        if value not in ifconfig.DAD_MODES:
            raise ValueError(f"must be one of {', '.join(ifconfig.DAD_MODES)}")
        return value


def parse_mac(text: str, source: str) -> bytes:
    parts = text.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != 6 or len(raw) != 6 or any(len(p) != 2 for p in parts):
        raise CNIError(INVALID_CONFIG, f"{source}: invalid MAC address {text!r}")
    if raw[0] & 1:
        raise CNIError(INVALID_CONFIG, f"{source}: {text} is a multicast MAC address")
    return raw


def _refuse_untyped_ipam(ipam: object, conf: LinkConf) -> None:
    """``ipam`` with keys but no type is a lost line, not a wish for no address: the
    reference gives an interface without one, silently; we say so (``{}`` is L2-only)."""
    if conf.ipam_type or not isinstance(ipam, dict):
        return
    keys = [str(k) for k in ipam if str(k).lower() != "type"]
    if keys:
        raise CNIError(
            INVALID_CONFIG,
            "ipam.type is missing",
            f"ipam has {', '.join(keys)} but no type (e.g. mh-ipam or host-local); "
            '"ipam": {} gives an interface without addresses',
        )


def _is_missing(exc: OSError) -> bool:
    return exc.errno in (errno.ENODEV, errno.ENOENT)


class LinkPlugin:
    """The shared implementation; ``kind`` says which link it makes."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    # ---- config ---------------------------------------------------------------

    def load(self, req: Request) -> LinkConf:
        conf = parse(LinkConf, req.conf)
        _refuse_untyped_ipam(req.conf.get("ipam"), conf)
        conf.mode = conf.mode or self.kind.default_mode
        if conf.mode not in self.kind.modes:
            raise CNIError(
                INVALID_CONFIG,
                f"invalid {self.kind.name} mode {conf.mode!r}",
                f"one of {', '.join(self.kind.modes)}",
            )
        if not self.kind.has_mac and conf.bcqueuelen is not None:
            raise CNIError(INVALID_CONFIG, f"bcqueuelen is not supported by {self.kind.name}")
        return conf

    def mac(self, req: Request, conf: LinkConf) -> bytes:
        """runtimeConfig.mac, else CNI_ARGS MAC, else the config's ``mac`` (reference order)."""
        if not self.kind.has_mac:
            return b""
        runtime = req.runtime_config.get("mac")
        if isinstance(runtime, str) and runtime:
            return parse_mac(runtime, "runtimeConfig.mac")
        if req.args.get("MAC"):
            return parse_mac(req.args["MAC"], "CNI_ARGS MAC")
        return parse_mac(conf.mac, "mac") if conf.mac else b""

    def master_name(self, req: Request, conf: LinkConf, host: rtnl.Rtnl) -> tuple[str, bool]:
        """(master name, whether it lives in the pod): configured, chained, or default route."""
        if conf.master:
            return conf.master, conf.link_in_container
        prev = req.prev_result
        if self.kind is IPVLAN and prev is not None:
            named = [i for i in prev.interfaces if i.name]
            if len(named) != 1:
                raise CNIError(
                    INVALID_CONFIG,
                    "chained ipvlan needs a master or exactly one interface in prevResult",
                )
            return named[0].name, bool(named[0].sandbox) or conf.link_in_container
        if conf.link_in_container:
            raise CNIError(INVALID_CONFIG, "linkInContainer needs an explicit master")
        return default_route_interface(host), False

    # ---- ADD -------------------------------------------------------------------

    def add(self, req: Request) -> Result:
        conf = self.load(req)
        mac = self.mac(req, conf)
        # The undo stack closes before the pod socket does: rollback still needs it.
        with rtnl.in_netns(req.netns) as (ns, pod), contextlib.ExitStack() as undo:
            # Links tagged with this very owner are from an earlier try of this ADD that
            # was killed (even after the rename): the runtime retries, so start afresh.
            for leftover in leftovers(pod, req):
                self._delete_quietly(pod, leftover.index)
            if pod.link(req.ifname) is not None:
                raise CNIError(
                    INTERFACE_EXISTS, f"interface {req.ifname} already exists in {req.netns}"
                )
            with rtnl.Rtnl() as host:
                name, in_pod = self.master_name(req, conf, host)
                master = (pod if in_pod else host).link(name)
                if master is None:
                    raise CNIError(
                        INVALID_CONFIG,
                        f"master interface {name!r} not found{' in the pod' if in_pod else ''}",
                    )
                if conf.mtu > master.mtu:
                    raise CNIError(
                        INVALID_CONFIG,
                        f"mtu {conf.mtu} is larger than the master {name}'s {master.mtu}",
                    )
                link = self._create(
                    creator=pod if in_pod else host,
                    pod=pod,
                    ns=ns,
                    master=master,
                    conf=conf,
                    mac=mac,
                    req=req,
                )
            undo.callback(self._delete_quietly, pod, link.index)
            pod.call(rtnl.link_set(link.index, name=req.ifname))
            crashpoint.here("link.renamed")
            result = self._ipam_result(req, conf, undo)
            crashpoint.here("link.ipam-done")
            iface = Iface(name=req.ifname, mac=link.mac, sandbox=req.netns, mtu=link.mtu)
            result.interfaces = [iface]
            for ip in result.ips:
                ip.interface = 0
            if (
                not conf.dns.is_empty()
            ):  # the config's dns wins over the IPAM's, as in the reference
                result.dns = conf.dns
            with ns:
                ifconfig.configure(pod, link.index, req.ifname, result, conf.ipv6_dad)
            crashpoint.here("link.configured")
            undo.pop_all()
        return result

    def _create(
        self,
        *,
        creator: rtnl.Rtnl,
        pod: rtnl.Rtnl,
        ns: NetNS,
        master: rtnl.Link,
        conf: LinkConf,
        mac: bytes,
        req: Request,
    ) -> rtnl.Link:
        """The link, made directly in the pod under its owner's temporary name (no
        move), then tagged with the owner's alias."""
        tmp = temporary_name(req)
        data = self.kind.data(conf.mode, conf.bcqueuelen)
        netns_fd = -1 if creator is pod else ns.fd
        try:
            creator.call(
                rtnl.link_create(
                    tmp,
                    self.kind.name,
                    master.index,
                    data,
                    mtu=conf.mtu,
                    mac=mac,
                    netns_fd=netns_fd,
                )
            )
        except rtnl.NetlinkError as exc:
            raise CNIError(
                KERNEL_REFUSED, f"cannot create {self.kind.name} on {master.name}: {exc.strerror}"
            ) from None
        crashpoint.here("link.created")
        link = pod.link(tmp)
        if link is None:
            raise CNIError(KERNEL_REFUSED, f"{self.kind.name} {tmp} vanished after creation")
        try:
            pod.call(rtnl.link_set(link.index, alias=owner_alias(req)))
        except OSError as exc:
            self._delete_quietly(pod, link.index)
            raise CNIError(KERNEL_REFUSED, f"cannot tag {tmp}: {exc.strerror}") from None
        crashpoint.here("link.tagged")
        return link

    def _ipam_result(self, req: Request, conf: LinkConf, undo: contextlib.ExitStack) -> Result:
        if conf.ipam_type:
            result = delegate.add(conf.ipam_type, req)
            undo.callback(self._ipam_del_quietly, conf.ipam_type, req)
            return result
        prev = req.prev_result
        if self.kind is IPVLAN and prev is not None:
            return Result(
                ips=[IPConfig(address=ip.address, gateway=ip.gateway) for ip in prev.ips],
                routes=prev.routes,
                dns=prev.dns,
            )
        return Result()  # no IPAM: an L2-only interface

    @staticmethod
    def _delete_quietly(sock: rtnl.Rtnl, index: int) -> None:
        try:
            sock.call(rtnl.link_delete(index))
        except OSError as exc:
            if not _is_missing(exc):
                log(f"rollback: cannot delete link {index}: {exc.strerror}")

    @staticmethod
    def _ipam_del_quietly(ipam_type: str, req: Request) -> None:
        try:
            delegate.delete(ipam_type, req)
        except CNIError as exc:
            log(f"rollback: IPAM DEL failed: {exc.msg} {exc.details}")

    # ---- DEL -------------------------------------------------------------------

    def delete(self, req: Request) -> None:
        conf = parse(LinkConf, req.conf)  # JSON only: DEL must not need the master
        # The link goes first, then the lease: released first (as the reference
        # plugins do), the address could be given to a new pod while this one still
        # answers for it on the wire.
        if req.netns:
            try:
                with rtnl.in_netns(req.netns) as (_, pod):
                    self._delete_link(pod, req)
            except CNIError as exc:
                if exc.code not in (3, 8):  # 3, 8: the namespace is gone, and the link with it
                    raise
        if conf.ipam_type:
            delegate.delete(conf.ipam_type, req)

    def _delete_link(self, pod: rtnl.Rtnl, req: Request) -> None:
        """CNI_IFNAME, and any link of this owner an interrupted ADD left under its
        temporary name (we tag our links with an alias naming their owner)."""
        victims = leftovers(pod, req)
        named = pod.link(req.ifname)
        if named is not None and named.index not in {v.index for v in victims}:
            if named.kind == self.kind.name:
                victims.append(named)
            else:
                log(
                    f"DEL: {req.ifname} is a {named.kind or 'plain'} link, not {self.kind.name}; "
                    "left alone"
                )
        for link in victims:
            try:
                pod.call(rtnl.link_delete(link.index))
                crashpoint.here("link.deleted")
            except OSError as exc:
                if not _is_missing(exc):
                    raise CNIError(
                        KERNEL_REFUSED, f"cannot delete {link.name}: {exc.strerror}"
                    ) from None

    # ---- CHECK -----------------------------------------------------------------

    def check(self, req: Request) -> None:
        prev = req.prev_result
        if prev is None:
            raise CNIError(INVALID_CONFIG, "CHECK needs a prevResult")
        conf = self.load(req)
        if conf.ipam_type:
            delegate.check(conf.ipam_type, req)
        index = next(
            (
                i
                for i, iface in enumerate(prev.interfaces)
                if iface.name == req.ifname and iface.sandbox == req.netns
            ),
            None,
        )
        if index is None:
            raise CNIError(CHECK_FAILED, f"prevResult has no interface {req.ifname} in {req.netns}")
        expected = prev.interfaces[index]
        with rtnl.in_netns(req.netns) as (_, pod), rtnl.Rtnl() as host:
            name, in_pod = self.master_name(req, conf, host)
            if (pod if in_pod else host).link(name) is None:
                raise CNIError(CHECK_FAILED, f"master {name} is gone")
            link = pod.link(req.ifname)
            if link is None:
                raise CNIError(CHECK_FAILED, f"interface {req.ifname} is missing")
            self._check_link(link, conf, expected)
            crashpoint.here("link.checked")  # (CHECK changes nothing: for a daemon's death)
            ifconfig.check_addresses(pod, link.index, req.ifname, prev, index)
            ifconfig.check_routes(pod, link.index, req.ifname, prev)

    def _check_link(self, link: rtnl.Link, conf: LinkConf, expected: Iface) -> None:
        if link.kind != self.kind.name:
            raise CNIError(
                CHECK_FAILED, f"{link.name} is a {link.kind or 'plain'} link, not {self.kind.name}"
            )
        if link.mode() != conf.mode:
            raise CNIError(CHECK_FAILED, f"{link.name} is in mode {link.mode()}, not {conf.mode}")
        if self.kind.has_mac and expected.mac and link.mac != expected.mac.lower():
            raise CNIError(CHECK_FAILED, f"{link.name} has MAC {link.mac}, not {expected.mac}")
        if conf.mtu and link.mtu != conf.mtu:
            raise CNIError(CHECK_FAILED, f"{link.name} has MTU {link.mtu}, not {conf.mtu}")

    # ---- STATUS and GC -----------------------------------------------------------

    def status(self, req: Request) -> None:
        conf = self.load(req)
        crashpoint.here("link.status")  # (STATUS changes nothing: for a daemon's death)
        if conf.master and not conf.link_in_container:
            with rtnl.Rtnl() as host:
                if host.link(conf.master) is None:
                    raise CNIError(NOT_AVAILABLE, f"master interface {conf.master} not found")
        if conf.ipam_type:
            delegate.status(conf.ipam_type, req)

    def gc(self, req: Request) -> None:
        req.valid_attachments()  # refuse a malformed list here too, whatever the IPAM
        conf = parse(LinkConf, req.conf)
        if conf.ipam_type:
            delegate.gc(conf.ipam_type, req)


def owner_alias(req: Request) -> str:
    """The alias our links carry: whose they are, for a DEL after an interrupted ADD."""
    return f"multihome {req.container_id} {req.ifname}"


def temporary_name(req: Request) -> str:
    """The name a link has between creation and its rename to CNI_IFNAME: derived
    from its owner, so a link left by an ADD killed before it was tagged is found."""
    return f"mh{zlib.crc32(owner_alias(req).encode()):08x}"  # (zlib: a cheap import)


def leftovers(pod: rtnl.Rtnl, req: Request) -> list[rtnl.Link]:
    """Links an earlier, interrupted ADD of this owner left in the pod."""
    alias, tmp = owner_alias(req), temporary_name(req)
    return [link for link in pod.links() if link.alias == alias or link.name == tmp]


def default_route_interface(sock: rtnl.Rtnl) -> str:
    """The interface of the first default route in the main table (IPv4, then IPv6)."""
    for version in (4, 6):
        for route in sock.routes(version, rtnl.RT_TABLE_MAIN):
            if route.dst.prefixlen == 0 and route.oif:
                link = sock.link_by_index(route.oif)
                if link is not None:
                    return link.name
    raise CNIError(INVALID_CONFIG, "no master given and no default route interface found")


MACVLAN_PLUGIN = LinkPlugin(MACVLAN)
IPVLAN_PLUGIN = LinkPlugin(IPVLAN)
