"""``make bench``: multihome beside the Go reference plugins, in one interleaved run.

Everything goes through build/cnitool (libcni), in throwaway namespaces:

- ADD, CHECK and DEL of mh-macvlan + mh-ipam + mh-route (public-ipv4) + mh-sbr,
  frozen (dist/cni-bin), in thick mode (a frozen ``multihome daemon``), with
  no daemon (each plugin runs in its own process), and as deployed: the node
  image built with podman (conformance/nodeimage.py), its daemon container
  serving the binaries its init container installed into a node root;
- the closest reference chain: macvlan + host-local + sbr, with the same 47
  routes given through host-local's ``routes``;
- IPv4-only and dual stack, round-robin so all variants see the same noise.

CPU seconds per pod ADD: user + sys of every process of the call (the libcni
client, the plugins it execs, their children) plus, in thick mode, what the
daemon spent meanwhile (its /proc/<pid>/stat; calls run one at a time).

Also: VERSION per plugin (ours frozen, theirs), mh-ipam allocations per second
at 30,000 leases, and 50 concurrent pod ADDs (wall time, distinct addresses).
Prints the table and writes build/bench/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
TICK = os.sysconf("SC_CLK_TCK")
REF = Path("/usr/lib/cni")
GW4, GW6 = "203.0.113.1", "2001:db8:200::1"
V4 = [{"subnet": "203.0.113.0/24", "gateway": GW4}]
V6 = [{"subnet": "2001:db8:200::/64", "gateway": GW6}]


def sh(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True)


def ours(name: str, ranges: list[Any], tmp: str) -> dict[str, Any]:
    """Our chain; its lease and state directories under ``tmp`` (the node root's
    var/lib/cni for the deployed variant: the same path inside its container)."""
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

    def env(self, socket: str, bindir: Path | None = None) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "NETCONFPATH": str(self.confdir),
            "CNI_PATH": f"{bindir or OURS}:{REF}",
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


def cpu_seconds(pid: int) -> float:
    """user + sys of a running process, all its threads (0 for none)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Variant:
    """One chain as run: its socket, the CNI_PATH of ours, the daemon's pid, its state dir."""

    def __init__(
        self, socket: str, bindir: Path | None = None, pid: int = 0, tmp: str = ""
    ) -> None:
        self.socket, self.bindir, self.pid, self.tmp = socket, bindir or OURS, pid, tmp


def chains(
    rig: Rig, rounds: int, variants_of: dict[str, Variant], stacks: list[str]
) -> dict[str, Any]:
    variants: dict[str, Variant] = {}
    for stack, ranges in (("ipv4", [V4]), ("dual", [V4, V6])):
        if stack not in stacks:
            continue
        for kind, variant in variants_of.items():
            name = f"{kind}-{stack}"
            build = reference if kind == "reference" else ours
            conf = build(name, ranges, variant.tmp or rig.tmp)
            (rig.confdir / f"{name}.conflist").write_text(json.dumps(conf))
            variants[name] = variant
    times: dict[str, dict[str, list[float]]] = {
        v: {"add": [], "check": [], "del": [], "add_cpu": []} for v in variants
    }
    failures: dict[str, set[str]] = {v: set() for v in variants}
    pod = rig.pod()
    for _ in range(rounds):
        for name, variant in variants.items():
            env = rig.env(variant.socket, variant.bindir)
            for command in ("add", "check", "del"):
                cpu = children_cpu() + cpu_seconds(variant.pid)
                elapsed, ok, out = rig.cnitool(env, command, name, pod)
                if command == "add":
                    spent = children_cpu() + cpu_seconds(variant.pid) - cpu
                    times[name]["add_cpu"].append(spent)
                times[name][command].append(elapsed)
                if not ok:
                    failures[name].add(command)
                    if command == "add":
                        raise SystemExit(f"{name} ADD failed: {out}")
    return {
        name: {
            **{
                cmd: {**stats(s), "fails": cmd in failures[name]}
                for cmd, s in cmds.items()
                if cmd != "add_cpu"
            },
            "add_cpu_s": round(sorted(cmds["add_cpu"])[len(cmds["add_cpu"]) // 2], 3),
        }
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
    print("CPU seconds per pod ADD (median; client + plugins + the daemon's share):")
    print("  " + ", ".join(f"{n} {c['add_cpu_s']:.3f}" for n, c in report["chains"].items()))
    for stack in ("ipv4", "dual"):
        if f"reference-{stack}" not in report["chains"]:
            continue
        ref = report["chains"][f"reference-{stack}"]
        for kind in ("ours-thick", "ours-deployed", "ours-no-daemon"):
            mine = report["chains"].get(f"{kind}-{stack}")
            if mine is None:
                continue
            ratios = "  ".join(
                f"{cmd.upper()} {mine[cmd]['median_ms'] / ref[cmd]['median_ms']:.2f}x"
                for cmd in ("add", "check", "del")
            )
            cpu = mine["add_cpu_s"] / ref["add_cpu_s"]
            print(f"ratio {kind}/reference ({stack}): {ratios}  ADD CPU {cpu:.2f}x")
    chains = report["chains"]
    if "ours-thick-dual" in chains and "ours-thick-ipv4" in chains:
        ours_dual = chains["ours-thick-dual"]["add"]["median_ms"]
        ours_v4 = chains["ours-thick-ipv4"]["add"]["median_ms"]
        ref_ratio = (
            chains["reference-dual"]["add"]["median_ms"]
            / chains["reference-ipv4"]["add"]["median_ms"]
        )
        print(
            f"dual-stack ADD / IPv4 ADD (thick): {ours_dual / ours_v4:.2f}x; "
            f"reference {ref_ratio:.1f}x"
        )
    if "version_ms" not in report:
        return
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


def deployed(tmp: str, dist: Path) -> tuple[Any, Any, Variant]:
    """The node image built and its DaemonSet containers run on a node root in ``tmp``."""
    from nodeimage import Node, Podman  # (from conformance/)

    podman = Podman(Path(tmp, "podman"))
    podman.build_image(dist.parent)
    node = Node(podman, Path(tmp, "node"))
    node.install()
    node.start()
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", node.name).stdout)
    return podman, node, Variant(str(node.sock), node.cni_bin, pid, str(node.state))


def main() -> int:
    global OURS  # noqa: PLW0603 - --dist picks the bundle every helper here runs
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "report.json")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="make dist's output")
    parser.add_argument("--stacks", default="ipv4,dual", help="ipv4, dual or both")
    parser.add_argument(
        "--chains-only", action="store_true", help="only the chains and their CPU seconds"
    )
    parser.add_argument(
        "--no-deployed", action="store_true", help="skip the image build and its daemon"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    OURS = args.dist / "cni-bin"
    import bench_ipam  # from conformance/

    tag = f"mhb{os.getpid() % 10000}"
    with tempfile.TemporaryDirectory(prefix="mhbench") as tmp:
        socket = f"{tmp}/run/mh.sock"
        log = Path(tmp, "daemon.log").open("w")  # noqa: SIM115 - open as long as the daemon
        daemon = subprocess.Popen(
            [str(OURS / "multihome"), "daemon", "--socket", socket], stderr=log
        )
        rig = Rig(tag, tmp)
        podman = node = None
        try:
            variants = {
                "ours-thick": Variant(socket, pid=daemon.pid),
                "ours-no-daemon": Variant("/none"),
                "reference": Variant("/none"),
            }
            if not args.no_deployed:
                podman, node, variants["ours-deployed"] = deployed(tmp, args.dist)
            deadline = time.monotonic() + 30
            while not Path(socket).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            report: dict[str, Any] = {
                "date": time.strftime("%F"),
                "machine": os.uname().nodename,
                "cpus": os.cpu_count(),
                "rounds": args.rounds,
            }
            report["chains"] = chains(rig, args.rounds, variants, args.stacks.split(","))
            if not args.chains_only:
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
            daemon.wait(timeout=30)
            log.close()
            if node is not None:
                node.remove()
            if podman is not None:
                podman.remove()
    print_report(report)
    bench_ipam.write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
