"""The demo (``make demo``): the abcdesktop VLAN setup, run through libcni in namespaces.

It builds a throwaway topology on this machine, never touching its own
interfaces: a "host" namespace whose veth end ``eno1.200`` plays the VLAN
master, a "router" namespace at the other end holding the VLAN's gateways
(203.0.113.1 and 2001:db8:200::1), and a pod namespace with a cluster
interface ``eth0`` (10.0.0.64, default route) as under Multus. It then runs
the seed's dual-stack network through build/cnitool from inside the host
namespace, as Multus would: mh-macvlan + mh-ipam give net1 its addresses,
mh-sbr makes replies leave by net1, and mh-route sends all public IPv4 and
IPv6 through the VLAN while private ranges stay on eth0. Then: a look at the
pod, pings through net1, CHECK, DEL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CNITOOL = ROOT / "build" / "cnitool"
CNI_PATH = f"{ROOT / 'build' / 'cni-bin'}:/usr/lib/cni"
TAG = f"mhdemo{os.getpid() % 10000}"
GW4, GW6 = "203.0.113.1", "2001:db8:200::1"


def sh(*cmd: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, check=False)
    if check and proc.returncode != 0:
        sys.exit(f"demo: {' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def conflist(datadir: str) -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": "macvlan-conf-1",
        "plugins": [
            {
                "type": "mh-macvlan",
                "master": "eno1.200",
                "mode": "bridge",
                "ipam": {
                    "type": "mh-ipam",
                    "dataDir": datadir,
                    "ranges": [
                        [
                            {
                                "subnet": "203.0.113.0/24",
                                "rangeStart": "203.0.113.10",
                                "rangeEnd": "203.0.113.50",
                                "gateway": GW4,
                            }
                        ],
                        [
                            {
                                "subnet": "2001:db8:200::/64",
                                "rangeStart": "2001:db8:200::10",
                                "rangeEnd": "2001:db8:200::ff",
                                "gateway": GW6,
                            }
                        ],
                    ],
                },
            },
            {"type": "mh-sbr", "addSourceHints": True},
            {
                "type": "mh-route",
                "presets": ["public-ipv4", "default-ipv6"],
                "stateDir": f"{datadir}/route-state",
            },
        ],
    }


def topology(host: str, router: str, pod: str) -> None:
    for ns in (host, router, pod):
        sh("ip", "netns", "add", ns)
    sh(
        "ip",
        "-n",
        host,
        "link",
        "add",
        "eno1.200",
        "type",
        "veth",
        "peer",
        "name",
        "vlan200",
        "netns",
        router,
    )
    sh("ip", "-n", host, "link", "set", "eno1.200", "up")
    sh("ip", "-n", router, "link", "set", "vlan200", "up")
    sh("ip", "-n", router, "addr", "add", f"{GW4}/24", "dev", "vlan200")
    sh("ip", "-n", router, "addr", "add", f"{GW6}/64", "dev", "vlan200", "nodad")
    sh("ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "cluster0")
    sh("ip", "-n", pod, "addr", "add", "10.0.0.64/24", "dev", "eth0")
    sh("ip", "-n", pod, "link", "set", "eth0", "up")
    sh("ip", "-n", pod, "link", "set", "cluster0", "up")
    sh("ip", "-n", pod, "route", "add", "default", "via", "10.0.0.1", "dev", "eth0")


def cnitool(host: str, env: dict[str, str], command: str, pod_path: str) -> str:
    start = time.perf_counter()
    out = sh(
        "ip", "netns", "exec", host, str(CNITOOL), command, "macvlan-conf-1", pod_path, env=env
    )
    print(f"== cnitool {command}: ok ({(time.perf_counter() - start) * 1000:.0f} ms)")
    return out


def main() -> int:
    host, router, pod = f"{TAG}-host", f"{TAG}-router", f"{TAG}-pod"
    with tempfile.TemporaryDirectory(prefix="mhdemo") as tmp:
        confdir = Path(tmp, "net.d")
        confdir.mkdir()
        (confdir / "macvlan-conf-1.conflist").write_text(json.dumps(conflist(f"{tmp}/ipam")))
        env = {
            "PATH": os.environ["PATH"],
            "NETCONFPATH": str(confdir),
            "CNI_PATH": CNI_PATH,
            "CNI_IFNAME": "net1",
            "CNI_CACHE_DIR": f"{tmp}/cache",
        }
        pod_path = f"/run/netns/{pod}"
        try:
            topology(host, router, pod)
            print(f"== namespaces: host={host} (master eno1.200), router={router}, pod={pod}")
            print(json.dumps(json.loads(cnitool(host, env, "add", pod_path)), indent=2))
            print("== in the pod:")
            print(sh("ip", "-n", pod, "-br", "addr", "show", "net1"), end="")
            print(sh("ip", "-n", pod, "rule", "show"), end="")
            routes = sh("ip", "-n", pod, "route", "show", "dev", "net1").splitlines()
            print(f"main table: {len(routes)} IPv4 routes via net1, e.g. {routes[0]}")
            for dst in (
                "8.8.8.8",
                "192.169.1.1",
                "10.1.2.3",
                "172.16.5.5",
                "192.168.7.7",
                "2001:4860::8888",
            ):
                dev = json.loads(sh("ip", "-n", pod, "-j", "route", "get", dst))[0]["dev"]
                print(f"   {dst:<16} -> {dev}")
            for target in (GW4, GW6):
                sh("ip", "netns", "exec", pod, "ping", "-c", "1", "-W", "3", target)
                print(f"== ping {target} through net1: answered")
            cnitool(host, env, "check", pod_path)
            cnitool(host, env, "del", pod_path)
            leases = sorted(p.name for p in Path(tmp, "ipam", "macvlan-conf-1").iterdir())
            print(f"== pod links after DEL: {sh('ip', '-n', pod, '-br', 'link').split()[0]}")
            print(f"== lease store after DEL: {leases}")
        finally:
            for ns in (pod, router, host):
                sh("ip", "netns", "del", ns, check=False)
    print("== demo finished; namespaces removed")
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("demo: run as root (it creates network namespaces)")
    sys.exit(main())
