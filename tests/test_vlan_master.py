"""The seed's setup for real: the master is an 802.1Q sub-interface, eno1.200.

Needs the kernel's 8021q (vlan) support: it runs in ``make test-vm``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Topology
from tests.link_helpers import GW4, GW6, KINDS, addresses, conflist, link, mh_ipam
from tests.rig import CNIBIN, Cnitool

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_kernel("vlan"),
    pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan")),
]


def vlan_200(topo: Topology) -> str:
    """eno1.200 on the host side, and a VLAN 200 router on the peer side."""
    topo.host.ip(
        "link", "add", "link", topo.master, "name", "eno1.200", "type", "vlan", "id", "200"
    )
    topo.host.ip("link", "set", "eno1.200", "up")
    topo.peer.ip("link", "add", "link", "mhp0", "name", "gw.200", "type", "vlan", "id", "200")
    topo.peer.ip("link", "set", "gw.200", "up")
    topo.peer.ip("addr", "add", f"{GW4}/24", "dev", "gw.200")
    topo.peer.ip("addr", "add", f"{GW6}/64", "dev", "gw.200", "nodad")
    return "eno1.200"


@pytest.mark.parametrize("kind", KINDS)
def test_seed_on_a_real_vlan_sub_interface(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    master = vlan_200(topo)
    routes = [{"dst": "192.169.0.0/16", "gw": GW4}, {"dst": "::/0", "gw": GW6}]
    net = cnitool.write(conflist(kind, master, mh_ipam(str(tmp_path), routes=routes)))
    add = cnitool.run("add", net, topo.pod)
    assert add.returncode == 0, add.stderr
    assert [ip["address"] for ip in json.loads(add.stdout)["ips"]] == addresses(topo)
    assert link(topo)["link_index"] == topo.host.ipj("link", "show", master)[0]["ifindex"]
    # The router's addresses live only on its VLAN 200 sub-interface, so an
    # answer proves the pod's frames left eno1.200 tagged with VLAN 200.
    assert topo.peer.ipj("addr", "show", "dev", "mhp0")[0]["addr_info"][0]["scope"] == "link"
    topo.pod.exec("ping", "-c", "1", "-W", "3", GW4)
    topo.pod.exec("ping", "-6", "-c", "1", "-W", "3", GW6)
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert topo.pod.links() == ["lo", "eth0"]
