"""GC's attachment list says what to keep: a malformed one is refused, nothing freed.

A list read as shorter than it is frees leases that pods still hold, so every
malformed shape gets code 7 naming the bad entry, in mh-ipam (file store and
etcd), mh-route, and through mh-macvlan / mh-ipvlan, which forward GC.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance import etcdrig
from lib.errors import INVALID_CONFIG, CNIError
from lib.request import Request
from tests import etcd_helpers
from tests.conftest import Topology
from tests.ipam_helpers import SEED_RANGES
from tests.link_helpers import KINDS, conflist, mh_ipam
from tests.rig import CNIBIN, REFERENCE_BIN, Netns, one_json, plugin_env, run_plugin
from tests.shapes import check_error

KEYS = ["cni.dev/valid-attachments", "cni.dev/attachments"]
GOOD = {"containerID": "c1", "ifname": "net1"}
# (value of the key, what the error must name)
MALFORMED: list[tuple[Any, str]] = [
    ([1], "[0]"),
    ([{"containerId": "c1", "ifname": "net1"}], '"containerId"'),
    ([GOOD, {"containerID": "c2"}], "[1]"),
    ([{"ifname": "net1"}], "[0]"),
    ([{"containerID": "", "ifname": "net1"}], "[0]"),
    ([{"containerID": "c1", "ifname": ""}], "[0]"),
    ([{"containerID": 7, "ifname": "net1"}], "[0]"),
    ([{"containerID": "c1", "ifName": "net1"}], '"ifName"'),
    ([GOOD, None], "[1]"),
    ([GOOD, "c2/net1"], "[1]"),
    ([[GOOD]], "[0]"),
    ({"containerID": "c1", "ifname": "net1"}, "must be a list"),
    ("c1/net1", "must be a list"),
    (None, "must be a list"),
    (0, "must be a list"),
]
IDS = [f"m{i}" for i in range(len(MALFORMED))]


def request(conf: dict[str, Any]) -> Request:
    return Request("mh-ipam", {"CNI_COMMAND": "GC"}, b"", conf=conf, cni_version="1.1.0", args={})


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(("value", "named"), MALFORMED, ids=IDS)
def test_malformed_list_is_refused(key: str, value: Any, named: str) -> None:
    with pytest.raises(CNIError) as caught:
        request({key: value}).valid_attachments()
    assert caught.value.code == INVALID_CONFIG
    assert key in caught.value.msg and named in caught.value.msg + caught.value.details
    assert "nothing released" in caught.value.details


def test_well_formed_lists() -> None:
    assert request({}).valid_attachments() is None
    assert request({KEYS[0]: []}).valid_attachments() == []
    extra = {**GOOD, "future": 1}  # unknown keys in an entry are ignored, never rejected
    assert request({KEYS[1]: [extra]}).valid_attachments() == [("c1", "net1")]
    both = {KEYS[0]: [GOOD], KEYS[1]: [GOOD, {"containerID": "c2", "ifname": "eth0"}]}
    assert request(both).valid_attachments() == [("c1", "net1")]  # the spec's key wins


def test_one_malformed_key_of_two_is_refused() -> None:
    with pytest.raises(CNIError):
        request({KEYS[0]: [GOOD], KEYS[1]: [1]}).valid_attachments()


# ---- the executables: nothing freed ------------------------------------------------------

NET = "gcnet"


def ipam_conf(datadir: Path, **top: Any) -> dict[str, Any]:
    ipam = {"type": "mh-ipam", "dataDir": str(datadir), "ranges": SEED_RANGES}
    return {"cniVersion": "1.1.0", "name": NET, "type": "mh-macvlan", "ipam": ipam, **top}


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its contents, read by the test, not the store."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def call(command: str, doc: dict[str, Any], pod: Netns | None, cid: str = "c1") -> Any:
    env = plugin_env(command, CNI_CONTAINERID=cid, CNI_IFNAME="net1")
    if pod is not None:
        env["CNI_NETNS"] = pod.path
    return run_plugin("mh-ipam", env, doc)


def refused(proc: Any, named: str) -> None:
    assert proc.returncode != 0, proc.stderr.decode()
    doc = one_json(proc.stdout)
    check_error(doc, INVALID_CONFIG)
    assert named in doc["msg"] + doc.get("details", ""), doc


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


@pytest.mark.privileged
@pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))
@pytest.mark.parametrize("key", KEYS)
def test_file_store_keeps_every_lease(key: str, pod: Netns, tmp_path: Path) -> None:
    """The issue's reproduction: three ADDs, then each malformed GC; the store is unchanged."""
    for cid in ("c1", "c2", "c3"):
        assert call("ADD", ipam_conf(tmp_path), pod, cid).returncode == 0
    before = files(tmp_path)
    assert len([n for n in before if n.count(".") == 3 or ":" in n]) == 6  # 3 x (v4 + v6)
    for value, named in MALFORMED:
        refused(call("GC", ipam_conf(tmp_path, **{key: value}), None), named)
        assert files(tmp_path) == before, value
    good = ipam_conf(tmp_path, **{key: [GOOD]})
    assert call("GC", good, None).returncode == 0  # a good list still frees c2 and c3
    assert {v for k, v in files(tmp_path).items() if "/" in k and "." in k.split("/")[-1]} >= {
        b"c1\r\nnet1"
    }
    assert b"c2\r\nnet1" not in files(tmp_path).values()


@pytest.mark.privileged
@pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))
def test_etcd_store_keeps_every_lease(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    net = etcd_helpers.Net(etcd.endpoints)
    for cid in ("c1", "c2", "c3"):
        etcd_helpers.ok(etcd_helpers.call("ADD", net.conf(), pod, cid=cid))
    before = etcd.get_prefix(net.prefix + "/")
    assert len(etcd_helpers.owners(etcd, net)) == 3
    for key in KEYS:
        for value, named in MALFORMED:
            refused(etcd_helpers.call("GC", net.conf(**{key: value}), None), named)
            assert etcd.get_prefix(net.prefix + "/") == before, (key, value)
    etcd_helpers.ok(etcd_helpers.call("GC", net.conf(**{KEYS[0]: [GOOD]}), None))
    assert set(etcd_helpers.owners(etcd, net)) == {"c1/net1"}


@pytest.mark.privileged
@pytest.mark.needs_tool(str(CNIBIN / "mh-route"))
def test_route_keeps_its_state(tmp_path: Path) -> None:
    state = tmp_path / "state" / NET
    state.mkdir(parents=True)
    for cid in ("c1", "c2"):
        (state / f"{cid}-net1.json").write_text("{}")
    doc = {"cniVersion": "1.1.0", "name": NET, "type": "mh-route", "stateDir": str(state.parent)}
    for key in KEYS:
        for value, named in MALFORMED:
            proc = run_plugin("mh-route", plugin_env("GC"), {**doc, key: value})
            refused(proc, named)
            assert sorted(p.name for p in state.iterdir()) == ["c1-net1.json", "c2-net1.json"]
    assert run_plugin("mh-route", plugin_env("GC"), {**doc, KEYS[0]: [GOOD]}).returncode == 0
    assert sorted(p.name for p in state.iterdir()) == ["c1-net1.json"]


def forward(kind: str, topo: Topology, conf: dict[str, Any], command: str, cid: str) -> Any:
    doc = {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0]}
    env = plugin_env(
        command, CNI_CONTAINERID=cid, CNI_IFNAME="net1", CNI_PATH=f"{CNIBIN}:{REFERENCE_BIN}"
    )
    if command == "ADD":
        env["CNI_NETNS"] = topo.pod.path
    return run_plugin(f"mh-{kind}", env, doc, netns=topo.host)


@pytest.mark.privileged
@pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))
@pytest.mark.parametrize("kind", KINDS)
def test_forwarded_gc_keeps_every_lease(kind: str, topo: Topology, tmp_path: Path) -> None:
    """Through the main plugin, which checks the list itself before it forwards GC."""
    data = tmp_path / "ipam"
    conf = conflist(kind, topo.master, mh_ipam(str(data)), "1.1.0")
    assert forward(kind, topo, conf, "ADD", "c1").returncode == 0
    before = files(data)
    assert before
    # (in the VM a plugin start costs seconds: ipvlan gets the two shapes per key)
    shapes = MALFORMED if kind == "macvlan" else MALFORMED[:2]
    for key in KEYS:
        for value, named in shapes:
            conf["plugins"][0][key] = value
            refused(forward(kind, topo, conf, "GC", "c1"), named)
            assert files(data) == before, (key, value)
        del conf["plugins"][0][key]
