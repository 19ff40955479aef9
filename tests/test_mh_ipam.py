"""mh-ipam end to end: the real executable, directly and through libcni."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.ipam_helpers import SEED_RANGES
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, Netns, one_json, plugin_env, run_plugin
from tests.shapes import check_error, check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))]
NET = "vlan200"


def conf(
    datadir: Path, version: str = "1.1.0", ipam_type: str = "mh-ipam", **ipam: Any
) -> dict[str, Any]:
    body = {"type": ipam_type, "dataDir": str(datadir), "ranges": SEED_RANGES, **ipam}
    return {"cniVersion": version, "name": NET, "type": "mh-macvlan", "ipam": body}


def leases(datadir: Path, net: str = NET) -> dict[str, str]:
    netdir = datadir / net
    if not netdir.exists():
        return {}
    return {
        p.name: p.read_bytes().decode()
        for p in netdir.iterdir()
        if p.name != "lock" and not p.name.startswith("last_reserved_ip.")
    }


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def call(
    command: str,
    doc: dict[str, Any],
    pod: Netns | None,
    *,
    cid: str = "ctr1",
    plugin: str = "mh-ipam",
    bindir: Path = CNIBIN,
    **env: str,
) -> subprocess.CompletedProcess[bytes]:
    full = plugin_env(
        command, CNI_CONTAINERID=cid, CNI_IFNAME="net1", CNI_PATH=f"{CNIBIN}:{REFERENCE_BIN}", **env
    )
    if pod is not None:
        full["CNI_NETNS"] = pod.path
    return run_plugin(plugin, full, doc, bindir=bindir)


def ok(proc: subprocess.CompletedProcess[bytes]) -> Any:
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    return one_json(proc.stdout) if proc.stdout else None


def test_seed_dual_stack_add_check_del(pod: Netns, tmp_path: Path) -> None:
    doc = conf(tmp_path, routes=[{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "2001:db8:200::1"}])
    result = ok(call("ADD", doc, pod))
    check_result(result, "1.1.0")
    assert result["ips"] == [
        {"address": "203.0.113.10/24", "gateway": "203.0.113.1"},
        {"address": "2001:db8:200::10/64", "gateway": "2001:db8:200::1"},
    ]
    assert result["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "2001:db8:200::1"}]
    assert leases(tmp_path) == {"203.0.113.10": "ctr1\r\nnet1", "2001:db8:200::10": "ctr1\r\nnet1"}
    ok(call("CHECK", {**doc, "prevResult": result}, pod))
    ok(call("DEL", {**doc, "prevResult": result}, pod))
    assert leases(tmp_path) == {}
    ok(call("DEL", doc, pod))  # DEL twice


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0"])
def test_every_version(version: str, pod: Netns, tmp_path: Path) -> None:
    result = ok(call("ADD", conf(tmp_path, version), pod))
    check_result(result, version)


def test_del_with_netns_gone(netns_factory: Callable[[str], Netns], tmp_path: Path) -> None:
    pod = netns_factory("pod")
    ok(call("ADD", conf(tmp_path), pod))
    pod.delete()
    ok(call("DEL", conf(tmp_path), None, CNI_NETNS=pod.path))
    ok(call("DEL", conf(tmp_path), None))  # CNI_NETNS unset
    assert leases(tmp_path) == {}


def test_repeated_add_returns_the_same_ips(pod: Netns, tmp_path: Path) -> None:
    first = ok(call("ADD", conf(tmp_path), pod))
    assert ok(call("ADD", conf(tmp_path), pod)) == first
    assert len(leases(tmp_path)) == 2


def test_requested_ip_via_cni_args_comma_list(pod: Netns, tmp_path: Path) -> None:
    result = ok(
        call(
            "ADD",
            conf(tmp_path),
            pod,
            CNI_ARGS="IgnoreUnknown=1;IP=203.0.113.40/24,2001:db8:200::40/64",
        )
    )
    assert [ip["address"] for ip in result["ips"]] == ["203.0.113.40/24", "2001:db8:200::40/64"]


def test_requested_ip_via_args_cni_ips(pod: Netns, tmp_path: Path) -> None:
    doc = {**conf(tmp_path), "args": {"cni": {"ips": ["203.0.113.41"]}}}
    assert ok(call("ADD", doc, pod))["ips"][0]["address"] == "203.0.113.41/24"


def test_requested_ip_errors(pod: Netns, tmp_path: Path) -> None:
    ok(call("ADD", conf(tmp_path), pod, cid="a", CNI_ARGS="IP=203.0.113.42"))
    taken = call("ADD", conf(tmp_path), pod, cid="b", CNI_ARGS="IP=203.0.113.42")
    check_error(one_json(taken.stdout), 112)
    outside = call("ADD", conf(tmp_path), pod, cid="c", CNI_ARGS="IP=203.0.113.99")
    check_error(one_json(outside.stdout), 111)
    assert set(leases(tmp_path).values()) == {"a\r\nnet1"}  # nothing leaked by the failures


def test_exclusion(pod: Netns, tmp_path: Path) -> None:
    doc = conf(tmp_path, exclude=["203.0.113.0/28", "2001:db8:200::/124"])
    result = ok(call("ADD", doc, pod))
    assert [ip["address"] for ip in result["ips"]] == ["203.0.113.16/24", "2001:db8:200::10/64"]


def test_exhaustion_leaks_nothing(pod: Netns, tmp_path: Path) -> None:
    doc = conf(tmp_path)
    doc["ipam"]["ranges"] = [
        [{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10", "rangeEnd": "203.0.113.11"}],
        SEED_RANGES[1],
    ]
    ok(call("ADD", doc, pod, cid="a"))
    ok(call("ADD", doc, pod, cid="b"))
    full = call("ADD", doc, pod, cid="c")
    err = one_json(full.stdout)
    check_error(err, 110)
    assert "203.0.113.10-203.0.113.11" in err["msg"]
    assert sorted(set(leases(tmp_path).values())) == ["a\r\nnet1", "b\r\nnet1"]


def test_check_detects_a_missing_lease(pod: Netns, tmp_path: Path) -> None:
    result = ok(call("ADD", conf(tmp_path), pod))
    (tmp_path / NET / "203.0.113.10").unlink()
    bad = call("CHECK", {**conf(tmp_path), "prevResult": result}, pod)
    check_error(one_json(bad.stdout), 120)


def test_check_detects_a_wrong_prev_result(pod: Netns, tmp_path: Path) -> None:
    result = ok(call("ADD", conf(tmp_path), pod))
    result["ips"][0]["address"] = "203.0.113.44/24"
    bad = call("CHECK", {**conf(tmp_path), "prevResult": result}, pod)
    check_error(one_json(bad.stdout), 120)


def test_status(tmp_path: Path) -> None:
    ok(call("STATUS", conf(tmp_path), None))
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = call("STATUS", conf(blocker / "sub"), None)
    check_error(one_json(proc.stdout), 50)


def test_gc(pod: Netns, tmp_path: Path) -> None:
    for cid in ("keep", "drop"):
        ok(call("ADD", conf(tmp_path), pod, cid=cid))
    (tmp_path / NET / "203.0.113.30").write_text("legacykeep")  # legacy ID-only lease
    (tmp_path / NET / "203.0.113.31").write_text("legacydrop")
    gc = conf(tmp_path)
    ok(call("GC", gc, None))  # no valid-attachments key: release nothing
    assert len(leases(tmp_path)) == 6
    gc["cni.dev/attachments"] = [
        {"containerID": "keep", "ifname": "net1"},
        {"containerID": "legacykeep", "ifname": "eth0"},
    ]
    ok(call("GC", gc, None))
    assert sorted(set(leases(tmp_path).values())) == ["keep\r\nnet1", "legacykeep"]
    names = sorted(p.name for p in (tmp_path / NET).iterdir())
    assert "lock" in names and "last_reserved_ip.0" in names
    gc["cni.dev/valid-attachments"] = []
    ok(call("GC", gc, None))
    assert leases(tmp_path) == {}


def test_fifty_concurrent_adds_then_dels(pod: Netns, tmp_path: Path) -> None:
    doc = conf(tmp_path)
    doc["ipam"]["ranges"] = [[{"subnet": "10.77.0.0/24"}]]
    with ThreadPoolExecutor(max_workers=50) as ex:
        results = list(ex.map(lambda i: call("ADD", doc, pod, cid=f"c{i}"), range(50)))
    addresses = [ok(r)["ips"][0]["address"] for r in results]
    assert len(set(addresses)) == 50
    with ThreadPoolExecutor(max_workers=50) as ex:
        for r in ex.map(lambda i: call("DEL", doc, pod, cid=f"c{i}"), range(50)):
            ok(r)
    assert sorted(p.name for p in (tmp_path / NET).iterdir()) == ["last_reserved_ip.0", "lock"]


@pytest.mark.parametrize(
    "bad",
    [
        {"ranges": [[{"subnet": "203.0.113.0/24", "gateway": "198.51.100.1"}]]},
        {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.128/25"}]]},
    ],
)
def test_bad_config_is_code_7_and_writes_nothing(
    bad: dict[str, Any], pod: Netns, tmp_path: Path
) -> None:
    proc = call("ADD", conf(tmp_path, **bad), pod)
    check_error(one_json(proc.stdout), 7)
    assert not (tmp_path / NET).exists()


# ---- interoperation with the reference host-local on one dataDir --------------

pytest_reference = pytest.mark.needs_tool(str(REFERENCE_BIN / "host-local"))


@pytest_reference
def test_reference_leases_are_seen_and_released_by_us(pod: Netns, tmp_path: Path) -> None:
    doc = conf(tmp_path, "1.0.0")
    ref = ok(call("ADD", doc, pod, cid="refctr", plugin="host-local", bindir=REFERENCE_BIN))
    assert ref["ips"][0]["address"] == "203.0.113.10/24"
    ours = ok(call("ADD", doc, pod, cid="ourctr"))
    assert ours["ips"][0]["address"] == "203.0.113.11/24"  # continues after its last_reserved_ip
    ok(call("DEL", doc, pod, cid="refctr"))
    assert sorted(set(leases(tmp_path).values())) == ["ourctr\r\nnet1"]


@pytest_reference
def test_our_leases_are_seen_and_released_by_the_reference(pod: Netns, tmp_path: Path) -> None:
    doc = conf(tmp_path, "1.0.0")
    ours = ok(call("ADD", doc, pod, cid="ourctr"))
    ref = ok(call("ADD", doc, pod, cid="refctr", plugin="host-local", bindir=REFERENCE_BIN))
    assert ours["ips"][0]["address"] != ref["ips"][0]["address"]
    again = call("ADD", doc, pod, cid="ourctr", plugin="host-local", bindir=REFERENCE_BIN)
    assert again.returncode != 0  # the reference sees our lease for ourctr/net1
    assert b"duplicate allocation" in again.stdout
    ok(call("DEL", doc, pod, cid="ourctr", plugin="host-local", bindir=REFERENCE_BIN))
    assert sorted(set(leases(tmp_path).values())) == ["refctr\r\nnet1"]
    ok(call("DEL", doc, pod, cid="refctr"))
    assert leases(tmp_path) == {}


# ---- through libcni ---------------------------------------------------------


def test_cnitool_dual_stack_with_capabilities(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    plugin = conf(tmp_path / "ipam", "1.0.0")
    plugin.update(type="mh-noop", capabilities={"ips": True})
    net = cnitool.write({"cniVersion": "1.0.0", "name": NET, "plugins": [plugin]})
    add = cnitool.run("add", net, topo.pod, cap_args={"ips": ["203.0.113.25/24"]})
    assert add.returncode == 0, add.stderr
    result = json.loads(add.stdout)
    assert [ip["address"] for ip in result["ips"]] == ["203.0.113.25/24", "2001:db8:200::10/64"]
    assert cnitool.run("check", net, topo.pod).returncode == 0
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert leases(tmp_path / "ipam") == {}
    assert cnitool.run("del", net, topo.pod).returncode == 0
