"""IPAM scale benchmark: allocations per second in a /16 holding N existing leases.

mh-ipam and the reference host-local (Debian's containernetworking-plugins)
allocate, interleaved, from the same store in host-local's on-disk format, so
both see the same leases and the same machine noise. Each ADD is a real
process exec'd as a runtime would; mh-ipam is also timed in-process, which is
what a warm daemon pays. Sizes default to 1,000 and 30,000 leases, to show
which allocation time grows with the pool.
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


def make_store(data_dir: Path, leases: int) -> None:
    netdir = data_dir / NET
    netdir.mkdir(parents=True)
    base = int(ipaddress.ip_address("10.20.0.2"))
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
        data_dir = Path(tmp)
        make_store(data_dir, leases)
        stdin = config(data_dir)
        inprocess_add(stdin, "warmup", netns)  # imports, once
        times: dict[str, list[float]] = {"mh-ipam": [], "mh-ipam in-process": [], "host-local": []}
        for i in range(rounds):
            times["mh-ipam"].append(exec_add(OURS, stdin, f"ours{i}", netns))
            times["host-local"].append(exec_add(REFERENCE, stdin, f"ref{i}", netns))
            times["mh-ipam in-process"].append(inprocess_add(stdin, f"inproc{i}", netns))
    out: dict[str, object] = {"leases": leases, "rounds": rounds}
    for name, samples in times.items():
        median = statistics.median(samples)
        out[name] = {"median_ms": round(median * 1000, 2), "allocs_per_s": round(1 / median, 1)}
    return out


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
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(f"IPAM allocation in a /16, {args.rounds} interleaved ADDs per size (median)")
    print(f"{'leases':>8}  {'mh-ipam':>18}  {'host-local (ref)':>18}  {'mh-ipam in-process':>20}")
    for row in rows:
        cells = [row[k] for k in ("mh-ipam", "host-local", "mh-ipam in-process")]
        text = [f"{c['allocs_per_s']:>7}/s {c['median_ms']:>7}ms" for c in cells]  # type: ignore[index]
        print(f"{row['leases']:>8}  {text[0]:>18}  {text[1]:>18}  {text[2]:>20}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"machine": os.uname().nodename, "date": time.strftime("%F"), "ipam_scale": rows},
            indent=2,
        )
    )
    print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
