"""The sbr plan, pure: rules, tables and main-table edits from plain data."""

from __future__ import annotations

import ipaddress
from typing import Any

from multihome.lib import rtnl
from multihome.lib.result import IPConfig, Result, Route
from multihome.plugins import sbr

IP = ipaddress.ip_address
IF = ipaddress.ip_interface
NET = ipaddress.ip_network
OIF = 7


def conf(**kw: Any) -> sbr.SbrConf:
    return sbr.SbrConf.model_validate({"name": "n", "type": "mh-sbr", **kw})


def link_route(dst: str, src: str | None = None) -> rtnl.RouteSpec:
    return rtnl.RouteSpec(NET(dst), oif=OIF, prefsrc=IP(src) if src else None)


def gw_route(dst: str, gw: str) -> rtnl.RouteSpec:
    return rtnl.RouteSpec(NET(dst), gw=IP(gw), oif=OIF)


def summary(routes: list[rtnl.RouteSpec]) -> set[tuple[str, str | None, int]]:
    return {(str(r.dst), str(r.gw) if r.gw else None, r.table) for r in routes}


def test_seed_static_example() -> None:
    main = [link_route("192.168.0.0/24", "192.168.0.20")]
    p = sbr.plan([(IF("192.168.0.20/24"), IP("192.168.0.254"))], main, {254, 255}, conf(), OIF)
    assert p.rules == [(NET("192.168.0.20/32"), 100)]
    assert summary(p.table_routes) == {
        ("192.168.0.0/24", None, 100),
        ("0.0.0.0/0", "192.168.0.254", 100),
    }
    assert summary(p.main_deletes) == {("192.168.0.0/24", None, 254)}


def test_first_unused_table_and_one_table_per_address() -> None:
    ips = [
        (IF("203.0.113.10/24"), IP("203.0.113.1")),
        (IF("2001:db8:200::10/64"), IP("2001:db8:200::1")),
    ]
    p = sbr.plan(ips, [], {100, 102, 254, 255}, conf(), OIF)
    assert p.rules == [(NET("203.0.113.10/32"), 101), (NET("2001:db8:200::10/128"), 103)]
    assert ("::/0", "2001:db8:200::1", 103) in summary(p.table_routes)


def test_configured_table() -> None:
    p = sbr.plan([(IF("10.1.0.5/24"), None)], [], {300}, conf(table=300), OIF)
    assert p.rules == [(NET("10.1.0.5/32"), 300)]


def test_fe80_is_added_even_before_the_kernel_makes_it() -> None:
    p = sbr.plan([(IF("2001:db8::5/64"), None)], [link_route("2001:db8::/64")], set(), conf(), OIF)
    assert ("fe80::/64", None, 100) in summary(p.table_routes)
    main = [link_route("2001:db8::/64"), link_route("fe80::/64")]
    p = sbr.plan([(IF("2001:db8::5/64"), None)], main, set(), conf(), OIF)
    assert [str(r.dst) for r in p.table_routes].count("fe80::/64") == 1
    assert "fe80::/64" not in {str(r.dst) for r in p.main_deletes}  # link-local keeps working


def test_gateways_option_gives_the_default_route() -> None:
    """static IPAM with the ips capability has no gateway (reference issues #406, #654)."""
    no_gw = [(IF("192.168.0.20/24"), None)]
    assert not any(
        r.dst.prefixlen == 0 for r in sbr.plan(no_gw, [], set(), conf(), OIF).table_routes
    )
    p = sbr.plan(no_gw, [], set(), conf(gateways=["192.168.0.254"]), OIF)
    assert ("0.0.0.0/0", "192.168.0.254", 100) in summary(p.table_routes)


def test_only_routes_of_the_address_are_copied() -> None:
    main = [
        link_route("203.0.113.0/24", "203.0.113.10"),
        gw_route("192.169.0.0/16", "203.0.113.1"),
        gw_route("10.50.0.0/16", "198.51.100.1"),
    ]
    p = sbr.plan([(IF("203.0.113.10/24"), IP("203.0.113.1"))], main, set(), conf(), OIF)
    assert {str(r.dst) for r in p.table_routes} == {"203.0.113.0/24", "192.169.0.0/16", "0.0.0.0/0"}
    assert len(p.main_deletes) == 3  # the reference's main table: nothing left on the interface


def test_add_source_hints_keeps_link_routes_with_src() -> None:
    main = [
        link_route("203.0.113.0/24"),
        gw_route("192.169.0.0/16", "203.0.113.1"),
        link_route("2001:db8:200::/64"),
    ]
    ips = [(IF("203.0.113.10/24"), IP("203.0.113.1")), (IF("2001:db8:200::10/64"), None)]
    p = sbr.plan(ips, main, set(), conf(addSourceHints=True), OIF)
    assert summary(p.main_deletes) == {("192.169.0.0/16", "203.0.113.1", 254)}
    assert {(str(r.dst), str(r.prefsrc)) for r in p.main_hints} == {
        ("203.0.113.0/24", "203.0.113.10"),
        ("2001:db8:200::/64", "2001:db8:200::10"),
    }


def test_bad_config() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        conf(table=254)
    with pytest.raises(ValidationError):
        conf(gateways=["10.0.0.1", "10.0.0.2"])


def test_result_on_110_names_the_tables() -> None:
    prev = Result(
        ips=[IPConfig(address=IF("203.0.113.10/24"), gateway=IP("203.0.113.1"))],
        routes=[Route(dst=NET("192.169.0.0/16"))],
    )
    p = sbr.plan([(IF("203.0.113.10/24"), IP("203.0.113.1"))], [], set(), conf(), OIF)
    out = sbr.result_for(prev, p, "1.1.0")
    assert [(str(r.dst), r.table) for r in out.routes] == [
        ("192.169.0.0/16", 100),
        ("0.0.0.0/0", 100),
    ]
    assert sbr.result_for(prev, p, "1.0.0") is prev
