"""mh-macvlan and mh-ipvlan through libcni, in namespaces with a veth master.

Every test runs for both link kinds. ipvlan cases skip on a kernel without
ipvlan (with the reason) and run in the VM: ``make test-vm``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.link_helpers import (
    GW4,
    GW6,
    KINDS,
    MODES,
    add_gateway,
    addresses,
    conflist,
    host_local,
    link,
    mh_ipam,
)
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, Netns, one_json, plugin_env, run_plugin
from tests.shapes import check_error, check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))]
SEED_ROUTES = [{"dst": "192.169.0.0/16", "gw": GW4}, {"dst": "::/0", "gw": GW6}]


def leases(datadir: Path, net: str = "macvlan-conf-1") -> list[str]:
    netdir = datadir / net
    if not netdir.exists():
        return []
    return sorted(
        p.name
        for p in netdir.iterdir()
        if p.name != "lock" and not p.name.startswith("last_reserved")
    )


def add_ok(cnitool: Cnitool, net: str, topo: Topology, **kw: Any) -> dict[str, Any]:
    proc = cnitool.run("add", net, topo.pod, **kw)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ipam", ["mh-ipam", "host-local"])
def test_every_mode_add_check_del(
    kind: str, ipam: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    datadir = tmp_path / "ipam"
    for mode in MODES[kind]:
        body = mh_ipam(str(datadir)) if ipam == "mh-ipam" else host_local(str(datadir))
        net = cnitool.write(conflist(kind, topo.master, body, mode=mode))
        result = add_ok(cnitool, net, topo)
        check_result(result, "1.0.0")
        info = link(topo)["linkinfo"]
        assert info["info_kind"] == kind
        assert info["info_data"]["mode"].lower() == mode
        got = addresses(topo)
        assert got == [result["ips"][0]["address"], result["ips"][1]["address"]]
        assert got[0].startswith("203.0.113.") and got[1].startswith("2001:db8:200::")
        assert cnitool.run("check", net, topo.pod).returncode == 0
        assert cnitool.run("del", net, topo.pod).returncode == 0
        assert "net1" not in topo.pod.links()
        assert leases(datadir) == []


@pytest.mark.bare_pod("reads net1's IPv6 default alone; beside eth0's it makes one ECMP route")
@pytest.mark.parametrize("kind", KINDS)
def test_seed_dual_stack_addresses_routes_and_ping(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    add_gateway(topo)
    net = cnitool.write(
        conflist(kind, topo.master, mh_ipam(str(tmp_path), routes=SEED_ROUTES), "0.3.1")
    )
    result = add_ok(cnitool, net, topo)
    check_result(result, "0.3.1")
    assert [ip["address"] for ip in result["ips"]] == ["203.0.113.10/24", "2001:db8:200::10/64"]
    assert result["interfaces"][0]["name"] == "net1"
    assert result["interfaces"][0]["sandbox"] == topo.pod.path
    routes4 = {r["dst"]: r.get("gateway") for r in topo.pod.ipj("route", "show", "dev", "net1")}
    assert routes4["192.169.0.0/16"] == GW4
    routes6 = {
        r["dst"]: r.get("gateway") for r in topo.pod.ipj("-6", "route", "show", "dev", "net1")
    }
    assert routes6["default"] == GW6
    topo.pod.exec("ping", "-c", "1", "-W", "3", GW4)
    topo.pod.exec("ping", "-6", "-c", "1", "-W", "3", GW6)
    assert cnitool.run("del", net, topo.pod).returncode == 0  # (0.3.1 has no CHECK)
    assert topo.pod.links() == ["lo"]
    assert leases(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_ipv6_addresses_are_usable_at_once(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    net = cnitool.write(conflist(kind, topo.master, mh_ipam(str(tmp_path))))
    add_ok(cnitool, net, topo)
    info = topo.pod.ipj("-6", "addr", "show", "dev", "net1")[0]["addr_info"]
    global6 = [a for a in info if a["scope"] == "global"]
    assert global6 and not any(a.get("tentative") and not a.get("optimistic") for a in global6)


@pytest.mark.parametrize("kind", KINDS)
def test_dad_wait_mode_settles_like_the_reference(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    topo.peer.ip("link", "set", "mhp0", "up")
    net = cnitool.write(conflist(kind, topo.master, mh_ipam(str(tmp_path)), ipv6DAD="wait"))
    add_ok(cnitool, net, topo)
    info = topo.pod.ipj("-6", "addr", "show", "dev", "net1")[0]["addr_info"]
    assert not any(a.get("tentative") for a in info)
    # DAD really ran on our address (neither nodad nor optimistic) and was over when ADD
    # returned: the plugin waited for it.
    global6 = [a for a in info if a["scope"] == "global"]
    assert global6
    assert not any(a.get(flag) for a in global6 for flag in ("nodad", "optimistic", "dadfailed"))


@pytest.mark.parametrize("kind", KINDS)
def test_failed_ipam_leaves_no_link_and_no_lease(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    ipam = mh_ipam(str(tmp_path))
    ipam["ranges"] = [
        [{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10", "rangeEnd": "203.0.113.10"}]
    ]
    net = cnitool.write(conflist(kind, topo.master, ipam))
    add_ok(cnitool, net, topo, container_id="first", ifname="net1")
    second = cnitool.run("add", net, topo.pod, container_id="second", ifname="net2")
    assert second.returncode != 0
    assert "no IP addresses available" in second.stderr
    assert "net2" not in topo.pod.links()
    assert not [x for x in topo.pod.links() if x.startswith("mh")]  # no temporary link either
    assert leases(tmp_path) == ["203.0.113.10"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_master_leaves_no_link_and_no_lease(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    net = cnitool.write(conflist(kind, "nosuchdev0", mh_ipam(str(tmp_path))))
    proc = cnitool.run("add", net, topo.pod)
    assert proc.returncode != 0
    assert "nosuchdev0" in proc.stderr
    assert topo.pod.links() == ["lo", "eth0"]
    assert leases(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_address_conflict_in_kernel_rolls_back(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    ipam = mh_ipam(str(tmp_path), routes=[{"dst": "10.99.0.0/16", "gw": "198.51.100.1"}])
    net = cnitool.write(conflist(kind, topo.master, ipam))  # gateway not on link: route fails
    proc = cnitool.run("add", net, topo.pod)
    assert proc.returncode != 0
    assert "10.99.0.0/16" in proc.stderr
    assert topo.pod.links() == ["lo", "eth0"]
    assert leases(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_del_twice_netns_gone_master_gone(
    kind: str,
    topo: Topology,
    cnitool: Cnitool,
    tmp_path: Path,
    netns_factory: Callable[[str], Netns],
) -> None:
    net = cnitool.write(conflist(kind, topo.master, mh_ipam(str(tmp_path))))
    add_ok(cnitool, net, topo)
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    # the master disappears while the pod still has its link
    add_ok(cnitool, net, topo)
    topo.host.ip("link", "del", topo.master)
    assert cnitool.run("del", net, topo.pod).returncode == 0, "DEL must not need the master"
    assert leases(tmp_path) == []
    # the namespace disappears before DEL
    other = netns_factory("pod")
    topo.host.ip("link", "add", "mhm1", "type", "veth", "peer", "name", "mhp1")
    net2 = cnitool.write(conflist(kind, "mhm1", mh_ipam(str(tmp_path))))
    proc = cnitool.run("add", net2, other)
    assert proc.returncode == 0, proc.stderr
    other.delete()
    assert cnitool.run("del", net2, other.path).returncode == 0
    assert leases(tmp_path) == []


def direct(
    kind: str,
    command: str,
    topo: Topology,
    conf: dict[str, Any],
    netns: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[bytes]:
    plugin = conf["plugins"][0]
    doc = {"cniVersion": conf["cniVersion"], "name": conf["name"], **plugin}
    full = plugin_env(
        command,
        CNI_CONTAINERID="c1",
        CNI_IFNAME="net1",
        CNI_PATH=f"{CNIBIN}:{REFERENCE_BIN}",
        **env,
    )
    if netns is not None:
        full["CNI_NETNS"] = netns
    return run_plugin(f"mh-{kind}", full, doc, netns=topo.host)


@pytest.mark.parametrize("kind", KINDS)
def test_del_with_empty_netns(kind: str, topo: Topology, tmp_path: Path) -> None:
    conf = conflist(kind, topo.master, mh_ipam(str(tmp_path)))
    assert direct(kind, "ADD", topo, conf, topo.pod.path).returncode == 0
    assert direct(kind, "DEL", topo, conf, "").returncode == 0
    assert leases(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_mtu(kind: str, topo: Topology, tmp_path: Path) -> None:
    topo.host.ip("link", "set", topo.master, "mtu", "1400")
    too_big = conflist(kind, topo.master, mh_ipam(str(tmp_path)), mtu=1500)
    proc = direct(kind, "ADD", topo, too_big, topo.pod.path)
    check_error(one_json(proc.stdout), 7)
    assert topo.pod.links() == ["lo", "eth0"] and leases(tmp_path) == []
    good = conflist(kind, topo.master, mh_ipam(str(tmp_path)), "1.1.0", mtu=1300)
    result = one_json(direct(kind, "ADD", topo, good, topo.pod.path).stdout)
    check_result(result, "1.1.0")
    assert result["interfaces"][0]["mtu"] == 1300
    assert link(topo)["mtu"] == 1300


def test_mac_sources_in_priority_order(topo: Topology, tmp_path: Path) -> None:
    conf = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)), mac="c2:11:22:33:44:01")
    out = one_json(direct("macvlan", "ADD", topo, conf, topo.pod.path).stdout)
    assert out["interfaces"][0]["mac"] == "c2:11:22:33:44:01" == link(topo)["address"]
    direct("macvlan", "DEL", topo, conf, topo.pod.path)
    direct(
        "macvlan",
        "ADD",
        topo,
        conf,
        topo.pod.path,
        CNI_ARGS="IgnoreUnknown=1;MAC=c2:11:22:33:44:02",
    )
    assert link(topo)["address"] == "c2:11:22:33:44:02"
    direct("macvlan", "DEL", topo, conf, topo.pod.path)
    conf["plugins"][0]["runtimeConfig"] = {"mac": "c2:11:22:33:44:03"}
    proc = direct("macvlan", "ADD", topo, conf, topo.pod.path, CNI_ARGS="MAC=c2:11:22:33:44:02")
    assert proc.returncode == 0, proc.stdout
    assert link(topo)["address"] == "c2:11:22:33:44:03"


@pytest.mark.parametrize("mac", ["zz:11:22:33:44:55", "c2:11:22:33:44", "01:00:5e:00:00:01"])
def test_bad_mac_is_code_7(mac: str, topo: Topology, tmp_path: Path) -> None:
    conf = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)), mac=mac)
    check_error(one_json(direct("macvlan", "ADD", topo, conf, topo.pod.path).stdout), 7)
    assert leases(tmp_path) == []


def test_bcqueuelen(topo: Topology, tmp_path: Path) -> None:
    conf = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)), bcqueuelen=321)
    assert direct("macvlan", "ADD", topo, conf, topo.pod.path).returncode == 0
    assert link(topo)["linkinfo"]["info_data"]["bcqueuelen"] == 321


@pytest.mark.parametrize("kind", KINDS)
def test_l2_only_without_ipam(kind: str, topo: Topology, tmp_path: Path) -> None:
    conf = conflist(kind, topo.master, {})
    out = one_json(direct(kind, "ADD", topo, conf, topo.pod.path).stdout)
    assert "ips" not in out
    assert addresses(topo) == []
    assert "UP" in link(topo)["flags"]
    assert direct(kind, "DEL", topo, conf, topo.pod.path).returncode == 0


@pytest.mark.parametrize("kind", KINDS)
def test_default_master_is_the_default_route_interface(
    kind: str, topo: Topology, tmp_path: Path
) -> None:
    topo.host.ip("addr", "add", "198.51.100.2/24", "dev", topo.master)
    topo.host.ip("route", "add", "default", "via", "198.51.100.1")
    conf = conflist(kind, "", mh_ipam(str(tmp_path)))
    assert direct(kind, "ADD", topo, conf, topo.pod.path).returncode == 0
    assert link(topo)["link_index"] == topo.host.ipj("link", "show", topo.master)[0]["ifindex"]


@pytest.mark.parametrize("kind", KINDS)
def test_no_default_route_and_no_master(kind: str, topo: Topology, tmp_path: Path) -> None:
    conf = conflist(kind, "", mh_ipam(str(tmp_path)))
    proc = direct(kind, "ADD", topo, conf, topo.pod.path)
    check_error(one_json(proc.stdout), 7)
    assert "default route" in one_json(proc.stdout)["msg"]


@pytest.mark.parametrize("kind", KINDS)
def test_link_in_container(kind: str, topo: Topology, tmp_path: Path) -> None:
    topo.pod.ip("link", "add", "inpod0", "type", "veth", "peer", "name", "inpod1")
    topo.pod.ip("link", "set", "inpod0", "up")
    conf = conflist(kind, "inpod0", mh_ipam(str(tmp_path)), linkInContainer=True)
    assert direct(kind, "ADD", topo, conf, topo.pod.path).returncode == 0
    assert link(topo)["link"] == "inpod0"


@pytest.mark.parametrize("kind", KINDS)
def test_existing_interface_is_an_error(kind: str, topo: Topology, tmp_path: Path) -> None:
    topo.pod.ip("link", "add", "net1", "type", "veth", "peer", "name", "other1")
    conf = conflist(kind, topo.master, mh_ipam(str(tmp_path)))
    check_error(one_json(direct(kind, "ADD", topo, conf, topo.pod.path).stdout), 103)
    assert link(topo)["linkinfo"]["info_kind"] == "veth"
    assert leases(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_check_fails_when_things_are_missing(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    net = cnitool.write(conflist(kind, topo.master, mh_ipam(str(tmp_path), routes=SEED_ROUTES)))
    add_ok(cnitool, net, topo)
    topo.pod.ip("route", "del", "192.169.0.0/16")
    proc = cnitool.run("check", net, topo.pod)
    assert proc.returncode != 0 and "192.169.0.0/16" in proc.stderr
    topo.pod.ip("addr", "del", "203.0.113.10/24", "dev", "net1")
    assert "203.0.113.10/24" in cnitool.run("check", net, topo.pod).stderr
    topo.pod.ip("link", "del", "net1")
    assert "net1" in cnitool.run("check", net, topo.pod).stderr


def test_check_fails_on_a_changed_mac(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    net = cnitool.write(conflist("macvlan", topo.master, mh_ipam(str(tmp_path))))
    add_ok(cnitool, net, topo)
    topo.pod.ip("link", "set", "net1", "address", "c2:00:00:00:00:99")
    assert "MAC" in cnitool.run("check", net, topo.pod).stderr


@pytest.mark.parametrize("kind", KINDS)
def test_check_passes_after_routes_moved_to_another_table(
    kind: str, topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    """What a later source-based-routing plugin does; the reference's CHECK fails here."""
    net = cnitool.write(conflist(kind, topo.master, mh_ipam(str(tmp_path), routes=SEED_ROUTES)))
    add_ok(cnitool, net, topo)
    topo.pod.ip("route", "add", "192.169.0.0/16", "via", GW4, "dev", "net1", "table", "100")
    topo.pod.ip("route", "del", "192.169.0.0/16", "table", "main")
    assert cnitool.run("check", net, topo.pod).returncode == 0


@pytest.mark.parametrize("kind", KINDS)
def test_status(kind: str, topo: Topology, tmp_path: Path) -> None:
    conf = conflist(kind, topo.master, mh_ipam(str(tmp_path)), "1.1.0")
    assert direct(kind, "STATUS", topo, conf).returncode == 0
    missing = conflist(kind, "gone0", mh_ipam(str(tmp_path)), "1.1.0")
    check_error(one_json(direct(kind, "STATUS", topo, missing).stdout), 50)
    broken_ipam = conflist(kind, topo.master, mh_ipam("/proc/version/x"), "1.1.0")
    check_error(one_json(direct(kind, "STATUS", topo, broken_ipam).stdout), 50)


@pytest.mark.parametrize("kind", KINDS)
def test_gc_reaches_the_ipam(kind: str, topo: Topology, tmp_path: Path) -> None:
    conf = conflist(kind, topo.master, mh_ipam(str(tmp_path)), "1.1.0")
    assert direct(kind, "ADD", topo, conf, topo.pod.path).returncode == 0
    conf["plugins"][0]["cni.dev/valid-attachments"] = []
    assert direct(kind, "GC", topo, conf).returncode == 0
    assert leases(tmp_path) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "1.0.0", "1.1.0"])
def test_every_version(kind: str, version: str, topo: Topology, tmp_path: Path) -> None:
    ipam = mh_ipam(str(tmp_path))
    if version < "0.3.0":
        ipam["ranges"] = ipam["ranges"][:1]
    conf = conflist(kind, topo.master, ipam, version)
    proc = direct(kind, "ADD", topo, conf, topo.pod.path)
    assert proc.returncode == 0, proc.stdout
    check_result(one_json(proc.stdout), version)
