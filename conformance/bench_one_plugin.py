"""``make bench``: the abcdesktop network as ONE plugin against the reference.

The seed NAD keeps its 47 public prefixes in the IPAM's ``routes``. Through
build/cnitool (libcni), in throwaway namespaces, round-robin so all variants see
the same noise:

- reference: macvlan + host-local with the pasted 47-route list;
- ours, pasted: mh-macvlan + in-process mh-ipam with the same pasted list;
- ours, preset: mh-macvlan + in-process mh-ipam whose ``routes`` name the set
  (``{"presets": ["public-ipv4"]}``);

each of ours in thick mode (a ``multihome daemon``) and with no daemon. Prints
median ADD and DEL in ms and ADD relative to the reference; writes
build/bench/one_plugin.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "pkgroot"))
sys.path.insert(0, str(ROOT / "conformance"))

from bench import GW4, V4, Rig, stats  # noqa: E402  (from conformance/)
from bench_ipam import write_report  # noqa: E402

from multihome.plugins import routesets  # noqa: E402

PASTED = [{"dst": str(n), "gw": GW4} for n in routesets.compute(["public-ipv4"])]


def conf(name: str, kind: str, tmp: str) -> dict[str, Any]:
    link, ipam = ("macvlan", "host-local") if kind == "reference" else ("mh-macvlan", "mh-ipam")
    routes = [{"presets": ["public-ipv4"]}] if kind == "preset" else PASTED
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": link,
                "master": "eno1",
                "ipam": {"type": ipam, "dataDir": f"{tmp}/ipam", "ranges": [V4], "routes": routes},
            }
        ],
    }


def run(rig: Rig, bindir: Path, socket: str, rounds: int) -> dict[str, Any]:
    variants = {
        "reference": ("reference", "/none"),
        "ours-pasted-thick": ("pasted", socket),
        "ours-preset-thick": ("preset", socket),
        "ours-pasted-no-daemon": ("pasted", "/none"),
        "ours-preset-no-daemon": ("preset", "/none"),
    }
    for name, (kind, _) in variants.items():
        (rig.confdir / f"{name}.conflist").write_text(json.dumps(conf(name, kind, rig.tmp)))
    times: dict[str, dict[str, list[float]]] = {v: {"add": [], "del": []} for v in variants}
    pod = rig.pod()
    for _ in range(rounds):
        for name, (_, sock) in variants.items():
            env = rig.env(sock, bindir)
            for command in ("add", "del"):
                elapsed, ok, out = rig.cnitool(env, command, name, pod)
                if not ok:
                    raise SystemExit(f"{name} {command} failed: {out}")
                times[name][command].append(elapsed)
    return {name: {cmd: stats(s) for cmd, s in cmds.items()} for name, cmds in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--bindir", type=Path, default=ROOT / "build" / "cni-bin")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "one_plugin.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_one_plugin: run as root")
    tag = f"mho{os.getpid() % 10000}"
    with tempfile.TemporaryDirectory(prefix="mhbench1") as tmp:
        socket = f"{tmp}/run/mh.sock"
        daemon = subprocess.Popen(
            [str(args.bindir / "multihome"), "daemon", "--socket", socket],
            stderr=subprocess.DEVNULL,
        )
        rig = Rig(tag, tmp)
        try:
            deadline = time.monotonic() + 30
            while not Path(socket).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            report = run(rig, args.bindir, socket, args.rounds)
        finally:
            rig.close()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    ref = report["reference"]["add"]["median_ms"]
    print(f"one-plugin abcdesktop, 47 public routes, {args.bindir}, {args.rounds} rounds")
    print(f"{'variant':26} {'ADD ms':>8} {'DEL ms':>8} {'ADD/ref':>8}")
    for name, cmds in report.items():
        add, dele = cmds["add"]["median_ms"], cmds["del"]["median_ms"]
        print(f"{name:26} {add:8.1f} {dele:8.1f} {add / ref:8.2f}")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
