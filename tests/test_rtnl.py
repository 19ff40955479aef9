"""lib/rtnl.py against the real kernel: large batches, flags, multipath, dumps.

Each test builds a throwaway namespace; what the kernel holds is read back
with ``ip -j``, never with the module under test.
"""

from __future__ import annotations

import errno
import ipaddress
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from multihome.lib import rtnl
from tests.rig import Netns

pytestmark = [pytest.mark.privileged]
NET = ipaddress.ip_network
IP = ipaddress.ip_address


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    """eth0 (10.0.0.5/24) and eth1 (10.1.0.5/24), both up."""
    ns = netns_factory("pod")
    for n, name in enumerate(("eth0", "eth1")):
        ns.ip("link", "add", name, "type", "veth", "peer", "name", f"peer{n}")
        ns.ip("addr", "add", f"10.{n}.0.5/24", "dev", name)
        ns.ip("link", "set", name, "up")
        ns.ip("link", "set", f"peer{n}", "up")
    return ns


@pytest.fixture
def sock(pod: Netns) -> Iterator[rtnl.Rtnl]:
    with rtnl.in_netns(pod.path) as (_, s):
        yield s


def index(pod: Netns, name: str) -> int:
    return int(pod.ipj("link", "show", name)[0]["ifindex"])


def routes(pod: Netns, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pod.ipj("-4", "route", "show", *args)
    return found


def many(count: int, oif: int, table: int = 100) -> list[rtnl.RouteSpec]:
    nets = NET("100.64.0.0/10").subnets(new_prefix=26)
    return [
        rtnl.RouteSpec(next(nets), gw=IP("10.0.0.1"), oif=oif, table=table) for _ in range(count)
    ]


def test_acks_are_capped() -> None:
    with rtnl.Rtnl() as s:
        assert s.sock.getsockopt(rtnl.SOL_NETLINK, rtnl.NETLINK_CAP_ACK) == 1


def test_a_batch_of_5000_routes(pod: Netns, sock: rtnl.Rtnl) -> None:
    """One write of 5,000 requests overflowed the ACK queue (ENOBUFS) and the send
    limit (EMSGSIZE); windows keep every ACK."""
    specs = many(5000, index(pod, "eth0"))
    assert sock.batch([rtnl.route_add(s) for s in specs]) == [None] * 5000
    assert len(routes(pod, "table", "100")) == 5000
    assert sock.batch([rtnl.route_delete(s) for s in specs]) == [None] * 5000
    assert routes(pod, "table", "100") == []


def test_errors_come_back_in_order_across_windows(pod: Netns, sock: rtnl.Rtnl) -> None:
    specs = many(300, index(pod, "eth0"))
    assert sock.batch([rtnl.route_add(specs[7]), rtnl.route_add(specs[290])]) == [None, None]
    errors = sock.batch([rtnl.route_add(s) for s in specs])
    failed = {i: e.errno for i, e in enumerate(errors) if e is not None}
    assert failed == {7: errno.EEXIST, 290: errno.EEXIST}
    assert len(routes(pod, "table", "100")) == 300


def test_onlink_is_read_and_replayed(pod: Netns, sock: rtnl.Rtnl) -> None:
    """Calico's and Cilium's pods: default via 169.254.1.1 dev eth0 onlink."""
    pod.ip("route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")
    (entry,) = [r for r in sock.routes(4, rtnl.RT_TABLE_MAIN) if r.dst.prefixlen == 0]
    assert entry.flags == rtnl.RTNH_F_ONLINK
    spec = rtnl.RouteSpec.from_entry(entry)
    sock.call(rtnl.route_delete(spec))
    assert routes(pod, "default") == []
    sock.call(rtnl.route_add(spec))
    (back,) = routes(pod, "default")
    assert back["gateway"] == "169.254.1.1" and back["dev"] == "eth0"
    assert "onlink" in back["flags"]


def test_multipath_over_two_interfaces(pod: Netns, sock: rtnl.Rtnl) -> None:
    """Each path keeps its own interface, weight and flags through delete and re-add."""
    pod.ip(
        "route", "add", "default",
        "nexthop", "via", "10.0.0.1", "dev", "eth0", "weight", "3",
        "nexthop", "via", "10.1.0.1", "dev", "eth1", "onlink",
    )  # fmt: skip
    before = routes(pod, "default")
    (entry,) = [r for r in sock.routes(4, rtnl.RT_TABLE_MAIN) if r.dst.prefixlen == 0]
    spec = rtnl.RouteSpec.from_entry(entry)
    eth0, eth1 = index(pod, "eth0"), index(pod, "eth1")
    assert spec.paths() == {(IP("10.0.0.1"), eth0), (IP("10.1.0.1"), eth1)}
    sock.call(rtnl.route_delete(spec))
    assert routes(pod, "default") == []
    names = {eth0: "eth0", eth1: "eth1"}
    again = rtnl.RouteSpec.from_dict(spec.to_dict(names), {"eth0": eth0, "eth1": eth1})
    sock.call(rtnl.route_add(again))
    assert routes(pod, "default") == before
    hops = {h["dev"]: h for h in before[0]["nexthops"]}
    assert hops["eth0"]["weight"] == 3 and "onlink" in hops["eth1"]["flags"]


def test_a_record_without_an_interface_drops_its_path() -> None:
    doc = {
        "dst": "0.0.0.0/0",
        "dev": "",
        "nexthops": [{"gw": "10.0.0.1", "dev": "eth0"}, {"gw": "10.1.0.1", "dev": "eth1"}],
    }
    spec = rtnl.RouteSpec.from_dict(doc, {"eth0": 7})
    assert spec.paths() == {(IP("10.0.0.1"), 7)}
    with pytest.raises(KeyError):
        rtnl.RouteSpec.from_dict(doc, {})
    old = {"dst": "0.0.0.0/0", "dev": "net1", "nexthops": ["10.0.0.1", "10.0.0.2"]}
    assert rtnl.RouteSpec.from_dict(old, {"net1": 4}).paths() == {
        (IP("10.0.0.1"), 4),
        (IP("10.0.0.2"), 4),
    }


class Interrupting(rtnl.Rtnl):
    """Marks the first ``times`` dumps interrupted, the flag on NLMSG_DONE only (the
    kernel sets it there when the table changed after the last reply)."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times
        self.dumps = 0

    def _messages(self) -> list[tuple[int, int, int, memoryview]]:
        out = []
        for kind, flags, seq, body in super()._messages():
            mark = 0
            if kind == rtnl.NLMSG_DONE:
                self.dumps += 1
                mark = rtnl.NLM_F_DUMP_INTR if self.dumps <= self.times else 0
            out.append((kind, flags | mark, seq, body))
        return out


def test_an_interrupted_dump_is_retried(pod: Netns) -> None:
    with rtnl.in_netns(pod.path) as (ns, _), ns:
        s = Interrupting(times=2)
    with s:
        assert {str(r.dst) for r in s.routes(4, rtnl.RT_TABLE_MAIN)} == {
            "10.0.0.0/24",
            "10.1.0.0/24",
        }
        assert s.dumps == 3
        s.times, s.dumps = 99, 0
        with pytest.raises(rtnl.NetlinkError) as err:
            s.routes(4)
        assert err.value.errno == errno.EINTR


def test_dumps_under_churn_miss_nothing(pod: Netns, sock: rtnl.Rtnl) -> None:
    """While another process adds and deletes routes, every dump still holds every
    stable route (an interrupted dump, retried, is never returned half)."""
    stable = many(3000, index(pod, "eth0"), table=rtnl.RT_TABLE_MAIN)
    assert not any(sock.batch([rtnl.route_add(s) for s in stable]))
    churn = "\n".join(
        f"route {verb} 198.18.{i}.0/24 via 10.1.0.1 dev eth1"
        for _ in range(40)
        for verb in ("add", "del")
        for i in range(50)
    )
    proc = subprocess.Popen(
        ["ip", "-n", pod.name, "-force", "-batch", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(churn.encode())
    proc.stdin.close()
    want = {s.dst for s in stable}
    try:
        while proc.poll() is None:
            got = {r.dst for r in sock.routes(4, rtnl.RT_TABLE_MAIN)}
            assert want <= got
    finally:
        proc.wait(timeout=60)
