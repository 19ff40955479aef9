"""mh-sbr through libcni in namespaces, beside the reference sbr."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.link_helpers import GW4, GW6, mh_ipam
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, one_json, plugin_env, run_plugin
from tests.shapes import check_error, check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-sbr"))]
reference = pytest.mark.needs_tool(str(REFERENCE_BIN / "sbr"))
SEED_STATIC = {
    "type": "mh-static",
    "addresses": [{"address": "192.168.0.20/24", "gateway": "192.168.0.254"}],
}


def chain(
    master: str,
    ipam: dict[str, Any],
    sbr: dict[str, Any] | None = None,
    *,
    version: str = "1.0.0",
    name: str = "vlan1-internal-static",
    main: str = "mh-macvlan",
    sbr_type: str = "mh-sbr",
    **plugin: Any,
) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": name,
        "plugins": [
            {"type": main, "master": master, "ipam": ipam, **plugin},
            {"type": sbr_type, **(sbr or {})},
        ],
    }


def rules(topo: Topology, family: str = "-4") -> dict[str, int]:
    return {
        r["src"]: int(r["table"])
        for r in topo.pod.ipj(family, "rule", "show")
        if "src" in r and r.get("table") not in (None, "main", "local", "default")
    }


def table(topo: Topology, number: int, family: str = "-4") -> dict[str, str]:
    return {
        r["dst"]: r.get("gateway", "")
        for r in topo.pod.ipj(family, "route", "show", "table", str(number))
    }


def add(cnitool: Cnitool, net: str, topo: Topology, **kw: Any) -> dict[str, Any]:
    proc = cnitool.run("add", net, topo.pod, **kw)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_seed_static_example(topo: Topology, cnitool: Cnitool) -> None:
    net = cnitool.write(chain(topo.master, SEED_STATIC))
    add(cnitool, net, topo)
    assert rules(topo) == {"192.168.0.20": 100}
    assert table(topo, 100) == {"default": "192.168.0.254", "192.168.0.0/24": ""}
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert rules(topo) == {}


def test_seed_as_written_with_cni_0_3_1(topo: Topology, cnitool: Cnitool) -> None:
    net = cnitool.write(chain(topo.master, SEED_STATIC, version="0.3.1"))
    result = add(cnitool, net, topo)
    check_result(result, "0.3.1")
    assert rules(topo) == {"192.168.0.20": 100}
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert rules(topo) == {}


def test_dual_stack_one_table_per_family(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    net = cnitool.write(chain(topo.master, mh_ipam(str(tmp_path)), name="vlan200"))
    add(cnitool, net, topo)
    assert rules(topo) == {"203.0.113.10": 100}
    assert rules(topo, "-6") == {"2001:db8:200::10": 101}
    assert table(topo, 100)["default"] == GW4
    assert table(topo, 101, "-6")["default"] == GW6
    assert "fe80::/64" in table(topo, 101, "-6")
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert rules(topo) == {} and rules(topo, "-6") == {}


def test_gateways_option_with_the_ips_capability(topo: Topology, cnitool: Cnitool) -> None:
    conf = chain(
        topo.master,
        {"type": "mh-static"},
        {"gateways": ["192.168.0.254"]},
        capabilities={"ips": True},
    )
    net = cnitool.write(conf)
    add(cnitool, net, topo, cap_args={"ips": ["192.168.0.20/24"]})
    assert table(topo, 100)["default"] == "192.168.0.254"
    assert cnitool.run("del", net, topo.pod).returncode == 0


@reference
def test_reference_gives_no_default_with_the_ips_capability(
    topo: Topology, cnitool: Cnitool
) -> None:
    conf = chain(
        topo.master, {"type": "static"}, main="macvlan", sbr_type="sbr", capabilities={"ips": True}
    )
    net = cnitool.write(conf)
    add(cnitool, net, topo, cap_args={"ips": ["192.168.0.20/24"]})
    assert "default" not in table(topo, 100)
    assert cnitool.run("del", net, topo.pod).returncode == 0


@reference
def test_check_passes_where_the_reference_chain_fails(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    ours = chain(topo.master, mh_ipam(str(tmp_path / "a")), name="ours")
    theirs = chain(
        topo.master,
        {**mh_ipam(str(tmp_path / "b")), "type": "host-local"},
        name="theirs",
        main="macvlan",
        sbr_type="sbr",
    )
    for conf, ifname, expect_ok in ((ours, "net1", True), (theirs, "net2", False)):
        net = cnitool.write(conf)
        assert cnitool.run("add", net, topo.pod, ifname=ifname).returncode == 0
        check = cnitool.run("check", net, topo.pod, ifname=ifname)
        assert (check.returncode == 0) is expect_ok, check.stderr
        if not expect_ok:
            assert "Failed to find Gateway" in check.stderr or "gateway" in check.stderr.lower()
        assert cnitool.run("del", net, topo.pod, ifname=ifname).returncode == 0


def router_with_remote(topo: Topology, make: Any) -> Any:
    """peer = the VLAN router (203.0.113.1), remote = a host behind it (198.51.100.7)."""
    remote = make("rem")
    topo.peer.ip("addr", "add", f"{GW4}/24", "dev", "mhp0")
    topo.peer.ip("link", "add", "rt0", "type", "veth", "peer", "name", "rt1", "netns", remote.name)
    topo.peer.ip("addr", "add", "198.51.100.1/24", "dev", "rt0")
    topo.peer.ip("link", "set", "rt0", "up")
    topo.peer.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
    remote.ip("addr", "add", "198.51.100.7/24", "dev", "rt1")
    remote.ip("link", "set", "rt1", "up")
    remote.ip("route", "add", "default", "via", "198.51.100.1")
    # the pod's cluster interface (the shared topology's eth0) holds its default route
    return remote


@pytest.mark.parametrize("with_sbr", [True, False])
def test_replies_leave_by_net1(
    with_sbr: bool, topo: Topology, cnitool: Cnitool, tmp_path: Path, netns_factory: Any
) -> None:
    remote = router_with_remote(topo, netns_factory)
    ipam = mh_ipam(str(tmp_path))
    ipam["ranges"] = ipam["ranges"][:1]
    conf = chain(topo.master, ipam, name="vlan200")
    if not with_sbr:
        conf["plugins"] = conf["plugins"][:1]
    net = cnitool.write(conf)
    add(cnitool, net, topo)
    ping = remote.exec("ping", "-c", "1", "-W", "2", "203.0.113.10", check=False)
    assert (ping.returncode == 0) is with_sbr, ping.stdout  # without sbr the reply goes to eth0
    assert cnitool.run("del", net, topo.pod).returncode == 0


def test_concurrent_interfaces_get_distinct_tables(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    topo.host.ip("link", "add", "mhm1", "type", "veth", "peer", "name", "mhq1")
    topo.host.ip("link", "set", "mhm1", "up")
    nets = []
    for i, master in enumerate((topo.master, "mhm1")):
        ipam = {
            "type": "mh-ipam",
            "dataDir": str(tmp_path),
            "ranges": [[{"subnet": f"10.{60 + i}.0.0/24", "gateway": f"10.{60 + i}.0.1"}]],
        }
        nets.append(cnitool.write(chain(master, ipam, name=f"par{i}")))
    with ThreadPoolExecutor(2) as ex:
        procs = list(
            ex.map(lambda i: cnitool.run("add", nets[i], topo.pod, ifname=f"net{i + 1}"), range(2))
        )
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    assert sorted(rules(topo).values()) == [100, 101]


def test_del_edge_cases(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    conf = chain(topo.master, SEED_STATIC)
    net = cnitool.write(conf)
    add(cnitool, net, topo)
    # the address is gone from the interface: the reference leaks this rule
    topo.pod.ip("addr", "flush", "dev", "net1")
    doc = {
        "cniVersion": "1.0.0",
        "name": conf["name"],
        "type": "mh-sbr",
        "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "192.168.0.20/24"}]},
    }
    env = plugin_env("DEL", CNI_CONTAINERID="c", CNI_IFNAME="net1", CNI_NETNS=topo.pod.path)
    assert run_plugin("mh-sbr", env, doc).returncode == 0
    assert rules(topo) == {}
    for netns in ("", "/run/netns/mh-gone-for-good"):
        env = plugin_env("DEL", CNI_CONTAINERID="c", CNI_IFNAME="net1", CNI_NETNS=netns)
        proc = run_plugin("mh-sbr", env, doc)
        assert proc.returncode == 0, proc.stdout
    env = plugin_env("DEL", CNI_CONTAINERID="c", CNI_IFNAME="nolink0", CNI_NETNS=topo.pod.path)
    assert run_plugin("mh-sbr", env, doc).returncode == 0


def test_add_source_hints(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    topo.peer.ip("addr", "add", f"{GW4}/24", "dev", "mhp0")
    ipam = mh_ipam(str(tmp_path))
    ipam["ranges"] = ipam["ranges"][:1]
    net = cnitool.write(chain(topo.master, ipam, {"addSourceHints": True}, name="vlan200"))
    add(cnitool, net, topo)
    main = {r["dst"]: r.get("prefsrc") for r in topo.pod.ipj("route", "show", "dev", "net1")}
    assert main == {"203.0.113.0/24": "203.0.113.10"}
    topo.pod.exec("ping", "-c", "1", "-W", "2", GW4)  # no source bound: main still works
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0


def direct(command: str, doc: dict[str, Any], topo: Topology) -> subprocess.CompletedProcess[bytes]:
    env = plugin_env(command, CNI_CONTAINERID="c", CNI_IFNAME="net1", CNI_NETNS=topo.pod.path)
    return run_plugin("mh-sbr", env, doc)


def test_no_prev_result_is_code_7(topo: Topology) -> None:
    err = one_json(
        direct("ADD", {"cniVersion": "1.0.0", "name": "n", "type": "mh-sbr"}, topo).stdout
    )
    check_error(err, 7)
    assert "chained" in err["msg"]


def test_result_on_110_reports_tables(topo: Topology) -> None:
    topo.pod.ip("link", "add", "net1", "type", "veth", "peer", "name", "x1")
    topo.pod.ip("addr", "add", "203.0.113.10/24", "dev", "net1")
    topo.pod.ip("link", "set", "net1", "up")
    prev = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "sandbox": topo.pod.path}],
        "ips": [{"address": "203.0.113.10/24", "gateway": GW4, "interface": 0}],
    }
    out = one_json(
        direct(
            "ADD", {"cniVersion": "1.1.0", "name": "n", "type": "mh-sbr", "prevResult": prev}, topo
        ).stdout
    )
    check_result(out, "1.1.0")
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": GW4, "table": 100}]


def test_check_detects_a_missing_rule(topo: Topology, cnitool: Cnitool) -> None:
    net = cnitool.write(chain(topo.master, SEED_STATIC))
    add(cnitool, net, topo)
    topo.pod.ip("rule", "del", "from", "192.168.0.20", "lookup", "100")
    proc = cnitool.run("check", net, topo.pod)
    assert proc.returncode != 0 and "no rule" in proc.stderr


@pytest.mark.parametrize(
    ("order", "sbr_conf"),
    [(("mh-route", "mh-sbr"), {}), (("mh-sbr", "mh-route"), {"addSourceHints": True})],
    ids=["route-then-sbr", "sbr-with-hints-then-route"],
)
def test_full_chain_check_passes(
    order: tuple[str, str],
    sbr_conf: dict[str, Any],
    topo: Topology,
    cnitool: Cnitool,
    tmp_path: Path,
) -> None:
    """macvlan + ipam + route + sbr in either order: every plugin's CHECK passes."""
    plugins = {
        "mh-route": {
            "type": "mh-route",
            "presets": ["public-ipv4", "default-ipv6"],
            "stateDir": str(tmp_path / "state"),
        },
        "mh-sbr": {"type": "mh-sbr", **sbr_conf},
    }
    conf = {
        "cniVersion": "1.0.0",
        "name": "full",
        "plugins": [
            {"type": "mh-macvlan", "master": topo.master, "ipam": mh_ipam(str(tmp_path / "ipam"))},
            *(plugins[name] for name in order),
        ],
    }
    net = cnitool.write(conf)
    add(cnitool, net, topo)
    assert rules(topo) == {"203.0.113.10": 100}
    check = cnitool.run("check", net, topo.pod)
    assert check.returncode == 0, check.stderr
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert rules(topo) == {} and topo.pod.links() == ["lo", "eth0"]
