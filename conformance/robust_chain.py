"""make robustness, part: the chain killed at every crash point, the daemon killed
mid-request, and 50 pods at once through libcni (see crashrig.py and podstorm.py).

Runs in namespaces of its own: a host holding the master veth end, a peer, a
Multus-shaped pod, and (for the etcd points) etcd on the host's loopback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from conformance import crashrig, etcdrig, podstorm
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, Netns, unique


class Topo:
    def __init__(self) -> None:
        self.host = Netns(unique("mhch"))
        self.peer = Netns(unique("mhcq"))
        self.pod = Netns(unique("mhcp"))
        self.master = "mhm0"
        self.host.ip(
            "link", "add", self.master, "type", "veth", "peer", "name", "mhp0",
            "netns", self.peer.name,
        )  # fmt: skip
        self.host.ip("link", "set", self.master, "up")
        self.peer.ip("link", "set", "mhp0", "up")
        crashrig.pod_like_multus(self.pod, self.peer, unique("mhce"))

    def cnitool(self, scratch: Path) -> Cnitool:
        return Cnitool(self.host, scratch / "net.d", scratch / "cache", f"{CNIBIN}:{REFERENCE_BIN}")

    def close(self) -> None:
        for ns in (self.pod, self.peer, self.host):
            ns.delete()


def _crash_points(summary: Any, kinds: list[str]) -> None:
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="mhcrash") as tmp:
            topo = Topo()
            try:
                world = crashrig.World(topo.pod, topo.host, [Path(tmp) / "data"])
                conf = crashrig.chain(kind, topo.master, Path(tmp) / "data")
                figures = crashrig.CrashRun(world, topo.cnitool(Path(tmp)), conf, Path(tmp)).run()
            finally:
                topo.close()
        _report(summary, f"mh-{kind} + mh-ipam (file) + mh-route + mh-sbr", figures)
    with tempfile.TemporaryDirectory(prefix="mhcrash") as tmp:
        topo = Topo()
        try:
            with etcdrig.EtcdCluster(Path(tmp) / "etcd", netns=topo.host.name) as cluster:
                from conformance.robust_state import _add_profile

                prefix = "/multihome/crashes"
                _add_profile(cluster.endpoints, prefix, "crashes")
                store = {"type": "etcd", "profile": "crashes", "node": "n1"}
                world = crashrig.World(topo.pod, topo.host, [Path(tmp) / "data"], cluster, prefix)
                conf = crashrig.chain("macvlan", topo.master, Path(tmp) / "data", etcd=store)
                run = crashrig.CrashRun(world, topo.cnitool(Path(tmp)), conf, Path(tmp))
                figures = run.run(only="etcd.")
        finally:
            topo.close()
    _report(summary, "the etcd store's points", figures)


def _report(summary: Any, what: str, figures: crashrig.Figures) -> None:
    for failure in figures.failures:
        summary.fail(failure)
    summary.crash_points += figures.points
    summary.crash_residue += figures.residue
    summary.crashes += figures.points
    print(
        f"   {what}: {figures.points} crash points, {figures.partial} left partial state "
        f"before the runtime's DEL, {figures.residue} left anything after it",
        flush=True,
    )


def _daemon(summary: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="mhdeath") as tmp:
        topo = Topo()
        try:
            world = crashrig.World(topo.pod, topo.host, [Path(tmp) / "data"])
            conf = crashrig.chain("macvlan", topo.master, Path(tmp) / "data")
            figures = crashrig.DaemonDeaths(world, conf, Path(tmp)).run()
        finally:
            topo.close()
    for failure in figures.failures:
        summary.fail(failure)
    summary.crashes += figures.deaths
    summary.daemon_deaths = figures.deaths
    print(
        f"   the daemon killed mid-request {figures.deaths} times (2 ADD: code 11, then DEL "
        f"and retry clean; DEL, CHECK, GC, STATUS: re-run in the shim): "
        f"{len(figures.failures)} failures",
        flush=True,
    )


def _storm(summary: Any, pods: int) -> None:
    for thick in (False, True):
        with tempfile.TemporaryDirectory(prefix="mhstorm") as tmp:
            topo = Topo()
            try:
                figures = podstorm.storm(topo.host, topo.master, Path(tmp), pods, thick)
            finally:
                topo.close()
        for failure in figures.failures:
            summary.fail(failure)
        summary.concurrent_ops += figures.adds + figures.dels
        summary.storm_duplicates += figures.duplicates
        mode = "thick (daemon)" if thick else "no daemon"
        print(
            f"   {pods} pods at once through libcni, {mode}: {figures.adds} ADDs, "
            f"{figures.dels} DELs, {figures.duplicates} duplicate addresses (ip -j, v4+v6)",
            flush=True,
        )


def run(summary: Any, kinds: list[str], pods: int = 50) -> None:
    summary.crash_points = summary.crash_residue = summary.storm_duplicates = 0
    print("3b. every crash point of the chain, then DEL, ADD, DEL; zero residue", flush=True)
    _crash_points(summary, kinds)
    print("3c. the daemon dies mid-work", flush=True)
    _daemon(summary)
    print("4b. pods at once through libcni", flush=True)
    _storm(summary, pods)
