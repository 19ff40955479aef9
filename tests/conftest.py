"""Fixtures and markers. Tests that cannot run here skip with the reason printed;
in CI (env CI set) a skip fails unless tests/skips.py allows it."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from conformance import etcdrig
from tests import skips
from tests.rig import (
    CNIBIN,
    CNITOOL,
    CNITOOL13,
    REFERENCE_BIN,
    Cnitool,
    Netns,
    cluster_eth0,
    sh,
    unique,
)


@functools.cache
def netns_unavailable() -> str:
    """Empty when namespaces work here, else the reason they do not."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    probe = unique("mhp")
    try:
        proc = subprocess.run(
            ["ip", "netns", "add", probe], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return "iproute2 'ip' is not installed"
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return ""


@functools.cache
def kernel_lacks(kind: str) -> str:
    """Empty when the kernel can create links of ``kind``, else the reason."""
    reason = netns_unavailable()
    if reason:
        return reason
    ns = Netns(unique("mhk"))
    try:
        ns.ip("link", "add", "mhkm", "type", "veth", "peer", "name", "mhkp")
        stacked = {"ipvlan": [], "macvlan": [], "vlan": ["id", "5"]}
        if kind in stacked:
            spec = ["link", "mhkm", "name", "mhkx", "type", kind, *stacked[kind]]
        else:
            spec = ["name", "mhkx", "type", kind]
        proc = ns.ip("link", "add", *spec, check=False)
        if proc.returncode != 0:
            return f"kernel {os.uname().release} lacks link type {kind}: {proc.stderr.strip()}"
        return ""
    finally:
        ns.delete()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("privileged"):
        reason = netns_unavailable()
        if reason:
            pytest.skip(f"privileged: {reason}")
    for mark in item.iter_markers("needs_kernel"):
        reason = kernel_lacks(mark.args[0])
        if reason:
            pytest.skip(f"needs_kernel({mark.args[0]}): {reason}; run 'make test-vm'")
    missing = [Path(m.args[0]) for m in item.iter_markers("needs_tool")]
    missing = [path for path in missing if not path.exists()]
    for path in missing:
        if path != skips.BUNDLE_MANIFEST:
            pytest.skip(
                f"needs_tool: {path} is missing (run 'make test', which builds/installs it)"
            )
    if missing:
        pytest.skip(f"{skips.BUNDLE_ONLY} needs the frozen bundle; make test-dist builds it")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI a skip whose reason is not on tests/skips.py's allow-list fails."""
    report: pytest.TestReport = yield
    skips.enforce(report)
    return report


def needs_etcd() -> None:
    """Skip when etcd cannot run here (a skip CI does not allow: set-up installs it)."""
    reason = etcdrig.missing()
    if reason:
        pytest.skip(f"needs etcd: {reason}")


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[etcdrig.EtcdCluster]:
    """One etcd member on loopback for the session; each test uses a key prefix of its own."""
    needs_etcd()
    with etcdrig.EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def no_node_etcd_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No node etcd file (``MULTIHOME_ETCD_CONF`` names one that is absent): lint checks a
    NAD's etcd profile only where the node file is. A test may write one there."""
    monkeypatch.setenv("MULTIHOME_ETCD_CONF", str(tmp_path / "no-etcd.conf"))


@pytest.fixture
def netns_factory() -> Iterator[Callable[[str], Netns]]:
    made: list[Netns] = []

    def make(role: str = "pod") -> Netns:
        ns = Netns(unique(f"mh{role[:3]}"))
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        ns.delete()


class Topology:
    """host (holds the master veth end "mhm0") <-> peer (holds "mhp0"), plus a pod that
    looks like a Multus pod: eth0 from a "cluster" network, with an address per family
    and default routes, its node side in host (``rig.cluster_eth0``). A test marked
    ``bare_pod(reason)`` gets a pod without it."""

    def __init__(self, make: Callable[[str], Netns], *, multus: bool = True) -> None:
        self.host = make("host")
        self.peer = make("peer")
        self.pod = make("pod")
        self.master = "mhm0"
        self.host.ip(
            "link",
            "add",
            self.master,
            "type",
            "veth",
            "peer",
            "name",
            "mhp0",
            "netns",
            self.peer.name,
        )
        self.host.ip("link", "set", self.master, "up")
        self.peer.ip("link", "set", "mhp0", "up")
        if multus:
            cluster_eth0(self.pod, self.host)


@pytest.fixture
def topo(request: pytest.FixtureRequest, netns_factory: Callable[[str], Netns]) -> Topology:
    return Topology(netns_factory, multus=request.node.get_closest_marker("bare_pod") is None)


@pytest.fixture
def host_etcd(topo: Topology, tmp_path: Path) -> Iterator[etcdrig.EtcdCluster]:
    """etcd on the "host" namespace's loopback, where libcni runs the plugins."""
    needs_etcd()
    with etcdrig.EtcdCluster(tmp_path / "etcd", netns=topo.host.name) as cluster:
        yield cluster


@pytest.fixture
def cnitool(topo: Topology, tmp_path: Path) -> Cnitool:
    if not CNITOOL.exists():
        pytest.skip(f"needs_tool: {CNITOOL} is missing (run 'make cnitool')")
    return Cnitool(topo.host, tmp_path / "net.d", tmp_path / "cache", f"{CNIBIN}:{REFERENCE_BIN}")


@pytest.fixture
def cnitool13(topo: Topology, tmp_path: Path) -> Cnitool:
    """The libcni 1.3.0 client (spec 1.1.0, GC, STATUS), in the same "host" namespace."""
    if not CNITOOL13.exists():
        pytest.skip(f"needs_tool: {CNITOOL13} is missing (run 'make cnitool')")
    return Cnitool(
        topo.host,
        tmp_path / "net.d",
        tmp_path / "cache13",
        f"{CNIBIN}:{REFERENCE_BIN}",
        tool=CNITOOL13,
    )


@pytest.fixture
def fake_ipam_dir(tmp_path: Path) -> Path:
    """A CNI_PATH directory holding the scripted fake IPAM as ``fake-ipam``."""
    import sys

    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    source = (Path(__file__).parent / "fake_ipam.py").read_text()
    target = bindir / "fake-ipam"
    target.write_text(f"#!{sys.executable}\n{source}")
    target.chmod(0o755)
    return bindir
