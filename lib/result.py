"""One canonical CNI Result (the 1.1.0 shape) and its conversion to every version.

Parsing accepts any version's wire shape; ``to_wire`` renders the canonical
Result in the shape a given version defines. The conversions follow libcni's
``types/040`` and ``types/100``: 0.2.0 and below keep only the first IP of
each family and cannot express a result without IPs.
"""

from __future__ import annotations

from pydantic import Field

from . import versions
from .errors import DECODING_FAILURE, INCOMPATIBLE_VERSION, CNIError
from .models import Address, Interface, Model, Network, parse


class Iface(Model):
    name: str
    mac: str = ""
    mtu: int = 0
    sandbox: str = ""
    socket_path: str = Field("", alias="socketPath")
    pci_id: str = Field("", alias="pciID")


class IPConfig(Model):
    address: Interface
    gateway: Address | None = None
    interface: int | None = None


class Route(Model):
    dst: Network
    gw: Address | None = None
    mtu: int | None = None
    advmss: int | None = None
    priority: int | None = None
    table: int | None = None
    scope: int | None = None


class DNS(Model):
    nameservers: list[str] = []
    domain: str = ""
    search: list[str] = []
    options: list[str] = []

    def is_empty(self) -> bool:
        return not (self.nameservers or self.domain or self.search or self.options)


class Result(Model):
    interfaces: list[Iface] = []
    ips: list[IPConfig] = []
    routes: list[Route] = []
    dns: DNS = DNS()


# ---- parsing -------------------------------------------------------------


def _from_020(doc: dict[str, object]) -> dict[str, object]:
    ips: list[object] = []
    routes: list[object] = []
    for key in ("ip4", "ip6"):
        block = doc.get(key)
        if isinstance(block, dict):
            ips.append({"address": block.get("ip"), "gateway": block.get("gateway")})
            routes.extend(block.get("routes") or [])
    return {"ips": ips, "routes": routes, "dns": doc.get("dns") or {}}


def from_wire(doc: object, version: str) -> Result:
    """Parse a result document of CNI ``version`` (the doc's own cniVersion wins)."""
    if not isinstance(doc, dict):
        raise CNIError(DECODING_FAILURE, "result must be a JSON object")
    own = doc.get("cniVersion") or version
    if not isinstance(own, str) or own not in versions.ALL:
        raise CNIError(INCOMPATIBLE_VERSION, f"unsupported result version {own!r}")
    data = _from_020(doc) if not versions.at_least(own, "0.3.0") else doc
    return parse(Result, data, what="result")


# ---- rendering -----------------------------------------------------------


def _iface(iface: Iface, v11: bool) -> dict[str, object]:
    out: dict[str, object] = {"name": iface.name}
    if iface.mac:
        out["mac"] = iface.mac
    if v11 and iface.mtu:
        out["mtu"] = iface.mtu
    if iface.sandbox:
        out["sandbox"] = iface.sandbox
    if v11 and iface.socket_path:
        out["socketPath"] = iface.socket_path
    if v11 and iface.pci_id:
        out["pciID"] = iface.pci_id
    return out


def _ip(ip: IPConfig, with_family: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    if with_family:
        out["version"] = str(ip.address.version)
    if ip.interface is not None:
        out["interface"] = ip.interface
    out["address"] = str(ip.address)
    if ip.gateway is not None:
        out["gateway"] = str(ip.gateway)
    return out


_ROUTE_11_KEYS = ("mtu", "advmss", "priority", "table", "scope")


def _route(route: Route, v11: bool) -> dict[str, object]:
    out: dict[str, object] = {"dst": str(route.dst)}
    if route.gw is not None:
        out["gw"] = str(route.gw)
    if v11:
        for key in _ROUTE_11_KEYS:
            value = getattr(route, key)
            if value is not None:
                out[key] = value
    return out


def _dns(dns: DNS) -> dict[str, object]:
    out: dict[str, object] = {}
    if dns.nameservers:
        out["nameservers"] = list(dns.nameservers)
    if dns.domain:
        out["domain"] = dns.domain
    if dns.search:
        out["search"] = list(dns.search)
    if dns.options:
        out["options"] = list(dns.options)
    return out


def _to_020(result: Result, version: str) -> dict[str, object]:
    out: dict[str, object] = {"cniVersion": version}
    for family, key in ((4, "ip4"), (6, "ip6")):
        first = next((ip for ip in result.ips if ip.address.version == family), None)
        if first is None:
            continue
        block: dict[str, object] = {"ip": str(first.address)}
        if first.gateway is not None:
            block["gateway"] = str(first.gateway)
        routes = [_route(r, False) for r in result.routes if r.dst.version == family]
        if routes:
            block["routes"] = routes
        out[key] = block
    if len(out) == 1:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"cannot convert result to CNI {version}: no IP addresses",
            "versions before 0.3.0 require at least one IP in a result",
        )
    if not result.dns.is_empty():
        out["dns"] = _dns(result.dns)
    return out


def _to_modern(result: Result, version: str) -> dict[str, object]:
    v11 = versions.at_least(version, "1.1.0")
    with_family = not versions.at_least(version, "1.0.0")
    out: dict[str, object] = {"cniVersion": version}
    if result.interfaces:
        out["interfaces"] = [_iface(i, v11) for i in result.interfaces]
    if result.ips:
        out["ips"] = [_ip(ip, with_family) for ip in result.ips]
    if result.routes:
        out["routes"] = [_route(r, v11) for r in result.routes]
    if not result.dns.is_empty():
        out["dns"] = _dns(result.dns)
    return out


def to_wire(result: Result, version: str) -> dict[str, object]:
    """Render ``result`` in the wire shape of CNI ``version``."""
    if version not in versions.ALL:
        raise CNIError(INCOMPATIBLE_VERSION, f"unsupported result version {version!r}")
    if not versions.at_least(version, "0.3.0"):
        return _to_020(result, version)
    return _to_modern(result, version)
