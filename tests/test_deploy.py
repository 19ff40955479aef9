"""One node, as the DaemonSet runs it: the image built here, its containers under podman.

make test-dist builds the image (packaging/Containerfile on a local debootstrap
root, conformance/nodeimage.py), runs the init step (``multihome install``
into a throwaway node root's opt/cni/bin) and the daemon container with host
network, privileged (NET_ADMIN + SYS_ADMIN alone fail on the read-only
/proc/sys, see the DaemonSet), and the node root's run/multihome, var/lib/cni
and opt/cni/bin bound in. On the host, libcni (build/cnitool) drives the installed
mh-* shims from that opt/cni/bin, as a runtime under Multus would: the chain
is served by the daemon in the container; killed, the shims run the plugins
themselves; started again, it serves again; stopped, it removes its socket.
uninstall.yaml's container then empties opt/cni/bin. Everything is removed at
the end. Args, privileges, mounts and probes come from the manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import nodeimage
from tests import skips
from tests.conftest import Topology
from tests.rig import CNITOOL, ROOT, Cnitool, Netns, cluster_eth0

# the build context holding dist/bundle/multihome (make dist); another one for a trial
CONTEXT = Path(os.environ.get("MULTIHOME_IMAGE_CONTEXT", ROOT))
pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_tool(str(CONTEXT / "dist" / "bundle" / "multihome" / "MANIFEST")),
    pytest.mark.needs_tool(str(CNITOOL)),
    pytest.mark.needs_tool(shutil.which("podman") or "/usr/bin/podman"),
    pytest.mark.needs_tool("/usr/sbin/debootstrap"),
]
CHAIN_PLUGINS = ("mh-macvlan", "mh-route", "mh-sbr")


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nodeimage.Podman]:
    if not skips.dist_run():
        pytest.skip(f"{skips.BUNDLE_ONLY} the node image is built by make test-dist")
    pm = nodeimage.Podman(tmp_path_factory.mktemp("podman"))
    try:
        pm.build_image(CONTEXT)
        yield pm
    finally:
        pm.remove()
    assert not pm.base.exists()


@pytest.fixture
def node(podman: nodeimage.Podman, tmp_path: Path) -> Iterator[nodeimage.Node]:
    n = nodeimage.Node(podman, tmp_path / "node")
    n.install()
    try:
        yield n
    finally:
        n.remove()


def chain(topo: Topology, node: nodeimage.Node) -> dict[str, Any]:
    """The README's chain; its state under the node's /var/lib/cni (seen by both sides)."""
    return {
        "cniVersion": "1.0.0",
        "name": "deployed",
        "plugins": [
            {
                "type": "mh-macvlan",
                "master": topo.master,
                "ipam": {
                    "type": "mh-ipam",
                    "dataDir": str(node.state / "networks"),
                    "ranges": [[{"subnet": "203.0.113.0/24", "gateway": "203.0.113.1"}]],
                },
            },
            {
                "type": "mh-route",
                "presets": ["public-ipv4"],
                "stateDir": str(node.state / "multihome" / "mh-route"),
            },
            {"type": "mh-sbr"},
        ],
    }


class Runtime:
    """libcni on the host, exec'ing the node's installed shims, as a kubelet's runtime."""

    def __init__(self, topo: Topology, node: nodeimage.Node, tmp_path: Path) -> None:
        self.cnitool = Cnitool(topo.host, tmp_path / "net.d", tmp_path / "cache", str(node.cni_bin))
        self.net = self.cnitool.write(chain(topo, node))
        self.env = {"MULTIHOME_SOCKET": str(node.sock)}

    def call(self, cmd: str, pod: Netns) -> str:
        proc = self.cnitool.run(cmd, self.net, pod, extra_env=self.env)
        assert proc.returncode == 0, f"{cmd} {pod.name}: {proc.stdout} {proc.stderr}"
        return proc.stdout

    def add_like_a_runtime(self, pod: Netns) -> int:
        """ADD; on code 11 (the daemon died mid-call) DEL and ADD again. Returns the tries."""
        for tries in (1, 2):
            proc = self.cnitool.run("add", self.net, pod, extra_env=self.env)
            if proc.returncode == 0:
                return tries
            # code 11, whose message libcni prints: the runtime DELs, then retries
            assert "daemon died during ADD; try again" in proc.stderr, proc.stderr
            self.call("del", pod)
        raise AssertionError(f"ADD {pod.name} failed twice")


def cid(pod: Netns) -> str:
    """libcni's container ID for a pod: cnitool- and a hash of the netns path."""
    return "cnitool-" + hashlib.sha512(pod.path.encode()).hexdigest()[:20]


def served(node: nodeimage.Node, command: str, pod: Netns) -> list[str]:
    pattern = rf"served {command} (mh-[a-z]+) {re.escape(cid(pod))}/net1: exit 0"
    return re.findall(pattern, node.logs())


def wait_until(cond: Callable[[], bool], polls: int = 3000) -> None:
    for _ in range(polls):
        if cond():
            return
        threading.Event().wait(0.1)
    raise AssertionError("the node never got there")


def multus_pod(make: Callable[[str], Netns], topo: Topology) -> Netns:
    pod = make("pod")
    cluster_eth0(pod, topo.host)
    return pod


def test_one_node_as_the_daemonset_runs_it(
    node: nodeimage.Node, topo: Topology, tmp_path: Path, netns_factory: Callable[[str], Netns]
) -> None:
    # the init step put the shims where the runtime looks
    assert (node.cni_bin / "mh-macvlan").is_symlink() and (node.cni_bin / ".multihome").is_dir()
    node.start()
    assert node.sock.exists()
    runtime = Runtime(topo, node, tmp_path)

    # 1. served by the daemon in the container
    pod = multus_pod(netns_factory, topo)
    result = json.loads(runtime.call("add", pod))
    assert result["ips"][0]["address"].startswith("203.0.113.")
    runtime.call("check", pod)
    runtime.call("del", pod)
    for command in ("ADD", "CHECK", "DEL"):
        assert sorted(served(node, command, pod)) == sorted(CHAIN_PLUGINS), node.logs()
    assert "served ADD mh-ipam" not in node.logs()  # its IPAM ran inside the ADD

    # 2. killed mid-stream: the shims fall back and every pod still gets its network
    pods: list[Netns] = []
    tries: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            while not stop.is_set() and len(pods) < 40:
                p = multus_pod(netns_factory, topo)
                pods.append(p)
                tries.append(runtime.add_like_a_runtime(p))
                runtime.call("check", p)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    worker = threading.Thread(target=stream)
    worker.start()
    wait_until(lambda: any(served(node, "ADD", p) for p in pods[:-1]) or not worker.is_alive())
    node.stop(kill=True)
    at_kill = len(pods)
    wait_until(lambda: len(pods) >= at_kill + 3 or not worker.is_alive())
    assert node.sock.exists()  # SIGKILL leaves the socket: a stale one, which the shims skip
    after_kill = pods[at_kill : at_kill + 2]  # both ADDed and CHECKed before the restart

    # 3. started again (as the kubelet restarts it): served by it again
    node.podman("start", node.name)
    wait_until(node.ready)
    stop.set()
    worker.join(300)
    assert not errors, errors
    again = multus_pod(netns_factory, topo)
    runtime.call("add", again)
    assert sorted(served(node, "ADD", again)) == sorted(CHAIN_PLUGINS)
    assert len(after_kill) == 2
    for p in after_kill:  # made while no daemon ran: in-process
        assert not served(node, "ADD", p) and not served(node, "CHECK", p)
    for p in [*pods, again]:
        runtime.call("del", p)
        assert [link["ifname"] for link in p.ipj("link", "show")] == ["lo", "eth0"]
    assert len(pods) >= at_kill + 3

    # 4. SIGTERM (podman stop): the daemon finishes, removes its socket
    node.stop()
    assert "every call finished" in node.logs() and not node.sock.exists()
    leases = node.state / "networks" / "deployed"
    assert sorted(p.name for p in leases.iterdir() if not p.name.startswith(("lock", "last"))) == []

    # 5. uninstall.yaml's container leaves the node's opt/cni/bin as it found it (empty)
    node.remove()
    node.uninstall()
    assert sorted(os.listdir(node.cni_bin)) == []
