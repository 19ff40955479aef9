"""libcni drives mh-macvlan + mh-ipam on etcd, as Multus would on two nodes.

etcd runs inside the "host" namespace (on its loopback), where cnitool and
so the plugins run; two pods on the same VLAN master, attached by two
"nodes", get distinct addresses from the one shared pool and reach each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance import etcdrig
from tests import etcd_node
from tests.conftest import Topology
from tests.rig import CNIBIN, Cnitool, Netns
from tests.shapes import check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))]
NET = "vlan200-etcd"


def conflist(master: str, endpoints: list[str], node: str) -> dict[str, Any]:
    profile = etcd_node.add_profile({"endpoints": endpoints})  # the default prefix
    return {
        "cniVersion": "1.0.0",  # Debian's libcni 1.1.2 speaks up to 1.0.0
        "name": NET,
        "plugins": [
            {
                "type": "mh-macvlan",
                "master": master,
                "mode": "bridge",
                "ipam": {
                    "type": "mh-ipam",
                    "store": {"type": "etcd", "profile": profile, "node": node},
                    "ranges": [[{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10"}]],
                },
            }
        ],
    }


def addresses(ns: Netns) -> list[str]:
    links = ns.ipj("-4", "addr", "show", "dev", "net1")
    return [f"{a['local']}/{a['prefixlen']}" for a in links[0]["addr_info"]]


def test_two_nodes_one_pool_through_libcni(
    topo: Topology,
    host_etcd: etcdrig.EtcdCluster,
    cnitool: Cnitool,
    netns_factory: Callable[[str], Netns],
    tmp_path: Path,
) -> None:
    second = netns_factory("pod")
    pods = {"node-a": topo.pod, "node-b": second}
    results = {}
    for node, pod in pods.items():
        net = cnitool.write(conflist(topo.master, host_etcd.endpoints, node), f"{node}.conflist")
        assert net == NET
        # Two config dirs would be two nodes; one dir with a file per node is simpler:
        # cnitool picks the file by network name, so write the node's just before use.
        add = cnitool.run("add", net, pod, container_id=f"pod-{node}")
        assert add.returncode == 0, add.stdout + add.stderr
        results[node] = json.loads(add.stdout)
        check_result(results[node], "1.0.0")
        (cnitool.confdir / f"{node}.conflist").unlink()
    assert addresses(topo.pod) == ["203.0.113.10/24"]
    assert addresses(second) == ["203.0.113.11/24"]
    topo.pod.exec("ping", "-c", "1", "-W", "2", "203.0.113.11")
    base = f"/multihome/ipam/{NET}/"
    owners = {k: json.loads(v) for k, v in host_etcd.get_prefix(base + "owners/").items()}
    assert {rec["node"] for rec in owners.values()} == {"node-a", "node-b"}
    for node, pod in pods.items():
        cnitool.write(conflist(topo.master, host_etcd.endpoints, node), f"{node}.conflist")
        check = cnitool.run("check", NET, pod, container_id=f"pod-{node}")
        assert check.returncode == 0, check.stdout + check.stderr
        delete = cnitool.run("del", NET, pod, container_id=f"pod-{node}")
        assert delete.returncode == 0, delete.stdout + delete.stderr
        (cnitool.confdir / f"{node}.conflist").unlink()
        assert "net1" not in pod.links()
    assert host_etcd.get_prefix(base + "ips/") == {}
    assert host_etcd.get_prefix(base + "owners/") == {}


def test_thick_mode_reaches_etcd_from_the_callers_namespace(
    topo: Topology,
    host_etcd: etcdrig.EtcdCluster,
    cnitool: Cnitool,
    netns_factory: Callable[[str], Netns],
    tmp_path: Path,
) -> None:
    """The daemon (in our namespace) serves shims run in "host", where etcd is: its
    etcd connections are made, and kept, in the caller's namespace."""
    from tests.test_daemon import Daemon

    daemon = Daemon(tmp_path / "run" / "mh.sock")
    try:
        env = {"MULTIHOME_SOCKET": str(daemon.sock)}
        net = cnitool.write(conflist(topo.master, host_etcd.endpoints, "node-a"))
        pods = [topo.pod, netns_factory("pod"), netns_factory("pod")]
        for n, pod in enumerate(pods):
            add = cnitool.run("add", net, pod, container_id=f"thick{n}", extra_env=env)
            assert add.returncode == 0, add.stdout + add.stderr
            assert addresses(pod) == [f"203.0.113.{10 + n}/24"]
        for n, pod in enumerate(pods):
            delete = cnitool.run("del", net, pod, container_id=f"thick{n}", extra_env=env)
            assert delete.returncode == 0, delete.stdout + delete.stderr
        assert daemon.served() >= 2 * len(pods)
    finally:
        daemon.stop()
    assert host_etcd.get_prefix(f"/multihome/ipam/{NET}/").keys() <= {
        f"/multihome/ipam/{NET}/cursor/0"
    }
