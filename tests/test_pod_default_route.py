"""IPAM routes in a Multus-shaped pod (eth0 with an address and a default route).

The reference adds IPAM routes without NLM_F_EXCL: a ``0.0.0.0/0`` via net1
lands ahead of eth0's default (IPv6: beside it), and DEL takes away only what
ADD added. Ours does the same; every case runs for ours and for the reference
(Debian's macvlan + host-local) and compares what the kernel holds (``ip -j``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.ipam_helpers import SEED_RANGES
from tests.link_helpers import GW4, GW6, add_gateway
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan")),
    pytest.mark.needs_tool(str(REFERENCE_BIN / "macvlan")),
]
# eth0's gateways, as the topo fixture gives every pod (rig.cluster_eth0, n=1)
ETH0_GW4, ETH0_GW6 = "10.244.1.1", "fd00:10:244:1::1"
IMPLS = {"ours": ("mh-macvlan", "mh-ipam"), "reference": ("macvlan", "host-local")}


def routes(topo: Topology) -> list[tuple[str, str | None, str]]:
    """Every main-table route, in the kernel's order (an ECMP route lists its paths)."""
    out = []
    for family in ("-4", "-6"):
        for r in topo.pod.ipj(family, "route", "show", "table", "main"):
            if r.get("protocol") == "kernel" and r["dst"].startswith("fe80"):
                continue  # link-local routes come and go with the links
            hops = r.get("nexthops") or [r]
            for hop in hops:
                out.append((r["dst"], hop.get("gateway"), hop["dev"]))
    return out


def defaults(topo: Topology) -> list[tuple[str, str | None, str]]:
    return [r for r in routes(topo) if r[0] == "default"]


def conf(impl: str, master: str, datadir: Path, routes: list[dict[str, str]]) -> dict[str, Any]:
    link, ipam = IMPLS[impl]
    return {
        "cniVersion": "1.0.0",
        "name": f"pod-default-{impl}",
        "plugins": [
            {
                "type": link,
                "master": master,
                "mode": "bridge",
                "ipam": {
                    "type": ipam,
                    "dataDir": str(datadir),
                    "ranges": SEED_RANGES,
                    "routes": routes,
                },
            }
        ],
    }


@pytest.mark.parametrize("impl", list(IMPLS))
def test_default_route_via_net1_lands_ahead_of_eth0s(
    impl: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    add_gateway(topo)
    before = routes(topo)
    net = cnitool.write(
        conf(impl, topo.master, tmp_path / "ipam", [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
    )
    proc = cnitool.run("add", net, topo.pod)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result = json.loads(proc.stdout)
    assert {r["dst"] for r in result["routes"]} == {"0.0.0.0/0", "::/0"}
    got = defaults(topo)
    v4 = [r for r in got if ":" not in (r[1] or "")]
    v6 = [r for r in got if ":" in (r[1] or "")]
    assert v4 == [("default", GW4, "net1"), ("default", ETH0_GW4, "eth0")]
    assert sorted(v6) == sorted([("default", GW6, "net1"), ("default", ETH0_GW6, "eth0")])
    assert topo.pod.exec("ip", "route", "get", "192.0.2.99").stdout.split()[2] == GW4
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert routes(topo) == before
    assert cnitool.run("del", net, topo.pod).returncode == 0


@pytest.mark.parametrize("impl", list(IMPLS))
def test_route_to_a_destination_eth0_has_then_check_after_eth0s_is_gone(
    impl: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    """A route eth0 also has (10.96.0.0/12, a service CIDR) goes in ahead; our CHECK
    looks for ours only, and still passes when eth0's route is removed."""
    add_gateway(topo)
    topo.pod.ip("route", "add", "10.96.0.0/12", "via", ETH0_GW4, "dev", "eth0")
    net = cnitool.write(conf(impl, topo.master, tmp_path / "ipam", [{"dst": "10.96.0.0/12"}]))
    proc = cnitool.run("add", net, topo.pod)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    svc = [r for r in routes(topo) if r[0] == "10.96.0.0/12"]
    assert svc == [("10.96.0.0/12", GW4, "net1"), ("10.96.0.0/12", ETH0_GW4, "eth0")]
    topo.pod.ip("route", "del", "10.96.0.0/12", "via", ETH0_GW4, "dev", "eth0")
    check = cnitool.run("check", net, topo.pod)
    if impl == "ours":
        assert check.returncode == 0, check.stdout
    else:  # the reference compares the result's empty gw with the kernel's: a fault of its
        assert "not found in routing table" in check.stderr
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert [r for r in routes(topo) if r[2] == "net1"] == []
    assert defaults(topo) == [("default", ETH0_GW4, "eth0"), ("default", ETH0_GW6, "eth0")]


def test_check_fails_when_our_default_is_gone(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    """eth0's default does not stand in for ours: CHECK matches the interface too."""
    add_gateway(topo)
    net = cnitool.write(conf("ours", topo.master, tmp_path / "ipam", [{"dst": "0.0.0.0/0"}]))
    assert cnitool.run("add", net, topo.pod).returncode == 0
    topo.pod.ip("route", "del", "default", "via", GW4, "dev", "net1")
    proc = cnitool.run("check", net, topo.pod)
    assert proc.returncode != 0
    assert "route 0.0.0.0/0 via 203.0.113.1 is missing" in proc.stdout + proc.stderr
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert defaults(topo) == [("default", ETH0_GW4, "eth0"), ("default", ETH0_GW6, "eth0")]
