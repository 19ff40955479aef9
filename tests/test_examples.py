"""Every NAD in packaging/examples/ runs through libcni, so no example can rot.

Each example's spec.config is used as written, except that lease and state
directories point into the test's temporary directory, and the etcd profile an
example names (packaging/examples/etcd.conf) at a 3-member etcd the test runs for
it. Its master interface exists in the test's "host" namespace under the example's own
name.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import etcdrig
from tests import etcd_node
from tests.conftest import needs_etcd
from tests.rig import CNIBIN, ROOT, Cnitool, Netns

EXAMPLES = ROOT / "packaging" / "examples"
pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))]
# What a pod asks for, and the address it should get.
INPUTS: dict[str, dict[str, Any]] = {
    "abcdesktop-vlan-ipv4.yaml": {"address": "203.0.113.10/24"},
    "abcdesktop-vlan-dualstack.yaml": {"address": "2001:db8:200::10/64"},
    "abcdesktop-one-plugin.yaml": {"address": "2001:db8:200::10/64"},
    "static-sbr.yaml": {"address": "192.168.0.20/24"},
    "static-default-route.yaml": {
        "address": "192.168.0.20/24",
        "cap_args": {"ips": ["192.168.0.20/24"]},
    },
    "global-pool-kube-system.yaml": {"address": "192.168.0.20/24"},
    "ipvlan-l2-pool.yaml": {"address": "172.16.1.16/24"},
    "macvlan-private-isolation.yaml": {"address": "198.51.100.2/24"},
    "cluster-pool-etcd.yaml": {"address": "10.30.0.10/16"},
}


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    assert doc["kind"] == "NetworkAttachmentDefinition"
    conf: dict[str, Any] = json.loads(doc["spec"]["config"])
    return conf


def hermetic(conf: dict[str, Any], tmp: Path) -> dict[str, Any]:
    for plugin in conf["plugins"]:
        if plugin.get("ipam", {}).get("type") == "mh-ipam":
            plugin["ipam"]["dataDir"] = str(tmp / "ipam")
        if plugin["type"] == "mh-route":
            plugin["stateDir"] = str(tmp / "state")
    return conf


def gateways(conf: dict[str, Any]) -> list[str]:
    ipam = conf["plugins"][0].get("ipam", {})
    out = [r["gateway"] for rs in ipam.get("ranges", []) for r in rs if "gateway" in r]
    out += [a["gateway"] for a in ipam.get("addresses", []) if "gateway" in a]
    out += ipam.get("gateways", []) + ([ipam["gateway"]] if "gateway" in ipam else [])
    return out


def params() -> list[Any]:
    out = []
    for name in sorted(p.name for p in EXAMPLES.glob("*.yaml")):
        marks = [pytest.mark.needs_kernel("ipvlan")] if "ipvlan" in name else []
        out.append(pytest.param(name, marks=marks, id=name.removesuffix(".yaml")))
    return out


def test_every_example_has_inputs() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(INPUTS)


def make_host(
    netns_factory: Callable[[str], Netns], master: str, gws: list[str]
) -> tuple[Netns, Netns]:
    host, router = netns_factory("host"), netns_factory("rtr")
    host.ip("link", "add", master, "type", "veth", "peer", "name", "uplink0", "netns", router.name)
    host.ip("link", "set", master, "up")
    router.ip("link", "set", "uplink0", "up")
    for gw in gws:
        prefix = "64" if ":" in gw else "24"
        extra = ["nodad"] if ":" in gw else []
        router.ip("addr", "add", f"{gw}/{prefix}", "dev", "uplink0", *extra)
    return host, router


@contextlib.contextmanager
def etcd_for(conf: dict[str, Any], host: Netns, tmp: Path) -> Iterator[None]:
    """An example on an etcd store gets an etcd of its own in the host namespace, and the
    profile it names from packaging/examples/etcd.conf, aimed at that etcd, with
    certificates made for it (in the node's etcd directory) when the profile uses TLS."""
    store = conf["plugins"][0].get("ipam", {}).get("store", {})
    if store.get("type") != "etcd":
        yield
        return
    needs_etcd()
    name = store.get("profile", "default")
    profile = json.loads((EXAMPLES / "etcd.conf").read_text())["profiles"][name]
    tls = etcdrig.TLSFiles.make(etcd_node.tls_dir("pki")) if "tls" in profile else None
    with etcdrig.EtcdCluster(tmp / "etcd", size=3, tls=tls, netns=host.name) as cluster:
        profile["endpoints"] = cluster.endpoints
        if tls:
            profile["tls"] = {
                "ca": str(tls.ca),
                "cert": str(tls.client_cert),
                "key": str(tls.client_key),
            }
        etcd_node.add_profile(profile, name)
        yield


@pytest.mark.parametrize("name", params())
def test_example_runs(name: str, netns_factory: Callable[[str], Netns], tmp_path: Path) -> None:
    conf = hermetic(load(name), tmp_path)
    host, _ = make_host(netns_factory, conf["plugins"][0]["master"], gateways(conf))
    with etcd_for(conf, host, tmp_path):
        run_example(name, conf, host, netns_factory, tmp_path)


def run_example(
    name: str,
    conf: dict[str, Any],
    host: Netns,
    netns_factory: Callable[[str], Netns],
    tmp_path: Path,
) -> None:
    pod = netns_factory("pod")
    tool = Cnitool(host, tmp_path / "net.d", tmp_path / "cache", f"{CNIBIN}:/usr/lib/cni")
    net = tool.write(conf)
    inputs = INPUTS[name]
    add = tool.run("add", net, pod, cap_args=inputs.get("cap_args"))
    assert add.returncode == 0, add.stderr
    result = json.loads(add.stdout)
    assert inputs["address"] in [ip["address"] for ip in result["ips"]]
    local = pod.ipj("addr", "show", "dev", "net1")[0]["addr_info"]
    assert inputs["address"] in [f"{a['local']}/{a['prefixlen']}" for a in local]
    for gw in gateways(conf)[:1]:
        pod.exec("ping", "-c", "1", "-W", "3", "-I", inputs["address"].split("/")[0], gw)
    check = tool.run("check", net, pod, cap_args=inputs.get("cap_args"))  # as a runtime does
    assert check.returncode == 0, check.stderr
    assert tool.run("del", net, pod, cap_args=inputs.get("cap_args")).returncode == 0
    assert pod.links() == ["lo"]


def test_private_mode_isolates_pods(netns_factory: Callable[[str], Netns], tmp_path: Path) -> None:
    conf = hermetic(load("macvlan-private-isolation.yaml"), tmp_path)
    host, _ = make_host(netns_factory, conf["plugins"][0]["master"], gateways(conf))
    tool = Cnitool(host, tmp_path / "net.d", tmp_path / "cache", f"{CNIBIN}:/usr/lib/cni")
    net = tool.write(conf)
    pods = [netns_factory("pod"), netns_factory("pod")]
    addrs = []
    for i, pod in enumerate(pods):
        add = tool.run("add", net, pod, container_id=f"tenant{i}")
        assert add.returncode == 0, add.stderr
        addrs.append(json.loads(add.stdout)["ips"][0]["address"].split("/")[0])
    pods[0].exec("ping", "-c", "1", "-W", "3", "198.51.100.1")  # the outside: reachable
    other = pods[0].exec("ping", "-c", "1", "-W", "1", addrs[1], check=False)
    assert other.returncode != 0, "private mode must keep pods on one master apart"
