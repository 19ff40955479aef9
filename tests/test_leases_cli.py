"""``multihome leases``: list either store, copy a node's file store into etcd."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance import etcdrig
from tests.etcd_helpers import NET, Net, addresses, call, leases, ok, owners
from tests.rig import CNIBIN, Netns

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "multihome"))]


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def multihome(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CNIBIN / "multihome"), *args], capture_output=True, text=True, check=False, timeout=60
    )


def nad(path: Path, conf: dict[str, Any]) -> Path:
    """A NetworkAttachmentDefinition as a user keeps it, the config as a JSON string."""
    doc = (
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\n"
        f"metadata:\n  name: {NET}\nspec:\n  config: '{json.dumps(conf)}'\n"
    )
    path.write_text(doc)
    return path


def file_conf(net: Net, data_dir: Path) -> dict[str, Any]:
    doc = net.conf()
    del doc["ipam"]["store"]
    doc["ipam"]["dataDir"] = str(data_dir)
    return doc


def test_list_the_file_store(pod: Netns, tmp_path: Path) -> None:
    doc = file_conf(Net([]), tmp_path / "data")
    for cid in ("alpha", "beta"):
        ok(call("ADD", doc, pod, cid=cid))
    conf = tmp_path / "net.conf"
    conf.write_text(json.dumps(doc))
    table = multihome("leases", "list", "--config", str(conf), "--node", "worker-1")
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["ADDRESS", "CONTAINER", "ID"]
    assert rows[1].split()[:4] == ["203.0.113.10", "alpha", "net1", "worker-1"]
    assert len(rows) == 5  # header, two v4, two v6
    listed = json.loads(multihome("leases", "list", "--config", str(conf), "--json").stdout)
    assert {(x["ip"], x["containerID"]) for x in listed} == {
        ("203.0.113.10", "alpha"),
        ("203.0.113.11", "beta"),
        ("2001:db8:200::10", "alpha"),
        ("2001:db8:200::11", "beta"),
    }
    assert all(x["since"].endswith("Z") for x in listed)


def test_list_etcd(etcd: etcdrig.EtcdCluster, pod: Netns, tmp_path: Path) -> None:
    net = Net(etcd.endpoints, node="worker-2")
    ok(call("ADD", net.conf(), pod, cid="gamma"))
    path = nad(tmp_path / "nad.yaml", net.conf())
    listed = json.loads(multihome("leases", "list", "--config", str(path), "--json").stdout)
    assert [(x["ip"], x["containerID"], x["node"]) for x in listed] == [
        ("203.0.113.10", "gamma", "worker-2"),
        ("2001:db8:200::10", "gamma", "worker-2"),
    ]
    # The same from flags alone, without a config.
    flags = ["--network", NET, "--etcd", etcd.endpoints[0], "--prefix", net.prefix, "--json"]
    assert json.loads(multihome("leases", "list", *flags).stdout) == listed


def test_copy_a_node_into_etcd(etcd: etcdrig.EtcdCluster, pod: Netns, tmp_path: Path) -> None:
    net = Net(etcd.endpoints, node="worker-3")
    data = tmp_path / "data"
    for cid in ("old1", "old2"):
        ok(call("ADD", file_conf(net, data), pod, cid=cid))
    etcd_conf = net.conf()
    etcd_conf["ipam"]["dataDir"] = str(data)  # where this node's file leases are
    path = nad(tmp_path / "nad.yaml", etcd_conf)
    dry = multihome("leases", "copy", "--config", str(path), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would copy 4 leases" in dry.stdout and leases(etcd, net) == {}
    copy = multihome("leases", "copy", "--config", str(path))
    assert copy.returncode == 0, copy.stderr
    assert "copied 4 leases of node worker-3" in copy.stdout
    assert sorted(set(leases(etcd, net).values())) == ["old1\r\nnet1", "old2\r\nnet1"]
    assert {rec["node"] for rec in owners(etcd, net).values()} == {"worker-3"}
    again = multihome("leases", "copy", "--config", str(path))
    assert again.returncode == 0 and "2 attachments were there already" in again.stdout
    # On etcd now: the copied pods keep their addresses, and a new pod gets a free one.
    assert addresses(ok(call("ADD", net.conf(), pod, cid="old1")))[0] == "203.0.113.10/24"
    assert addresses(ok(call("ADD", net.conf(), pod, cid="new")))[0] == "203.0.113.12/24"


def test_copy_refuses_a_conflict_and_writes_nothing(
    etcd: etcdrig.EtcdCluster, pod: Netns, tmp_path: Path
) -> None:
    net = Net(etcd.endpoints, node="worker-4")
    data = tmp_path / "data"
    ok(call("ADD", file_conf(net, data), pod, cid="here1"))  # .10 in the file store
    ok(call("ADD", file_conf(net, data), pod, cid="here2"))  # .11
    ok(call("ADD", net.conf(node="worker-5"), pod, cid="elsewhere"))  # .10 in etcd
    before = etcd.get_prefix(f"{net.prefix}/")
    etcd_conf = net.conf()
    etcd_conf["ipam"]["dataDir"] = str(data)
    copy = multihome("leases", "copy", "--config", str(nad(tmp_path / "nad.yaml", etcd_conf)))
    assert copy.returncode == 1
    assert "conflict: 203.0.113.10: held by here1/net1 here, by elsewhere/net1 in etcd" in (
        copy.stderr
    )
    assert "nothing written" in copy.stderr
    assert etcd.get_prefix(f"{net.prefix}/") == before


def test_usage_errors(tmp_path: Path) -> None:
    none = multihome("leases", "list")
    assert none.returncode == 2 and "name the network" in none.stderr
    conf = tmp_path / "x.conf"
    conf.write_text(json.dumps({"name": "n", "type": "mh-macvlan", "ipam": {"type": "mh-ipam"}}))
    copy = multihome("leases", "copy", "--config", str(conf))
    assert copy.returncode == 2 and "needs an etcd store" in copy.stderr


def test_copy_of_legacy_leases_needs_an_ifname(
    etcd: etcdrig.EtcdCluster, pod: Netns, tmp_path: Path
) -> None:
    """host-local's old files hold only the container ID: copy asks which ifname."""
    net = Net(etcd.endpoints, node="worker-6")
    data = tmp_path / "data"
    ok(call("ADD", file_conf(net, data), pod, cid="modern"))
    (data / NET / "203.0.113.30").write_text("legacyid")
    etcd_conf = net.conf()
    etcd_conf["ipam"]["dataDir"] = str(data)
    path = nad(tmp_path / "nad.yaml", etcd_conf)
    refused = multihome("leases", "copy", "--config", str(path))
    assert refused.returncode == 1 and "--legacy-ifname" in refused.stderr
    assert leases(etcd, net) == {}
    copied = multihome("leases", "copy", "--config", str(path), "--legacy-ifname", "eth1")
    assert copied.returncode == 0, copied.stderr
    assert leases(etcd, net)["4/203.000.113.030"] == "legacyid\r\neth1"
