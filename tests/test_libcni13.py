"""Spec 1.1.0 through a real runtime: libcni 1.3.0 (build/cnitool13) on whole chains.

Debian 12's libcni (1.1.2, build/cnitool) stops at spec 1.0.0 and has no GC or
STATUS; libcni 1.3.0 is what containerd 2, CRI-O and Multus >= 4.2 use. Every
pod here looks like a Multus pod (eth0 from a cluster network first).

Where the two clients disagree, the test says so: 1.1.2 runs a 1.1.0 chain's
plugins but cannot read their result ("unsupported CNI result version"), nor
1.3.0's cached one on CHECK and DEL; 1.3.0 reads it, ``routes[].table`` included.
1.3.0's GC also DELs, by itself, every cached attachment the list leaves out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conformance import etcdrig
from tests import etcd_node
from tests.chain_helpers import (
    failed,
    ipvlan_chain,
    kernel,
    leases,
    macvlan_chain,
    ok,
    route_states,
    sbr_tables,
)
from tests.conftest import Topology
from tests.link_helpers import add_gateway
from tests.rig import CNIBIN, CNITOOL13, Cnitool, Netns, cluster_eth0, unique
from tests.shapes import check_result

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_tool(str(CNITOOL13)),
    pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan")),
]


def test_add_check_del_macvlan_chain_at_110(
    topo: Topology, cnitool13: Cnitool, tmp_path: Path
) -> None:
    add_gateway(topo)
    name = unique("n13")
    datadir, statedir = tmp_path / "ipam", tmp_path / "route"
    net = cnitool13.write(macvlan_chain(name, topo.master, datadir=datadir, statedir=statedir))
    before = kernel(topo.pod)
    doc = ok(cnitool13.run("add", net, topo.pod), "add")
    check_result(doc, "1.1.0")
    assert doc["cniVersion"] == "1.1.0"
    assert [ip["address"] for ip in doc["ips"]] == ["203.0.113.10/24", "2001:db8:200::10/64"]
    # libcni 1.3 parsed mh-sbr's tables and printed them back: the 1.1.0 fields survive
    tables = {r["table"] for r in doc["routes"] if "table" in r}
    assert tables == {int(t) for t in sbr_tables(topo.pod).values()}, doc["routes"]
    assert len(tables) == 2  # one per family
    defaults6 = topo.pod.ipj("-6", "route", "show", "default")
    assert [(r["gateway"], r["dev"]) for r in defaults6] == [("2001:db8:200::1", "net1")]
    ok(cnitool13.run("check", net, topo.pod), "check")

    # The clients disagree here: Debian's libcni 1.1.2 knows no spec 1.1.0. It runs
    # the plugins, then cannot read their 1.1.0 result, nor libcni 1.3's cached one.
    old = Cnitool(topo.host, cnitool13.confdir, cnitool13.cachedir, cnitool13.cni_path)
    for cmd in ("check", "del"):
        proc = old.run(cmd, net, topo.pod)
        assert proc.returncode != 0
        assert 'unsupported CNI result version "1.1.0"' in proc.stderr, proc.stderr

    ok(cnitool13.run("del", net, topo.pod), "del")
    assert kernel(topo.pod) == before
    assert leases(datadir, name) == {}
    assert route_states(statedir, name) == []


@pytest.mark.needs_kernel("ipvlan")
def test_add_check_del_ipvlan_static_sbr_at_110(
    topo: Topology, cnitool13: Cnitool, tmp_path: Path
) -> None:
    add_gateway(topo)
    net = cnitool13.write(ipvlan_chain(unique("i13"), topo.master))
    before = kernel(topo.pod)
    doc = ok(cnitool13.run("add", net, topo.pod), "add")
    check_result(doc, "1.1.0")
    tables = {r["table"] for r in doc["routes"] if "table" in r}
    assert tables == {int(t) for t in sbr_tables(topo.pod).values()}, doc["routes"]
    assert len(tables) == 2
    ok(cnitool13.run("check", net, topo.pod), "check")
    ok(cnitool13.run("del", net, topo.pod), "del")
    assert kernel(topo.pod) == before


def test_every_plugin_of_the_chain_speaks_110(topo: Topology, cnitool13: Cnitool) -> None:
    net = cnitool13.write(macvlan_chain(unique("v13"), topo.master, datadir=None, statedir=None))
    doc = ok(cnitool13.run("version", net, ""), "version")
    assert doc["libcniCurrent"] == "1.1.0"  # libcni 1.3's own newest spec version
    for plugin in ("mh-macvlan", "mh-sbr", "mh-route"):
        assert "1.1.0" in doc[plugin]["supportedVersions"], doc


# ---- GC ---------------------------------------------------------------------------------
# What GC means for each plugin (README, "GC and STATUS"):
#   mh-ipam     releases every lease whose (containerID, ifname) is not valid (file or etcd)
#   mh-route    removes the state records of attachments that are not valid
#   mh-macvlan, mh-ipvlan   keep nothing outside the pod; forward GC to their IPAM
#   mh-sbr, mh-static       keep nothing outside the pod: nothing to do
# libcni 1.3 itself first DELs every attachment in its cache that is not valid ("kept"
# below); with the cache lost (a node's /var/lib/cni wiped, another runtime), only the
# plugins' GC can free what the pod held ("lost").


def _store_view(datadir: Path, statedir: Path, name: str) -> tuple[dict[str, str], list[str]]:
    return leases(datadir, name), route_states(statedir, name)


@pytest.mark.parametrize("cache", ["lost", "kept"])
def test_gc_frees_only_the_invalid_attachment(
    cache: str,
    topo: Topology,
    netns_factory: Callable[[str], Netns],
    cnitool13: Cnitool,
    tmp_path: Path,
) -> None:
    add_gateway(topo)
    name = unique("g13")
    datadir, statedir = tmp_path / "ipam", tmp_path / "route"
    net = cnitool13.write(macvlan_chain(name, topo.master, datadir=datadir, statedir=statedir))
    pods, cids = _three_pods(topo, netns_factory, name)
    for key, pod in pods.items():
        env = (
            {"CNI_CACHE_DIR": str(tmp_path / "lostcache")} if key == "B" and cache == "lost" else {}
        )
        ok(cnitool13.run("add", net, pod, container_id=cids[key], extra_env=env), f"add {key}")
    held, states = _store_view(datadir, statedir, name)
    assert len(held) == 6 and len(states) == 3
    b_leases = {ip for ip, owner in held.items() if owner.startswith(cids["B"])}
    assert len(b_leases) == 2
    kept = {key: kernel(pods[key]) for key in "AC"}
    pods["B"].delete()  # the pod is gone and its DEL never came
    # and, say, an earlier ADD of B was killed between writing its record and renaming it
    (statedir / name / f"{cids['B']}-net1.json.tmp").write_text("{}")

    valid = [{"containerID": cids[key], "ifname": "net1"} for key in "AC"]
    ok(cnitool13.run("gc", net, "", extra_env={"VALID_ATTACHMENTS": json.dumps(valid)}), "gc")
    after, states_after = _store_view(datadir, statedir, name)
    assert after == {ip: o for ip, o in held.items() if ip not in b_leases}
    assert states_after == sorted(s for s in states if not s.startswith(cids["B"]))
    for key in "AC":
        assert kernel(pods[key]) == kept[key], key
        ok(cnitool13.run("check", net, pods[key], container_id=cids[key]), f"check {key}")

    # A second GC finds nothing more to free; DEL of the valid ones still works.
    ok(cnitool13.run("gc", net, "", extra_env={"VALID_ATTACHMENTS": json.dumps(valid)}), "gc")
    assert _store_view(datadir, statedir, name) == (after, states_after)
    for key in "AC":
        ok(cnitool13.run("del", net, pods[key], container_id=cids[key]), f"del {key}")
    assert _store_view(datadir, statedir, name) == ({}, [])


def test_gc_without_a_list(
    topo: Topology,
    netns_factory: Callable[[str], Netns],
    cnitool13: Cnitool,
    tmp_path: Path,
) -> None:
    """With no list from the runtime, libcni sends no cni.dev/valid-attachments. libcni
    1.3 itself then DELs every attachment of the network in its cache; our plugins,
    which cannot tell valid from stale, keep everything they hold."""
    add_gateway(topo)
    name = unique("g13")
    datadir, statedir = tmp_path / "ipam", tmp_path / "route"
    net = cnitool13.write(macvlan_chain(name, topo.master, datadir=datadir, statedir=statedir))
    lost = {"CNI_CACHE_DIR": str(tmp_path / "lostcache")}
    ok(cnitool13.run("add", net, topo.pod, container_id="uncached", extra_env=lost), "add")
    before = _store_view(datadir, statedir, name)
    ok(cnitool13.run("gc", net, ""), "gc")
    assert _store_view(datadir, statedir, name) == before
    assert "net1" in topo.pod.links()

    other = netns_factory("pod")
    cluster_eth0(other, topo.host, 2)
    ok(cnitool13.run("add", net, other, container_id="cached"), "add")
    ok(cnitool13.run("gc", net, ""), "gc")  # libcni's DEL pass takes the cached one
    assert _store_view(datadir, statedir, name) == before
    assert "net1" not in other.links()
    ok(cnitool13.run("del", net, topo.pod, container_id="uncached", extra_env=lost), "del")
    assert _store_view(datadir, statedir, name) == ({}, [])


def _three_pods(
    topo: Topology, make: Callable[[str], Netns], name: str
) -> tuple[dict[str, Netns], dict[str, str]]:
    pods = {key: make("pod") for key in "ABC"}
    for n, pod in enumerate(pods.values(), start=2):  # (n=1: topo.pod's)
        cluster_eth0(pod, topo.host, n)
    return pods, {key: f"pod{key}-{name}" for key in pods}


def _etcd_store(endpoints: list[str], **settings: object) -> dict[str, object]:
    """An etcd store for a NAD: a profile of the node's etcd settings (tests/etcd_node.py)."""
    profile = etcd_node.add_profile({"endpoints": endpoints})
    return {"type": "etcd", "profile": profile, "node": "node-a", **settings}


def _etcd_leases(cluster: etcdrig.EtcdCluster, name: str) -> dict[str, str]:
    base = f"/multihome/ipam/{name}/ips/"
    docs = {k[len(base) :]: json.loads(v) for k, v in cluster.get_prefix(base).items()}
    return {ip: f"{d['id']} {d['if']}" for ip, d in docs.items()}


def test_gc_on_the_etcd_store(
    topo: Topology,
    netns_factory: Callable[[str], Netns],
    cnitool13: Cnitool,
    host_etcd: etcdrig.EtcdCluster,
    tmp_path: Path,
) -> None:
    add_gateway(topo)
    name = unique("e13")
    statedir = tmp_path / "route"
    store = _etcd_store(host_etcd.endpoints)
    net = cnitool13.write(
        macvlan_chain(name, topo.master, datadir=None, statedir=statedir, store=store)
    )
    pods, cids = _three_pods(topo, netns_factory, name)
    for key, pod in pods.items():
        env = {"CNI_CACHE_DIR": str(tmp_path / "lostcache")} if key == "B" else {}
        ok(cnitool13.run("add", net, pod, container_id=cids[key], extra_env=env), f"add {key}")
    held = _etcd_leases(host_etcd, name)
    assert len(held) == 6
    kept = {key: kernel(pods[key]) for key in "AC"}
    pods["B"].delete()

    valid = [{"containerID": cids[key], "ifname": "net1"} for key in "AC"]
    ok(cnitool13.run("gc", net, "", extra_env={"VALID_ATTACHMENTS": json.dumps(valid)}), "gc")
    assert _etcd_leases(host_etcd, name) == {
        ip: o for ip, o in held.items() if not o.startswith(cids["B"])
    }
    assert route_states(statedir, name) == sorted(f"{cids[k]}-net1.json" for k in "AC")
    for key in "AC":
        assert kernel(pods[key]) == kept[key], key
        ok(cnitool13.run("del", net, pods[key], container_id=cids[key]), f"del {key}")
    assert _etcd_leases(host_etcd, name) == {}


# ---- STATUS -----------------------------------------------------------------------------
# libcni 1.3 sends STATUS to every plugin of the list in order and stops at the first
# failure, whose code it keeps (cnitool13 prints it).


def test_status_succeeds_on_a_usable_chain(
    topo: Topology, cnitool13: Cnitool, tmp_path: Path
) -> None:
    net = cnitool13.write(
        macvlan_chain(unique("s13"), topo.master, datadir=tmp_path / "d", statedir=tmp_path / "s")
    )
    ok(cnitool13.run("status", net, ""), "status")


def test_status_50_when_the_master_is_gone(
    topo: Topology, cnitool13: Cnitool, tmp_path: Path
) -> None:
    net = cnitool13.write(
        macvlan_chain(unique("s13"), topo.master, datadir=tmp_path / "d", statedir=tmp_path / "s")
    )
    topo.host.ip("link", "del", topo.master)
    err = failed(cnitool13.run("status", net, ""))
    assert err["code"] == 50, err
    assert topo.master in err["msg"]


def test_status_50_when_the_store_is_unwritable(
    topo: Topology, cnitool13: Cnitool, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the dataDir's parent should be")
    net = cnitool13.write(
        macvlan_chain(unique("s13"), topo.master, datadir=blocker / "ipam", statedir=tmp_path / "s")
    )
    err = failed(cnitool13.run("status", net, ""))
    assert err["code"] == 50, err


def test_status_50_when_etcd_is_unreachable(
    topo: Topology, cnitool13: Cnitool, tmp_path: Path
) -> None:
    (port,) = etcdrig.free_ports(1)  # nothing listens there
    store = _etcd_store([f"http://127.0.0.1:{port}"], timeout=1)
    net = cnitool13.write(
        macvlan_chain(
            unique("s13"), topo.master, datadir=None, statedir=tmp_path / "s", store=store
        )
    )
    err = failed(cnitool13.run("status", net, ""))
    assert err["code"] == 50, err


@pytest.mark.parametrize(
    "case",
    [(1, {"table": 254}, "table"), (2, {"presets": ["no-such-set"]}, "preset")],
    ids=["mh-sbr", "mh-route"],
)
def test_status_reaches_every_plugin_of_the_chain(
    case: tuple[int, dict[str, object], str],
    topo: Topology,
    cnitool13: Cnitool,
    tmp_path: Path,
) -> None:
    """A config only the 2nd or 3rd plugin refuses: STATUS got that far, and says so."""
    index, broken, word = case
    conflist = macvlan_chain(
        unique("s13"), topo.master, datadir=tmp_path / "d", statedir=tmp_path / "s"
    )
    conflist["plugins"][index].update(broken)
    net = cnitool13.write(conflist)
    proc = cnitool13.run("status", net, "")
    err = failed(proc)
    assert err["code"] == 7, err
    assert word in err["msg"] + err.get("details", ""), err
