"""The pure allocator over an in-memory store: order, exclusions, requests, rollback."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.ipam import allocator, config
from multihome.lib.errors import CNIError
from tests.ipam_helpers import SEED_RANGES, MemoryStore, request


def pool(ipam: dict[str, Any], **kw: Any) -> config.Pool:
    return config.load(request(ipam, **kw))


def alloc(p: config.Pool, store: MemoryStore, cid: str) -> list[str]:
    return [str(ip) for ip, _ in allocator.allocate(p, store, (cid, "net1"))]


def test_round_robin_and_gateway_skipped() -> None:
    p = pool({"ranges": [[{"subnet": "10.0.0.0/29"}]]})  # .1 gateway, .2-.6 usable
    store = MemoryStore()
    got = [alloc(p, store, f"c{i}")[0] for i in range(5)]
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    store.release(ipaddress.ip_address("10.0.0.3"), ("c1", "net1"))
    assert alloc(p, store, "c9") == ["10.0.0.3"]  # wrapped around to the freed one


def test_round_robin_does_not_reuse_a_just_freed_address() -> None:
    p = pool({"ranges": [[{"subnet": "10.0.0.0/29"}]]})
    store = MemoryStore()
    first = alloc(p, store, "a")[0]
    store.release(ipaddress.ip_address(first), ("a", "net1"))
    assert alloc(p, store, "b") == ["10.0.0.3"]


def test_seed_dual_stack() -> None:
    assert alloc(pool({"ranges": SEED_RANGES}), MemoryStore(), "c") == [
        "203.0.113.10",
        "2001:db8:200::10",
    ]


def test_multiple_ranges_in_a_set() -> None:
    # each /30 has .1 and .2; .1 is each range's default gateway
    p = pool({"ranges": [[{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/30"}]]})
    store = MemoryStore()
    assert [alloc(p, store, f"c{i}")[0] for i in range(2)] == ["10.0.0.2", "10.0.1.2"]
    with pytest.raises(CNIError):
        alloc(p, store, "c3")


def test_exclusions_are_skipped() -> None:
    p = pool(
        {
            "ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.20"}]],
            "exclude": ["10.0.0.0/29", "10.0.0.12/30", "10.0.0.14/32"],
        }
    )
    store = MemoryStore()
    got = [alloc(p, store, f"c{i}")[0] for i in range(8)]
    assert got == [
        "10.0.0.8",
        "10.0.0.9",
        "10.0.0.10",
        "10.0.0.11",
        "10.0.0.16",
        "10.0.0.17",
        "10.0.0.18",
        "10.0.0.19",
    ]


def test_exhaustion_is_code_110() -> None:
    p = pool({"ranges": [[{"subnet": "10.0.0.0/30"}]]})  # only .2 is usable
    store = MemoryStore()
    alloc(p, store, "a")
    with pytest.raises(CNIError) as err:
        alloc(p, store, "b")
    assert err.value.code == 110
    assert "no IP addresses available" in err.value.msg


def test_repeated_add_returns_the_same_addresses() -> None:
    p = pool({"ranges": SEED_RANGES})
    store = MemoryStore()
    first = alloc(p, store, "c")
    assert alloc(p, store, "c") == first
    assert len(store.leases) == 2


def test_requested_ip() -> None:
    p = pool({"ranges": SEED_RANGES}, cni_args={"IP": "203.0.113.33"})
    assert alloc(p, MemoryStore(), "c") == ["203.0.113.33", "2001:db8:200::10"]


@pytest.mark.parametrize(
    ("ip", "code", "fragment"),
    [
        ("203.0.113.60", 111, "not in any range"),
        ("198.51.100.7", 111, "not in any range"),
        ("203.0.113.16", 112, "excluded"),
    ],
)
def test_requested_ip_errors(ip: str, code: int, fragment: str) -> None:
    p = pool({"ranges": SEED_RANGES, "exclude": ["203.0.113.16/30"]}, cni_args={"IP": ip})
    store = MemoryStore()
    with pytest.raises(CNIError) as err:
        alloc(p, store, "c")
    assert (err.value.code, fragment in err.value.msg) == (code, True), err.value.msg
    assert store.leases == {}


def test_requested_gateway_is_refused() -> None:
    p = pool({"ranges": [[{"subnet": "10.0.0.0/24"}]]}, cni_args={"IP": "10.0.0.1"})
    with pytest.raises(CNIError) as err:
        alloc(p, MemoryStore(), "c")
    assert err.value.code == 112
    assert "gateway" in err.value.msg


def test_requested_ip_taken() -> None:
    p = pool({"ranges": SEED_RANGES}, cni_args={"IP": "203.0.113.20"})
    store = MemoryStore()
    alloc(p, store, "a")
    with pytest.raises(CNIError) as err:
        alloc(p, store, "b")
    assert err.value.code == 112
    assert "in use" in err.value.msg


def test_failure_in_second_set_rolls_back_the_first() -> None:
    p = pool(
        {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/126", "rangeEnd": "fd00::2"}]]}
    )
    store = MemoryStore()
    alloc(p, store, "a")  # takes fd00::2, the only usable v6 address
    with pytest.raises(CNIError):
        alloc(p, store, "b")
    assert store.owned(("b", "net1")) == []


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.integers(min_value=24, max_value=29),
    excludes=st.lists(st.tuples(st.integers(0, 255), st.integers(26, 32)), max_size=4),
    count=st.integers(1, 70),
)
def test_property_unique_in_range_never_excluded(
    prefix: int, excludes: list[tuple[int, int]], count: int
) -> None:
    ex = [
        str(ipaddress.ip_network(f"10.9.0.{host}/{plen}", strict=False)) for host, plen in excludes
    ]
    p = pool({"ranges": [[{"subnet": f"10.9.0.0/{prefix}"}]], "exclude": ex})
    rng = p.range_sets[0][0]
    banned = {int(rng.gateway)} | {
        a for n in p.exclude for a in range(int(n.network_address), int(n.broadcast_address) + 1)
    }
    usable = [a for a in range(rng.start, rng.end + 1) if a not in banned]
    store = MemoryStore()
    got = []
    for i in range(count):
        try:
            got.append(int(allocator.allocate(p, store, (f"c{i}", "net1"))[0][0]))
        except CNIError as err:
            assert err.code == 110
            break
    assert len(got) == len(set(got)) == min(count, len(usable))
    assert set(got) <= set(usable)


def test_last_reserved_is_read_only_for_a_set_that_needs_a_candidate() -> None:
    """A requested IP or an address the owner holds already costs no cursor read."""
    reads: list[int] = []

    class Counting(MemoryStore):
        def last_reserved(self, set_index: int) -> ipaddress.IPv4Address | None:
            reads.append(set_index)
            return None

    store = Counting()
    p = config.load(request({"ranges": SEED_RANGES}, cni_args={"IP": "203.0.113.20"}))
    allocator.allocate(p, store, ("a", "net1"))
    assert reads == [1]  # set 0 was requested
    allocator.allocate(p, store, ("a", "net1"))  # a repeated ADD: both sets held
    assert reads == [1]
