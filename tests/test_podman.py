"""End to end in a real runtime: podman 4.3's CNI backend runs our frozen plugins.

podman runs inside the test's "host" namespace (nsenter --net only: runc
needs the real /sys/fs/cgroup, which ``ip netns exec`` would hide), so the
master is the veth the test made there. A busybox container asks for the
network as net1; the test reads what the container saw, then checks that the
DEL podman sends on --rm left no lease behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance import nodeimage
from tests.conftest import Topology
from tests.rig import ROOT

DIST_BIN = ROOT / "dist" / "cni-bin"
PODMAN = shutil.which("podman") or "/usr/bin/podman"
BUSYBOX = "/bin/busybox"
pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_tool(PODMAN),
    pytest.mark.needs_tool(BUSYBOX),
    pytest.mark.needs_tool(str(ROOT / "dist" / "bundle" / "multihome" / "MANIFEST")),
]
NET = "mh-podman-e2e"


def rootfs(base: Path) -> Path:
    root = base / "rootfs"
    for sub in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "run"):
        (root / sub).mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s"], check=True)
    return root


def podman_config(base: Path) -> dict[str, str]:
    (base / "net.d").mkdir()
    backend = f'network_backend = "cni"\ncni_plugin_dirs = ["{DIST_BIN}", "/usr/lib/cni"]\n'
    return nodeimage.podman_config(base, backend)


def test_busybox_gets_net1_from_the_frozen_plugins(topo: Topology, tmp_path: Path) -> None:
    topo.peer.ip("addr", "add", "203.0.113.1/24", "dev", "mhp0")
    env = podman_config(tmp_path)
    conf = {
        "cniVersion": "1.0.0",
        "name": NET,
        "plugins": [
            {
                "type": "mh-macvlan",
                "master": topo.master,
                "ipam": {
                    "type": "mh-ipam",
                    "dataDir": str(tmp_path / "ipam"),
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
                },
            },
            {"type": "mh-route", "presets": ["public-ipv4"], "stateDir": str(tmp_path / "state")},
        ],
    }
    (tmp_path / "net.d" / f"{NET}.conflist").write_text(json.dumps(conf))
    script = (
        "ip -o -4 addr show net1; echo ROUTES $(ip route | grep -c 'via 203.0.113.1 dev net1');"
        " ping -c 1 -W 3 203.0.113.1 >/dev/null && echo PING-OK"
    )
    cmd = [
        "nsenter",
        f"--net={topo.host.path}",
        PODMAN,
        "run",
        "--rm",
        "--network",
        f"{NET}:interface_name=net1",
        "--rootfs",
        str(rootfs(tmp_path)),
        "/bin/sh",
        "-c",
        script,
    ]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, check=False, timeout=120
        )
    finally:
        for cached in Path("/var/lib/cni/results").glob(f"{NET}-*"):
            cached.unlink()  # podman 4.3's cache cannot be moved; take ours out
    assert proc.returncode == 0, proc.stderr
    assert "inet 203.0.113.10/24" in proc.stdout
    assert "ROUTES 47" in proc.stdout and "PING-OK" in proc.stdout
    leases = sorted(p.name for p in (tmp_path / "ipam" / NET).iterdir())
    assert leases == ["last_reserved_ip.0", "lock"], "podman's DEL must release the lease"
    assert not list((tmp_path / "state").rglob("*.json"))
