"""libcni drives a conflist of our plugins in namespaces, as Multus would.

The chain is mh-noop (delegating to the reference host-local from Debian's
containernetworking-plugins, a real IPAM) followed by a chained mh-noop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Topology
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool
from tests.shapes import check_result

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_tool(str(CNIBIN / "mh-noop")),
    pytest.mark.needs_tool(str(REFERENCE_BIN / "host-local")),
]
# Debian's libcni 1.1.2 and host-local 1.1.1 speak up to spec 1.0.0.
LIBCNI_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")


def conflist(version: str, datadir: Path) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "noopnet",
        "plugins": [
            {
                "type": "mh-noop",
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(datadir),
                    "ranges": [
                        [
                            {
                                "subnet": "203.0.113.0/24",
                                "rangeStart": "203.0.113.10",
                                "rangeEnd": "203.0.113.50",
                                "gateway": "203.0.113.1",
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "mh-noop"},
        ],
    }


def leases(datadir: Path) -> list[str]:
    netdir = datadir / "noopnet"
    skip = {"lock"}
    return sorted(
        p.name
        for p in netdir.iterdir()
        if p.name not in skip and not p.name.startswith("last_reserved_ip")
    )


@pytest.mark.parametrize("version", LIBCNI_VERSIONS)
def test_add_check_del(version: str, topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    datadir = tmp_path / "ipam"
    net = cnitool.write(conflist(version, datadir))
    add = cnitool.run("add", net, topo.pod)
    assert add.returncode == 0, add.stderr
    doc = json.loads(add.stdout)
    check_result(doc, version)
    assert doc["ips"][0]["address"] == "203.0.113.10/24"
    assert doc["ips"][0]["gateway"] == "203.0.113.1"
    assert leases(datadir) == ["203.0.113.10"]
    cache = list((tmp_path / "cache").rglob("*noopnet*"))
    assert cache, "libcni cached the result"

    check = cnitool.run("check", net, topo.pod)
    if version >= "0.4.0":
        assert check.returncode == 0, check.stderr
    else:  # libcni refuses CHECK below 0.4.0 itself
        assert check.returncode != 0

    delete = cnitool.run("del", net, topo.pod)
    assert delete.returncode == 0, delete.stderr
    assert leases(datadir) == []
    again = cnitool.run("del", net, topo.pod)
    assert again.returncode == 0, again.stderr


def test_cni_args_and_capabilities_reach_the_plugins(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    datadir = tmp_path / "ipam"
    conf = conflist("1.0.0", datadir)
    conf["plugins"][0]["capabilities"] = {"ips": True}
    net = cnitool.write(conf)
    add = cnitool.run(
        "add",
        net,
        topo.pod,
        args="IgnoreUnknown=1;K8S_POD_NAME=web-0",
        cap_args={"ips": ["203.0.113.33/24"]},
    )
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["ips"][0]["address"] == "203.0.113.33/24"
    assert cnitool.run("del", net, topo.pod).returncode == 0
    assert leases(datadir) == []


def test_validate_runs_version_on_every_plugin(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    net = cnitool.write(conflist("1.0.0", tmp_path / "ipam"))
    proc = cnitool.run("validate", net, topo.pod)
    assert proc.returncode == 0, proc.stderr


def test_failing_ipam_fails_add(topo: Topology, cnitool: Cnitool, tmp_path: Path) -> None:
    conf = conflist("1.0.0", tmp_path / "ipam")
    conf["plugins"][0]["ipam"]["ranges"] = [
        [{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10", "rangeEnd": "203.0.113.10"}]
    ]
    net = cnitool.write(conf)
    first = cnitool.run("add", net, topo.pod, container_id="first")
    assert first.returncode == 0, first.stderr
    second = cnitool.run("add", net, topo.pod, container_id="second")
    assert second.returncode != 0
    assert "no IP addresses available" in second.stderr
    assert cnitool.run("del", net, topo.pod, container_id="first").returncode == 0
