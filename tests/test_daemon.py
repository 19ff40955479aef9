"""Thick mode: the daemon serves the shims, and pod networking never depends on it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.link_helpers import mh_ipam
from tests.rig import CNIBIN, Cnitool, Netns, one_json, plugin_env, run_plugin
from tests.shapes import check_error

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "multihome"))]


class Daemon:
    def __init__(self, sock: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.sock = sock
        self.log = sock.parent.parent / f"daemon-{time.monotonic_ns()}.log"
        cmd = [str(CNIBIN / "multihome"), "daemon", "--socket", str(sock), *extra]
        self._log_fh = self.log.open("w")
        self.proc = subprocess.Popen(cmd, stderr=self._log_fh, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 20
        while "serving on" not in self.log.read_text():  # (a stale socket file may exist)
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.05)

    def served(self) -> int:
        return self.log.read_text().count("served ")

    def wait_for(self, line: str, timeout: float = 30) -> None:
        """Until the daemon's log holds ``line`` (a condition, not a guessed delay)."""
        deadline = time.monotonic() + timeout
        while line not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"no {line!r} in the daemon's log"
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self._log_fh.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "run" / "mh.sock")
    yield d
    d.stop()


def chain(topo: Topology, tmp_path: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "thick",
        "plugins": [
            {"type": "mh-macvlan", "master": topo.master, "ipam": mh_ipam(str(tmp_path / "ipam"))},
            {"type": "mh-route", "presets": ["public-ipv4"], "stateDir": str(tmp_path / "state")},
            {"type": "mh-sbr"},
        ],
    }


def macvlan(topo: Topology, tmp_path: Path, name: str = "n", **ipam: Any) -> dict[str, Any]:
    """One mh-macvlan config on the topology's master, for a shim called directly."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "mh-macvlan",
        "master": topo.master,
        "ipam": {**mh_ipam(str(tmp_path / "ipam")), **ipam},
    }


def shim_env(pod: Netns, sock: Path, cid: str = "c") -> dict[str, str]:
    """A runtime's ADD environment, pointing the shim at ``sock``."""
    return plugin_env(
        "ADD",
        CNI_CONTAINERID=cid,
        CNI_NETNS=pod.path,
        CNI_IFNAME="net1",
        MULTIHOME_SOCKET=str(sock),
    )


def run(
    cnitool: Cnitool, cmd: str, net: str, pod: Netns | str, sock: Path, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return cnitool.run(cmd, net, pod, extra_env={"MULTIHOME_SOCKET": str(sock)}, **kw)


def test_socket_is_root_only(daemon: Daemon) -> None:
    assert oct(daemon.sock.stat().st_mode & 0o777) == "0o600"
    assert oct(daemon.sock.parent.stat().st_mode & 0o777) == "0o700"


def test_chain_through_the_daemon(
    daemon: Daemon, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    net = cnitool.write(chain(topo, tmp_path))
    for cmd in ("add", "check", "del"):
        proc = run(cnitool, cmd, net, topo.pod, daemon.sock)
        assert proc.returncode == 0, proc.stderr
    # three plugins, three commands; mh-ipam ran inside those requests (in-process, no exec)
    assert daemon.served() == 9
    assert topo.pod.links() == ["lo", "eth0"]


def test_daemon_down_runs_in_process(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    net = cnitool.write(chain(topo, tmp_path))
    missing = tmp_path / "nowhere.sock"
    add = run(cnitool, "add", net, topo.pod, missing)
    assert add.returncode == 0, add.stderr
    assert run(cnitool, "del", net, topo.pod, missing).returncode == 0


def test_stale_socket_file(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    d = Daemon(tmp_path / "run" / "mh.sock")
    d.stop(signal.SIGKILL)  # leaves the socket file behind
    assert d.sock.exists()
    net = cnitool.write(chain(topo, tmp_path))
    assert run(cnitool, "add", net, topo.pod, d.sock).returncode == 0
    assert run(cnitool, "del", net, topo.pod, d.sock).returncode == 0
    again = Daemon(d.sock)  # a new daemon replaces the stale socket
    try:
        assert run(cnitool, "add", net, topo.pod, again.sock).returncode == 0
        assert again.served() >= 3
    finally:
        again.stop()


def test_build_mismatch_runs_in_process(topo: Topology, tmp_path: Path) -> None:
    d = Daemon(tmp_path / "run" / "mh.sock", env={"MULTIHOME_BUILD_ID": "multihome 9.9.9 other"})
    try:
        proc = run_plugin(
            "mh-macvlan", shim_env(topo.pod, d.sock), macvlan(topo, tmp_path), netns=topo.host
        )
        assert proc.returncode == 0, proc.stdout
        assert b"running in-process" in proc.stderr
        assert d.served() == 0
    finally:
        d.stop()


def test_daemon_killed_mid_request(topo: Topology, tmp_path: Path) -> None:
    d = Daemon(tmp_path / "run" / "mh.sock", "--test-stall", "mh-macvlan=60")
    doc = macvlan(topo, tmp_path)
    env = shim_env(topo.pod, d.sock)
    with ThreadPoolExecutor(1) as ex:
        pending = ex.submit(run_plugin, "mh-macvlan", env, doc, netns=topo.host)
        d.wait_for("test stall: mh-macvlan")  # the daemon holds the request
        d.stop(signal.SIGKILL)
        proc = pending.result(timeout=30)
    check_error(one_json(proc.stdout), 11)  # try again: the runtime DELs, then retries
    delete = run_plugin("mh-macvlan", {**env, "CNI_COMMAND": "DEL"}, doc, netns=topo.host)
    assert delete.returncode == 0, delete.stdout  # the dead daemon's socket: DEL runs here
    assert topo.pod.links() == ["lo", "eth0"]


def test_one_failing_request_does_not_hurt_the_next(
    daemon: Daemon, topo: Topology, tmp_path: Path
) -> None:
    env = shim_env(topo.pod, daemon.sock)
    bad = run_plugin("mh-macvlan", env, b"{broken", netns=topo.host)
    check_error(one_json(bad.stdout), 6)
    good = run_plugin("mh-macvlan", env, macvlan(topo, tmp_path), netns=topo.host)
    assert good.returncode == 0, good.stdout
    assert daemon.served() == 2 and daemon.proc.poll() is None


def test_non_root_peers_are_refused() -> None:
    # a socket where an unprivileged user can reach it, whose file modes let anyone in:
    # SO_PEERCRED still refuses the peer
    base = Path(f"/tmp/mh-peer-{os.getpid()}")
    base.mkdir()
    d = Daemon(base / "run" / "mh.sock")
    try:
        os.chmod(base, 0o755)  # noqa: S103
        os.chmod(d.sock.parent, 0o755)  # noqa: S103
        os.chmod(d.sock, 0o666)  # noqa: S103
        code = (
            "import socket,sys\ns=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "s.sendall(b'x'*64)\ntry:\n    print(len(s.recv(100)))\n"
            "except ConnectionResetError:\n    print(0)\n"
        )
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                code,
                str(d.sock),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.stdout.strip() == "0", proc.stderr  # closed without a reply
        assert "non-root peer" in d.log.read_text()
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_concurrent_adds(
    daemon: Daemon, topo: Topology, tmp_path: Path, netns_factory: Any
) -> None:
    pods = [netns_factory("pod") for _ in range(12)]
    doc = macvlan(topo, tmp_path, "many", ranges=[[{"subnet": "10.90.0.0/24"}]])

    def add(i: int) -> str:
        env = shim_env(pods[i], daemon.sock, f"c{i}")
        proc = run_plugin("mh-macvlan", env, doc, netns=topo.host)
        assert proc.returncode == 0, proc.stdout
        return str(json.loads(proc.stdout)["ips"][0]["address"])

    with ThreadPoolExecutor(12) as ex:
        addresses = list(ex.map(add, range(12)))
    assert len(set(addresses)) == 12
    assert daemon.served() == 12  # each ADD once; its IPAM ran inside it, in-process
