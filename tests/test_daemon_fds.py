"""Thick mode: a request that ends early or speaks another protocol releases its descriptors.

The shim passes the pod's namespace as a descriptor; a daemon that kept it would keep the
pod's namespace (its interfaces and addresses) alive after ``ip netns del``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conformance.fakes import SHORT, held, send
from tests.rig import CNIBIN, Netns
from tests.test_daemon import Daemon

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "multihome"))]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "run" / "mh.sock")
    yield d
    d.stop()


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


CASES = {**SHORT, "not a request": b"GET / HTTP/1.1\r\n\r\n" + b"\0" * 8}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_failed_request_releases_the_pod_netns(daemon: Daemon, pod: Netns, case: str) -> None:
    ino = os.stat(pod.path).st_ino
    own = "/proc/self/ns/net"
    send(daemon.sock, CASES[case], [own, pod.path])
    assert held(daemon.proc.pid, ino) == []
    assert daemon.proc.poll() is None


def test_descriptors_beyond_two_are_closed(
    daemon: Daemon, pod: Netns, netns_factory: Callable[[str], Netns]
) -> None:
    other = netns_factory("other")
    ino, other_ino = os.stat(pod.path).st_ino, os.stat(other.path).st_ino
    paths = ["/proc/self/ns/net", pod.path, other.path, other.path]
    send(daemon.sock, CASES["short body"], paths)
    assert held(daemon.proc.pid, ino) == []
    assert held(daemon.proc.pid, other_ino) == []
