"""Whole chains called the way Multus calls a delegate, through both libcni clients.

The calls follow ../shared/notes/multus-facts.md (measured with Multus 4.2.2
and 4.0.2): CNI_ARGS with every key twice (Multus's IgnoreUnknown=true list,
then the runtime's IgnoreUnknown=1 one), the selection's ``mac`` and ``ips``
appended as ``;MAC=..;IP=a/len,b/len`` and, only for a plugin that declares the
capability, as ``runtimeConfig``; the selection's ``cni-args`` copied into
``args.cni`` of every plugin. Each case runs through libcni 1.1.2 at spec 1.0.0
and libcni 1.3.0 at 1.1.0, in a Multus-shaped pod, and is checked in the kernel.

Two spies (shell scripts that record their stdin and environment, then run
mh-noop) sit in the chain, one declaring the capabilities and one not, so the
test sees what libcni handed each plugin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import kernel, leases, macvlan_chain, ok, route_states
from tests.conftest import Topology
from tests.link_helpers import add_gateway, addresses, link
from tests.rig import CNIBIN, CNITOOL, CNITOOL13, REFERENCE_BIN, Cnitool, multus_cni_args, unique

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))]
CLIENTS = [
    pytest.param((CNITOOL, "1.0.0"), id="libcni-1.1.2", marks=pytest.mark.needs_tool(str(CNITOOL))),
    pytest.param(
        (CNITOOL13, "1.1.0"), id="libcni-1.3.0", marks=pytest.mark.needs_tool(str(CNITOOL13))
    ),
]
MAC = "02:42:ac:11:00:2a"
IPS = ["203.0.113.20/24", "2001:db8:200::20/64"]
CAPS = {"mac": True, "ips": True}


def _spies(where: Path) -> Path:
    """mh-spy-caps and mh-spy-bare: record stdin and CNI_ARGS per command, then mh-noop."""
    where.mkdir()
    for name in ("mh-spy-caps", "mh-spy-bare"):
        script = where / name
        script.write_text(
            "#!/bin/sh\n"
            f'seen="{where}/$CNI_COMMAND.{name}"\n'
            'cat > "$seen.json"\n'
            'printf %s "$CNI_ARGS" > "$seen.args"\n'
            f'exec {CNIBIN / "mh-noop"} < "$seen.json"\n'
        )
        script.chmod(0o755)
    return where


def _chain(
    name: str, master: str, version: str, tmp_path: Path, *, caps: bool, cni_args: dict[str, Any]
) -> dict[str, Any]:
    doc = macvlan_chain(
        name,
        master,
        datadir=tmp_path / "ipam",
        statedir=tmp_path / "route",
        version=version,
        capabilities=CAPS if caps else None,
    )
    spies: list[dict[str, Any]] = [
        {"type": "mh-spy-caps", "capabilities": CAPS},
        {"type": "mh-spy-bare"},
    ]
    doc["plugins"][1:1] = spies
    if cni_args:  # Multus copies the selection's cni-args into every plugin
        for plugin in doc["plugins"]:
            plugin["args"] = {"cni": cni_args}
    return doc


def _client(
    tool_version: tuple[Path, str], topo: Topology, tmp_path: Path
) -> tuple[Cnitool, str, Path]:
    tool, version = tool_version
    spydir = _spies(tmp_path / "spies")
    cni_path = f"{spydir}:{CNIBIN}:{REFERENCE_BIN}"
    client = Cnitool(topo.host, tmp_path / "net.d", tmp_path / "cache", cni_path, tool=tool)
    return client, version, spydir


def _seen(spydir: Path, command: str, spy: str) -> tuple[dict[str, Any], str]:
    doc = json.loads((spydir / f"{command}.{spy}.json").read_text())
    return doc, (spydir / f"{command}.{spy}.args").read_text()


@pytest.mark.parametrize("caps", [True, False], ids=["capabilities", "no-capabilities"])
@pytest.mark.parametrize("tool_version", CLIENTS)
def test_selection_with_mac_and_ips(
    tool_version: tuple[Path, str], caps: bool, topo: Topology, tmp_path: Path
) -> None:
    """A network selection with ``mac`` and ``ips`` (dual stack): CNI_ARGS always has them
    appended; runtimeConfig only where the plugin declares the capability."""
    add_gateway(topo)
    client, version, spydir = _client(tool_version, topo, tmp_path)
    name = unique("mu")
    net = client.write(_chain(name, topo.master, version, tmp_path, caps=caps, cni_args={}))
    args = multus_cni_args("web-0", "ctr1") + f";MAC={MAC};IP={','.join(IPS)}"
    cap_args = {"mac": MAC, "ips": IPS}

    before = kernel(topo.pod)
    ok(client.run("add", net, topo.pod, args=args, cap_args=cap_args, container_id="ctr1"))
    assert link(topo)["address"] == MAC
    assert addresses(topo) == IPS
    assert sorted(leases(tmp_path / "ipam", name)) == ["2001:db8:200::20", "203.0.113.20"]
    ok(client.run("check", net, topo.pod, args=args, cap_args=cap_args, container_id="ctr1"))

    with_caps, env_args = _seen(spydir, "ADD", "mh-spy-caps")
    bare, bare_args = _seen(spydir, "ADD", "mh-spy-bare")
    assert env_args == bare_args == args  # both copies of every key, untouched
    assert with_caps["runtimeConfig"] == {"mac": MAC, "ips": IPS}
    assert "runtimeConfig" not in bare

    ok(client.run("del", net, topo.pod, args=args, cap_args=cap_args, container_id="ctr1"))
    assert kernel(topo.pod) == before
    assert leases(tmp_path / "ipam", name) == {}
    assert route_states(tmp_path / "route", name) == []
    assert _seen(spydir, "DEL", "mh-spy-bare")[1] == args


@pytest.mark.parametrize("tool_version", CLIENTS)
def test_cni_args_reach_every_plugin_and_the_ipam(
    tool_version: tuple[Path, str], topo: Topology, tmp_path: Path
) -> None:
    """The selection's ``cni-args``, copied by Multus into ``args.cni`` of each plugin:
    mh-ipam takes its ``ips``, mh-route its ``addroutes``, mh-sbr ignores both."""
    add_gateway(topo)
    client, version, spydir = _client(tool_version, topo, tmp_path)
    name = unique("mu")
    cni_args = {
        "ips": ["203.0.113.33/24", "2001:db8:200::33/64"],
        "addroutes": [{"dst": "198.51.100.0/24", "gw": "203.0.113.1"}],
    }
    net = client.write(_chain(name, topo.master, version, tmp_path, caps=False, cni_args=cni_args))
    args = multus_cni_args("web-1", "ctr1")

    before = kernel(topo.pod)
    ok(client.run("add", net, topo.pod, args=args, container_id="ctr1"))
    assert addresses(topo) == cni_args["ips"]
    extra = topo.pod.ipj("route", "show", "198.51.100.0/24")
    assert [(r["gateway"], r["dev"]) for r in extra] == [("203.0.113.1", "net1")]
    ok(client.run("check", net, topo.pod, args=args, container_id="ctr1"))
    for spy in ("mh-spy-caps", "mh-spy-bare"):
        assert _seen(spydir, "ADD", spy)[0]["args"] == {"cni": cni_args}
    ok(client.run("del", net, topo.pod, args=args, container_id="ctr1"))
    assert kernel(topo.pod) == before
    assert leases(tmp_path / "ipam", name) == {}
