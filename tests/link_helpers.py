"""Shared pieces of the macvlan/ipvlan tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Topology
from tests.ipam_helpers import SEED_RANGES

# Each test runs for both kinds; ipvlan needs a kernel with it (see make test-vm).
KINDS = [
    pytest.param("macvlan", id="macvlan"),
    pytest.param("ipvlan", id="ipvlan", marks=pytest.mark.needs_kernel("ipvlan")),
]
MODES = {"macvlan": ["bridge", "private", "vepa", "passthru"], "ipvlan": ["l2", "l3", "l3s"]}
GW4, GW6 = "203.0.113.1", "2001:db8:200::1"


def mh_ipam(datadir: str, **extra: Any) -> dict[str, Any]:
    return {"type": "mh-ipam", "dataDir": datadir, "ranges": SEED_RANGES, **extra}


def host_local(datadir: str) -> dict[str, Any]:
    return {"type": "host-local", "dataDir": datadir, "ranges": SEED_RANGES}


def conflist(
    kind: str,
    master: str,
    ipam: dict[str, Any],
    version: str = "1.0.0",
    name: str = "macvlan-conf-1",
    **plugin: Any,
) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": name,
        "plugins": [{"type": f"mh-{kind}", "master": master, "ipam": ipam, **plugin}],
    }


def add_gateway(topo: Topology) -> None:
    """The peer namespace plays the VLAN's router: 203.0.113.1 and 2001:db8:200::1."""
    topo.peer.ip("addr", "add", f"{GW4}/24", "dev", "mhp0")
    topo.peer.ip("addr", "add", f"{GW6}/64", "dev", "mhp0", "nodad")


def link(topo: Topology, ifname: str = "net1") -> dict[str, Any]:
    found = [x for x in topo.pod.ipj("-d", "link", "show") if x["ifname"] == ifname]
    assert found, f"{ifname} missing in the pod"
    return dict(found[0])


def addresses(topo: Topology, ifname: str = "net1") -> list[str]:
    data = topo.pod.ipj("addr", "show", "dev", ifname)
    return [
        f"{a['local']}/{a['prefixlen']}" for a in data[0]["addr_info"] if a["scope"] == "global"
    ]
