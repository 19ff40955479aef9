"""mh-ipam on etcd: the real executable against real etcd servers on loopback.

Each test gets its own key prefix in the session's single member (the
``etcd`` fixture in conftest); the fault tests start their own clusters. Kernel-free: ADD, CHECK,
DEL, STATUS and GC of an IPAM plugin need only a namespace to point at.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conformance import etcdrig
from conformance.fakes import Listener
from tests import etcd_node
from tests.conftest import needs_etcd
from tests.etcd_helpers import NET, Net, addresses, call, lease_docs, leases, ok, owners
from tests.ipam_helpers import SEED_RANGES
from tests.rig import CNIBIN, Netns, one_json
from tests.shapes import check_error, check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))]


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def test_dual_stack_add_check_del(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    net = Net(etcd.endpoints)
    result = ok(call("ADD", net.conf(), pod))
    check_result(result, "1.1.0")
    assert result["ips"] == [
        {"address": "203.0.113.10/24", "gateway": "203.0.113.1"},
        {"address": "2001:db8:200::10/64", "gateway": "2001:db8:200::1"},
    ]
    assert leases(etcd, net) == {
        "4/203.000.113.010": "ctr1\r\nnet1",
        "6/2001:0db8:0200:0000:0000:0000:0000:0010": "ctr1\r\nnet1",
    }
    record = owners(etcd, net)["ctr1/net1"]
    assert record["ips"] == ["203.0.113.10", "2001:db8:200::10"]
    assert record["node"] == "node-a" and record["since"].endswith("Z")
    for doc in lease_docs(etcd, net).values():  # each key names its node, too
        assert doc == {"id": "ctr1", "if": "net1", "node": "node-a", "since": record["since"]}
    ok(call("CHECK", net.conf(prevResult=result), pod))
    ok(call("DEL", net.conf(prevResult=result), pod))
    assert etcd.get_prefix(f"{net.prefix}/{NET}/ips/") == {}
    assert owners(etcd, net) == {}
    ok(call("DEL", net.conf(), None))  # DEL twice, and without a netns


SCRIPT: list[tuple[str, str, dict[str, str]]] = [
    ("ADD", "a", {}),
    ("ADD", "a", {}),  # a repeated ADD: the same addresses
    ("ADD", "b", {"CNI_ARGS": "IP=203.0.113.7"}),
    ("ADD", "c", {"CNI_ARGS": "IP=203.0.113.7"}),  # taken: 112
    ("ADD", "c", {"CNI_ARGS": "IP=203.0.113.99"}),  # outside the range: 111
    ("ADD", "c", {"CNI_ARGS": "IP=203.0.113.1"}),  # the gateway: 112
    ("ADD", "c", {}),
    ("DEL", "a", {}),
    ("ADD", "d", {}),  # round robin: after .8, wrapping to a's freed .2
    ("ADD", "e", {"CNI_ARGS": "IP=203.0.113.6,2001:db8:200::77"}),
    ("ADD", "f", {}),
    ("ADD", "g", {}),  # the pool is full: 110
    ("DEL", "zz", {}),  # never added: still fine
]


def _play(doc: dict[str, Any], pod: Netns) -> list[Any]:
    out = []
    for command, cid, env in SCRIPT:
        proc = call(command, doc, pod, cid=cid, **env)
        reply = one_json(proc.stdout) if proc.stdout else None
        out.append((command, cid, proc.returncode, reply and (reply.get("ips") or reply["code"])))
    return out


def test_same_answers_as_the_file_store(
    etcd: etcdrig.EtcdCluster, pod: Netns, tmp_path: Path
) -> None:
    """One script of ADDs and DELs (requested IPs, exclusions, the gateway, a repeated ADD,
    round robin, exhaustion) gives the same replies from both stores."""
    net = Net(etcd.endpoints)
    net.ranges = [
        [
            {
                "subnet": "203.0.113.0/24",
                "rangeStart": "203.0.113.1",
                "rangeEnd": "203.0.113.8",
                "gateway": "203.0.113.1",
            }
        ],
        SEED_RANGES[1],
    ]
    net.ipam = {"exclude": ["203.0.113.4/31"]}  # leaves .2 .3 .6 .7 .8
    on_etcd = _play(net.conf(), pod)
    file_doc = net.conf()
    del file_doc["ipam"]["store"]
    file_doc["ipam"]["dataDir"] = str(tmp_path)
    on_files = _play(file_doc, pod)
    assert on_etcd == on_files
    v4 = [row[3][0]["address"] for row in on_etcd if isinstance(row[3], list)]
    assert v4 == [f"203.0.113.{n}/24" for n in (2, 2, 7, 8, 2, 6, 3)]
    codes = [row[3] for row in on_etcd if isinstance(row[3], int)]
    assert codes == [112, 111, 112, 110]
    assert len(leases(etcd, net)) == 2 * 5  # b, c, d, e, f


def test_check_compares_the_leases_with_prev_result(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    net = Net(etcd.endpoints)
    result = ok(call("ADD", net.conf(), pod))
    wrong = json.loads(json.dumps(result))
    wrong["ips"][0]["address"] = "203.0.113.44/24"
    check_error(one_json(call("CHECK", net.conf(prevResult=wrong), pod).stdout), 120)
    check_error(one_json(call("CHECK", net.conf(prevResult=result), pod, cid="x").stdout), 120)
    ok(call("CHECK", net.conf(prevResult=result), pod))


def test_del_frees_only_the_keys_that_name_its_owner(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    """A lease key changed behind our back: one names someone else now (kept), one
    names us in other words (freed). DEL never frees another holder's address."""
    net = Net(etcd.endpoints)
    ok(call("ADD", net.conf(), pod))
    base = f"{net.prefix}/{NET}/ips/"
    v4, v6 = "4/203.000.113.010", "6/2001:0db8:0200:0000:0000:0000:0000:0010"
    other = {"id": "intruder", "if": "net1", "node": "node-z", "since": "2026-01-01T00:00:00Z"}
    etcd.put(base + v4, json.dumps(other))
    etcd.put(base + v6, json.dumps({"id": "ctr1", "if": "net1", "node": "node-a"}))
    ok(call("DEL", net.conf(), pod))
    assert lease_docs(etcd, net) == {v4: other}
    assert owners(etcd, net) == {}


def test_kill_9_mid_add_then_a_retry_leaks_nothing(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    """SIGKILL at random points of ADD: the runtime's retry gets one pair of addresses
    (the one a killed commit made, if any), and DEL leaves nothing."""
    import random
    import signal

    from tests.rig import plugin_env

    net = Net(etcd.endpoints)
    rng = random.Random(7)  # noqa: S311 - kill times, not secrets
    for n in range(8):
        cid = f"crash{n}"
        env = {**plugin_env("ADD", CNI_CONTAINERID=cid, CNI_IFNAME="net1"), "CNI_NETNS": pod.path}
        proc = subprocess.Popen(
            [str(CNIBIN / "mh-ipam")],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(net.conf()).encode())
        proc.stdin.close()
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        retry = ok(call("ADD", net.conf(), pod, cid=cid))
        held = leases(etcd, net)  # the earlier rounds' are DELeted: all here are cid's
        assert set(held.values()) == {f"{cid}\r\nnet1"} and len(held) == 2
        assert list(owners(etcd, net)) == [f"{cid}/net1"] and len(addresses(retry)) == 2
        assert [ip["address"].split("/")[0] for ip in retry["ips"]] == owners(etcd, net)[
            f"{cid}/net1"
        ]["ips"]
        ok(call("DEL", net.conf(), pod, cid=cid))
    assert lease_docs(etcd, net) == {} and owners(etcd, net) == {}


def test_gc_frees_only_this_nodes_stale_attachments(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    net = Net(etcd.endpoints)
    for cid, node in (("a1", "node-a"), ("a2", "node-a"), ("b1", "node-b")):
        ok(call("ADD", net.conf(node=node), pod, cid=cid))
    gc = net.conf(node="node-a")
    ok(call("GC", gc, None))  # no valid-attachments: frees nothing
    assert set(owners(etcd, net)) == {"a1/net1", "a2/net1", "b1/net1"}
    gc["cni.dev/valid-attachments"] = [{"containerID": "a1", "ifname": "net1"}]
    ok(call("GC", gc, None))
    # a2 was node-a's and is gone; b1 is node-b's, which node-a's runtime knows nothing of.
    assert set(owners(etcd, net)) == {"a1/net1", "b1/net1"}
    assert sorted(set(leases(etcd, net).values())) == ["a1\r\nnet1", "b1\r\nnet1"]
    gc_b = net.conf(node="node-b")
    gc_b["cni.dev/valid-attachments"] = []
    ok(call("GC", gc_b, None))
    assert set(owners(etcd, net)) == {"a1/net1"}


def _parallel(jobs: list[tuple[str, dict[str, Any], str]], pod: Netns, workers: int) -> list[Any]:
    """Each job is one plugin process: (command, config, container ID)."""

    def one(job: tuple[str, dict[str, Any], str]) -> tuple[int, Any]:
        proc = call(job[0], job[1], pod, cid=job[2])
        return proc.returncode, one_json(proc.stdout)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(one, jobs))


def test_eight_nodes_allocating_at_once_get_unique_addresses(
    etcd: etcdrig.EtcdCluster, pod: Netns
) -> None:
    net = Net(etcd.endpoints)
    net.ranges = [[{"subnet": "10.77.0.0/24"}]]
    jobs = [("ADD", net.conf(node=f"node{i % 8}"), f"c{i}") for i in range(48)]
    results = _parallel(jobs, pod, workers=12)
    assert all(code == 0 for code, _ in results), results
    got = [addresses(doc)[0] for _, doc in results]
    assert len(set(got)) == 48
    held = leases(etcd, net)
    assert len(held) == 48
    assert {f"c{i}\r\nnet1" for i in range(48)} == set(held.values())
    nodes = {rec["node"] for rec in owners(etcd, net).values()}
    assert nodes == {f"node{i}" for i in range(8)}


def test_a_pool_of_n_grants_exactly_n(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    net = Net(etcd.endpoints)
    net.ranges = [
        [{"subnet": "10.78.0.0/24", "rangeStart": "10.78.0.10", "rangeEnd": "10.78.0.29"}]
    ]
    jobs = [("ADD", net.conf(node=f"node{i % 8}"), f"c{i}") for i in range(32)]
    results = _parallel(jobs, pod, workers=16)
    granted = [addresses(doc)[0] for code, doc in results if code == 0]
    refused = [doc for code, doc in results if code != 0]
    assert len(granted) == 20 and len(set(granted)) == 20
    assert len(refused) == 12
    for doc in refused:
        check_error(doc, 110)
    assert len(leases(etcd, net)) == 20 == len(owners(etcd, net))


def test_unreachable_etcd_is_code_11_within_the_timeout(pod: Netns) -> None:
    dead = [f"http://127.0.0.1:{port}" for port in etcdrig.free_ports(2)]
    net = Net(dead, timeout=1)
    start = time.monotonic()
    err = one_json(call("ADD", net.conf(), pod).stdout)
    assert time.monotonic() - start < 15  # gives up at the 1 s timeout (10x margin), no hang
    check_error(err, 11)
    assert "try again later" in err["msg"] and dead[0] in err["details"]
    check_error(one_json(call("DEL", net.conf(), pod).stdout), 11)  # a lease may exist: retry
    check_error(one_json(call("STATUS", net.conf(), None).stdout), 50)


def test_a_dead_endpoint_is_skipped_for_the_next(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    dead = f"http://127.0.0.1:{etcdrig.free_ports(1)[0]}"
    net = Net([dead, *etcd.endpoints], timeout=30)
    start = time.monotonic()
    result = ok(call("ADD", net.conf(), pod))
    # Refused at once, not waited out: waiting would spend the dead one's 15 s share.
    assert time.monotonic() - start < 10
    assert addresses(result)[0] == "203.0.113.10/24"
    ok(call("DEL", net.conf(), pod))
    assert leases(etcd, net) == {}


def test_an_etcd_that_never_answers_is_code_11_not_a_hang(pod: Netns) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are queued and never answered
    try:
        net = Net([f"http://127.0.0.1:{silent.getsockname()[1]}"], timeout=1.5)
        start = time.monotonic()
        check_error(one_json(call("ADD", net.conf(), pod).stdout), 11)
        assert time.monotonic() - start < 15  # the 1.5 s timeout, with a 10x margin
    finally:
        silent.close()


def test_status(etcd: etcdrig.EtcdCluster) -> None:
    ok(call("STATUS", Net(etcd.endpoints).conf(), None))


class ReplyDropper(Listener):
    """A TCP proxy to etcd that forwards the first committing transaction and then
    closes the connection without its reply: a reply lost after the commit."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.dropped = 0
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as up:
            while True:
                request = client.recv(1 << 20)
                if not request:
                    return
                up.sendall(request)
                reply = up.recv(1 << 20)
                if b"request_put" in request and not self.dropped:
                    self.dropped += 1
                    return  # committed upstream; the client never hears of it
                client.sendall(reply)


def test_a_reply_lost_after_the_commit_leaks_nothing(etcd: etcdrig.EtcdCluster, pod: Netns) -> None:
    upstream = etcd.members[0].client_port
    proxy = ReplyDropper(upstream)
    try:
        # Through the proxy first; the retry goes to the next endpoint, etcd itself.
        net = Net([f"http://127.0.0.1:{proxy.port}", f"http://127.0.0.1:{upstream}"])
        result = ok(call("ADD", net.conf(), pod))
    finally:
        proxy.close()
    assert proxy.dropped == 1
    assert addresses(result) == ["203.0.113.10/24", "2001:db8:200::10/64"]
    assert len(leases(etcd, net)) == 2  # the committed pair, not a second one
    assert list(owners(etcd, net)) == ["ctr1/net1"]


def test_tls_with_client_certificates(tmp_path: Path, pod: Netns) -> None:
    needs_etcd()
    tls = etcdrig.TLSFiles.make(etcd_node.tls_dir("pki"))  # where the node keeps them
    with etcdrig.EtcdCluster(tmp_path / "etcd", tls=tls) as cluster:
        good = {"ca": str(tls.ca), "cert": str(tls.client_cert), "key": str(tls.client_key)}
        net = Net(cluster.endpoints, tls=good)
        result = ok(call("ADD", net.conf(), pod))
        assert addresses(result) == ["203.0.113.10/24", "2001:db8:200::10/64"]
        assert len(leases(cluster, net)) == 2
        ok(call("DEL", net.conf(), pod))
        # No client certificate: etcd refuses the handshake, a config fault (code 7) at once.
        anonymous = Net(cluster.endpoints, tls={"ca": str(tls.ca)}, timeout=30)
        err = one_json(call("ADD", anonymous.conf(), pod).stdout)
        check_error(err, 7)  # at once: waiting out the timeout would end in code 11
        assert "certificate" in err["msg"]
        # A CA that did not sign the server's certificate: code 7 too.
        other = etcdrig.TLSFiles.make(etcd_node.tls_dir("other"))
        wrong_ca = Net(cluster.endpoints, tls={**good, "ca": str(other.ca)})
        check_error(one_json(call("ADD", wrong_ca.conf(), pod).stdout), 7)


@pytest.mark.parametrize(
    ("store", "needle"),
    [
        ({"type": "etcd", "profile": "absent"}, "profile 'absent' is not in"),
        ({"type": "etcd", "endpoints": ["127.0.0.1:2379"]}, "http(s)://HOST:PORT"),
        ({"type": "etcd", "tls": {"ca": "/x"}}, "the etcd credentials are the node's"),
        ({"type": "etcd", "timeout": 0}, "timeout"),
        ({"type": "etcd", "prefix": "x"}, "is not under profile"),
        ({"type": "consul"}, "store.type"),
    ],
)
def test_bad_store_config_is_code_7(store: dict[str, Any], needle: str, pod: Netns) -> None:
    net = Net(["http://127.0.0.1:1"])
    doc = net.conf()
    doc["ipam"]["store"] = {"profile": net.profile, **store}
    err = one_json(call("ADD", doc, pod).stdout)
    check_error(err, 7)
    assert needle in err["msg"] + err.get("details", "")
