"""Thick mode: a request that ends early or speaks another protocol releases its descriptors.

The shim passes the pod's namespace as a descriptor; a daemon that kept it would keep the
pod's namespace (its interfaces and addresses) alive after ``ip netns del``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig import CNIBIN, Netns, unique
from tests.test_daemon import Daemon

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "multihome"))]

_HEAD = struct.Struct("=4sIIIII")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "run" / "mh.sock")
    yield d
    d.stop()


@pytest.fixture
def pod() -> Iterator[Netns]:
    ns = Netns(unique("fdp"))
    yield ns
    ns.delete()


def held(pid: int, ino: int) -> list[str]:
    """The daemon's descriptors on the inode ``ino``."""
    out = []
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.stat(f"/proc/{pid}/fd/{n}").st_ino == ino:
                out.append(n)
        except OSError:
            pass
    return out


def send(sock: Path, frame: bytes, paths: list[str]) -> bytes:
    """Send ``frame`` with descriptors on ``paths``; read until the daemon closes."""
    fds = [os.open(p, os.O_RDONLY) for p in paths]
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            rights = struct.pack(f"{len(fds)}i", *fds)
            s.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            s.shutdown(socket.SHUT_WR)  # the sender is gone: no more bytes will come
            reply = b""
            try:
                while more := s.recv(65536):
                    reply += more
            except ConnectionResetError:
                pass  # closed with bytes of ours unread
            return reply  # the daemon closed the connection: it is done with the request
    finally:
        for fd in fds:
            os.close(fd)


CASES = {
    # the header announces 100 body bytes; the sender stops after 10
    "short body": _HEAD.pack(b"MHQ1", 1, 10, 10, 40, 40) + b"x" * 10,
    # the header itself is cut short
    "short head": b"MHQ1\x01\x00",
    # a shim speaking protocol 2
    "other protocol": _HEAD.pack(b"MHQ1", 2, 0, 0, 0, 0),
    "not a request": b"GET / HTTP/1.1\r\n\r\n" + b"\0" * 8,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_failed_request_releases_the_pod_netns(daemon: Daemon, pod: Netns, case: str) -> None:
    ino = os.stat(pod.path).st_ino
    own = "/proc/self/ns/net"
    send(daemon.sock, CASES[case], [own, pod.path])
    assert held(daemon.proc.pid, ino) == []
    assert daemon.proc.poll() is None


def test_descriptors_beyond_two_are_closed(daemon: Daemon, pod: Netns) -> None:
    other = Netns(unique("fdq"))
    try:
        ino, other_ino = os.stat(pod.path).st_ino, os.stat(other.path).st_ino
        paths = ["/proc/self/ns/net", pod.path, other.path, other.path]
        send(daemon.sock, CASES["short body"], paths)
        assert held(daemon.proc.pid, ino) == []
        assert held(daemon.proc.pid, other_ino) == []
    finally:
        other.delete()
