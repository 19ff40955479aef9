"""The abcdesktop seed's dual-stack NAD, as users wrote it (type names changed to ours).

``tests/data/abcdesktop-dualstack.json`` is the seed's ``spec.config`` with
``macvlan``/``host-local`` renamed to ``mh-macvlan``/``mh-ipam`` and the
network named. Its master is ``eth0.200``: here a veth end with that name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.link_helpers import GW4, GW6, KINDS, addresses
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, one_json, plugin_env, run_plugin
from tests.shapes import check_result

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))]
SEED = json.loads((Path(__file__).parent / "data" / "abcdesktop-dualstack.json").read_text())


def seed_master(topo: Topology) -> None:
    topo.host.ip(
        "link", "add", "eth0.200", "type", "veth", "peer", "name", "gw200", "netns", topo.peer.name
    )
    topo.host.ip("link", "set", "eth0.200", "up")
    topo.peer.ip("link", "set", "gw200", "up")
    topo.peer.ip("addr", "add", f"{GW4}/24", "dev", "gw200")
    topo.peer.ip("addr", "add", f"{GW6}/64", "dev", "gw200", "nodad")


def test_seed_nad_as_written(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    seed_master(topo)
    conf: dict[str, Any] = json.loads(json.dumps(SEED))
    conf["ipam"]["dataDir"] = str(tmp_path)  # the only change: a throwaway lease store
    net = cnitool.write(conf)
    add = cnitool.run("add", net, topo.pod)
    assert add.returncode == 0, add.stderr
    result = json.loads(add.stdout)
    check_result(result, "0.3.1")
    assert addresses(topo) == ["203.0.113.10/24", "2001:db8:200::10/64"]
    v4 = {r["dst"] for r in topo.pod.ipj("route", "show", "dev", "net1") if r.get("gateway") == GW4}
    seed_v4 = {r["dst"] for r in SEED["ipam"]["routes"] if ":" not in r["dst"]}
    assert v4 == seed_v4 and len(v4) == 31
    topo.pod.exec("ping", "-c", "1", "-W", "3", GW4)
    topo.pod.exec("ping", "-6", "-c", "1", "-W", "3", GW6)
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert topo.pod.links() == ["lo", "eth0"]


@pytest.mark.parametrize("kind", [k for k in KINDS if k.values[0] == "ipvlan"])
def test_chained_ipvlan_takes_master_and_ips_from_prev_result(
    kind: str, topo: Topology, tmp_path: Path
) -> None:
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": topo.master}],
        "ips": [{"address": "203.0.113.77/24", "gateway": GW4, "interface": 0}],
    }
    conf = {"cniVersion": "1.0.0", "name": "chained", "type": "mh-ipvlan", "prevResult": prev}
    env = plugin_env(
        "ADD",
        CNI_CONTAINERID="c1",
        CNI_IFNAME="net1",
        CNI_NETNS=topo.pod.path,
        CNI_PATH=f"{CNIBIN}:{REFERENCE_BIN}",
    )
    proc = run_plugin("mh-ipvlan", env, conf, netns=topo.host)
    assert proc.returncode == 0, proc.stdout
    result = one_json(proc.stdout)
    assert result["interfaces"] == [
        {"name": "net1", "mac": result["interfaces"][0]["mac"], "sandbox": topo.pod.path}
    ]
    assert result["ips"] == [{"interface": 0, "address": "203.0.113.77/24", "gateway": GW4}]
    assert addresses(topo) == ["203.0.113.77/24"]
