"""IPAM benchmarks: allocations per second in a /16 holding N existing leases, and
the per-ADD latency of each lease store (file, etcd with 1 and 3 members).

mh-ipam and the reference host-local (Debian's containernetworking-plugins)
allocate, interleaved, from two copies of one store in host-local's on-disk
format, so both see the same leases and the same machine noise. (On one shared
copy every mh-ipam ADD would follow a host-local write, which mh-ipam notices
and pays for with a rescan; a node runs one of the two.) Each ADD is a real
process exec'd as a runtime would; mh-ipam is also timed in-process, which is
what a warm daemon pays. Sizes default to 1,000 and 30,000 leases, to show
which allocation time grows with the pool.

The store comparison runs mh-ipam (the frozen bundle when ``make dist`` has
built it) on the same pool once per store: the file store, and etcd from
Debian on loopback, one member and three. Each store already holds 1,000
leases. It reports ADD and DEL as processes, and ADD in-process (what the warm
daemon pays, with its etcd connections kept open).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "build" / "pkgroot"))
OURS = ROOT / "build" / "cni-bin" / "mh-ipam"
REFERENCE = Path("/usr/lib/cni/host-local")
NET = "bench16"


def make_store(data_dir: Path, leases: int, net: str = NET, first: str = "10.20.0.2") -> None:
    netdir = data_dir / net
    netdir.mkdir(parents=True)
    base = int(ipaddress.ip_address(first))
    for i in range(leases):
        ip = ipaddress.ip_address(base + i)
        (netdir / str(ip)).write_bytes(f"old{i}\r\neth0".encode())
    (netdir / "last_reserved_ip.0").write_text(str(ipaddress.ip_address(base + leases - 1)))


def config(data_dir: Path) -> bytes:
    doc = {
        "cniVersion": "1.0.0",
        "name": NET,
        "type": "macvlan",
        "ipam": {
            "type": "host-local",
            "dataDir": str(data_dir),
            "ranges": [[{"subnet": "10.20.0.0/16"}]],
        },
    }
    return json.dumps(doc).encode()


def add_env(cid: str, netns: str, cni_path: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": "net1",
        "CNI_PATH": cni_path,
        **{k: v for k, v in os.environ.items() if k == "MULTIHOME_ETCD_CONF"},
    }


def exec_add(binary: Path, stdin: bytes, cid: str, netns: str) -> float:
    env = add_env(cid, netns, str(binary.parent))
    start = time.perf_counter()
    proc = subprocess.run([str(binary)], input=stdin, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{binary} ADD failed: {proc.stdout!r} {proc.stderr!r}")
    return elapsed


def inprocess_add(stdin: bytes, cid: str, netns: str) -> float:
    from multihome.lib import skel  # (the warm-up call pays for the import)

    env = add_env(cid, netns, "/nonexistent")
    start = time.perf_counter()
    out, code, _ = skel.run("mh-ipam", env, stdin)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"in-process mh-ipam ADD failed: {out!r}")
    return elapsed


def run_size(leases: int, rounds: int, netns: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="mhbench") as tmp:
        data_dir, ref_dir = Path(tmp) / "ours", Path(tmp) / "ref"
        make_store(data_dir, leases)
        make_store(ref_dir, leases)
        stdin, ref_stdin = config(data_dir), config(ref_dir)
        inprocess_add(stdin, "warmup", netns)  # imports, and indexes the leases made above
        times: dict[str, list[float]] = {"mh-ipam": [], "mh-ipam in-process": [], "host-local": []}
        for i in range(rounds):
            times["mh-ipam"].append(exec_add(OURS, stdin, f"ours{i}", netns))
            times["host-local"].append(exec_add(REFERENCE, ref_stdin, f"ref{i}", netns))
            times["mh-ipam in-process"].append(inprocess_add(stdin, f"inproc{i}", netns))
    out: dict[str, object] = {"leases": leases, "rounds": rounds}
    for name, samples in times.items():
        median = statistics.median(samples)
        out[name] = {"median_ms": round(median * 1000, 2), "allocs_per_s": round(1 / median, 1)}
    return out


FROZEN = ROOT / "dist" / "cni-bin" / "mh-ipam"
STORE_NET = "benchstore"


def stats(samples: list[float], digits: int = 2) -> dict[str, float]:
    """Median and 90th percentile of ``samples`` (seconds), in ms (bench.py's too)."""
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, digits),
        "p90_ms": round(ordered[max(0, int(len(ordered) * 0.9) - 1)] * 1000, digits),
    }


def write_report(path: Path, report: object) -> None:
    """Write a bench's JSON report under build/bench/ and say where (every bench's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"report: {path}")


def store_config(store: dict[str, object] | None, data_dir: Path) -> bytes:
    ipam: dict[str, object] = {
        "type": "mh-ipam",
        "dataDir": str(data_dir),
        "ranges": [[{"subnet": "10.30.0.0/16"}]],
    }
    if store:
        ipam["store"] = store
    doc = {"cniVersion": "1.1.0", "name": STORE_NET, "type": "macvlan", "ipam": ipam}
    return json.dumps(doc).encode()


def fill_etcd(endpoints: list[str], count: int) -> None:
    """``count`` leases, written as ``multihome leases copy`` writes them."""
    from multihome.ipam.config import EtcdSettings
    from multihome.ipam.etcdclient import b64
    from multihome.ipam.etcdstore import EtcdStore, stamp

    store = EtcdStore(EtcdSettings(tuple(endpoints), "/multihome/ipam", 10.0, "bench"), STORE_NET)
    base = int(ipaddress.ip_address("10.30.0.2"))
    for i in range(count):
        store.create((f"old{i}", "eth0"), [ipaddress.ip_address(base + i)], "bench", stamp())
    # The cursor, as the file store's last_reserved_ip.0 has it.
    last = str(ipaddress.ip_address(base + count - 1))
    put = {"request_put": {"key": b64(store.cursor_key(0)), "value": b64(last)}}
    store.client.txn([], [put])


def time_store(stdin: bytes, binary: Path, netns: str, rounds: int) -> dict[str, object]:
    from multihome.lib import log, skel

    log.configure("bench", to_stderr=False)  # (the in-process DELs log what they release)
    inprocess_add(stdin, "warmup", netns)
    adds, dels, warm = [], [], []
    for i in range(rounds):
        adds.append(exec_add(binary, stdin, f"x{i}", netns))
        env = {**add_env(f"x{i}", netns, str(binary.parent)), "CNI_COMMAND": "DEL"}
        start = time.perf_counter()
        proc = subprocess.run([str(binary)], input=stdin, env=env, capture_output=True, check=False)
        dels.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"DEL failed: {proc.stdout!r}")
        warm.append(inprocess_add(stdin, f"w{i}", netns))
        skel.run("mh-ipam", {**add_env(f"w{i}", netns, "/x"), "CNI_COMMAND": "DEL"}, stdin)
    return {"add": stats(adds), "del": stats(dels), "add_in_process": stats(warm)}


def run_stores(rounds: int, netns: str, leases: int = 1000) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from conformance import etcdrig

    binary = FROZEN if FROZEN.exists() else OURS
    out: dict[str, object] = {"binary": str(binary), "leases": leases, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="mhbench") as tmp:
        data_dir = Path(tmp) / "data"
        make_store(data_dir, leases, STORE_NET, "10.30.0.2")
        out["file"] = time_store(store_config(None, data_dir), binary, netns, rounds)
        if etcdrig.missing():
            out["etcd"] = f"skipped: {etcdrig.missing()}"
            return out
        for size in (1, 3):
            with etcdrig.EtcdCluster(Path(tmp) / f"etcd{size}", size=size) as cluster:
                fill_etcd(cluster.endpoints, leases)
                node = Path(tmp) / "etcd.conf"  # the node's etcd profile, which the NAD names
                profile = {"endpoints": cluster.endpoints}
                node.write_text(json.dumps({"profiles": {f"bench{size}": profile}}))
                os.environ["MULTIHOME_ETCD_CONF"] = str(node)
                store = {"type": "etcd", "profile": f"bench{size}", "node": "bench"}
                stdin = store_config(store, data_dir)
                out[f"etcd, {size} member{'s' if size > 1 else ''}"] = time_store(
                    stdin, binary, netns, rounds
                )
    return out


def print_stores(report: dict[str, object]) -> None:
    print(
        f"\nmh-ipam per call by lease store ({report['leases']} leases held, "
        f"{report['rounds']} rounds; median / p90 ms; {report['binary']})"
    )
    print(f"{'store':<18} {'ADD':>16} {'DEL':>16} {'ADD in-process':>18}")
    for name, row in report.items():
        if not isinstance(row, dict):
            if isinstance(row, str) and row.startswith("skipped"):
                print(f"{name:<18} {row}")
            continue
        cells = [
            f"{row[k]['median_ms']:>7} / {row[k]['p90_ms']:<6}"
            for k in ("add", "del", "add_in_process")
        ]
        print(f"{name:<18} {cells[0]:>16} {cells[1]:>16} {cells[2]:>18}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,30000")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench" / "ipam.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_ipam: run as root (the plugins need a network namespace)")
    ns = f"mhbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        rows = [run_size(int(n), args.rounds, f"/run/netns/{ns}") for n in args.sizes.split(",")]
        stores = run_stores(args.rounds, f"/run/netns/{ns}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"IPAM allocation in a /16, {args.rounds} interleaved ADDs per size (median)")
    print(f"{'leases':>8}  {'mh-ipam':>18}  {'host-local (ref)':>18}  {'mh-ipam in-process':>20}")
    for row in rows:
        cells = [row[k] for k in ("mh-ipam", "host-local", "mh-ipam in-process")]
        text = [f"{c['allocs_per_s']:>7}/s {c['median_ms']:>7}ms" for c in cells]  # type: ignore[index]
        print(f"{row['leases']:>8}  {text[0]:>18}  {text[1]:>18}  {text[2]:>20}")
    print_stores(stores)
    report = {"machine": os.uname().nodename, "date": time.strftime("%F"), "ipam_scale": rows}
    write_report(args.json, {**report, "stores": stores})
    return 0


if __name__ == "__main__":
    sys.exit(main())
