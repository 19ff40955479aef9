"""The etcd client against hostile endpoints on loopback: a call ends by its deadline and
never holds more of a reply than its caps, however the endpoint drips or floods."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conformance.fakes import Server
from multihome.ipam import etcdclient
from multihome.lib.errors import CNIError

TIMEOUT = 0.5
MARGIN = 10 * TIMEOUT  # never a tighter wall-clock bound than ten times the deadline
CAP = 1 << 20  # the body cap for these tests (the real one is 64 MiB)
FLOOD = 24 << 20  # what a flooding endpoint sends before it gives up
BLOB = b"f" * (1 << 16)


def _drip(conn: socket.socket, head: bytes, tail: bytes, gap: float = 0.1) -> None:
    conn.sendall(head)
    for i in range(len(tail)):
        conn.sendall(tail[i : i + 1])
        time.sleep(gap)


def _flood(conn: socket.socket, head: bytes) -> None:
    conn.sendall(head)
    sent = 0
    while sent < FLOOD:
        conn.sendall(BLOB)
        sent += len(BLOB)


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
MODES: dict[str, Callable[[socket.socket], None]] = {
    # headers, then a 100-byte body one byte per 0.1 s (each read is quick; the call is not)
    "drip body": lambda c: _drip(c, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b" " * 100),
    # the headers themselves one byte per 0.1 s
    "drip headers": lambda c: _drip(c, b"", b"HTTP/1.1 200 OK\r\nX-Pad: " + b"x" * 100),
    # a chunked reply whose chunks come one byte per 0.1 s
    "drip chunks": lambda c: _drip(
        c, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\n \r\n" * 20
    ),
    # no Content-Length: read until close, which never comes before the flood is over
    "flood until close": lambda c: _flood(c, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
    # endless headers
    "flood headers": lambda c: _flood(c, b"HTTP/1.1 200 OK\r\nX-Pad: "),
    # a chunk announced as 2**40 bytes
    "flood huge chunk": lambda c: _flood(
        c, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000\r\n"
    ),
    # a chunk-size line that never ends
    "flood chunk-size line": lambda c: _flood(
        c, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    ),
    # Content-Length beyond the cap, then the body
    "flood announced": lambda c: _flood(
        c, f"HTTP/1.1 200 OK\r\nContent-Length: {FLOOD}\r\n\r\n".encode()
    ),
}


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcdclient, "_MAX_BODY", CAP)


def call(url: str) -> tuple[CNIError, float, int]:
    """One range call: the error, the seconds it took, the peak of memory it allocated."""
    client = etcdclient.Client([url], TIMEOUT)
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(CNIError) as exc:
            client.range("/multihome/ipam/x")
        took = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return exc.value, took, peak


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_hostile_endpoint_costs_one_deadline_and_a_capped_reply(
    mode: str, small_cap: None
) -> None:
    server = Server(MODES[mode])
    try:
        err, took, peak = call(server.url)
    finally:
        server.close()
    assert err.code == 11, err.msg
    assert took < MARGIN, f"{mode}: {took:.1f}s for a {TIMEOUT}s timeout"
    assert peak < 8 * CAP, f"{mode}: {peak >> 20} MiB held for a {CAP >> 20} MiB cap"


def test_a_silent_endpoint_costs_one_deadline() -> None:
    server = Server(lambda c: time.sleep(3 * MARGIN))
    try:
        err, took, _ = call(server.url)
    finally:
        server.close()
    assert err.code == 11 and took < MARGIN


def test_name_resolution_counts_against_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host: str, *args: Any, **kw: Any) -> Any:
        if host == "etcd.hangs.invalid":
            release.wait(3 * MARGIN)  # a resolver that does not answer
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    try:
        err, took, _ = call("http://etcd.hangs.invalid:2379")
    finally:
        release.set()
    assert err.code == 11 and took < MARGIN
    assert "resolving" in str(err.details)


def test_a_good_reply_after_a_name_lookup() -> None:
    server = Server(lambda c: c.sendall(OK))
    try:
        client = etcdclient.Client([f"http://localhost:{server.port}"], TIMEOUT)
        assert client.range("/multihome/ipam/x") == {}
    finally:
        server.close()


def test_the_idle_pool_is_bounded() -> None:
    """Forty endpoints leave at most the pool's total of idle connections open."""
    etcdclient._POOL.clear()

    def answer_and_wait(conn: socket.socket) -> None:
        conn.sendall(OK)
        conn.recv(1)  # idle until the client closes

    servers = [Server(answer_and_wait) for _ in range(40)]
    try:
        for server in servers:
            assert etcdclient.Client([server.url], TIMEOUT).range("/k") == {}
        assert 0 < etcdclient._POOL.count() <= etcdclient._POOL.total
    finally:
        etcdclient._POOL.clear()
        for server in servers:
            server.close()


def test_idle_connections_expire() -> None:
    pool = etcdclient._Pool(per_key=2, total=3, idle=0.05)
    pairs = [socket.socketpair() for _ in range(5)]
    for i, (ours, _) in enumerate(pairs):
        pool.give(("k", i % 2), ours)
    assert pool.count() == 3  # the oldest closed to make room
    closed = [ours.fileno() == -1 for ours, _ in pairs]
    assert closed == [True, True, False, False, False]
    time.sleep(0.1)
    assert pool.take(("k", 0)) is None
    assert pool.count() == 0 and all(ours.fileno() == -1 for ours, _ in pairs)
    for _, theirs in pairs:
        theirs.close()


@pytest.fixture(autouse=True)
def _no_pool_leftovers() -> Iterator[None]:
    yield
    etcdclient._POOL.clear()
