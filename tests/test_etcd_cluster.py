"""mh-ipam on a 3-member etcd cluster on loopback: a leader killed mid-run, quorum lost.

Allocations come from real plugin processes playing eight nodes; every
process knows all three endpoints, in an order of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conformance import etcdrig
from tests.conftest import needs_etcd
from tests.etcd_helpers import NET, Net, addresses, call, leases, owners
from tests.rig import CNIBIN, Netns, one_json
from tests.shapes import check_error

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[etcdrig.EtcdCluster]:
    needs_etcd()
    with etcdrig.EtcdCluster(tmp_path / "etcd", size=3) as running:
        yield running


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def _rotated(endpoints: list[str], n: int) -> list[str]:
    return endpoints[n % len(endpoints) :] + endpoints[: n % len(endpoints)]


def test_leader_killed_during_concurrent_allocations(
    cluster: etcdrig.EtcdCluster, pod: Netns
) -> None:
    net = Net(cluster.endpoints)
    net.ranges = [[{"subnet": "10.79.0.0/22"}]]
    workers, per_worker = 8, 10
    finished: list[str] = []  # (list.append is atomic)

    def worker(w: int) -> list[tuple[str, int, Any, float]]:
        doc = net.conf(node=f"node{w}")
        doc["ipam"]["store"]["endpoints"] = _rotated(cluster.endpoints, w)
        out = []
        for i in range(per_worker):
            cid = f"w{w}c{i}"
            proc = call("ADD", doc, pod, cid=cid)
            out.append((cid, proc.returncode, one_json(proc.stdout), time.monotonic()))
            finished.append(cid)
        return out

    with ThreadPoolExecutor(max_workers=workers) as ex:
        futures = [ex.submit(worker, w) for w in range(workers)]
        deadline = time.monotonic() + 60
        while len(finished) < 10 and time.monotonic() < deadline:  # well under way
            time.sleep(0.01)
        leader = cluster.leader()
        cluster.kill(leader)
        killed_at = time.monotonic()
        rows = [row for f in futures for row in f.result()]
    done = sorted(at for _, code, _, at in rows if code == 0)
    assert done[0] < killed_at < done[-1], "the kill did not fall among the allocations"
    survivors = [m for m in cluster.members if m.alive]
    assert len(survivors) == 2
    granted = {cid: addresses(doc)[0] for cid, code, doc, _ in rows if code == 0}
    failed = [(cid, doc) for cid, code, doc, _ in rows if code != 0]
    for _, doc in failed:
        check_error(doc, 11)  # clean: "try again later", nothing else
    assert len(set(granted.values())) == len(granted)  # unique
    assert len(granted) >= workers * per_worker // 2, failed
    # What a runtime does after a failed ADD: DEL. Then etcd holds exactly the grants.
    for cid, _ in failed:
        assert call("DEL", net.conf(), None, cid=cid).returncode == 0
    held = leases(cluster, net)
    assert len(held) == len(granted)
    for cid, address in granted.items():
        a, b, c, d = address.split("/")[0].split(".")
        assert held[f"4/{int(a):03d}.{int(b):03d}.{int(c):03d}.{int(d):03d}"] == f"{cid}\r\nnet1"
    # Both survivors hold the same copy.
    base = f"{net.prefix}/{NET}/"
    assert cluster.get_prefix(base, survivors[0]) == cluster.get_prefix(base, survivors[1])


def test_without_quorum_nothing_is_allocated(cluster: etcdrig.EtcdCluster, pod: Netns) -> None:
    net = Net(cluster.endpoints, timeout=2)
    ok_before = call("ADD", net.conf(), pod, cid="before")
    assert ok_before.returncode == 0, ok_before.stdout
    for member in cluster.members[:2]:
        cluster.kill(member)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as ex:
        procs = list(ex.map(lambda i: call("ADD", net.conf(), pod, cid=f"q{i}"), range(4)))
    assert time.monotonic() - start < 20  # each gave up at its 2 s timeout (10x margin)
    for proc in procs:
        check_error(one_json(proc.stdout), 11)
    check_error(one_json(call("STATUS", net.conf(), None).stdout), 50)
    # The last member's own copy (a serializable read needs no quorum): nothing new.
    last = cluster.members[2]
    assert set(owners(cluster, net)) == {"before/net1"}
    assert len(cluster.get_prefix(f"{net.prefix}/{NET}/ips/", last)) == 2
