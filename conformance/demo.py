"""The demo (``make demo``): our plugins driven by libcni in network namespaces.

It builds a throwaway topology on this machine, never touching its own
interfaces: a "host" namespace holding a veth end as the master, a peer
namespace at the other end, and a pod namespace. Then it runs the demo
conflist through build/cnitool (ADD, CHECK, DEL) from inside the host
namespace, as Multus would, and shows what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CNITOOL = ROOT / "build" / "cnitool"
CNI_PATH = f"{ROOT / 'build' / 'cni-bin'}:/usr/lib/cni"
TAG = f"mhdemo{os.getpid() % 10000}"


def sh(*cmd: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, check=False)
    if check and proc.returncode != 0:
        sys.exit(f"demo: {' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def conflist(datadir: str) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "demo-vlan200",
        "plugins": [
            {
                "type": "mh-noop",
                "ipam": {
                    "type": "host-local",
                    "dataDir": datadir,
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
            {"type": "mh-noop"},
        ],
    }


def main() -> int:
    host, peer, pod = f"{TAG}-host", f"{TAG}-peer", f"{TAG}-pod"
    with tempfile.TemporaryDirectory(prefix="mhdemo") as tmp:
        confdir = Path(tmp, "net.d")
        confdir.mkdir()
        (confdir / "demo.conflist").write_text(json.dumps(conflist(f"{tmp}/ipam"), indent=2))
        try:
            for ns in (host, peer, pod):
                sh("ip", "netns", "add", ns)
            sh(
                "ip",
                "-n",
                host,
                "link",
                "add",
                "eno1",
                "type",
                "veth",
                "peer",
                "name",
                "gw0",
                "netns",
                peer,
            )
            sh("ip", "-n", host, "link", "set", "eno1", "up")
            env = {
                "PATH": os.environ["PATH"],
                "NETCONFPATH": str(confdir),
                "CNI_PATH": CNI_PATH,
                "CNI_IFNAME": "net1",
                "CNI_CACHE_DIR": f"{tmp}/cache",
            }
            pod_path = f"/run/netns/{pod}"
            print(f"== namespaces: host={host} (master eno1), peer={peer}, pod={pod}")
            for command in ("add", "check", "del"):
                out = sh(
                    "ip",
                    "netns",
                    "exec",
                    host,
                    str(CNITOOL),
                    command,
                    "demo-vlan200",
                    pod_path,
                    env=env,
                )
                print(f"== cnitool {command}: ok")
                if out.strip():
                    print(json.dumps(json.loads(out), indent=2))
            leases = sorted(p.name for p in Path(tmp, "ipam", "demo-vlan200").iterdir())
            print(f"== lease store after DEL: {leases}")
        finally:
            for ns in (pod, peer, host):
                sh("ip", "netns", "del", ns, check=False)
    print("== demo finished; namespaces removed")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("demo: run as root (it creates network namespaces)")
    sys.exit(main())
