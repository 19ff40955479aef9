"""mh-ipam configuration: every host-local key, plus ``exclude``, resolved to plain data.

``load`` turns the whole network config (IPAM plugins get the main plugin's
full config) into a ``Pool``: canonical range sets with defaults filled in,
the exclusions, the requested IPs from every source, and the store settings.
It is pure: no file is touched here except ``resolvConf``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from multihome.lib import cniargs, validate, versions
from multihome.lib.errors import INVALID_CONFIG, CNIError
from multihome.lib.models import Address, IPAddress, IPNetwork, Model, StrictNetwork, describe
from multihome.lib.request import Request
from multihome.lib.result import DNS, Route

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
DEFAULT_LOCK_TIMEOUT = 30.0
DEFAULT_ETCD_PREFIX = "/multihome/ipam"
DEFAULT_ETCD_TIMEOUT = 5.0


class TLSConf(Model):
    """Client TLS for ``https://`` etcd endpoints: file paths on the node."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = Field("", alias="serverName")


class LeaseStoreConf(Model):
    """``ipam.store``: where leases live. No store (or ``file``) is the dataDir store."""

    type: Literal["file", "etcd"] = "file"
    endpoints: list[str] = []
    prefix: str = DEFAULT_ETCD_PREFIX
    tls: TLSConf | None = None
    timeout: float = Field(DEFAULT_ETCD_TIMEOUT, gt=0, le=600)
    # The node recorded on each lease, and the only one whose leases GC may free.
    node: str = ""

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        from .etcdclient import Endpoint

        for url in urls:
            Endpoint(url)  # raises ValueError: not http(s)://HOST:PORT
        return urls


@dataclass(frozen=True)
class EtcdSettings:
    """A resolved etcd store: the client settings and this node's name."""

    endpoints: tuple[str, ...]
    prefix: str
    timeout: float
    node: str
    tls: TLSConf | None = None


def etcd_settings(conf: LeaseStoreConf | None) -> EtcdSettings | None:
    if conf is None or conf.type == "file":
        return None
    if not conf.endpoints:
        raise _invalid("ipam.store: an etcd store needs at least one endpoint")
    if conf.tls is not None and not any(u.startswith("https://") for u in conf.endpoints):
        raise _invalid("ipam.store.tls is set, but no endpoint is https://")
    if conf.tls is not None and bool(conf.tls.cert) != bool(conf.tls.key):
        raise _invalid("ipam.store.tls: cert and key go together")
    if not conf.prefix.startswith("/"):
        raise _invalid(f"ipam.store.prefix {conf.prefix!r} must start with '/'")
    node = conf.node or os.uname().nodename
    if not validate.is_cni_name(node):
        raise _invalid(f"ipam.store.node {node!r} is not a valid node name")
    return EtcdSettings(
        endpoints=tuple(conf.endpoints),
        prefix=conf.prefix.rstrip("/"),
        timeout=conf.timeout,
        node=node,
        tls=conf.tls,
    )


class RangeConf(Model):
    subnet: StrictNetwork
    range_start: Address | None = Field(None, alias="rangeStart")
    range_end: Address | None = Field(None, alias="rangeEnd")
    gateway: Address | None = None


class IPAMConf(Model):
    type: str = ""
    ranges: list[list[RangeConf]] = []
    # The legacy single range, prepended as range set 0 (as host-local does).
    subnet: StrictNetwork | None = None
    range_start: Address | None = Field(None, alias="rangeStart")
    range_end: Address | None = Field(None, alias="rangeEnd")
    gateway: Address | None = None
    routes: list[Route] = []
    data_dir: str = Field(DEFAULT_DATA_DIR, alias="dataDir")
    resolv_conf: str = Field("", alias="resolvConf")
    exclude: list[StrictNetwork] = []
    lock_timeout: float = Field(DEFAULT_LOCK_TIMEOUT, alias="lockTimeout", gt=0, le=600)
    store: LeaseStoreConf | None = None


class IPAMNetConf(Model):
    cni_version: str = Field("0.1.0", alias="cniVersion")
    name: str
    ipam: IPAMConf


@dataclass(frozen=True)
class Range:
    """One contiguous pool: addresses ``start..end`` (inclusive) of ``subnet``."""

    subnet: IPNetwork
    start: int
    end: int
    gateway: IPAddress

    @property
    def version(self) -> int:
        return self.subnet.version

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.version and self.start <= int(ip) <= self.end

    def __str__(self) -> str:
        lo = ipaddress.ip_address(self.start)
        hi = ipaddress.ip_address(self.end)
        return f"{lo}-{hi}"


@dataclass(frozen=True)
class Pool:
    """What one mh-ipam call works with, fully resolved."""

    network: str
    range_sets: list[list[Range]]
    exclude: list[IPNetwork]
    requested: list[IPAddress]
    routes: list[Route]
    dns: DNS
    data_dir: str
    lock_timeout: float
    cni_version: str = "1.0.0"
    etcd: EtcdSettings | None = None
    notes: list[str] = field(default_factory=list)

    def set_for(self, ip: IPAddress) -> int | None:
        """Index of the range set that holds ``ip``, or None."""
        for index, rset in enumerate(self.range_sets):
            if any(r.contains(ip) for r in rset):
                return index
        return None


def _invalid(msg: str, details: str = "") -> CNIError:
    return CNIError(INVALID_CONFIG, msg, details)


def _canonical_range(conf: RangeConf, where: str) -> Range:
    subnet = conf.subnet
    if subnet.prefixlen > subnet.max_prefixlen - 2:
        raise _invalid(f"{where}: network {subnet} is too small to allocate from")
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    for key, value in (
        ("rangeStart", conf.range_start),
        ("rangeEnd", conf.range_end),
        ("gateway", conf.gateway),
    ):
        if value is not None and value not in subnet:
            raise _invalid(f"{where}: {key} {value} is not in subnet {subnet}")
    # An IPv4 subnet's network and broadcast addresses are never handed out, even
    # when rangeStart or rangeEnd names them (host-local hands out .255 then).
    start = max(int(conf.range_start), first) if conf.range_start is not None else first
    end = min(int(conf.range_end), last) if conf.range_end is not None else last
    if start > end:
        raise _invalid(
            f"{where}: rangeStart {conf.range_start} is after rangeEnd {conf.range_end}"
            if int(conf.range_start or first) > int(conf.range_end or last)
            else f"{where}: the range holds only the network or broadcast address of {subnet}"
        )
    gateway = conf.gateway if conf.gateway is not None else ipaddress.ip_address(first)
    return Range(subnet=subnet, start=start, end=end, gateway=gateway)


def _overlaps(a: Range, b: Range) -> bool:
    return a.version == b.version and a.start <= b.end and b.start <= a.end


def _canonical_sets(raw: list[list[RangeConf]]) -> list[list[Range]]:
    if not raw:
        raise _invalid("no IP ranges specified", "set ipam.ranges or ipam.subnet")
    sets: list[list[Range]] = []
    for i, rset in enumerate(raw):
        if not rset:
            raise _invalid(f"range set {i} is empty")
        ranges = [_canonical_range(r, f"range set {i}, range {j}") for j, r in enumerate(rset)]
        if len({r.version for r in ranges}) != 1:
            raise _invalid(f"range set {i} mixes IPv4 and IPv6")
        for j, a in enumerate(ranges):
            for k, b in enumerate(ranges[j + 1 :], j + 1):
                if _overlaps(a, b):
                    raise _invalid(f"range set {i}: range {j} ({a}) overlaps range {k} ({b})")
        sets.append(ranges)
    for i, a_set in enumerate(sets):
        for j, b_set in enumerate(sets[i + 1 :], i + 1):
            if any(_overlaps(a, b) for a in a_set for b in b_set):
                raise _invalid(f"range set {i} overlaps with range set {j}")
    return sets


def _requested(req: Request, conf_args: dict[str, object]) -> list[IPAddress]:
    """Requested IPs as host-local takes them: CNI_ARGS IP, args.cni.ips and runtimeConfig.ips."""
    raw: list[object] = list(cniargs.split_list(req.args.get("IP", "")))
    ips = conf_args.get("ips")
    if isinstance(ips, list):
        raw.extend(ips)
    rt_ips = req.runtime_config.get("ips")
    if isinstance(rt_ips, list):
        raw.extend(rt_ips)
    out: list[IPAddress] = []
    for item in raw:
        text = str(item).split("/", 1)[0].strip()  # a prefix, if any, is ignored like host-local
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise _invalid(f"requested IP {item!r} is not an IP address") from None
        if ip not in out:
            out.append(ip)
    return out


def _runtime_ranges(req: Request) -> list[list[RangeConf]]:
    raw = req.runtime_config.get("ipRanges")
    if not raw:
        return []
    if not isinstance(raw, list) or not all(isinstance(rset, list) for rset in raw):
        raise _invalid("runtimeConfig.ipRanges must be a list of range sets")
    try:
        return [[RangeConf.model_validate(r) for r in rset] for rset in raw]
    except (ValidationError, TypeError) as exc:
        details = (
            describe(exc, "runtimeConfig.ipRanges") if isinstance(exc, ValidationError) else ""
        )
        raise _invalid("invalid runtimeConfig.ipRanges", details) from None


def _check_data_dir(path: str) -> str:
    return os.path.normpath(validate.store_path("dataDir", path))


def parse_resolv_conf(path: str) -> DNS:
    """nameserver/domain/search/options from a resolv.conf-format file."""
    dns: dict[str, list[str] | str] = {"nameservers": [], "search": [], "options": []}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise _invalid(f"cannot read resolvConf {path!r}: {exc.strerror}") from None
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        key, values = words[0], words[1:]
        if key == "nameserver":
            dns["nameservers"].append(values[0])  # type: ignore[union-attr]
        elif key == "domain":
            dns["domain"] = values[0]
        elif key in ("search", "options"):
            dns[key] = values  # the last line wins, as in the resolver
    return DNS.model_validate(dns)


def load(req: Request) -> Pool:
    """Resolve the request's config into a Pool, or raise CNI code 7."""
    from multihome.lib.models import parse

    net = parse(IPAMNetConf, req.conf)
    ipam = net.ipam
    raw = list(ipam.ranges)
    if ipam.subnet is not None:
        legacy = RangeConf(
            subnet=ipam.subnet,
            rangeStart=ipam.range_start,
            rangeEnd=ipam.range_end,
            gateway=ipam.gateway,
        )
        raw.insert(0, [legacy])
    raw = _runtime_ranges(req) + raw
    sets = _canonical_sets(raw)
    if not versions.at_least(req.cni_version, "0.3.0"):
        for family in (4, 6):
            if sum(1 for s in sets if s[0].version == family) > 1:
                raise _invalid(
                    f"CNI version {req.cni_version} does not support more than "
                    f"one IPv{family} address"
                )
    return Pool(
        network=net.name,
        range_sets=sets,
        exclude=list(ipam.exclude),
        requested=_requested(req, req.cni_conf_args),
        routes=list(ipam.routes),
        dns=parse_resolv_conf(ipam.resolv_conf) if ipam.resolv_conf else DNS(),
        data_dir=_check_data_dir(ipam.data_dir),
        lock_timeout=ipam.lock_timeout,
        cni_version=req.cni_version,
        etcd=etcd_settings(ipam.store),
    )


class StoreConf(Model):
    """Just what DEL and GC need: they must work even when the ranges are invalid."""

    data_dir: str = Field(DEFAULT_DATA_DIR, alias="dataDir")
    lock_timeout: float = Field(DEFAULT_LOCK_TIMEOUT, alias="lockTimeout", gt=0, le=600)
    store: LeaseStoreConf | None = None


class StoreNetConf(Model):
    name: str
    ipam: StoreConf = StoreConf()


@dataclass(frozen=True)
class StoreSettings:
    data_dir: str
    lock_timeout: float
    etcd: EtcdSettings | None


def store_settings(req: Request) -> StoreSettings:
    """The lease store from a config whose ranges may be otherwise invalid."""
    from multihome.lib.models import parse

    conf = parse(StoreNetConf, req.conf)
    return StoreSettings(
        _check_data_dir(conf.ipam.data_dir), conf.ipam.lock_timeout, etcd_settings(conf.ipam.store)
    )
