"""mh-ipam's and mh-static's ``routes`` can name a computed set (as mh-route's presets):
the abcdesktop network as ONE plugin, mh-macvlan with in-process mh-ipam."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.ipam import config
from multihome.ipam.routes import expand
from multihome.lib.errors import CNIError
from multihome.lib.result import IPConfig
from multihome.plugins import routesets
from tests.conftest import Topology
from tests.ipam_helpers import SEED_RANGES, request
from tests.link_helpers import GW4, GW6, add_gateway
from tests.rig import CNIBIN, Cnitool
from tests.test_pod_default_route import defaults

PUBLIC = {"presets": ["public-ipv4", "default-ipv6"], "exclude": ["100.64.0.0/10"]}


def test_a_set_expands_in_place_via_each_familys_gateway() -> None:
    pool = config.load(request({"ranges": SEED_RANGES, "routes": [{"dst": "10.9.0.0/16"}, PUBLIC]}))
    ips = [
        IPConfig(address=ipaddress.ip_interface("203.0.113.10/24"), gateway=GW4),
        IPConfig(address=ipaddress.ip_interface("2001:db8:200::10/64"), gateway=GW6),
    ]
    routes = expand(pool.routes, ips)
    wanted = routesets.compute(["public-ipv4", "default-ipv6"], ["100.64.0.0/10"])
    assert [str(r.dst) for r in routes] == ["10.9.0.0/16", *map(str, wanted)]
    assert routes[0].gw is None  # an entry without gw stays as written
    assert {str(r.gw) for r in routes[1:] if r.dst.version == 4} == {GW4}
    assert {str(r.gw) for r in routes[1:] if r.dst.version == 6} == {GW6}


def test_a_sets_own_gw_wins_for_its_family() -> None:
    pool = config.load(
        request(
            {"ranges": SEED_RANGES, "routes": [{"presets": ["public-ipv4"], "gw": "203.0.113.9"}]}
        )
    )
    ips = [IPConfig(address=ipaddress.ip_interface("203.0.113.10/24"), gateway=GW4)]
    assert {str(r.gw) for r in expand(pool.routes, ips)} == {"203.0.113.9"}


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"presets": ["public-ipv5"]}, "unknown preset 'public-ipv5'"),
        ({"presets": []}, "presets"),
        ({"presets": ["public-ipv4"], "gw": ["203.0.113.1", "203.0.113.2"]}, "one gateway per"),
        ({"presets": ["public-ipv4"], "exclude": ["10.0.0.0"]}, "CIDR"),
    ],
)
def test_bad_sets_are_code_7(entry: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CNIError) as err:
        config.load(request({"ranges": SEED_RANGES, "routes": [entry]}))
    assert err.value.code == 7
    assert fragment in err.value.msg + str(err.value.details)


def kernel_routes(topo: Topology, family: str) -> dict[str, str]:
    return {
        r["dst"]: r.get("gateway", "") for r in topo.pod.ipj(family, "route", "show", "dev", "net1")
    }


@pytest.mark.privileged
@pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))
@pytest.mark.parametrize("ipam", ["mh-ipam", "mh-static"])
def test_one_plugin_network_with_the_public_set(
    ipam: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    add_gateway(topo)
    if ipam == "mh-ipam":
        body: dict[str, Any] = {"type": "mh-ipam", "dataDir": str(tmp_path), "ranges": SEED_RANGES}
    else:
        body = {
            "type": "mh-static",
            "addresses": [
                {"address": "203.0.113.10/24", "gateway": GW4},
                {"address": "2001:db8:200::10/64", "gateway": GW6},
            ],
        }
    body["routes"] = [PUBLIC]
    net = cnitool.write(
        {
            "cniVersion": "1.0.0",
            "name": "abcdesktop",
            "plugins": [{"type": "mh-macvlan", "master": topo.master, "ipam": body}],
        }
    )
    proc = cnitool.run("add", net, topo.pod)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wanted = routesets.compute(["public-ipv4", "default-ipv6"], ["100.64.0.0/10"])
    result = json.loads(proc.stdout)
    assert [r["dst"] for r in result["routes"]] == [str(n) for n in wanted]
    v4 = kernel_routes(topo, "-4")
    assert {d: g for d, g in v4.items() if g} == {str(n): GW4 for n in wanted if n.version == 4}
    assert ("default", GW6, "net1") in defaults(topo)  # (beside eth0's: ECMP, as the reference)
    assert topo.pod.exec("ip", "route", "get", "8.8.8.8").stdout.split()[4] == "net1"
    assert topo.pod.exec("ip", "route", "get", "10.96.0.1").stdout.split()[4] == "eth0"
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert "net1" not in topo.pod.links()


CIDRS = st.one_of(
    st.builds(
        lambda a, p: f"{ipaddress.IPv4Address(a)}/{p}",
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, p: f"{ipaddress.IPv6Address(a)}/{p}",
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    presets=st.lists(st.sampled_from(list(routesets.PRESETS)), min_size=1, max_size=3),
    exclude=st.lists(CIDRS, max_size=6),
)
def test_sets_equal_netaddrs(presets: list[str], exclude: list[str]) -> None:
    """The stdlib computation (no netaddr import on the plugin path) against netaddr."""
    total = netaddr.IPSet()
    for name in presets:
        universe, excluded = routesets.PRESETS[name]
        total |= netaddr.IPSet([universe]) - netaddr.IPSet(excluded)
    total -= netaddr.IPSet(exclude)
    cidrs = [ipaddress.ip_network(str(c)) for c in total.iter_cidrs()]
    wanted = [c for c in cidrs if c.version == 4] + [c for c in cidrs if c.version == 6]
    assert routesets.compute(presets, exclude) == wanted
