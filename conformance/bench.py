"""``make bench``: multihome beside the Go reference plugins, in one interleaved run.

Everything goes through build/cnitool (libcni), in throwaway namespaces:

- ADD, CHECK and DEL of mh-macvlan + mh-ipam + mh-route (public-ipv4) + mh-sbr,
  frozen (dist/cni-bin), in thick mode (a frozen ``multihome daemon``) and with
  no daemon (each plugin runs in its own process);
- the closest reference chain: macvlan + host-local + sbr, with the same 47
  routes given through host-local's ``routes``;
- IPv4-only and dual stack, round-robin so all variants see the same noise.

Also: VERSION per plugin (ours frozen, theirs), mh-ipam allocations per second
at 30,000 leases, and 50 concurrent pod ADDs (wall time, distinct addresses).
Prints the table and writes build/bench/report.json.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "pkgroot"))
sys.path.insert(0, str(ROOT / "conformance"))

from multihome.plugins import routesets  # noqa: E402

CNITOOL = ROOT / "build" / "cnitool"
OURS = ROOT / "dist" / "cni-bin"
REF = Path("/usr/lib/cni")
GW4, GW6 = "203.0.113.1", "2001:db8:200::1"
V4 = [{"subnet": "203.0.113.0/24", "gateway": GW4}]
V6 = [{"subnet": "2001:db8:200::/64", "gateway": GW6}]


def sh(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True)


def ours(name: str, ranges: list[Any], tmp: str) -> dict[str, Any]:
    presets = ["public-ipv4", "default-ipv6"] if len(ranges) > 1 else ["public-ipv4"]
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "mh-macvlan",
                "master": "eno1",
                "ipam": {"type": "mh-ipam", "dataDir": f"{tmp}/ipam", "ranges": ranges},
            },
            {"type": "mh-route", "presets": presets, "stateDir": f"{tmp}/state"},
            {"type": "mh-sbr"},
        ],
    }


def reference(name: str, ranges: list[Any], tmp: str) -> dict[str, Any]:
    gw4 = ranges[0][0]["gateway"]  # the same set mh-route computes, via the subnet's gateway
    routes = [{"dst": str(n), "gw": gw4} for n in routesets.compute(["public-ipv4"])]
    if len(ranges) > 1:
        routes.append({"dst": "::/0", "gw": GW6})
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "macvlan",
                "master": "eno1",
                "ipam": {
                    "type": "host-local",
                    "dataDir": f"{tmp}/ipam",
                    "ranges": ranges,
                    "routes": routes,
                },
            },
            {"type": "sbr"},
        ],
    }


class Rig:
    """host (eno1) -- router (the VLAN's gateways), and pods; libcni runs in host."""

    def __init__(self, tag: str, tmp: str) -> None:
        self.host, self.router = f"{tag}h", f"{tag}r"
        self.tmp = tmp
        self.pods: list[str] = []
        for ns in (self.host, self.router):
            sh("ip", "netns", "add", ns)
        sh(
            "ip",
            "-n",
            self.host,
            "link",
            "add",
            "eno1",
            "type",
            "veth",
            "peer",
            "name",
            "gw0",
            "netns",
            self.router,
        )
        sh("ip", "-n", self.host, "link", "set", "eno1", "up")
        sh("ip", "-n", self.router, "link", "set", "gw0", "up")
        sh("ip", "-n", self.router, "addr", "add", f"{GW4}/24", "dev", "gw0")
        sh("ip", "-n", self.router, "addr", "add", f"{GW6}/64", "dev", "gw0", "nodad")
        self.confdir = Path(tmp, "net.d")
        self.confdir.mkdir()

    def pod(self) -> str:
        name = f"{self.host[:-1]}p{len(self.pods)}"
        sh("ip", "netns", "add", name)
        self.pods.append(name)
        return f"/run/netns/{name}"

    def env(self, socket: str) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "NETCONFPATH": str(self.confdir),
            "CNI_PATH": f"{OURS}:{REF}",
            "CNI_IFNAME": "net1",
            "CNI_CACHE_DIR": f"{self.tmp}/cache",
            "MULTIHOME_SOCKET": socket,
        }

    def cnitool(self, env: dict[str, str], *args: str) -> tuple[float, bool, str]:
        start = time.perf_counter()
        proc = subprocess.run(
            ["ip", "netns", "exec", self.host, str(CNITOOL), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        return time.perf_counter() - start, proc.returncode == 0, proc.stdout + proc.stderr

    def close(self) -> None:
        for ns in (*self.pods, self.router, self.host):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def stats(samples: list[float]) -> dict[str, float]:
    from bench_ipam import stats as ms  # (from conformance/)

    return ms(samples, digits=1)


def chains(rig: Rig, rounds: int, socket: str) -> dict[str, Any]:
    variants = {}
    for stack, ranges in (("ipv4", [V4]), ("dual", [V4, V6])):
        for kind, build, sock in (
            ("ours-thick", ours, socket),
            ("ours-no-daemon", ours, "/none"),
            ("reference", reference, "/none"),
        ):
            name = f"{kind}-{stack}"
            (rig.confdir / f"{name}.conflist").write_text(json.dumps(build(name, ranges, rig.tmp)))
            variants[name] = sock
    times: dict[str, dict[str, list[float]]] = {
        v: {"add": [], "check": [], "del": []} for v in variants
    }
    failures: dict[str, set[str]] = {v: set() for v in variants}
    pod = rig.pod()
    for _ in range(rounds):
        for name, sock in variants.items():
            for command in ("add", "check", "del"):
                elapsed, ok, out = rig.cnitool(rig.env(sock), command, name, pod)
                times[name][command].append(elapsed)
                if not ok:
                    failures[name].add(command)
                    if command == "add":
                        raise SystemExit(f"{name} ADD failed: {out}")
    return {
        name: {cmd: {**stats(s), "fails": cmd in failures[name]} for cmd, s in cmds.items()}
        for name, cmds in times.items()
    }


def version_times(rounds: int) -> dict[str, float]:
    out = {}
    for label, binary in (
        ("mh-macvlan (frozen)", OURS / "mh-macvlan"),
        ("mh-ipam (frozen)", OURS / "mh-ipam"),
        ("macvlan (reference)", REF / "macvlan"),
    ):
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            subprocess.run(
                [str(binary)],
                env={"CNI_COMMAND": "VERSION"},
                input=b"{}",
                capture_output=True,
                check=True,
            )
            samples.append(time.perf_counter() - start)
        out[label] = stats(samples)["median_ms"]
    return out


def concurrent(rig: Rig, socket: str, count: int = 50) -> dict[str, Any]:
    out = {}
    for kind, build, sock in (("ours-thick", ours, socket), ("reference", reference, "/none")):
        name = f"{kind}-many"
        ranges = [[{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}]]
        (rig.confdir / f"{name}.conflist").write_text(json.dumps(build(name, ranges, rig.tmp)))
        pods = [rig.pod() for _ in range(count)]
        env = rig.env(sock)

        def add(
            i: int, env: dict[str, str] = env, name: str = name, pods: list[str] = pods
        ) -> tuple[bool, str]:
            env = {**env, "CNI_CONTAINERID": f"{name}-{i}"}
            _, ok, text = rig.cnitool(env, "add", name, pods[i])
            address = json.JSONDecoder().raw_decode(text)[0]["ips"][0]["address"] if ok else ""
            return ok, address

        start = time.perf_counter()
        with ThreadPoolExecutor(count) as ex:
            results = list(ex.map(add, range(count)))
        wall = time.perf_counter() - start
        addresses = [a for ok, a in results if ok]
        out[kind] = {
            "wall_s": round(wall, 2),
            "ok": len(addresses),
            "distinct": len(set(addresses)),
            "errors": count - len(addresses),
        }
        with ThreadPoolExecutor(8) as ex:
            list(
                ex.map(
                    lambda i, env=env, name=name, pods=pods: rig.cnitool(
                        {**env, "CNI_CONTAINERID": f"{name}-{i}"}, "del", name, pods[i]
                    ),
                    range(count),
                )
            )
    return out


def print_report(report: dict[str, Any]) -> None:
    print(
        f"multihome bench, {report['date']} on {report['machine']} ({report['cpus']} CPUs), "
        f"{report['rounds']} interleaved rounds, through libcni"
    )
    print(f"{'chain':<22}{'ADD med/p90':>16}{'CHECK med/p90':>18}{'DEL med/p90':>16}")
    for name, cmds in report["chains"].items():
        cells = []
        for cmd in ("add", "check", "del"):
            c = cmds[cmd]
            cells.append(f"{c['median_ms']:.0f}/{c['p90_ms']:.0f}{' FAIL' if c['fails'] else ''}")
        print(f"{name:<22}{cells[0]:>16}{cells[1]:>18}{cells[2]:>16}")
    for stack in ("ipv4", "dual"):
        ref = report["chains"][f"reference-{stack}"]
        for kind in ("ours-thick", "ours-no-daemon"):
            mine = report["chains"][f"{kind}-{stack}"]
            ratios = "  ".join(
                f"{cmd.upper()} {mine[cmd]['median_ms'] / ref[cmd]['median_ms']:.2f}x"
                for cmd in ("add", "check", "del")
            )
            print(f"ratio {kind}/reference ({stack}): {ratios}")
    ours_dual = report["chains"]["ours-thick-dual"]["add"]["median_ms"]
    ours_v4 = report["chains"]["ours-thick-ipv4"]["add"]["median_ms"]
    chains = report["chains"]
    ref_ratio = (
        chains["reference-dual"]["add"]["median_ms"] / chains["reference-ipv4"]["add"]["median_ms"]
    )
    print(
        f"dual-stack ADD / IPv4 ADD (thick): {ours_dual / ours_v4:.2f}x; reference {ref_ratio:.1f}x"
    )
    print("VERSION median ms: " + ", ".join(f"{k} {v}" for k, v in report["version_ms"].items()))
    ipam = report["ipam_30000"]
    print(
        f"IPAM at 30,000 leases: mh-ipam {ipam['mh-ipam']['allocs_per_s']}/s exec'd, "
        f"{ipam['mh-ipam in-process']['allocs_per_s']}/s warm; host-local "
        f"{ipam['host-local']['allocs_per_s']}/s"
    )
    for kind, c in report["concurrent_50"].items():
        print(
            f"50 concurrent ADDs, {kind}: {c['wall_s']} s wall, {c['ok']} ok, "
            f"{c['distinct']} distinct addresses, {c['errors']} errors"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "report.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    import bench_ipam  # from conformance/

    tag = f"mhb{os.getpid() % 10000}"
    with tempfile.TemporaryDirectory(prefix="mhbench") as tmp:
        socket = f"{tmp}/run/mh.sock"
        log = Path(tmp, "daemon.log").open("w")  # noqa: SIM115 - open as long as the daemon
        daemon = subprocess.Popen(
            [str(OURS / "multihome"), "daemon", "--socket", socket], stderr=log
        )
        rig = Rig(tag, tmp)
        try:
            deadline = time.monotonic() + 30
            while not Path(socket).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            report: dict[str, Any] = {
                "date": time.strftime("%F"),
                "machine": os.uname().nodename,
                "cpus": os.cpu_count(),
                "rounds": args.rounds,
            }
            report["chains"] = chains(rig, args.rounds, socket)
            report["version_ms"] = version_times(15)
            report["concurrent_50"] = concurrent(rig, socket)
            ns = f"{tag}i"
            sh("ip", "netns", "add", ns)
            try:
                report["ipam_30000"] = bench_ipam.run_size(30000, 10, f"/run/netns/{ns}")
            finally:
                subprocess.run(["ip", "netns", "del", ns], check=False)
        finally:
            rig.close()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)
            log.close()
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
