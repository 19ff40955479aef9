"""The daemon's life on a node: probes, SIGTERM, and a rolling upgrade under load."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.rig import CNIBIN, run_plugin
from tests.test_daemon import Daemon, macvlan, shim_env

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "multihome"))]


def probe(sock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CNIBIN / "multihome"), "probe", "--socket", str(sock)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def wait_for(what: str, cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_probe_is_a_real_call(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "mh.sock"
    assert "no daemon" in probe(sock).stderr
    d = Daemon(sock)
    try:
        ok = probe(sock)
        assert ok.returncode == 0, ok.stderr
        assert "served STATUS mh-noop" in d.log.read_text()  # the daemon ran the call
    finally:
        d.stop(signal.SIGKILL)
    stale = probe(sock)  # the socket file is left behind, nobody listens
    assert sock.exists() and stale.returncode == 1 and "no daemon" in stale.stderr
    other = Daemon(sock, env={"MULTIHOME_BUILD_ID": "multihome 9.9.9 other"})
    try:
        refused = probe(sock)
        assert refused.returncode == 1 and "answered -1" in refused.stderr
    finally:
        other.stop()


def test_sigterm_finishes_calls_in_flight_and_removes_the_socket(
    topo: Topology, tmp_path: Path, netns_factory: Any
) -> None:
    d = Daemon(tmp_path / "run" / "mh.sock", "--test-stall", "mh-macvlan=3")
    doc = macvlan(topo, tmp_path)
    results: list[subprocess.CompletedProcess[bytes]] = []
    slow = threading.Thread(
        target=lambda: results.append(
            run_plugin("mh-macvlan", shim_env(topo.pod, d.sock, "inflight"), doc, netns=topo.host)
        )
    )
    slow.start()
    wait_for("the call to reach the daemon", lambda: "test stall" in d.log.read_text())
    d.proc.send_signal(signal.SIGTERM)
    wait_for("the socket to go", lambda: not d.sock.exists())
    # a call made while the daemon stops finds no socket and runs in-process
    late_pod = netns_factory("pod")
    late = run_plugin("mh-macvlan", shim_env(late_pod, d.sock, "late"), doc, netns=topo.host)
    assert late.returncode == 0, late.stdout + late.stderr
    slow.join(60)
    assert d.proc.wait(30) == 0
    d.stop()
    assert results[0].returncode == 0, results[0].stdout  # finished by the stopping daemon
    log = d.log.read_text()
    assert "served ADD mh-macvlan inflight/net1: exit 0" in log
    assert "late/" not in log and "every call finished" in log
    assert json.loads(results[0].stdout)["interfaces"][0]["name"] == "net1"


def test_sigterm_gives_up_after_the_grace_period(topo: Topology, tmp_path: Path) -> None:
    d = Daemon(tmp_path / "run" / "mh.sock", "--test-stall", "mh-macvlan=60", "--grace", "1")
    doc = macvlan(topo, tmp_path)
    results: list[subprocess.CompletedProcess[bytes]] = []
    slow = threading.Thread(
        target=lambda: results.append(
            run_plugin("mh-macvlan", shim_env(topo.pod, d.sock), doc, netns=topo.host)
        )
    )
    slow.start()
    wait_for("the call to reach the daemon", lambda: "test stall" in d.log.read_text())
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(30) == 0
    slow.join(60)
    d.stop()
    assert "with 1 calls still running" in d.log.read_text()
    assert json.loads(results[0].stdout)["code"] == 11  # the runtime DELs and retries


def test_rolling_upgrade_under_a_stream_of_adds(
    topo: Topology, tmp_path: Path, netns_factory: Any
) -> None:
    """Old daemon stops mid-stream, a daemon of another build starts, then ours again.

    Every ADD succeeds; the other build's daemon serves none of them (it
    refuses, and the shim runs the plugin itself).
    """
    sock = tmp_path / "run" / "mh.sock"
    doc = macvlan(topo, tmp_path, "roll", ranges=[[{"subnet": "10.91.0.0/24"}]])
    pod = netns_factory("pod")
    stop = threading.Event()
    outcomes: list[tuple[str, int, bytes, bytes]] = []

    def stream() -> None:
        i = 0
        while not stop.is_set() and i < 200:
            cid = f"roll{i}"
            env = {**shim_env(pod, sock, cid), "CNI_IFNAME": f"r{i}"}
            proc = run_plugin("mh-macvlan", env, doc, netns=topo.host)
            outcomes.append((cid, proc.returncode, proc.stdout, proc.stderr))
            i += 1

    old = Daemon(sock, "--test-stall", "mh-macvlan=0.2")
    worker = threading.Thread(target=stream)
    worker.start()
    try:
        wait_for("the old daemon to serve", lambda: old.served() >= 3)
        old.stop()  # SIGTERM while a call is in flight (each takes 0.2 s)
        other = Daemon(sock, env={"MULTIHOME_BUILD_ID": "multihome 9.9.9 other"})
        wait_for("refusals", lambda: other.log.read_text().count("refused a call") >= 3)
        other.stop()
        new = Daemon(sock)
        wait_for("the new daemon to serve", lambda: new.served() >= 3)
    finally:
        stop.set()
        worker.join(120)
    new.stop()
    failed = [(cid, code, out, err[-300:]) for cid, code, out, err in outcomes if code != 0]
    assert not failed, failed
    assert other.served() == 0
    assert old.served() + new.served() < len(outcomes)  # some ran in-process in between
    addresses = {json.loads(out)["ips"][0]["address"] for _, _, out, _ in outcomes}
    assert len(addresses) == len(outcomes)


def test_the_nodes_installed_copy_of_our_build_runs_in_process(tmp_path: Path) -> None:
    """The daemon (its image's bundle) and the node's installed bundle: one build, by MANIFEST."""
    from multihome.lib import delegate, registry

    image, node, other = (tmp_path / d for d in ("image", "node", "other"))
    for folder, manifest in ((image, "multihome 0.1.0\nabc\n"), (node, "multihome 0.1.0\nabc\n")):
        folder.mkdir()
        (folder / "MANIFEST").write_text(manifest)
        (folder / "multihome").write_bytes(b"")
    other.mkdir()
    (other / "MANIFEST").write_text("multihome 0.1.0\ndef\n")
    (other / "multihome").write_bytes(b"")
    (tmp_path / "mh-ipam").symlink_to(node / "multihome")
    saved = registry.OWN_PROGRAM[0]
    registry.OWN_PROGRAM[0] = str(image / "multihome")
    try:
        assert delegate._is_ours("mh-ipam", str(tmp_path / "mh-ipam"))
        assert not delegate._is_ours("mh-ipam", str(other / "multihome"))
        assert not delegate._is_ours("host-local", str(tmp_path / "mh-ipam"))
        assert not delegate._is_ours("mh-ipam", str(tmp_path / "missing"))
    finally:
        registry.OWN_PROGRAM[0] = saved
