"""How long mh-route takes to install a computed route set.

In a throwaway namespace with an interface on 203.0.113.0/24, it times the
kernel step of mh-route (reading the routes it may replace, then one batch
of adds) for the public-ipv4 preset (47 prefixes), warm in-process as the
daemon runs it, and also the set's removal. Target: under 20 ms.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "pkgroot"))

from bench_ipam import stats, write_report  # noqa: E402  (from conformance/)

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
        add_s, del_s = [], []
        with rtnl.in_netns(f"/run/netns/{ns}") as (_, sock):
            for _ in range(args.rounds):
                start = time.perf_counter()
                the_plan = route.plan(conf, prev, "net1")
                state = route.apply(sock, the_plan, "net1")
                add_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                added, _ = route._resolve(sock, state)
                route.undo(sock, added, [])
                del_s.append(time.perf_counter() - start)
        count = len(the_plan.add)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    install, removal = stats(add_s), stats(del_s)
    report = {
        "prefixes": count,
        "rounds": args.rounds,
        "install_median_ms": install["median_ms"],
        "install_p90_ms": install["p90_ms"],
        "remove_median_ms": removal["median_ms"],
    }
    print(f"mh-route: public-ipv4 set ({count} prefixes), {args.rounds} rounds, warm")
    print(
        f"  plan + install: median {report['install_median_ms']} ms, p90 "
        f"{report['install_p90_ms']} ms (target < 20 ms)"
    )
    print(f"  removal:        median {report['remove_median_ms']} ms")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
