"""The etcd store's pure parts: address keys that sort as addresses do, endpoint URLs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multihome.ipam.etcdclient import Endpoint, prefix_end
from multihome.ipam.etcdstore import ip_from_key, ip_key

v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@given(st.lists(v4, min_size=2, max_size=20) | st.lists(v6, min_size=2, max_size=20))
def test_keys_sort_as_the_addresses_do(ips: list[ipaddress.IPv4Address]) -> None:
    assert sorted(ips, key=ip_key) == sorted(ips)
    assert len({ip_key(ip) for ip in ips}) == len(set(ips))


@given(v4 | v6)
def test_a_key_names_its_address(ip: ipaddress.IPv4Address) -> None:
    assert ip_from_key(ip_key(ip)) == ip


def test_key_shapes() -> None:
    assert ip_key(ipaddress.ip_address("10.30.0.2")) == "4/010.030.000.002"
    assert (
        ip_key(ipaddress.ip_address("2001:db8::1")) == "6/2001:0db8:0000:0000:0000:0000:0000:0001"
    )
    assert ip_from_key("4/1.2.3") is None and ip_from_key("5/x") is None


def test_prefix_end_covers_the_prefix() -> None:
    import base64

    assert base64.b64decode(prefix_end("/a/b/")) == b"/a/b0"


@pytest.mark.parametrize(
    ("url", "host", "port", "netloc"),
    [
        ("http://127.0.0.1:2379", "127.0.0.1", 2379, "127.0.0.1:2379"),
        ("https://etcd.example:2379/", "etcd.example", 2379, "etcd.example:2379"),
        ("https://[::1]:2379", "::1", 2379, "[::1]:2379"),
    ],
)
def test_endpoints(url: str, host: str, port: int, netloc: str) -> None:
    endpoint = Endpoint(url)
    assert (endpoint.host, endpoint.port, endpoint.netloc) == (host, port, netloc)


@pytest.mark.parametrize("url", ["127.0.0.1:2379", "ftp://h:1", "http://h", "http://:1", "h:x"])
def test_bad_endpoints(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        Endpoint(url)


def test_a_picker_spreads_out_after_conflicts_but_never_loses_a_free_address() -> None:
    """Losers of a race skip ahead by a hash of their owner; what they skip is still
    tried before the set is called exhausted."""
    from multihome.ipam import allocator, config
    from multihome.ipam.etcdstore import _Picker
    from multihome.lib.errors import CNIError
    from tests.ipam_helpers import request

    pool = config.load(request({"ranges": [[{"subnet": "10.5.0.0/27"}]]}))  # .1 gateway
    picker = _Picker(allocator.SetPlan(pool, 0, lambda: None), ("ctr", "net1"))
    got = []
    for _ in range(29):  # .2 .. .30: every free address, each "taken" once tried
        ip, _ = picker.current()
        got.append(int(ip) & 0xFF)
        picker.learn({int(ip)})
    assert sorted(got) == list(range(2, 31))
    assert got != sorted(got)  # it did skip ahead
    with pytest.raises(CNIError) as exc:
        picker.current()
    assert exc.value.code == 110
