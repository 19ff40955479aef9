"""mh-ipam and Debian's host-local on one dataDir, interleaved, both directions.

host-local never sees mh-ipam's owner index; mh-ipam must notice host-local's
writes and never give an attachment a second lease (review finding t1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.rig import CNIBIN, REFERENCE_BIN, Netns
from tests.test_mh_ipam import call, conf, leases, ok

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_tool(str(CNIBIN / "mh-ipam")),
    pytest.mark.needs_tool(str(REFERENCE_BIN / "host-local")),
]


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


class Node:
    """Both programs on one dataDir; every step checks one lease per attachment and family."""

    def __init__(self, pod: Netns, datadir: Path) -> None:
        self.pod, self.datadir = pod, datadir
        self.doc = conf(datadir, "1.0.0")

    def run(self, who: str, command: str, cid: str) -> list[str]:
        extra = {"plugin": "host-local", "bindir": REFERENCE_BIN} if who == "ref" else {}
        doc = ok(call(command, self.doc, self.pod, cid=cid, **extra))  # type: ignore[arg-type]
        held = Counter((owner, ":" in ip) for ip, owner in leases(self.datadir).items())
        assert max(held.values(), default=1) == 1, held
        return [ip["address"] for ip in doc["ips"]] if doc else []

    def holders(self) -> set[str]:
        return {owner.split("\r\n")[0] for owner in leases(self.datadir).values()}


def test_host_local_lease_is_returned_by_mh_ipam(pod: Netns, tmp_path: Path) -> None:
    node = Node(pod, tmp_path)
    theirs = node.run("ref", "ADD", "c1")
    assert node.run("ours", "ADD", "c1") == theirs
    node.run("ours", "DEL", "c1")
    assert leases(tmp_path) == {}


def test_interleaved_writers(pod: Netns, tmp_path: Path) -> None:
    node = Node(pod, tmp_path)
    a = node.run("ours", "ADD", "a")
    b = node.run("ref", "ADD", "b")
    assert node.run("ours", "ADD", "b") == b
    assert node.run("ours", "ADD", "a") == a
    c = node.run("ref", "ADD", "c")
    node.run("ref", "DEL", "a")  # host-local releases a lease mh-ipam made
    assert node.holders() == {"b", "c"}
    a2 = node.run("ours", "ADD", "a")
    assert a2 and a2 != a
    assert node.run("ours", "ADD", "c") == c
    node.run("ours", "DEL", "b")  # mh-ipam releases a lease host-local made
    node.run("ref", "DEL", "c")
    assert node.holders() == {"a"}
    node.run("ref", "DEL", "a")
    node.run("ours", "DEL", "a")
    assert leases(tmp_path) == {}
