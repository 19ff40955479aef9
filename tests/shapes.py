"""Independent checks of wire documents against the spec, per version.

Written from SPEC.md and libcni's types/020, 040 and 100, not from our code.
"""

from __future__ import annotations

import ipaddress
from typing import Any

LEGACY = ("0.1.0", "0.2.0")
WITH_IP_VERSION = ("0.3.0", "0.3.1", "0.4.0")
IFACE_KEYS = {"name", "mac", "sandbox"}
IFACE_KEYS_11 = IFACE_KEYS | {"mtu", "socketPath", "pciID"}
ROUTE_KEYS = {"dst", "gw"}
ROUTE_KEYS_11 = ROUTE_KEYS | {"mtu", "advmss", "priority", "table", "scope"}
DNS_KEYS = {"nameservers", "domain", "search", "options"}


def _cidr(value: Any) -> None:
    assert isinstance(value, str) and "/" in value, value
    ipaddress.ip_interface(value)


def _ip(value: Any) -> None:
    assert isinstance(value, str), value
    ipaddress.ip_address(value)


def _route(route: Any, keys: set[str]) -> None:
    assert isinstance(route, dict) and set(route) <= keys, route
    ipaddress.ip_network(route["dst"], strict=False)
    if "gw" in route:
        _ip(route["gw"])


def _dns(dns: Any) -> None:
    assert isinstance(dns, dict) and set(dns) <= DNS_KEYS, dns


def _check_legacy(doc: dict[str, Any]) -> None:
    assert set(doc) <= {"cniVersion", "ip4", "ip6", "dns"}, doc
    assert "ip4" in doc or "ip6" in doc, "0.2.0 results need an IP"
    for key, family in (("ip4", 4), ("ip6", 6)):
        if key not in doc:
            continue
        block = doc[key]
        assert set(block) <= {"ip", "gateway", "routes"}, block
        _cidr(block["ip"])
        assert ipaddress.ip_interface(block["ip"]).version == family
        if "gateway" in block:
            _ip(block["gateway"])
        for route in block.get("routes", []):
            _route(route, ROUTE_KEYS)


def _check_ip(ip: Any, version: str, n_interfaces: int) -> None:
    if version in WITH_IP_VERSION:
        assert ip.get("version") in ("4", "6"), ip
        assert ipaddress.ip_interface(ip["address"]).version == int(ip["version"])
    else:
        assert "version" not in ip, ip
    assert set(ip) <= {"version", "address", "gateway", "interface"}, ip
    _cidr(ip["address"])
    if "gateway" in ip:
        _ip(ip["gateway"])
    if "interface" in ip:
        assert isinstance(ip["interface"], int)
        assert 0 <= ip["interface"] < n_interfaces, ip


def check_result(doc: Any, version: str) -> None:
    """Assert ``doc`` is a well-formed result of CNI ``version``."""
    assert isinstance(doc, dict), doc
    assert doc.get("cniVersion") == version, (doc.get("cniVersion"), version)
    if "dns" in doc:
        _dns(doc["dns"])
    if version in LEGACY:
        _check_legacy(doc)
        return
    v11 = version == "1.1.0"
    assert set(doc) <= {"cniVersion", "interfaces", "ips", "routes", "dns"}, doc
    interfaces = doc.get("interfaces", [])
    for iface in interfaces:
        assert isinstance(iface, dict) and "name" in iface, iface
        assert set(iface) <= (IFACE_KEYS_11 if v11 else IFACE_KEYS), iface
    for ip in doc.get("ips", []):
        _check_ip(ip, version, len(interfaces))
    for route in doc.get("routes", []):
        _route(route, ROUTE_KEYS_11 if v11 else ROUTE_KEYS)


def check_error(doc: Any, code: int | None = None) -> None:
    """Assert ``doc`` is a CNI error document (with ``code`` when given)."""
    assert isinstance(doc, dict), doc
    assert set(doc) <= {"cniVersion", "code", "msg", "details"}, doc
    assert isinstance(doc.get("code"), int), doc
    assert isinstance(doc.get("msg"), str) and doc["msg"], doc
    assert "Traceback" not in doc["msg"] and "Traceback" not in doc.get("details", ""), doc
    if code is not None:
        assert doc["code"] == code, doc


def check_version_reply(doc: Any) -> None:
    assert isinstance(doc, dict) and set(doc) == {"cniVersion", "supportedVersions"}, doc
    assert isinstance(doc["supportedVersions"], list)
