"""Pod-start latency of a macvlan ADD, ours beside the reference, IPv4-only and dual stack.

Every variant runs through build/cnitool (libcni), interleaved round by round
so all see the same machine noise: mh-macvlan + mh-ipam, and Debian's
macvlan + host-local. The reference waits for IPv6 DAD on every dual-stack
ADD (about 2 s); ours must not: its dual-stack ADD should cost at most 1.5x
its IPv4-only ADD.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CNITOOL = ROOT / "build" / "cnitool"
CNI_PATH = f"{ROOT / 'build' / 'cni-bin'}:/usr/lib/cni"
V4 = [{"subnet": "203.0.113.0/24", "gateway": "203.0.113.1"}]
V6 = [{"subnet": "2001:db8:200::/64", "gateway": "2001:db8:200::1"}]
VARIANTS = {
    "mh ipv4": ("mh-macvlan", "mh-ipam", [V4]),
    "mh dual": ("mh-macvlan", "mh-ipam", [V4, V6]),
    "ref ipv4": ("macvlan", "host-local", [V4]),
    "ref dual": ("macvlan", "host-local", [V4, V6]),
}


def sh(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True)


def conflist(name: str, main: str, ipam: str, ranges: list[Any], datadir: str) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": main,
                "master": "eno1",
                "mode": "bridge",
                "ipam": {
                    "type": ipam,
                    "dataDir": datadir,
                    "ranges": ranges,
                    "routes": [{"dst": "0.0.0.0/0"}]
                    + ([{"dst": "::/0"}] if len(ranges) > 1 else []),
                },
            }
        ],
    }


def timed(host: str, env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        ["ip", "netns", "exec", host, str(CNITOOL), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cnitool {' '.join(args)} failed: {proc.stderr}")
    return elapsed


def run(rounds: int, tag: str) -> dict[str, dict[str, float]]:
    host, peer, pod = f"{tag}h", f"{tag}g", f"{tag}p"
    times: dict[str, dict[str, list[float]]] = {v: {"add": [], "del": []} for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="mhbench") as tmp:
        confdir = Path(tmp, "net.d")
        confdir.mkdir()
        for i, (main, ipam, ranges) in enumerate(VARIANTS.values()):
            doc = conflist(f"net{i}", main, ipam, ranges, f"{tmp}/ipam")
            (confdir / f"net{i}.conflist").write_text(json.dumps(doc))
        env = {
            "PATH": os.environ["PATH"],
            "NETCONFPATH": str(confdir),
            "CNI_PATH": CNI_PATH,
            "CNI_IFNAME": "net1",
            "CNI_CACHE_DIR": f"{tmp}/cache",
        }
        for ns in (host, peer, pod):
            sh("ip", "netns", "add", ns)
        try:
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
            sh("ip", "-n", peer, "link", "set", "gw0", "up")
            for _ in range(rounds):
                for i, variant in enumerate(VARIANTS):
                    times[variant]["add"].append(
                        timed(host, env, "add", f"net{i}", f"/run/netns/{pod}")
                    )
                    times[variant]["del"].append(
                        timed(host, env, "del", f"net{i}", f"/run/netns/{pod}")
                    )
        finally:
            for ns in (pod, peer, host):
                subprocess.run(["ip", "netns", "del", ns], check=False)
    return {
        v: {f"{cmd}_median_ms": round(statistics.median(s) * 1000, 1) for cmd, s in cmds.items()}
        for v, cmds in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "link.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_link: run as root")
    res = run(args.rounds, f"mhb{os.getpid() % 10000}")
    print(f"macvlan ADD/DEL through libcni, {args.rounds} interleaved rounds (median ms)")
    for variant, row in res.items():
        print(f"  {variant:<9} ADD {row['add_median_ms']:>8}   DEL {row['del_median_ms']:>7}")
    ours = res["mh dual"]["add_median_ms"] / res["mh ipv4"]["add_median_ms"]
    ref = res["ref dual"]["add_median_ms"] / res["ref ipv4"]["add_median_ms"]
    print(f"  dual-stack ADD / IPv4 ADD: ours {ours:.2f}x (target <= 1.5x), reference {ref:.1f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "date": time.strftime("%F"),
                "machine": os.uname().nodename,
                "link_add": res,
                "dual_over_v4": {"ours": round(ours, 2), "reference": round(ref, 1)},
            },
            indent=2,
        )
    )
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
