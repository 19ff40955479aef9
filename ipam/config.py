"""mh-ipam configuration: every host-local key, plus ``exclude``, resolved to plain data.

``load`` turns the whole network config (IPAM plugins get the main plugin's
full config) into a ``Pool``: canonical range sets with defaults filled in,
the exclusions, the requested IPs from every source, and the store settings.
It is pure: no file is touched here except ``resolvConf``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from multihome.lib import cniargs, jsonfast, validate, versions
from multihome.lib.errors import INVALID_CONFIG, CNIError
from multihome.lib.models import Address, IPAddress, IPNetwork, Model, StrictNetwork, describe
from multihome.lib.request import Request
from multihome.lib.result import DNS, Route

from .routes import IPAMRoute, RouteSetConf

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
DEFAULT_LOCK_TIMEOUT = 30.0
DEFAULT_ETCD_PREFIX = "/multihome/ipam"
DEFAULT_ETCD_TIMEOUT = 5.0


# The node's etcd settings: only an admin of the node writes them; a NAD names a profile.
DEFAULT_ETCD_CONF = "/etc/multihome/etcd.conf"
ETCD_CONF_ENV = "MULTIHOME_ETCD_CONF"  # the runtime's environment may move it; a NAD cannot
ETCD_PREFIX_ROOT = "/multihome/"  # every profile's prefix is under it


class TLSConf(Model):
    """Client TLS for ``https://`` etcd endpoints: files in the node's etcd directory."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = Field("", alias="serverName")


class EtcdProfile(Model):
    """One profile of the node file: which etcd, as whom, and under which key prefix."""

    endpoints: list[str]
    tls: TLSConf | None = None
    prefix: str = DEFAULT_ETCD_PREFIX

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        return _check_urls(urls)


class LeaseStoreConf(Model):
    """``ipam.store``: where leases live. No store (or ``file``) is the dataDir store.

    An etcd store names a ``profile`` of the node file; the NAD may pick and order
    that profile's endpoints and narrow its prefix, and nothing else."""

    type: Literal["file", "etcd"] = "file"
    profile: str = "default"
    endpoints: list[str] = []
    prefix: str = ""
    tls: TLSConf | None = None  # only from ``multihome leases`` flags; refused in a NAD
    timeout: float = Field(DEFAULT_ETCD_TIMEOUT, gt=0, le=600)
    # The node recorded on each lease, and the only one whose leases GC may free.
    node: str = ""

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        return _check_urls(urls)


def _check_urls(urls: list[str]) -> list[str]:
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


def etcd_conf_path(env: Mapping[str, str] | None = None) -> str:
    """The node file: ``MULTIHOME_ETCD_CONF`` from the call's environment (the runtime's),
    else from this process's (the daemon's, as its admin started it), else the default."""
    return (env or {}).get(ETCD_CONF_ENV) or os.environ.get(ETCD_CONF_ENV) or DEFAULT_ETCD_CONF


def etcd_tls_dir(conf_path: str) -> str:
    """Where a profile's TLS files must be: ``etcd/`` beside the node file."""
    return os.path.join(os.path.dirname(conf_path), "etcd") + "/"


def load_profile(name: str, env: Mapping[str, str] | None = None) -> EtcdProfile:
    """Profile ``name`` of the node file, checked; code 7 for anything amiss.

    The file must be root's and writable by root only, as the credentials it
    names are. TLS files must be in the ``etcd/`` directory beside it, and the
    prefix under ``/multihome/``."""
    from multihome.lib.models import parse

    path = etcd_conf_path(env)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _invalid(
            f"ipam.store: the etcd store needs the node's etcd settings, {path}: "
            f"{exc.strerror or exc}",
            "an admin writes the node's etcd profiles there; a NAD only names one",
        ) from None
    try:
        info = os.fstat(fd)
        if info.st_uid != 0 or info.st_mode & 0o022:
            raise _invalid(f"{path} must be owned by root and writable by root only")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(1 << 20)
    finally:
        os.close(fd)
    try:
        doc = jsonfast.loads(raw)
    except ValueError as exc:
        raise _invalid(f"{path} is not JSON: {exc}") from None
    profiles = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(profiles, dict) or name not in profiles:
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else "none"
        raise _invalid(f"ipam.store.profile {name!r} is not in {path} (it has: {known})")
    profile = parse(EtcdProfile, profiles[name], f"etcd profile {name!r} in {path}")
    tls_dir = etcd_tls_dir(path)
    tls = profile.tls or TLSConf()
    for key, file in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        if file and not _within(file, tls_dir):
            raise _invalid(f"{path}, profile {name!r}: tls.{key} {file!r} is not in {tls_dir}")
    if not _under(profile.prefix, ETCD_PREFIX_ROOT.rstrip("/")):
        raise _invalid(
            f"{path}, profile {name!r}: prefix {profile.prefix!r} is not under {ETCD_PREFIX_ROOT}"
        )
    return profile


def _within(file: str, directory: str) -> bool:
    """``file`` is in ``directory`` (or below), with no '..' or symlink leading out."""
    if not file.startswith("/") or ".." in file.split("/"):
        return False
    real = os.path.realpath(file)
    return real.startswith(os.path.realpath(directory) + "/")


def _under(key: str, prefix: str) -> bool:
    """The etcd key prefix ``key`` is ``prefix`` or below it (whole path segments)."""
    key = key.rstrip("/")
    return key == prefix or key.startswith(prefix + "/")


def etcd_settings(
    conf: LeaseStoreConf | None, env: Mapping[str, str] | None = None, *, direct: bool = False
) -> EtcdSettings | None:
    """The store a config asks for, within what the node allows; code 7 otherwise.

    ``direct``: endpoints, TLS and prefix as given (``multihome leases`` flags, which
    the admin types); a config never gets this."""
    if conf is None or conf.type == "file":
        return None
    if direct:
        endpoints, tls = list(conf.endpoints), conf.tls
        prefix = conf.prefix or DEFAULT_ETCD_PREFIX
        if not endpoints:
            raise _invalid("ipam.store: an etcd store needs at least one endpoint")
        if not prefix.startswith("/"):
            raise _invalid(f"ipam.store.prefix {prefix!r} must start with '/'")
    else:
        if conf.tls is not None:
            raise _invalid(
                "ipam.store.tls: the etcd credentials are the node's: they come from the "
                f"profile in {etcd_conf_path(env)}, not from a NAD"
            )
        profile = load_profile(conf.profile, env)
        endpoints, tls = list(profile.endpoints), profile.tls
        if conf.endpoints:  # a choice among the profile's, in the NAD's order
            stray = [u for u in conf.endpoints if u not in profile.endpoints]
            if stray:
                raise _invalid(
                    f"ipam.store.endpoints {', '.join(stray)}: not an endpoint of profile "
                    f"{conf.profile!r}",
                )
            endpoints = list(conf.endpoints)
        prefix = conf.prefix or profile.prefix
        if not _under(prefix, profile.prefix.rstrip("/")):
            raise _invalid(
                f"ipam.store.prefix {prefix!r} is not under profile {conf.profile!r}'s "
                f"prefix {profile.prefix!r}"
            )
    if tls is not None and not any(u.startswith("https://") for u in endpoints):
        raise _invalid("ipam.store.tls is set, but no endpoint is https://")
    if tls is not None and bool(tls.cert) != bool(tls.key):
        raise _invalid("ipam.store.tls: cert and key go together")
    node = conf.node or os.uname().nodename
    if not validate.is_cni_name(node):
        raise _invalid(f"ipam.store.node {node!r} is not a valid node name")
    return EtcdSettings(
        endpoints=tuple(endpoints),
        prefix=prefix.rstrip("/"),
        timeout=conf.timeout,
        node=node,
        tls=tls,
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
    routes: list[IPAMRoute] = []
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
    routes: list[Route | RouteSetConf]
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
        etcd=etcd_settings(ipam.store, req.env),
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
        _check_data_dir(conf.ipam.data_dir),
        conf.ipam.lock_timeout,
        etcd_settings(conf.ipam.store, req.env),
    )
