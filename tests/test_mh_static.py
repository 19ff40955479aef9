"""mh-static end to end: reference priorities, plus gateways that work with ``ips``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, Netns, one_json, plugin_env, run_plugin
from tests.shapes import check_error, check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-static"))]

SEED = {
    "type": "mh-static",
    "addresses": [{"address": "192.168.0.20/24", "gateway": "192.168.0.254"}],
}


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def conf(ipam: dict[str, Any], version: str = "1.1.0", **top: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "vlan1-internal-static",
        "type": "mh-macvlan",
        "ipam": ipam,
        **top,
    }


def call(
    command: str,
    doc: dict[str, Any],
    pod: Netns | None,
    plugin: str = "mh-static",
    bindir: Path = CNIBIN,
    **env: str,
) -> subprocess.CompletedProcess[bytes]:
    full = plugin_env(command, CNI_CONTAINERID="c1", CNI_IFNAME="net1", **env)
    if pod is not None:
        full["CNI_NETNS"] = pod.path
    return run_plugin(plugin, full, doc, bindir=bindir)


def ips(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, str]]:
    assert proc.returncode == 0, proc.stdout
    doc = one_json(proc.stdout)
    check_result(doc, doc["cniVersion"])
    return list(doc.get("ips", []))


def test_seed_addresses_routes_dns(pod: Netns) -> None:
    ipam = {
        **SEED,
        "routes": [{"dst": "10.0.0.0/8", "gw": "192.168.0.1"}],
        "dns": {"nameservers": ["192.168.0.1"], "search": ["zencoffee.org"]},
    }
    proc = call("ADD", conf(ipam), pod)
    doc = one_json(proc.stdout)
    assert doc["ips"] == [{"address": "192.168.0.20/24", "gateway": "192.168.0.254"}]
    assert doc["routes"] == [{"dst": "10.0.0.0/8", "gw": "192.168.0.1"}]
    assert doc["dns"] == {"nameservers": ["192.168.0.1"], "search": ["zencoffee.org"]}


def test_cni_args_ip_appends_and_gateway_overrides(pod: Netns) -> None:
    got = ips(
        call(
            "ADD",
            conf(SEED),
            pod,
            CNI_ARGS="IgnoreUnknown=1;IP=10.1.1.5/24,2001:db8::5/64;GATEWAY=10.1.1.1,192.168.0.1",
        )
    )
    assert got == [
        {"address": "192.168.0.20/24", "gateway": "192.168.0.1"},
        {"address": "10.1.1.5/24", "gateway": "10.1.1.1"},
        {"address": "2001:db8::5/64"},
    ]


def test_args_cni_ips_replace_addresses(pod: Netns) -> None:
    doc = conf(SEED, args={"cni": {"ips": ["10.2.2.2/24"]}})
    assert ips(call("ADD", doc, pod)) == [{"address": "10.2.2.2/24"}]


def test_runtime_config_ips_win(pod: Netns) -> None:
    doc = conf(
        SEED, args={"cni": {"ips": ["10.2.2.2/24"]}}, runtimeConfig={"ips": ["192.168.0.30/24"]}
    )
    assert ips(call("ADD", doc, pod)) == [{"address": "192.168.0.30/24"}]


def test_gateways_option_with_the_ips_capability(pod: Netns) -> None:
    """The reference gives no gateway here, so sbr makes no default route (#406, #654)."""
    ipam = {"type": "mh-static", "gateways": ["192.168.0.254", "2001:db8:1::1"]}
    doc = conf(ipam, runtimeConfig={"ips": ["192.168.0.20/24", "2001:db8:1::20/64"]})
    assert ips(call("ADD", doc, pod)) == [
        {"address": "192.168.0.20/24", "gateway": "192.168.0.254"},
        {"address": "2001:db8:1::20/64", "gateway": "2001:db8:1::1"},
    ]


@pytest.mark.needs_tool(str(REFERENCE_BIN / "static"))
def test_reference_gives_no_gateway_with_the_ips_capability(pod: Netns) -> None:
    doc = conf(
        {"type": "static"},
        "1.0.0",
        runtimeConfig={"ips": ["192.168.0.20/24"]},
    )
    proc = call("ADD", doc, pod, plugin="static", bindir=REFERENCE_BIN)
    assert ips(proc) == [{"address": "192.168.0.20/24"}]
    ours = call("ADD", {**doc, "ipam": {"type": "mh-static", "gateways": ["192.168.0.254"]}}, pod)
    assert ips(ours) == [{"address": "192.168.0.20/24", "gateway": "192.168.0.254"}]


@pytest.mark.parametrize(
    ("ipam", "top", "env"),
    [
        ({"type": "mh-static"}, {}, {}),
        ({"type": "mh-static", "addresses": [{"address": "192.168.0.20"}]}, {}, {}),
        (SEED, {"runtimeConfig": {"ips": ["192.168.0.20"]}}, {}),
        (
            {
                "type": "mh-static",
                "addresses": [{"address": "192.168.0.20/24", "gateway": "10.0.0.1"}],
            },
            {},
            {},
        ),
        (SEED, {}, {"CNI_ARGS": "GATEWAY=not-an-ip"}),
    ],
)
def test_bad_input_is_code_7(
    ipam: dict[str, Any], top: dict[str, Any], env: dict[str, str], pod: Netns
) -> None:
    proc = call("ADD", conf(ipam, **top), pod, **env)
    check_error(one_json(proc.stdout), 7)


def test_legacy_version_allows_one_address_per_family(pod: Netns) -> None:
    ipam = {
        "type": "mh-static",
        "addresses": [{"address": "10.0.0.2/24"}, {"address": "10.0.1.2/24"}],
    }
    check_error(one_json(call("ADD", conf(ipam, "0.2.0"), pod).stdout), 7)
    doc = one_json(call("ADD", conf(SEED, "0.2.0"), pod).stdout)
    assert doc["ip4"] == {"ip": "192.168.0.20/24", "gateway": "192.168.0.254"}


def test_check(pod: Netns) -> None:
    result = one_json(call("ADD", conf(SEED), pod).stdout)
    assert call("CHECK", {**conf(SEED), "prevResult": result}, pod).returncode == 0
    result["ips"][0]["gateway"] = "192.168.0.1"
    bad = call("CHECK", {**conf(SEED), "prevResult": result}, pod)
    check_error(one_json(bad.stdout), 120)
    del result["ips"][0]["gateway"]  # cleared by a later plugin (flushgateway): still fine
    assert call("CHECK", {**conf(SEED), "prevResult": result}, pod).returncode == 0


def test_del_status_gc_need_nothing(pod: Netns) -> None:
    assert call("DEL", conf(SEED), None).returncode == 0
    assert call("STATUS", conf(SEED), None).returncode == 0
    assert call("GC", {**conf(SEED), "cni.dev/valid-attachments": []}, None).returncode == 0


def test_seed_static_through_cnitool(topo: Topology, cnitool: Cnitool) -> None:
    net = cnitool.write(
        {
            "cniVersion": "0.3.1",
            "name": "vlan1-internal-static",
            "plugins": [{"type": "mh-noop", "ipam": SEED}],
        }
    )
    add = cnitool.run("add", net, topo.pod)
    assert add.returncode == 0, add.stderr
    doc = json.loads(add.stdout)
    check_result(doc, "0.3.1")
    assert doc["ips"] == [
        {"version": "4", "address": "192.168.0.20/24", "gateway": "192.168.0.254"}
    ]
    assert cnitool.run("del", net, topo.pod).returncode == 0
