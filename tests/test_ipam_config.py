"""mh-ipam config resolution: every host-local key, validated. Pure, no root."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from multihome.ipam import config
from multihome.lib.errors import CNIError
from tests.ipam_helpers import SEED_RANGES, request


def load(ipam: dict[str, Any], **kw: Any) -> config.Pool:
    return config.load(request(ipam, **kw))


def error(ipam: dict[str, Any], **kw: Any) -> CNIError:
    with pytest.raises(CNIError) as err:
        load(ipam, **kw)
    return err.value


def test_seed_dual_stack_ranges() -> None:
    pool = load({"ranges": SEED_RANGES})
    v4, v6 = pool.range_sets
    assert str(v4[0]) == "203.0.113.10-203.0.113.50"
    assert str(v4[0].gateway) == "203.0.113.1"
    assert str(v6[0]) == "2001:db8:200::10-2001:db8:200::ff"
    assert pool.data_dir == "/var/lib/cni/networks"
    assert pool.network == "ipamnet"


def test_defaults_like_host_local() -> None:
    (rng,), (rng6,) = load(
        {"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "fd00::/120"}]]}
    ).range_sets
    assert str(rng) == "10.1.0.1-10.1.0.254"  # start .1 (gateway skipped later), end broadcast-1
    assert str(rng.gateway) == "10.1.0.1"
    assert str(rng6) == "fd00::1-fd00::ff"  # IPv6 ends at the all-ones address


def test_legacy_flat_keys_become_set_zero() -> None:
    pool = load(
        {
            "subnet": "203.0.113.0/24",
            "rangeStart": "203.0.113.10",
            "rangeEnd": "203.0.113.50",
            "gateway": "203.0.113.1",
            "ranges": [SEED_RANGES[1]],
        }
    )
    assert [str(s[0]) for s in pool.range_sets] == [
        "203.0.113.10-203.0.113.50",
        "2001:db8:200::10-2001:db8:200::ff",
    ]


def test_routes_data_dir_and_exclude() -> None:
    pool = load(
        {
            "ranges": SEED_RANGES,
            "dataDir": "/run/cni/ipam",
            "exclude": ["203.0.113.16/28"],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.169.0.0/16", "gw": "203.0.113.1"}],
        }
    )
    assert pool.data_dir == "/run/cni/ipam"
    assert [str(n) for n in pool.exclude] == ["203.0.113.16/28"]
    assert [str(r.dst) for r in pool.routes] == ["0.0.0.0/0", "192.169.0.0/16"]


def test_resolv_conf(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(
        "# c\nnameserver 203.0.113.53\nnameserver 2001:db8::53\n"
        "domain example.org\nsearch a.example b.example\noptions ndots:2\n"
    )
    dns = load({"ranges": SEED_RANGES, "resolvConf": str(resolv)}).dns
    assert dns.nameservers == ["203.0.113.53", "2001:db8::53"]
    assert (dns.domain, dns.search, dns.options) == (
        "example.org",
        ["a.example", "b.example"],
        ["ndots:2"],
    )


def test_ip_ranges_capability_is_prepended() -> None:
    rt = {"ipRanges": [[{"subnet": "198.51.100.0/24"}]]}
    pool = load({"ranges": [SEED_RANGES[1]]}, runtimeConfig=rt)
    assert [s[0].subnet.version for s in pool.range_sets] == [4, 6]
    assert str(pool.range_sets[0][0].subnet) == "198.51.100.0/24"


def test_requested_ips_from_every_source() -> None:
    req = request(
        {"ranges": SEED_RANGES},
        cni_args={"IP": "203.0.113.20/24,2001:db8:200::20"},
        args={"cni": {"ips": ["203.0.113.21"]}},
        runtimeConfig={"ips": ["203.0.113.22/24"]},
    )
    pool = config.load(req)
    assert [str(ip) for ip in pool.requested] == [
        "203.0.113.20",
        "2001:db8:200::20",
        "203.0.113.21",
        "203.0.113.22",
    ]


@pytest.mark.parametrize(
    ("ipam", "fragment"),
    [
        ({}, "no IP ranges"),
        ({"ranges": [[{"subnet": "10.0.0.1/24"}]]}, "host bits"),
        ({"ranges": [[{"subnet": "10.0.0.0/31"}]]}, "too small"),
        ({"ranges": [[{"subnet": "fd00::/127"}]]}, "too small"),
        ({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]]}, "not in subnet"),
        ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}]]}, "not in subnet"),
        (
            {
                "ranges": [
                    [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]
                ]
            },
            "after rangeEnd",
        ),
        ({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}, "overlaps"),
        ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/24"}]]}, "overlaps"),
        ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}, "mixes"),
        ({"ranges": [[]]}, "empty"),
        ({"ranges": SEED_RANGES, "dataDir": "relative/dir"}, "absolute"),
        ({"ranges": SEED_RANGES, "dataDir": "/var/lib/../../etc"}, "absolute"),
        ({"ranges": [[{"subnet": "not-a-cidr"}]]}, "subnet"),
        ({"ranges": SEED_RANGES, "exclude": ["203.0.113.1/24"]}, "exclude"),
    ],
)
def test_invalid_configs_are_code_7(ipam: dict[str, Any], fragment: str) -> None:
    err = error(ipam)
    assert err.code == 7
    assert fragment in f"{err.msg} {err.details}"


def test_legacy_versions_allow_one_address_per_family() -> None:
    ipam = {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}
    assert error(ipam, version="0.2.0").code == 7
    assert len(load(ipam, version="0.3.0").range_sets) == 2


def test_requested_garbage_is_code_7() -> None:
    with pytest.raises(CNIError) as err:
        config.load(request({"ranges": SEED_RANGES}, cni_args={"IP": "10.0.0.300"}))
    assert err.value.code == 7


def test_set_for() -> None:
    pool = load({"ranges": SEED_RANGES})
    assert pool.set_for(ipaddress.ip_address("203.0.113.30")) == 0
    assert pool.set_for(ipaddress.ip_address("2001:db8:200::30")) == 1
    assert pool.set_for(ipaddress.ip_address("203.0.113.60")) is None
