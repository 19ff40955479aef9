"""One canonical Result, converted to and from every spec version."""

from __future__ import annotations

import json
from typing import Any

import pytest

from multihome.lib import result as res
from multihome.lib.errors import CNIError
from tests.rig import VERSIONS
from tests.shapes import check_result

FULL_110: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "net1", "mac": "c2:11:22:33:44:55", "mtu": 1400, "sandbox": "/run/netns/x"},
        {
            "name": "mhm0",
            "mac": "c2:11:22:33:44:66",
            "socketPath": "/run/x.sock",
            "pciID": "0000:00:1f.0",
        },
    ],
    "ips": [
        {"address": "203.0.113.10/24", "gateway": "203.0.113.1", "interface": 0},
        {"address": "203.0.113.11/24", "interface": 0},
        {"address": "2001:db8:200::10/64", "gateway": "2001:db8:200::1", "interface": 0},
    ],
    "routes": [
        {"dst": "0.0.0.0/0", "gw": "203.0.113.1", "table": 100, "priority": 10},
        {"dst": "192.169.0.0/16", "mtu": 1300, "advmss": 1260, "scope": 0},
        {"dst": "::/0", "gw": "2001:db8:200::1"},
    ],
    "dns": {
        "nameservers": ["203.0.113.53"],
        "domain": "example.org",
        "search": ["a.example"],
        "options": ["ndots:2"],
    },
}


@pytest.mark.parametrize("version", VERSIONS)
def test_full_result_renders_in_every_version(version: str) -> None:
    doc = res.to_wire(res.from_wire(FULL_110, "1.1.0"), version)
    check_result(json.loads(json.dumps(doc)), version)


def test_110_keeps_everything() -> None:
    doc = res.to_wire(res.from_wire(FULL_110, "1.1.0"), "1.1.0")
    assert doc == FULL_110


def test_100_drops_11_fields() -> None:
    doc = res.to_wire(res.from_wire(FULL_110, "1.1.0"), "1.0.0")
    assert doc["interfaces"][0] == {
        "name": "net1",
        "mac": "c2:11:22:33:44:55",
        "sandbox": "/run/netns/x",
    }
    assert doc["routes"][0] == {"dst": "0.0.0.0/0", "gw": "203.0.113.1"}
    assert all("version" not in ip for ip in doc["ips"])


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_03x_adds_ip_version(version: str) -> None:
    doc = res.to_wire(res.from_wire(FULL_110, "1.1.0"), version)
    assert [ip["version"] for ip in doc["ips"]] == ["4", "4", "6"]


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_keeps_first_ip_per_family(version: str) -> None:
    doc = res.to_wire(res.from_wire(FULL_110, "1.1.0"), version)
    assert doc["ip4"] == {
        "ip": "203.0.113.10/24",
        "gateway": "203.0.113.1",
        "routes": [{"dst": "0.0.0.0/0", "gw": "203.0.113.1"}, {"dst": "192.169.0.0/16"}],
    }
    assert doc["ip6"] == {
        "ip": "2001:db8:200::10/64",
        "gateway": "2001:db8:200::1",
        "routes": [{"dst": "::/0", "gw": "2001:db8:200::1"}],
    }
    assert doc["dns"]["nameservers"] == ["203.0.113.53"]


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_legacy_without_ips_is_an_error(version: str) -> None:
    with pytest.raises(CNIError) as err:
        res.to_wire(res.Result(), version)
    assert err.value.code == 1


def test_legacy_parses_into_canonical() -> None:
    legacy = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "2001:db8::5/64"},
        "dns": {"nameservers": ["10.1.0.53"]},
    }
    result = res.from_wire(legacy, "0.2.0")
    assert [str(ip.address) for ip in result.ips] == ["10.1.0.5/16", "2001:db8::5/64"]
    assert str(result.ips[0].gateway) == "10.1.0.1"
    assert [str(r.dst) for r in result.routes] == ["0.0.0.0/0"]
    assert res.to_wire(result, "1.0.0") == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"}, {"address": "2001:db8::5/64"}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.1.0.53"]},
    }


@pytest.mark.parametrize("src", VERSIONS)
@pytest.mark.parametrize("dst", VERSIONS)
def test_round_trip_between_every_pair(src: str, dst: str) -> None:
    first = res.to_wire(res.from_wire(FULL_110, "1.1.0"), src)
    second = res.to_wire(res.from_wire(first, src), dst)
    check_result(second, dst)


def test_route_dst_host_bits_are_masked_like_go() -> None:
    result = res.from_wire({"cniVersion": "1.0.0", "routes": [{"dst": "10.1.2.3/8"}]}, "1.0.0")
    assert str(result.routes[0].dst) == "10.0.0.0/8"


def test_prev_result_without_version_takes_the_configs() -> None:
    result = res.from_wire({"ip4": {"ip": "10.0.0.2/24"}}, "0.2.0")
    assert str(result.ips[0].address) == "10.0.0.2/24"


@pytest.mark.parametrize(
    "doc",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3"}]},
        {"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]},
        {"cniVersion": "9.9.9"},
        [],
    ],
)
def test_bad_results_are_clear_errors(doc: Any) -> None:
    with pytest.raises(CNIError) as err:
        res.from_wire(doc, "1.0.0")
    assert err.value.code in (1, 6, 7)
    assert "Traceback" not in err.value.details
