"""Crash points through libcni: kill a chain at each named step, then the runtime's path.

For a conflist (mh-macvlan or mh-ipvlan + mh-ipam + mh-route + mh-sbr, on the
file store or etcd), ``CrashRun`` first runs one ADD and one DEL with
``MULTIHOME_CRASH_TRACE`` to learn every crash point the chain reaches (see
lib/crashpoint.py). Then, for each point, with a container ID of its own:

1. ADD with ``MULTIHOME_CRASH_AT`` at that point: the plugin dies there
   (os._exit), and the crash-point file proves it died at that point;
2. what a runtime does after a failed ADD: DEL, then ADD again;
3. DEL; then everything must be as before the first ADD.

DEL points are crashed the same way (ADD, DEL killed at the point, DEL again).
"Everything" is read with ``ip -j`` and the filesystem, never with our code:
the pod's links, addresses, routes of every table and rules; the host
namespace's links; every file under the store and state directories with its
contents; and every etcd key of the network. Only what host-local also keeps
after a DEL may differ: the ``lock`` file, ``last_reserved_ip.*`` and etcd's
``cursor/`` keys (where the next search starts).

Used by tests/test_crashpoints.py and by ``make robustness``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import etcdrig
from tests.rig import Cnitool, Netns

NET = "crashnet"
# The IPAM's ranges: a pod address of each family, routes via the VLAN's router.
RANGES = [
    [{"subnet": "203.0.113.0/24", "gateway": "203.0.113.1"}],
    [{"subnet": "2001:db8:200::/64", "gateway": "2001:db8:200::1"}],
]


def chain(kind: str, master: str, data: Path, etcd: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full chain, as a Multus delegate's conflist."""
    ipam: dict[str, Any] = {
        "type": "mh-ipam",
        "ranges": RANGES,
        "routes": [{"dst": "192.0.2.0/24"}, {"dst": "2001:db8:300::/64"}],
    }
    if etcd is not None:
        ipam["store"] = etcd
    else:
        ipam["dataDir"] = str(data / "ipam")
    return {
        "cniVersion": "1.0.0",  # (build/cnitool's libcni knows no 1.1.0 result)
        "name": NET,
        "plugins": [
            {"type": f"mh-{kind}", "master": master, "ipam": ipam},
            {
                "type": "mh-route",
                "stateDir": str(data / "route"),
                "addroutes": [{"dst": "198.51.100.0/24", "gw": "203.0.113.1"}],
                "delroutes": [{"dst": "192.0.2.0/24"}],
            },
            {"type": "mh-sbr"},
        ],
    }


def pod_like_multus(pod: Netns, peer: Netns, peer_end: str) -> None:
    """eth0 with an address and a default route, as the cluster network leaves it
    (unless the pod has one already); then no address still in DAD."""
    if "eth0" not in pod.links():
        pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", peer_end, "netns", peer.name)
        pod.ip("addr", "add", "10.244.0.5/24", "dev", "eth0")
        pod.ip("link", "set", "eth0", "up")
        peer.ip("link", "set", peer_end, "up")
        pod.ip("route", "add", "default", "via", "10.244.0.1", "dev", "eth0")
    settle(pod)


def settle(pod: Netns, timeout: float = 20.0) -> None:
    """Until no address of the pod is tentative: the kernel adds their local routes
    only then, and a baseline taken earlier would see them appear later."""
    deadline = time.monotonic() + timeout
    while any(
        "tentative" in a.get("flags", []) or a.get("tentative")
        for x in pod.ipj("-6", "addr", "show")
        for a in x.get("addr_info", [])
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"addresses in {pod.name} still tentative after {timeout:g}s")
        time.sleep(0.05)


# ---- state, read with ip -j and the filesystem -----------------------------------------

_VOLATILE = {"valid_life_time", "preferred_life_time", "expires", "cacheinfo", "stats64"}


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in sorted(value.items()) if k not in _VOLATILE}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def kernel_state(pod: Netns, host: Netns) -> dict[str, Any]:
    """Pod links, addresses, routes (all tables) and rules; the host's links."""
    state: dict[str, Any] = {
        "pod links": sorted(
            (x["ifname"], x.get("linkinfo", {}).get("info_kind", ""), x.get("ifalias", ""))
            for x in pod.ipj("-d", "link", "show")
        ),
        "host links": sorted(
            (x["ifname"], x.get("linkinfo", {}).get("info_kind", ""))
            for x in host.ipj("-d", "link", "show")
        ),
    }
    state["pod addresses"] = sorted(
        (x["ifname"], a["local"], a["prefixlen"])
        for x in pod.ipj("addr", "show")
        for a in x.get("addr_info", [])
    )
    for family in ("-4", "-6"):
        routes = pod.ipj(family, "route", "show", "table", "all")
        state[f"pod routes {family}"] = sorted(json.dumps(_clean(r)) for r in routes)
        state[f"pod rules {family}"] = sorted(
            json.dumps(_clean(r)) for r in pod.ipj(family, "rule", "show")
        )
    return state


def _kept(path: Path) -> bool:
    """What host-local keeps after a DEL, too; and our record of the directory's mtime."""
    name = path.name
    seen = name == "seen" and path.parent.name == "by-id"
    return seen or name == "lock" or name.startswith("last_reserved_ip.")


def file_state(roots: list[Path]) -> dict[str, bytes]:
    """Every file under ``roots`` with its contents (but host-local's lock and cursor)."""
    out = {}
    for root in roots:
        if root.exists():
            for p in sorted(root.rglob("*")):
                if not p.is_dir() and not _kept(p):
                    out[str(p)] = p.read_bytes() if p.is_file() else b"<not a regular file>"
    return out


def etcd_state(cluster: etcdrig.EtcdCluster | None, prefix: str) -> dict[str, str]:
    if cluster is None:
        return {}
    keys = cluster.get_prefix(prefix + "/")
    return {k: v for k, v in keys.items() if "/cursor/" not in k}


@dataclass
class World:
    """What a crash case reads: the namespaces, the directories and the etcd prefix."""

    pod: Netns
    host: Netns
    roots: list[Path]
    cluster: etcdrig.EtcdCluster | None = None
    prefix: str = ""

    def snapshot(self) -> dict[str, Any]:
        return {
            **kernel_state(self.pod, self.host),
            "files": file_state(self.roots),
            "etcd": etcd_state(self.cluster, self.prefix),
        }


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed, one line per changed item (empty when nothing did)."""
    out = []
    for key in before.keys() | after.keys():
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        if isinstance(b, dict) and isinstance(a, dict):
            for k in sorted(b.keys() | a.keys()):
                if b.get(k) != a.get(k):
                    out.append(f"{key}: {k}: {b.get(k)!r} -> {a.get(k)!r}")
        elif isinstance(b, list) and isinstance(a, list):
            out += [f"{key}: gone {x}" for x in b if x not in a]
            out += [f"{key}: new {x}" for x in a if x not in b]
        else:
            out.append(f"{key}: {b!r} -> {a!r}")
    return sorted(out)


# ---- the runs --------------------------------------------------------------------------


def points_of(trace: Path) -> list[str]:
    """``point#n`` for each time a point was reached, in order."""
    seen: Counter[str] = Counter()
    out = []
    if trace.exists():
        for line in trace.read_text().split():
            seen[line] += 1
            out.append(f"{line}#{seen[line]}")
    return out


@dataclass
class Figures:
    points: int = 0  # crash points exercised (ADD and DEL)
    partial: int = 0  # crashes that left state behind before the runtime's DEL
    residue: int = 0  # cases with anything left after the final DEL (must be 0)
    failures: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


class CrashRun:
    """Every crash point of one conflist, through libcni (build/cnitool)."""

    def __init__(self, world: World, cnitool: Cnitool, conflist: dict[str, Any], scratch: Path):
        self.world = world
        self.cnitool = cnitool
        self.net = cnitool.write(conflist)
        self.scratch = scratch
        self.figures = Figures()
        self._n = 0

    def _call(self, cmd: str, cid: str, **crash: str) -> tuple[int, str]:
        extra = {f"MULTIHOME_CRASH_{k.upper()}": v for k, v in crash.items()}
        proc = self.cnitool.run(cmd, self.net, self.world.pod, container_id=cid, extra_env=extra)
        return proc.returncode, (proc.stderr + proc.stdout).strip()[-600:]

    def _cid(self) -> str:
        self._n += 1
        return f"crash{os.getpid()}x{self._n}"

    def trace(self) -> tuple[list[str], list[str]]:
        """The ADD points and the DEL points of one clean run."""
        cid = self._cid()
        adds, dels = self.scratch / f"{cid}.add", self.scratch / f"{cid}.del"
        rc, out = self._call("add", cid, trace=str(adds))
        if rc != 0:
            raise AssertionError(f"traced ADD failed: {out}")
        rc, out = self._call("del", cid, trace=str(dels))
        if rc != 0:
            raise AssertionError(f"traced DEL failed: {out}")
        return points_of(adds), points_of(dels)

    def _fail(self, what: str) -> None:
        self.figures.failures.append(what)

    def _crash(self, cmd: str, cid: str, point: str) -> bool:
        marker = self.scratch / f"{cid}.crashed"
        rc, out = self._call(cmd, cid, at=point, file=str(marker))
        died = marker.exists() and marker.read_text().startswith(point + " ")
        if rc == 0 or not died:
            self._fail(f"{cmd} at {point}: did not die there (exit {rc}): {out}")
            return False
        return True

    def _step(self, cmd: str, cid: str, label: str) -> None:
        rc, out = self._call(cmd, cid)
        if rc != 0:
            self._fail(f"{label}: {cmd} after the crash failed: {out}")

    def _settled(self, baseline: dict[str, Any], label: str) -> None:
        left = diff(baseline, self.world.snapshot())
        if left:
            self.figures.residue += 1
            self._fail(f"{label}: residue after the final DEL: " + "; ".join(left[:6]))

    def add_point(self, point: str, baseline: dict[str, Any]) -> None:
        cid = self._cid()
        label = f"ADD crash at {point}"
        self.figures.points += 1
        self.figures.names.append(f"add:{point}")
        if not self._crash("add", cid, point):
            return
        if diff(baseline, self.world.snapshot()):
            self.figures.partial += 1
        self._step("del", cid, label)  # the runtime's path after a failed ADD
        self._step("add", cid, label)
        self._step("del", cid, label)
        self._settled(baseline, label)

    def del_point(self, point: str, baseline: dict[str, Any]) -> None:
        cid = self._cid()
        label = f"DEL crash at {point}"
        self.figures.points += 1
        self.figures.names.append(f"del:{point}")
        self._step("add", cid, label)
        if not self._crash("del", cid, point):
            return
        self._step("del", cid, label)  # the runtime retries DEL until it succeeds
        self._settled(baseline, label)

    def run(self, only: str = "") -> Figures:
        """Every traced point (or those whose name starts with ``only``)."""
        baseline = self.world.snapshot()
        adds, dels = self.trace()
        self._settled(baseline, "the traced ADD and DEL")
        for point in adds:
            if point.startswith(only):
                self.add_point(point, baseline)
        for point in dels:
            if point.startswith(only):
                self.del_point(point, baseline)
        return self.figures


# ---- the daemon dies mid-work (thick mode) -----------------------------------------------


class Daemon:
    """``multihome daemon`` on a socket of its own; ready once its log says so."""

    def __init__(self, scratch: Path, tag: str, **crash: str) -> None:
        from tests.rig import CNIBIN

        self.sock = scratch / f"{tag}.sock"
        self.log = scratch / f"{tag}.log"
        self.marker = scratch / f"{tag}.crashed"
        env = {**os.environ}
        env.update({f"MULTIHOME_CRASH_{k.upper()}": v for k, v in crash.items()})
        if crash:
            env["MULTIHOME_CRASH_FILE"] = str(self.marker)
        cmd = [str(CNIBIN / "multihome"), "daemon", "--socket", str(self.sock)]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, stderr=log, env=env)
        deadline = time.monotonic() + 60
        while "serving on" not in self.log.read_text():  # a log line, not a guessed delay
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"daemon did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.02)

    def died_at(self, point: str) -> bool:
        """Dead, at ``point`` (its crash-point file says so)."""
        if not self.marker.exists():  # (written before it exits: the request is answered)
            return False
        self.proc.wait(timeout=60)
        return self.marker.read_text().startswith(point + "#")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class DaemonFigures:
    deaths: int = 0  # daemon deaths injected mid-request
    partial: int = 0  # of those, how many left state behind before the runtime's DEL
    failures: list[str] = field(default_factory=list)


class DaemonDeaths:
    """The daemon dies at a crash point after the link exists, during ADD, DEL, CHECK, GC
    and STATUS: ADD gives code 11 (the runtime DELs and retries); the others re-run in
    the shim."""

    def __init__(self, world: World, conflist: dict[str, Any], scratch: Path) -> None:
        first = conflist["plugins"][0]
        self.doc = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **first}
        self.plugin = first["type"]
        self.world = world
        self.scratch = scratch
        self.figures = DaemonFigures()

    def _run(self, command: str, cid: str, daemon: Daemon | None, **doc: Any) -> Any:
        from tests.rig import plugin_env, run_plugin

        env = plugin_env(command, CNI_CONTAINERID=cid, CNI_IFNAME="net1")
        env["CNI_NETNS"] = self.world.pod.path
        env["MULTIHOME_SOCKET"] = str(daemon.sock if daemon else self.scratch / "none.sock")
        return run_plugin(self.plugin, env, {**self.doc, **doc}, netns=self.world.host)

    def _expect(self, proc: Any, what: str) -> Any:
        if proc.returncode != 0:
            self.figures.failures.append(f"{what}: exit {proc.returncode}: {proc.stdout[-300:]!r}")
            return None
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    def _settled(self, baseline: dict[str, Any], what: str) -> None:
        left = diff(baseline, self.world.snapshot())
        if left:
            self.figures.failures.append(f"{what}: residue: " + "; ".join(left[:6]))

    def during_add(self, point: str, baseline: dict[str, Any]) -> None:
        cid, what = f"dadd{os.getpid()}", f"daemon killed at {point} during ADD"
        dying = Daemon(self.scratch, f"dadd-{point}", at=point)
        try:
            proc = self._run("ADD", cid, dying)
            self.figures.deaths += 1
            if not dying.died_at(point):
                self.figures.failures.append(f"{what}: it did not die there")
            doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
            if proc.returncode == 0 or doc.get("code") != 11:
                self.figures.failures.append(f"{what}: not code 11: {proc.stdout[-300:]!r}")
            if diff(baseline, self.world.snapshot()):
                self.figures.partial += 1
            self._expect(self._run("DEL", cid, dying), f"{what}: DEL (in the shim)")
        finally:
            dying.stop()
        fresh = Daemon(self.scratch, f"dfresh-{point}")
        try:  # the runtime retries once the daemon is back
            self._expect(self._run("ADD", cid, fresh), f"{what}: retried ADD")
            self._expect(self._run("DEL", cid, fresh), f"{what}: DEL")
        finally:
            fresh.stop()
        self._settled(baseline, what)

    def during(self, command: str, point: str, baseline: dict[str, Any]) -> None:
        cid, what = f"d{command.lower()}{os.getpid()}", f"daemon killed at {point} during {command}"
        dying = Daemon(self.scratch, f"d{command.lower()}", at=point)
        try:
            result = self._expect(self._run("ADD", cid, dying), f"{what}: ADD")
            if result is None:
                return
            extra: dict[str, Any] = {"prevResult": result} if result else {}
            if command in ("GC", "STATUS"):  # (spec 1.1 commands; GC frees this pod's lease)
                extra = {"cniVersion": "1.1.0", "cni.dev/valid-attachments": []}
            proc = self._run(command, cid, dying, **extra)
            self.figures.deaths += 1
            if not dying.died_at(point):
                self.figures.failures.append(f"{what}: it did not die there")
            self._expect(proc, f"{what}: {command} re-run in the shim")
            if command != "DEL":
                prev = {"prevResult": result} if command == "CHECK" else {}
                self._expect(self._run("DEL", cid, dying, **prev), f"{what}: DEL")
        finally:
            dying.stop()
        self._settled(baseline, what)

    def run(self) -> DaemonFigures:
        baseline = self.world.snapshot()
        self.during_add("link.renamed", baseline)
        self.during_add("link.ipam-done", baseline)
        self.during("DEL", "link.deleted", baseline)
        self.during("CHECK", "link.checked", baseline)
        self.during("GC", "ipam.gc-released", baseline)
        self.during("STATUS", "link.status", baseline)
        return self.figures
