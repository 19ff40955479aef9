"""Every crash point of the full chain, through libcni: crash, DEL, ADD, DEL, nothing left.

The chain is mh-macvlan (or mh-ipvlan, in the VM) + mh-ipam (file store or
etcd) + mh-route + mh-sbr; conformance/crashrig.py runs it and reads the
state back with ip -j and the filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance import crashrig, etcdrig
from lib import crashpoint
from tests import etcd_helpers
from tests.conftest import Topology
from tests.rig import CNIBIN, Cnitool

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-sbr"))]

# The points each run must reach: a new step without a point shows up here.
ADD_POINTS = {
    "link.created#1",
    "link.tagged#1",
    "link.renamed#1",
    "link.ipam-done#1",
    "ifconfig.addresses#1",
    "ifconfig.routes#1",
    "link.configured#1",
    "route.removed#1",
    "route.added#1",
    "route.state-tmp#1",
    "route.state-written#1",
    "sbr.table-routes#1",
    "sbr.rules#1",
    "sbr.main-deletes#1",
    "sbr.main-hints#1",
}
FILE_STORE_POINTS = {
    f"store.{step}#{n}"
    for step in ("index-put", "lease-tmp", "lease-linked", "last-reserved")
    for n in (1, 2)
}
DEL_POINTS = {"sbr.rule-removed#1", "route.undone#1", "link.deleted#1"}


def world(topo: Topology, tmp_path: Path, **etcd: object) -> crashrig.World:
    crashrig.settle(topo.pod)  # topo gives the pod its Multus eth0; wait out its DAD
    return crashrig.World(topo.pod, topo.host, [tmp_path / "data"], **etcd)  # type: ignore[arg-type]


def check(figures: crashrig.Figures, want: set[str]) -> None:
    assert not figures.failures, "\n".join(figures.failures)
    reached = {name.split(":", 1)[1] for name in figures.names}
    assert want <= reached, sorted(want - reached)
    assert figures.residue == 0


def test_every_point_on_the_file_store(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    w = world(topo, tmp_path)
    conf = crashrig.chain("macvlan", topo.master, tmp_path / "data")
    figures = crashrig.CrashRun(w, cnitool, conf, tmp_path).run()
    check(figures, ADD_POINTS | FILE_STORE_POINTS | DEL_POINTS | {"store.lease-released#2"})
    assert figures.partial > 0


@pytest.mark.needs_kernel("ipvlan")
def test_every_link_point_of_ipvlan(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    """In the VM, where a plugin start costs seconds: mh-ipvlan + mh-ipam only, and the
    link's own points (the store's, mh-route's and mh-sbr's are the same code as above)."""
    w = world(topo, tmp_path)
    conf = crashrig.chain("ipvlan", topo.master, tmp_path / "data")
    conf["plugins"] = conf["plugins"][:1]
    figures = crashrig.CrashRun(w, cnitool, conf, tmp_path).run(only="link.")
    link_points = {p for p in ADD_POINTS | DEL_POINTS if p.startswith("link.")}
    check(figures, link_points)


def test_every_point_on_etcd(
    host_etcd: etcdrig.EtcdCluster, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    etcd = host_etcd
    net = etcd_helpers.Net(etcd.endpoints, node="n1")  # its own key prefix
    w = world(topo, tmp_path, cluster=etcd, prefix=net.prefix)
    conf = crashrig.chain("macvlan", topo.master, tmp_path / "data", etcd=net.store)
    figures = crashrig.CrashRun(w, cnitool, conf, tmp_path).run()
    check(figures, ADD_POINTS | DEL_POINTS | {"etcd.committed#1", "etcd.released#1"})


def test_nth_arrival_and_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a child process: the n-th arrival dies, the trace and the marker say where."""
    trace, marker = tmp_path / "trace", tmp_path / "marker"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ.update(
            MULTIHOME_CRASH_AT="t.x#2",
            MULTIHOME_CRASH_TRACE=str(trace),
            MULTIHOME_CRASH_FILE=str(marker),
        )
        crashpoint._seen.clear()
        crashpoint._ARMED = crashpoint.armed()  # (as at the import of a new process)
        for name in ("t.x", "t.y", "t.x", "t.z"):
            crashpoint.here(name)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == crashpoint.CRASHED
    assert trace.read_text().split() == ["t.x", "t.y", "t.x"]
    assert marker.read_text().startswith("t.x#2 pid ")


def test_nothing_happens_without_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MULTIHOME_CRASH_AT", "MULTIHOME_CRASH_TRACE"):
        monkeypatch.delenv(name, raising=False)
    crashpoint.here("link.created")  # returns: the test process lives on
