"""A DEL with the stripped config Multus 4.2.2 sends (multus-facts.md, "Multus faults").

When the cluster network is given as a ``.conflist`` path, Multus's DEL carries
only ``cniVersion``, ``name``, ``type``, ``capabilities``, ``ipam.type`` and
``dns``: no master, ranges, dataDir or stateDir. The DEL must succeed and still
release what can be found by container ID and interface: the link by its owner
alias, the lease in the default dataDir, mh-route's state in its default
stateDir, mh-sbr's rules (which live in the pod). So ADD here uses the default
directories too, under a network name unique to the test; the fixture removes
exactly what the test made there, and nothing else of the machine's /var/lib/cni.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import kernel, leases, macvlan_chain, ok, route_states, sbr_tables
from tests.conftest import Topology
from tests.link_helpers import add_gateway
from tests.rig import CNIBIN, CNITOOL, CNITOOL13, REFERENCE_BIN, Cnitool, multus_cni_args, unique

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))]
DATA_DIR = Path("/var/lib/cni/networks")  # mh-ipam's (and host-local's) default
STATE_DIR = Path("/var/lib/cni/multihome/mh-route")  # mh-route's default
CLIENTS = [
    pytest.param((CNITOOL, "1.0.0"), id="libcni-1.1.2", marks=pytest.mark.needs_tool(str(CNITOOL))),
    pytest.param(
        (CNITOOL13, "1.1.0"), id="libcni-1.3.0", marks=pytest.mark.needs_tool(str(CNITOOL13))
    ),
]


@pytest.fixture
def default_dirs_network() -> Iterator[str]:
    """A network name no one else uses; afterwards, exactly its directories under the
    default dataDir and stateDir go, and any parent this test had to create."""
    name = unique("mhsd")
    ours = [DATA_DIR / name, DATA_DIR / ".multihome" / name, STATE_DIR / name]
    assert not any(p.exists() for p in ours)
    parents = [DATA_DIR, DATA_DIR / ".multihome", STATE_DIR, STATE_DIR.parent, DATA_DIR.parent]
    made = [p for p in parents if not p.exists()]
    yield name
    for path in ours:
        shutil.rmtree(path, ignore_errors=True)
    for parent in sorted(made, key=lambda p: len(p.parts), reverse=True):
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def stripped(conflist: dict[str, Any]) -> dict[str, Any]:
    """What Multus 4.2.2's DEL keeps of each plugin."""
    plugins = []
    for plugin in conflist["plugins"]:
        kept: dict[str, Any] = {"type": plugin["type"], "dns": {}}
        if "capabilities" in plugin:
            kept["capabilities"] = plugin["capabilities"]
        if "ipam" in plugin:
            kept["ipam"] = {"type": plugin["ipam"]["type"]}
        plugins.append(kept)
    return {"cniVersion": conflist["cniVersion"], "name": conflist["name"], "plugins": plugins}


@pytest.mark.parametrize("cache", ["kept", "lost"])
@pytest.mark.parametrize("tool_version", CLIENTS)
def test_stripped_del_releases_everything(
    tool_version: tuple[Path, str],
    cache: str,
    topo: Topology,
    default_dirs_network: str,
    tmp_path: Path,
) -> None:
    """``lost``: libcni has no cached result either, so DEL comes without prevResult."""
    add_gateway(topo)
    tool, version = tool_version
    client = Cnitool(
        topo.host, tmp_path / "net.d", tmp_path / "cache", f"{CNIBIN}:{REFERENCE_BIN}", tool=tool
    )
    name = default_dirs_network
    full = macvlan_chain(
        name, topo.master, datadir=None, statedir=None, version=version, capabilities={"mac": True}
    )
    net = client.write(full)
    args = multus_cni_args("web-2", "ctr1")
    before = kernel(topo.pod)

    ok(client.run("add", net, topo.pod, args=args, container_id="ctr1"), "add")
    assert len(leases(DATA_DIR, name)) == 2
    assert route_states(STATE_DIR, name) == ["ctr1-net1.json"]
    assert len(sbr_tables(topo.pod)) == 2

    client.write(stripped(full))
    env = {"CNI_CACHE_DIR": str(tmp_path / "empty-cache")} if cache == "lost" else {}
    ok(client.run("del", net, topo.pod, args=args, container_id="ctr1", extra_env=env), "del")
    assert kernel(topo.pod) == before  # net1, its rules, tables and routes are gone
    assert leases(DATA_DIR, name) == {}
    assert route_states(STATE_DIR, name) == []
    # and a repeated DEL (the runtime retries) is still a success
    ok(client.run("del", net, topo.pod, args=args, container_id="ctr1", extra_env=env), "del")
