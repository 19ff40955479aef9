"""make robustness, part: hostile etcd endpoints and short daemon requests (issue 21).

Called by conformance/robustness.py before its other parts. It first writes the node's
etcd settings (``MULTIHOME_ETCD_CONF``) that the later parts use too: profile ``default``
aims at a closed loopback port, so "etcd unreachable" is code 11 there.

1. **Hostile etcd endpoints.** Loopback "etcd" servers in the throwaway host namespace:
   one that never answers, one that drips its reply a byte per 0.5 s, one that floods an
   endless body without a length, and one that announces a 2**40-byte chunk and floods.
   mh-ipam ADD (the real executable, ``timeout`` 2 s) must answer code 11 by the deadline
   (with a 10x margin before it counts as a hang) and stay within the reply cap in memory;
   its wall time and peak RSS are printed.
2. **Short daemon requests.** A daemon is sent requests that end early, speak another
   protocol version, or carry extra descriptors, each with a pod's namespace. The daemon
   must hold none of them afterwards, keep no descriptor more than before, and keep
   serving; after ``ip netns del`` the pod namespace must be gone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conformance import fakes
from tests.rig import CNIBIN, Netns, unique

TIMEOUT = 2.0
HANG = 10 * TIMEOUT  # past this an ADD counts as hung and is killed
RSS_LIMIT_MB = 256  # the 64 MiB reply cap, the interpreter and slack; an unbounded read passes it
DEAD_ETCD = "http://127.0.0.1:9"


def _drip(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        conn.sendall(b" ")
        time.sleep(0.5)


def _flood(head: bytes) -> Callable[[socket.socket], None]:
    def serve(conn: socket.socket) -> None:
        conn.sendall(head)
        blob = b" " * (1 << 20)
        while True:
            conn.sendall(blob)

    return serve


HOSTILE: dict[str, Callable[[socket.socket], None]] = {
    "silent": lambda conn: time.sleep(3 * HANG),
    "drip": _drip,
    "flood": _flood(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
    "huge chunk": _flood(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000\r\n"),
}


def node_file(tmp: Path, profiles: dict[str, Any]) -> Path:
    """The node's etcd settings, for this run and the parts after it."""
    conf = tmp / "etcd-node" / "etcd.conf"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(json.dumps({"profiles": profiles}))
    conf.chmod(0o644)
    os.environ["MULTIHOME_ETCD_CONF"] = str(conf)
    return conf


def _timed_add(world: Any, profile: str, conf_path: Path) -> tuple[int, bytes, float, float]:
    """mh-ipam ADD in the host namespace: exit code, stdout, seconds, peak RSS in MiB."""
    conf = {
        "cniVersion": "1.1.0",
        "name": "robust-etcd",
        "type": "mh-noop",
        "ipam": {
            "type": "mh-ipam",
            "ranges": [[{"subnet": "10.67.0.0/24"}]],
            "store": {"type": "etcd", "profile": profile, "timeout": TIMEOUT},
        },
    }
    env = {
        **world.env("ADD", CNI_CONTAINERID="robustetcd"),
        "MULTIHOME_ETCD_CONF": str(conf_path),
        "PATH": os.environ.get("PATH", ""),
    }
    cmd = ["ip", "netns", "exec", world.host.name, str(CNIBIN / "mh-ipam")]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    out = b""
    killer = threading.Timer(HANG, proc.kill)
    killer.start()
    try:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        proc.stdout.close()
    took = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ip netns exec execs the plugin, so this is the plugin's own peak
    return proc.returncode, out, took, usage.ru_maxrss / 1024


def run_hostile_etcd(world: Any, summary: Any, conf_path: Path, profiles: list[str]) -> None:
    print("hostile etcd endpoints (mh-ipam ADD, timeout 2 s):", flush=True)
    for name in profiles:
        code, out, took, rss = _timed_add(world, name, conf_path)
        summary.cases += 1
        try:
            doc = json.loads(out)
        except ValueError:
            doc = {}
        verdict = "ok"
        if took >= HANG:
            verdict = "HUNG"
            summary.fail(f"etcd {name}: mh-ipam still running after {HANG:.0f} s (killed)")
        elif code == 0 or doc.get("code") != 11:
            verdict = "WRONG"
            summary.fail(f"etcd {name}: wanted code 11, got exit {code}: {out[:200]!r}")
        elif rss > RSS_LIMIT_MB:
            verdict = "TOO BIG"
            summary.fail(f"etcd {name}: mh-ipam peaked at {rss:.0f} MiB")
        print(f"  {name:>11}: code {doc.get('code')} in {took:.2f} s, peak RSS {rss:.0f} MiB "
              f"({verdict})", flush=True)  # fmt: skip


# ---- short daemon requests ------------------------------------------------------------------


def run_short_requests(world: Any, summary: Any, rounds: int = 20) -> None:
    sock = world.tmp / "run-fds" / "mh.sock"
    log_path = world.tmp / "daemon-fds.log"
    log = log_path.open("w")
    daemon = subprocess.Popen(
        [str(CNIBIN / "multihome"), "daemon", "--socket", str(sock)], stderr=log
    )
    pod = Netns(unique("mhrf"))
    try:
        deadline = time.monotonic() + 20
        while "serving" not in log_path.read_text():
            if time.monotonic() > deadline or daemon.poll() is not None:
                summary.fail("daemon (short requests) did not start")
                return
            time.sleep(0.05)
        pod.ip("link", "add", "rf0", "type", "veth", "peer", "name", "rf1")
        ino = os.stat(pod.path).st_ino
        before = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        start = time.monotonic()
        sent = 0
        for _ in range(rounds):
            for frame in fakes.SHORT.values():
                fakes.send(sock, frame, ["/proc/self/ns/net", pod.path])
                fakes.send(sock, frame, ["/proc/self/ns/net", pod.path, pod.path, pod.path])
                sent += 2
        took = time.monotonic() - start
        summary.cases += sent
        held = len(fakes.held(daemon.pid, ino))
        after = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        alive = daemon.poll() is None
        pod.delete()
        gone = not fakes.held(daemon.pid, ino) if alive else True
        kinds = ", ".join(fakes.SHORT)
        print(
            f"short daemon requests: {sent} sent ({kinds}; half with 4 descriptors) "
            f"in {took:.2f} s; pod netns descriptors held after: {held}; daemon descriptors "
            f"{before} before, {after} after; daemon {'serving' if alive else 'DEAD'}",
            flush=True,
        )
        if held:
            summary.leak(f"the daemon holds {held} descriptors of a pod netns after {sent} sends")
        if after > before:
            summary.leak(f"the daemon's descriptors grew from {before} to {after}")
        if not alive or not gone:
            summary.fail("the daemon died on short requests, or kept the pod namespace")
    finally:
        pod.delete()
        daemon.kill()
        daemon.wait()
        log.close()


def run(world: Any, summary: Any) -> None:
    """The node's etcd profiles (kept for the later parts), then both sections."""
    servers = {name: fakes.Server(mode, world.host_ns) for name, mode in HOSTILE.items()}
    try:
        profiles: dict[str, Any] = {"default": {"endpoints": [DEAD_ETCD]}}
        profiles.update({name: {"endpoints": [s.url]} for name, s in servers.items()})
        conf_path = node_file(world.tmp, profiles)
        run_hostile_etcd(world, summary, conf_path, list(servers))
    finally:
        for server in servers.values():
            server.close()
    run_short_requests(world, summary)
