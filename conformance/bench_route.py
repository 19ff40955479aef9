"""How long mh-route takes to install a computed route set.

In a throwaway namespace with an interface on 203.0.113.0/24, it times the
kernel step of mh-route (reading the routes it may replace, then one batch
of adds) for the public-ipv4 preset (47 prefixes), warm in-process as the
daemon runs it, and also the set's removal. Target: under 20 ms.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "pkgroot"))

from multihome.lib import rtnl  # noqa: E402
from multihome.lib.result import IPConfig, Result  # noqa: E402
from multihome.plugins import route  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "route.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_route: run as root")
    ns = f"mhbr{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (
            ["link", "add", "net1", "type", "veth", "peer", "name", "peer1"],
            ["addr", "add", "203.0.113.10/24", "dev", "net1"],
            ["link", "set", "net1", "up"],
            ["link", "set", "peer1", "up"],
        ):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        conf = route.RouteConf.model_validate(
            {"name": "b", "type": "mh-route", "presets": ["public-ipv4"]}
        )
        prev = Result(
            ips=[
                IPConfig(
                    address=ipaddress.ip_interface("203.0.113.10/24"),
                    gateway=ipaddress.ip_address("203.0.113.1"),
                )
            ]
        )
        add_ms, del_ms = [], []
        with rtnl.in_netns(f"/run/netns/{ns}") as (_, sock):
            for _ in range(args.rounds):
                start = time.perf_counter()
                the_plan = route.plan(conf, prev, "net1")
                state = route.apply(sock, the_plan, "net1")
                add_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                added, _ = route._resolve(sock, state)
                route.undo(sock, added, [])
                del_ms.append((time.perf_counter() - start) * 1000)
        count = len(the_plan.add)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    add_ms.sort()
    report = {
        "prefixes": count,
        "rounds": args.rounds,
        "install_median_ms": round(statistics.median(add_ms), 2),
        "install_p90_ms": round(add_ms[int(len(add_ms) * 0.9) - 1], 2),
        "remove_median_ms": round(statistics.median(del_ms), 2),
    }
    print(f"mh-route: public-ipv4 set ({count} prefixes), {args.rounds} rounds, warm")
    print(
        f"  plan + install: median {report['install_median_ms']} ms, p90 "
        f"{report['install_p90_ms']} ms (target < 20 ms)"
    )
    print(f"  removal:        median {report['remove_median_ms']} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
