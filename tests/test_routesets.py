"""Computed route sets: exact, minimal, and better than the seed's hand-written lists."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import netaddr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multihome.lib import cli
from multihome.plugins import routesets
from tests.rig import CNIBIN

PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]
SEED = json.loads((Path(__file__).parent / "data" / "abcdesktop-route-lists.json").read_text())


def ipset(nets: list[str] | list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> netaddr.IPSet:
    return netaddr.IPSet([str(n) for n in nets])


def test_public_ipv4_is_everything_but_the_private_ranges() -> None:
    got = ipset(routesets.compute(["public-ipv4"]))
    expected = netaddr.IPSet(["0.0.0.0/0"]) - ipset([*PRIVATE, "127.0.0.0/8", "0.0.0.0/8"])
    assert got == expected
    for net in PRIVATE:
        assert not got & ipset([net])
    assert ipset(["192.169.0.0/16"]) <= got


def test_the_seeds_ipv4_list_misses_192_169() -> None:
    seed = ipset(SEED["ipv4_only"])
    computed = ipset(routesets.compute(["public-ipv4"]))
    assert computed - seed == ipset(["192.169.0.0/16"])  # public space left on eth0
    assert seed <= computed


def test_the_seeds_dual_stack_list_routes_cluster_and_link_local_space() -> None:
    seed = ipset([d for d in SEED["dual_stack"] if ":" not in d])
    assert ipset(["10.0.0.0/8"]) <= seed  # breaks cluster traffic
    assert ipset(["169.254.0.0/16"]) <= seed
    computed = ipset(routesets.compute(["public-ipv4"]))
    assert not computed & ipset(["10.0.0.0/8", "169.254.0.0/16"])


def test_global_ipv4_drops_the_special_purpose_blocks() -> None:
    got = ipset(routesets.compute(["global-ipv4"]))
    for net in (
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        *PRIVATE,
    ):
        assert not got & ipset([net]), net
    assert ipset(["8.8.8.0/24", "192.169.0.0/16", "100.128.0.0/9"]) <= got


def test_ipv6_presets() -> None:
    assert [str(n) for n in routesets.compute(["default-ipv6"])] == ["::/0"]
    assert [str(n) for n in routesets.compute(["global-ipv6"])] == ["2000::/3"]
    both = routesets.compute(["public-ipv4", "default-ipv6"])
    assert str(both[-1]) == "::/0" and all(n.version == 4 for n in both[:-1])


def test_user_exclusions() -> None:
    got = routesets.compute(["public-ipv4"], ["100.64.0.0/10", "8.8.8.0/24"])
    assert not ipset(got) & ipset(["100.64.0.0/10", "8.8.8.0/24"])
    assert ipset(["8.8.9.0/24"]) <= ipset(got)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        routesets.compute(["public-ipv5"])


CIDR4 = st.builds(
    lambda a, p: str(ipaddress.ip_network(f"{ipaddress.ip_address(a)}/{p}", strict=False)),
    st.integers(0, 2**32 - 1),
    st.integers(1, 32),
)


@settings(max_examples=200, deadline=None)
@given(preset=st.sampled_from(["public-ipv4", "global-ipv4"]), exclude=st.lists(CIDR4, max_size=8))
def test_property_exact_partition_and_minimal(preset: str, exclude: list[str]) -> None:
    got = routesets.compute([preset], exclude)
    universe = netaddr.IPSet(["0.0.0.0/0"])
    builtin = ipset(list(routesets.PRESETS[preset][1]))
    removed = builtin | ipset(exclude)
    got_set = ipset(got)
    assert got_set | removed == universe  # nothing public left out
    assert not got_set & removed  # nothing excluded let in
    # minimal: no two prefixes overlap, and none can be merged with another
    assert [str(c) for c in netaddr.cidr_merge([str(n) for n in got])] == [str(n) for n in got]
    assert sum(n.num_addresses for n in got) == got_set.size


def test_cli_json_is_ready_to_paste(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["routes", "--preset", "public-ipv4", "--via", "203.0.113.1"]) == 0
    routes = json.loads(capsys.readouterr().out)
    assert {"dst": "192.169.0.0/16", "gw": "203.0.113.1"} in routes
    assert len(routes) == len(routesets.compute(["public-ipv4"]))


def test_cli_dual_stack_table(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "routes",
        "--preset",
        "public-ipv4",
        "--preset",
        "default-ipv6",
        "--exclude",
        "100.64.0.0/10",
        "--via",
        "203.0.113.1",
        "--via",
        "2001:db8:200::1",
        "--format",
        "table",
    ]
    assert cli.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].split() == ["::/0", "2001:db8:200::1"]
    assert not any(line.startswith("100.64.") for line in lines)


@pytest.mark.needs_tool(str(CNIBIN / "multihome"))
def test_cli_bad_preset_exits_2() -> None:
    proc = subprocess.run(
        [str(CNIBIN / "multihome"), "routes", "--preset", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "unknown preset" in proc.stderr
