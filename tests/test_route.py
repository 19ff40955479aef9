"""mh-route chained after mh-macvlan + mh-ipam, through libcni, in namespaces.

The pod also has a cluster interface, eth0 (10.0.0.64/24, default via
10.0.0.1), as under Multus: private traffic must stay there.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from multihome.plugins import routesets
from tests.conftest import Topology
from tests.link_helpers import GW4, GW6, mh_ipam
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, one_json, plugin_env, run_plugin
from tests.shapes import check_error, check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-route"))]
NET = "vlan200-public"


def cluster_eth0(topo: Topology) -> None:
    topo.pod.ip(
        "link", "add", "eth0", "type", "veth", "peer", "name", "cl0", "netns", topo.peer.name
    )
    topo.pod.ip("addr", "add", "10.0.0.64/24", "dev", "eth0")
    topo.pod.ip("link", "set", "eth0", "up")
    topo.peer.ip("link", "set", "cl0", "up")
    topo.pod.ip("route", "add", "default", "via", "10.0.0.1", "dev", "eth0")


def chain(
    topo: Topology, tmp_path: Path, route: dict[str, Any], version: str = "1.0.0", ranges: int = 2
) -> dict[str, Any]:
    ipam = mh_ipam(str(tmp_path / "ipam"))
    ipam["ranges"] = ipam["ranges"][:ranges]
    return {
        "cniVersion": version,
        "name": NET,
        "plugins": [
            {"type": "mh-macvlan", "master": topo.master, "ipam": ipam},
            {"type": "mh-route", "stateDir": str(tmp_path / "state"), **route},
        ],
    }


def via_net1(topo: Topology, family: str = "-4", table: str = "main") -> dict[str, str]:
    routes = topo.pod.ipj(family, "route", "show", "table", table)
    return {
        r["dst"]: r.get("gateway", "")
        for r in routes
        if r.get("dev") == "net1" and r.get("protocol") != "kernel"
    }


def dev_for(topo: Topology, address: str) -> str:
    return str(topo.pod.ipj("route", "get", address)[0]["dev"])


def add(cnitool: Cnitool, net: str, topo: Topology, cid: str = "") -> dict[str, Any]:
    proc = cnitool.run("add", net, topo.pod, container_id=cid)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def direct(
    command: str,
    conf: dict[str, Any],
    topo: Topology | None,
    prev: dict[str, Any] | None = None,
    netns: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    plugin = conf["plugins"][1]
    doc: dict[str, Any] = {"cniVersion": conf["cniVersion"], "name": conf["name"], **plugin}
    if prev is not None:
        doc["prevResult"] = prev
    env = plugin_env(
        command, CNI_CONTAINERID="c1", CNI_IFNAME="net1", CNI_PATH=f"{CNIBIN}:{REFERENCE_BIN}"
    )
    if netns is not None:
        env["CNI_NETNS"] = netns
    elif topo is not None:
        env["CNI_NETNS"] = topo.pod.path
    return run_plugin("mh-route", env, doc)


@pytest.mark.bare_pod(
    "builds its own cluster eth0 (10.0.0.64/24, default via 10.0.0.1) to compare with"
)
def test_public_ipv4_set(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    cluster_eth0(topo)
    before_eth0 = topo.pod.ipj("route", "show", "dev", "eth0")
    conf = chain(topo, tmp_path, {"presets": ["public-ipv4"]}, ranges=1)
    net = cnitool.write(conf)
    result = add(cnitool, net, topo, cid="c-public")
    check_result(result, "1.0.0")
    computed = {str(n) for n in routesets.compute(["public-ipv4"])}
    got = via_net1(topo)
    assert set(got) == computed and set(got.values()) == {GW4}
    assert {r["dst"] for r in result["routes"]} >= computed
    for private in ("10.1.2.3", "172.16.5.5", "192.168.7.7", "169.254.9.9"):
        assert dev_for(topo, private) == "eth0", private
    for public in ("192.169.1.1", "8.8.8.8", "1.1.1.1", "223.255.255.1"):
        assert dev_for(topo, public) == "net1", public
    check = cnitool.run("check", net, topo.pod, container_id="c-public")
    assert check.returncode == 0, check.stderr  # mh-macvlan's CHECK passes too
    # mh-route's DEL on its own removes exactly its routes and nothing else
    doc = {"cniVersion": "1.0.0", "name": NET, **conf["plugins"][1], "prevResult": result}
    env = plugin_env(
        "DEL",
        CNI_CONTAINERID="c-public",
        CNI_IFNAME="net1",
        CNI_NETNS=topo.pod.path,
        CNI_PATH=str(CNIBIN),
    )
    proc = run_plugin("mh-route", env, doc)
    assert proc.returncode == 0, proc.stdout
    assert via_net1(topo) == {}
    assert "net1" in topo.pod.links()
    assert topo.pod.ipj("route", "show", "dev", "eth0") == before_eth0
    assert cnitool.run("del", net, topo.pod, container_id="c-public").returncode == 0
    assert list((tmp_path / "state").rglob("*.json")) == []


def test_dual_stack_adds_the_ipv6_default(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    net = cnitool.write(chain(topo, tmp_path, {"presets": ["public-ipv4", "default-ipv6"]}))
    add(cnitool, net, topo)
    assert via_net1(topo, "-6") == {"default": GW6}
    assert len(via_net1(topo)) == len(routesets.compute(["public-ipv4"]))
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0


@pytest.mark.bare_pod(
    "builds its own cluster eth0 (10.0.0.64/24, default via 10.0.0.1) to compare with"
)
def test_default_route_moved_from_eth0_and_restored(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    """Multus's default-route use case: flushgateway + addroutes, undone by DEL."""
    cluster_eth0(topo)
    route = {"flushgateway": True, "addroutes": [{"dst": "0.0.0.0/0", "gw": GW4}]}
    net = cnitool.write(chain(topo, tmp_path, route, ranges=1))
    result = add(cnitool, net, topo)
    defaults = [r for r in topo.pod.ipj("route", "show", "default")]
    assert [(r["dev"], r["gateway"]) for r in defaults] == [("net1", GW4)]
    assert dev_for(topo, "8.8.8.8") == "net1"
    assert all("gateway" not in ip for ip in result["ips"])
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    defaults = [r for r in topo.pod.ipj("route", "show", "default")]
    assert [(r["dev"], r["gateway"]) for r in defaults] == [("eth0", "10.0.0.1")]


def test_ecmp_metric_and_table(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    route = {
        "presets": ["public-ipv4"],
        "table": 100,
        "metric": 50,
        "addroutes": [{"dst": "198.51.100.0/24", "gw": [GW4, "203.0.113.2"], "metric": 7}],
    }
    net = cnitool.write(chain(topo, tmp_path, route, version="1.0.0", ranges=1))
    add(cnitool, net, topo)
    table100 = topo.pod.ipj("route", "show", "table", "100")
    assert len(table100) == len(routesets.compute(["public-ipv4"]))
    assert {r["metric"] for r in table100} == {50}
    ecmp = [r for r in topo.pod.ipj("route", "show", "198.51.100.0/24")]
    assert len(ecmp) == 1 and ecmp[0]["metric"] == 7
    assert sorted(h["gateway"] for h in ecmp[0]["nexthops"]) == [GW4, "203.0.113.2"]
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0


def test_result_reports_table_on_110(topo: Topology, tmp_path: Path) -> None:
    conf = chain(
        topo, tmp_path, {"presets": ["default-ipv6"], "table": 200, "metric": 5}, version="1.1.0"
    )
    prev = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "sandbox": topo.pod.path}],
        "ips": [{"address": "2001:db8:200::10/64", "gateway": GW6, "interface": 0}],
    }
    topo.pod.ip("link", "add", "net1", "type", "veth", "peer", "name", "x1")
    topo.pod.ip("link", "set", "net1", "up")
    topo.pod.ip("addr", "add", "2001:db8:200::10/64", "dev", "net1", "nodad")
    out = one_json(direct("ADD", conf, topo, prev).stdout)
    check_result(out, "1.1.0")
    assert out["routes"] == [{"dst": "::/0", "gw": GW6, "priority": 5, "table": 200}]


def test_no_prev_result_is_code_7(topo: Topology, tmp_path: Path) -> None:
    proc = direct("ADD", chain(topo, tmp_path, {"presets": ["public-ipv4"]}), topo)
    err = one_json(proc.stdout)
    check_error(err, 7)
    assert "chained" in err["msg"]


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        ({"presets": ["public-ipv5"]}, "unknown preset"),
        ({"presets": ["default-ipv6"]}, "IPv6 gateway"),
        ({"exclude": ["10.0.0.1/8"]}, "exclude"),
        ({"addroutes": [{"dst": "10.0.0.0/8", "gw": "nope"}]}, "addroutes"),
        ({"stateDir": "relative"}, "stateDir"),
    ],
)
def test_bad_config_is_code_7(
    route: dict[str, Any], fragment: str, topo: Topology, tmp_path: Path
) -> None:
    conf = chain(topo, tmp_path, route)
    conf["plugins"][1].update(route)
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1"}],
        "ips": [{"address": "203.0.113.10/24", "gateway": GW4, "interface": 0}],
    }
    err = one_json(direct("ADD", conf, topo, prev).stdout)
    check_error(err, 7)
    assert fragment in err["msg"] + err.get("details", "")


@pytest.mark.bare_pod(
    "builds its own cluster eth0 (10.0.0.64/24, default via 10.0.0.1) to compare with"
)
def test_args_cni_sets_route_override_keys(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    cluster_eth0(topo)
    conf = chain(topo, tmp_path, {}, ranges=1)
    conf["plugins"][1]["args"] = {
        "cni": {"flushgateway": True, "addroutes": [{"dst": "0.0.0.0/0", "gw": GW4}]}
    }
    net = cnitool.write(conf)
    add(cnitool, net, topo)
    assert dev_for(topo, "8.8.8.8") == "net1"
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert dev_for(topo, "8.8.8.8") == "eth0"


def test_check_detects_a_missing_route(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    net = cnitool.write(chain(topo, tmp_path, {"presets": ["public-ipv4"]}, ranges=1))
    add(cnitool, net, topo)
    topo.pod.ip("route", "del", "192.169.0.0/16")
    proc = cnitool.run("check", net, topo.pod)
    assert proc.returncode != 0 and "192.169.0.0/16" in proc.stderr


def test_del_is_idempotent_and_survives_a_gone_netns(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    net = cnitool.write(chain(topo, tmp_path, {"presets": ["public-ipv4"]}, ranges=1))
    add(cnitool, net, topo)
    topo.pod.delete()
    assert cnitool.run("del", net, topo.pod.path).returncode == 0
    assert cnitool.run("del", net, topo.pod.path).returncode == 0
    assert list((tmp_path / "state").rglob("*.json")) == []


def test_gc_drops_state_of_gone_attachments(tmp_path: Path) -> None:
    state = tmp_path / "state" / NET
    state.mkdir(parents=True)
    (state / "keep-net1.json").write_text("{}")
    (state / "gone-net1.json").write_text("{}")
    doc = {
        "cniVersion": "1.1.0",
        "name": NET,
        "type": "mh-route",
        "stateDir": str(tmp_path / "state"),
        "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "net1"}],
    }
    proc = run_plugin("mh-route", plugin_env("GC"), doc)
    assert proc.returncode == 0, proc.stdout
    assert sorted(p.name for p in state.iterdir()) == ["keep-net1.json"]
