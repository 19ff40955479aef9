"""``make robustness``: bad input, crashes, concurrency and faults never leave a mess.

Sections, each bounded in time:
1. bad input for every plugin and command (malformed and huge JSON, wrong
   types, unknown versions, bad environment, hostile names, bad CIDRs,
   dangling prevResult indexes): one JSON error of the right code, a non-zero
   exit, nothing changed (no link, no lease, no file outside the store);
2. fuzzing of the config and argument parsers (hypothesis, seeded with the
   seeds' and examples' configs): never an internal error;
0. (robust_state.py) hostile input with bystanders: other owners' chains,
   leases and state, compared after every case, each case its own owner;
3. kill -9 of plugins and of the daemon at random points of ADD, then DEL, ADD
   and DEL as a runtime would: the namespace and the store end clean; GC after
   a simulated reboot frees exactly the dead leases;
3b. (robust_chain.py) the chain killed at each of its named crash points, then
   DEL, ADD, DEL: zero residue; 3c. the daemon killed mid-ADD/DEL/CHECK;
4. pods adding and deleting at random, in-process threads: never one address
   twice, nothing leaked; a stuck lock holder gives code 11 in bounded time;
   4b. 50 pods at once through libcni, exec'd, with and without the daemon;
5. a full disk, a read-only store, a missing master, a master that goes away;
6. safe file modes, symlinks planted in the store not followed, no shell.

Prints: cases tried, crashes injected, concurrent operations, leaks found.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "build" / "pkgroot")]

from multihome.lib import registry, rtnl, skel  # noqa: E402
from multihome.lib.netns import NetNS  # noqa: E402
from tests.conftest import kernel_lacks  # noqa: E402
from tests.rig import CNIBIN, Netns, unique  # noqa: E402

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC")
DEAD_ETCD = "http://127.0.0.1:9"  # loopback, and nothing listens there: refused at once
HAVE_IPVLAN = not kernel_lacks("ipvlan")  # (the tests' probe: make one, in a namespace)


class Summary:
    def __init__(self) -> None:
        self.cases = self.crashes = self.concurrent_ops = self.leaks = 0
        # figures of conformance/robust_state.py and robust_chain.py, and of the random kills
        self.bystander_cases = self.bystander_changes = self.dirty_failed_adds = 0
        self.crash_points = self.crash_residue = self.daemon_deaths = self.storm_duplicates = 0
        self.random_kills = self.random_partial = 0
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        what = what if len(what) < 400 else what[:400] + "..."
        self.failures.append(what)
        print(f"  FAIL: {what}", flush=True)

    def leak(self, what: str) -> None:
        self.leaks += 1
        self.fail(f"leak: {what}")


def error_doc(out: bytes, code: int) -> dict[str, Any] | None:
    """The single JSON error document a failing call must print, or None."""
    try:
        doc = json.loads(out)
    except ValueError:
        return None
    ok = (
        isinstance(doc, dict)
        and code != 0
        and isinstance(doc.get("code"), int)
        and isinstance(doc.get("msg"), str)
        and "Traceback" not in doc.get("details", "")
    )
    return doc if ok else None


class World:
    """A host namespace with a master, a pod, and a scratch store to watch."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host = Netns(unique("mhrh"))
        self.pod = Netns(unique("mhrp"))
        self.host_ns = NetNS(self.host.path)  # in-process calls run from here, never the root
        self.host.ip("link", "add", "eno1", "type", "veth", "peer", "name", "gw0")
        self.host.ip("link", "set", "eno1", "up")
        self.host.ip("link", "set", "gw0", "up")
        self.data = tmp / "ipam"
        self.state = tmp / "state"

    def conf(self, plugin: str, **extra: Any) -> dict[str, Any]:
        ipam = {
            "type": "mh-ipam",
            "dataDir": str(self.data),
            "ranges": [[{"subnet": "10.66.0.0/24", "gateway": "10.66.0.1"}]],
        }
        base: dict[str, Any] = {
            "cniVersion": "1.1.0",
            "name": "robust",
            "type": plugin,
            "master": "eno1",
            "ipam": ipam,
            "stateDir": str(self.state),
        }
        if plugin in ("mh-ipam", "mh-static"):
            base = {
                "cniVersion": "1.1.0",
                "name": "robust",
                "type": "mh-noop",
                "ipam": {**ipam, "type": plugin},
            }
        return {**base, **extra}

    def env(self, command: str, **extra: str) -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": "robust1",
            "CNI_NETNS": self.pod.path,
            "CNI_IFNAME": "net1",
            "CNI_PATH": str(CNIBIN),
            **extra,
        }

    def snapshot(self) -> tuple[list[str], list[str]]:
        files = sorted(
            str(p.relative_to(self.tmp))
            for p in self.tmp.rglob("*")
            if p.is_file()
            and p.name not in ("lock", "seen")  # (by-id/seen: the store's own bookkeeping)
            and not p.name.startswith("last_reserved_ip")
        )
        return self.pod.links(), files

    def close(self) -> None:
        self.pod.delete()
        self.host.delete()


# ---- 1. bad input ---------------------------------------------------------------------


def bad_inputs(world: World) -> list[tuple[str, str, dict[str, str], bytes, set[int]]]:
    """(label, plugin, env, stdin, acceptable codes) for every plugin and command."""
    cases = []
    for plugin in registry.PLUGINS:
        for command in COMMANDS:
            good = world.conf(plugin)
            env = world.env(command)

            def add(
                label: str,
                stdin: bytes | dict[str, Any],
                codes: set[int],
                plugin: str = plugin,
                env: dict[str, str] = env,
                command: str = command,
                **env_changes: str,
            ) -> None:
                data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode()
                e = {k: v for k, v in {**env, **env_changes}.items() if v != "<unset>"}
                cases.append((f"{plugin} {command} {label}", plugin, e, data, codes))

            add("empty stdin", b"", {6})
            add("truncated", json.dumps(good).encode()[:40], {6})
            add("not an object", b"[1, 2]", {6})
            add("invalid utf-8", b'{"name": "\xff\xfe"}', {6})
            add(
                "huge (1.5 MB)",
                {**good, "junk": "x" * 1_500_000},
                {0, 1, 2, 3, 7, 120} | ({102} if plugin == "mh-ipvlan" else set()),
            )
            add("unknown version", {**good, "cniVersion": "9.9.9"}, {1})
            add("version not a string", {**good, "cniVersion": 110}, {6})
            add("name with ..", {**good, "name": ".."}, {7})
            add("name with /", {**good, "name": "a/b"}, {7})
            add("overlong name", {**good, "name": "n" * 5000}, {7})
            add("ipam not an object", {**good, "ipam": "x"}, {0, 7, 120})
            add("unknown CNI_COMMAND", good, {4}, CNI_COMMAND="EXPLODE")
            add("CNI_PATH unset", good, {4}, CNI_PATH="<unset>")
            if command in ("ADD", "CHECK", "DEL"):
                add("container id ..", good, {4}, CNI_CONTAINERID="../x")
                add("container id /", good, {4}, CNI_CONTAINERID="a/b")
                add("container id NUL", good, {4}, CNI_CONTAINERID="a\0b")
                add("ifname too long", good, {4}, CNI_IFNAME="x" * 16)
                add("ifname ..", good, {4}, CNI_IFNAME="..")
                add("ifname /", good, {4}, CNI_IFNAME="a/b")
                add("ifname NUL", good, {4}, CNI_IFNAME="a\0b")
                add("CNI_ARGS garbage", good, {4}, CNI_ARGS="a=b=c;;=")
                add("overlong container id", good, {4}, CNI_CONTAINERID="c" * 5000)
            if command in ("ADD", "CHECK"):
                add("netns missing", good, {3}, CNI_NETNS="/run/netns/mh-not-there")
            semantic = (
                ("mh-ipam", "mh-macvlan", "mh-ipvlan") if HAVE_IPVLAN else ("mh-ipam", "mh-macvlan")
            )  # (ipvlan ADD fails at the link here, code 102)
            if plugin in semantic and command in ("ADD", "CHECK"):
                for label, ranges in (
                    ("host bits", [[{"subnet": "10.66.0.5/24"}]]),
                    ("gateway outside", [[{"subnet": "10.66.0.0/24", "gateway": "10.9.9.9"}]]),
                    ("overlapping", [[{"subnet": "10.66.0.0/24"}], [{"subnet": "10.66.0.0/25"}]]),
                ):
                    bad = json.loads(json.dumps(good))
                    bad["ipam"]["ranges"] = ranges
                    add(label, bad, {7})
            if plugin in ("mh-ipam", "mh-macvlan") and command != "VERSION":
                dead = {"type": "etcd", "endpoints": [DEAD_ETCD], "timeout": 0.3}
                # A bad store is code 7, which mh-macvlan's STATUS reports as its IPAM's 50;
                # CHECK without a prevResult stops before the store; GC without valid
                # attachments never reads it.
                invalid = {"STATUS": {50 if plugin == "mh-macvlan" else 7}, "GC": {0}}
                down = {"STATUS": {50}, "CHECK": {7}, "GC": {0}}
                for label, store, codes in (
                    (
                        "etcd profile not on the node",
                        {"type": "etcd", "profile": "absent"},
                        invalid.get(command, {7}),
                    ),
                    (
                        "etcd endpoint not a URL",
                        {**dead, "endpoints": ["10.0.0.1"]},
                        invalid.get(command, {7}),
                    ),
                    (
                        "etcd tls over http",
                        {**dead, "tls": {"ca": "/x"}},
                        invalid.get(command, {7}),
                    ),
                    ("store of no known type", {"type": "zookeeper"}, invalid.get(command, {7})),
                    ("etcd unreachable", dead, down.get(command, {11})),
                ):
                    bad = json.loads(json.dumps(good))
                    bad["ipam"]["store"] = store
                    add(label, bad, codes)
            if plugin in ("mh-route", "mh-sbr", "mh-macvlan") and command in ("ADD", "CHECK"):
                dangling = {
                    "cniVersion": "1.1.0",
                    "interfaces": [{"name": "net1"}],
                    "ips": [{"address": "10.66.0.9/24", "interface": 7}],
                }
                add(
                    "prevResult index points nowhere",
                    {**good, "prevResult": dangling},
                    {3, 7, 102, 103, 120}
                    # (the first plugin in a chain ignores a prevResult on ADD)
                    | ({0} if (plugin, command) == ("mh-macvlan", "ADD") else set()),
                )
    return cases


def run_bad_inputs(world: World, summary: Summary) -> None:
    print("1. bad input", flush=True)
    before = world.snapshot()
    cases = bad_inputs(world)
    for label, plugin, env, stdin, codes in cases:
        summary.cases += 1
        with world.host_ns:
            out, code, _ = skel.run(plugin, env, stdin)
            if code == 0 and 0 in codes:
                # (tolerated successes, e.g. a huge but valid config: undo it)
                skel.run(plugin, {**env, "CNI_COMMAND": "DEL"}, stdin)
                continue
        doc = error_doc(out, code) if code else None
        if doc is None:
            summary.fail(f"{label}: exit {code}, not one JSON error: {out[:200]!r}")
        elif doc["code"] not in codes:
            summary.fail(f"{label}: code {doc['code']} ({doc['msg']}), expected one of {codes}")
    exec_sample = [c for c in cases if "\0" not in "".join(c[2].values())][::25]
    for label, plugin, env, stdin, codes in exec_sample:  # the real executables, too
        summary.cases += 1
        proc = subprocess.run(
            [str(CNIBIN / plugin)], input=stdin, env=env, capture_output=True, check=False
        )
        doc = error_doc(proc.stdout, proc.returncode)
        if proc.returncode and (doc is None or doc["code"] not in codes):
            summary.fail(f"exec {label}: exit {proc.returncode}, {proc.stdout[:200]!r}")
    after = world.snapshot()
    if after != before:
        summary.leak(f"bad input changed things: {before} -> {after}")
    print(f"   {len(cases) + len(exec_sample)} cases", flush=True)


# ---- 2. fuzzing ---------------------------------------------------------------------------


def seed_corpus() -> list[dict[str, Any]]:
    import yaml

    out = []
    for path in (ROOT / "packaging" / "examples").glob("*.yaml"):
        conf = json.loads(yaml.safe_load(path.read_text())["spec"]["config"])
        for plugin in conf["plugins"]:
            out.append({"cniVersion": conf["cniVersion"], "name": conf["name"], **plugin})
    for path in (ROOT / "tests" / "data").glob("*.json"):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "type" in doc:
            out.append(doc)
    return out


def run_fuzz(world: World, summary: Summary, seconds: float) -> None:
    print(f"2. fuzzing the parsers for {seconds:g} s", flush=True)
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    corpus = seed_corpus()
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-2, 2**33),
        st.text(max_size=20),
        st.sampled_from(
            [
                "10.0.0.1/33",
                "::/0",
                "1.2.3.4",
                "2001:db8::/129",
                "",
                "mh-ipam",
                "host-local",
                "1.1.0",
                "0.2.0",
                "..",
            ]
        ),
    )
    values = st.recursive(
        leaves,
        lambda kids: (
            st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
        ),
        max_leaves=8,
    )
    deadline = time.monotonic() + seconds

    @settings(
        max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        base=st.sampled_from(corpus),
        key=st.text(max_size=12),
        value=values,
        path_pick=st.integers(0, 10),
        command=st.sampled_from(("DEL", "CHECK", "STATUS", "GC")),
        cni_args=st.text(max_size=30),
    )
    def one(
        base: dict[str, Any], key: str, value: Any, path_pick: int, command: str, cni_args: str
    ) -> None:
        doc = json.loads(json.dumps(base))
        target = doc
        nested = [k for k, v in doc.items() if isinstance(v, dict)]
        if nested and path_pick % 2:
            target = doc[nested[path_pick % len(nested)]]
        keys = list(target) or [key]
        target[keys[path_pick % len(keys)] if path_pick % 3 else key] = value
        if isinstance(doc.get("ipam"), dict):
            doc["ipam"]["dataDir"] = str(world.data)
            store = doc["ipam"].get("store")
            if isinstance(store, dict) and isinstance(store.get("endpoints"), list):
                # An example's etcd is elsewhere: aim at a closed loopback port instead.
                store["endpoints"] = [
                    DEAD_ETCD if isinstance(u, str) else u for u in store["endpoints"]
                ]
                store["timeout"] = 0.2
        doc["stateDir"] = str(world.state)
        env = world.env(command, CNI_ARGS=cni_args.replace("\0", ""))
        ptype = doc.get("type")
        plugin = ptype if isinstance(ptype, str) and ptype in registry.PLUGINS else "mh-noop"
        with world.host_ns:
            out, code, _ = skel.run(plugin, env, json.dumps(doc).encode())
        summary.cases += 1
        if code:
            err = error_doc(out, code)
            if err is None or err["code"] == 999:
                summary.fail(f"fuzz {plugin} {command}: {out[:300]!r} for {json.dumps(doc)[:300]}")

    while time.monotonic() < deadline:  # batches of 200 examples until the time is up
        one()


# ---- 3. crashes ---------------------------------------------------------------------------


def leases(data: Path, net: str = "robust") -> list[str]:
    netdir = data / net
    return (
        sorted(
            p.name
            for p in netdir.iterdir()
            if p.name != "lock" and not p.name.startswith("last_reserved")
        )
        if netdir.exists()
        else []
    )


def exec_plugin(
    plugin: str, env: dict[str, str], doc: dict[str, Any], host: Netns
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host.name, str(CNIBIN / plugin)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(doc).encode())
    proc.stdin.close()
    return proc


def run_to_end(
    plugin: str, env: dict[str, str], doc: dict[str, Any], host: Netns
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["ip", "netns", "exec", host.name, str(CNIBIN / plugin)],
        input=json.dumps(doc).encode(),
        env=env,
        capture_output=True,
        check=False,
    )


def run_crashes(world: World, summary: Summary, rounds: int) -> None:
    print(f"3. kill -9 during ADD, {rounds} times; a daemon too; GC after a reboot", flush=True)
    rng = random.Random(7)
    doc = world.conf("mh-macvlan")
    # Aim the kills at the work, not the imports: into the later part of a whole ADD.
    env = world.env("ADD", CNI_CONTAINERID="crashprobe")
    took = time.monotonic()
    run_to_end("mh-macvlan", env, doc, world.host)
    took = time.monotonic() - took
    run_to_end("mh-macvlan", {**env, "CNI_COMMAND": "DEL"}, doc, world.host)
    for i in range(rounds):
        env = world.env("ADD", CNI_CONTAINERID=f"crash{i}")
        proc = exec_plugin("mh-macvlan", env, doc, world.host)
        time.sleep(rng.uniform(0.5 * took, 1.05 * took))
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        summary.crashes += 1
        summary.random_kills += 1
        summary.random_partial += bool(leases(world.data) or world.pod.links() != ["lo"])
        # the runtime's path after a failed ADD: DEL, then ADD again, then (later) DEL
        delete = run_to_end("mh-macvlan", {**env, "CNI_COMMAND": "DEL"}, doc, world.host)
        if delete.returncode != 0:
            summary.fail(f"DEL after a crash failed (round {i})")
        if world.pod.links() != ["lo"] or leases(world.data):
            summary.leak(f"after crash + DEL: {world.pod.links()} {leases(world.data)}")
        again = run_to_end("mh-macvlan", env, doc, world.host)
        if again.returncode:
            summary.fail(f"ADD again after a crash and DEL failed: {again.stdout[:200]!r}")
        delete = run_to_end("mh-macvlan", {**env, "CNI_COMMAND": "DEL"}, doc, world.host)
        if delete.returncode != 0:
            summary.fail(f"the last DEL after a crash failed (round {i})")
        if world.pod.links() != ["lo"]:
            summary.leak(f"links after crash + DEL: {world.pod.links()}")
        if leases(world.data):
            summary.leak(f"leases after crash + DEL: {leases(world.data)}")
    tmpdir = world.data / ".multihome" / "robust" / "tmp"
    if tmpdir.exists() and list(tmpdir.iterdir()):
        summary.leak(f"temporary files: {list(tmpdir.iterdir())}")
    print(
        f"   {summary.random_kills} random kills, {summary.random_partial} of them left "
        "partial state before the runtime's DEL",
        flush=True,
    )
    run_daemon_crash(world, summary)
    run_reboot_gc(world, summary)


def run_daemon_crash(world: World, summary: Summary) -> None:
    sock = world.tmp / "run" / "mh.sock"
    log = (world.tmp / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [
            str(CNIBIN / "multihome"),
            "daemon",
            "--socket",
            str(sock),
            "--test-stall",
            "mh-macvlan=0.3",
        ],
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while "serving" not in (world.tmp / "daemon.log").read_text():
            if time.monotonic() > deadline:
                summary.fail("daemon did not start")
                return
            time.sleep(0.05)
        env = world.env("ADD", CNI_CONTAINERID="daemoncrash", MULTIHOME_SOCKET=str(sock))
        proc = exec_plugin("mh-macvlan", env, world.conf("mh-macvlan"), world.host)
        time.sleep(0.2)
        daemon.send_signal(signal.SIGKILL)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait()
        summary.crashes += 1
        doc = error_doc(out, proc.returncode)
        if proc.returncode and (doc is None or doc["code"] != 11):
            summary.fail(f"ADD with the daemon killed: {out[:200]!r}")
        proc.stdout.close()
        run_to_end(
            "mh-macvlan", {**env, "CNI_COMMAND": "DEL"}, world.conf("mh-macvlan"), world.host
        )
        if world.pod.links() != ["lo"] or leases(world.data):
            summary.leak(f"after a daemon crash: {world.pod.links()} {leases(world.data)}")
    finally:
        daemon.kill()
        daemon.wait()
        log.close()


def run_reboot_gc(world: World, summary: Summary) -> None:
    pods = [Netns(unique("mhrg")) for _ in range(6)]
    try:
        for i, pod in enumerate(pods):
            env = {**world.env("ADD", CNI_CONTAINERID=f"boot{i}"), "CNI_NETNS": pod.path}
            run_to_end("mh-ipam", env, world.conf("mh-ipam"), world.host)
        before = leases(world.data)
        for pod in pods:
            pod.delete()  # the "reboot": namespaces gone, no DEL ever ran
        gc = {
            **world.conf("mh-ipam"),
            "cni.dev/valid-attachments": [
                {"containerID": "boot1", "ifname": "net1"},
                {"containerID": "boot4", "ifname": "net1"},
            ],
        }
        out, code, _ = skel.run("mh-ipam", world.env("GC"), json.dumps(gc).encode())
        summary.cases += 1
        after = leases(world.data)
        if code or len(before) != 6 or len(after) != 2:
            summary.fail(f"GC after a reboot: {len(before)} -> {after} ({out[:100]!r})")
        gc["cni.dev/valid-attachments"] = []
        skel.run("mh-ipam", world.env("GC"), json.dumps(gc).encode())
    finally:
        for pod in pods:
            pod.delete()


# ---- 4. concurrency -----------------------------------------------------------------------


def run_concurrency(world: World, summary: Summary, seconds: float, pods_n: int = 100) -> None:
    print(
        f"4. {pods_n} pods adding and deleting at random for {seconds:g} s; a stuck lock",
        flush=True,
    )
    pods = [Netns(unique("mhrc")) for _ in range(pods_n)]
    live: dict[str, str] = {}  # address -> pod, while attached
    attached: dict[int, str] = {}
    lock = threading.Lock()
    busy: set[int] = set()
    rng = random.Random(11)
    doc = world.conf("mh-macvlan")
    deadline = time.monotonic() + seconds

    def worker(seed: int) -> None:
        local = random.Random(seed)
        while time.monotonic() < deadline:
            with lock:
                free = [i for i in range(pods_n) if i not in busy]
                if not free:
                    continue
                i = local.choice(free)
                busy.add(i)
            try:
                step(i)
            finally:
                with lock:
                    busy.discard(i)

    def step(i: int) -> None:
        env = {**world.env("ADD", CNI_CONTAINERID=f"pod{i}"), "CNI_NETNS": pods[i].path}
        if i in attached:
            # Forget the address before DEL frees it: once the lease is gone another pod
            # may rightly be given it before this thread gets the lock back.
            with lock:
                live.pop(attached.pop(i), None)
            out, code, _ = skel.run(
                "mh-macvlan", {**env, "CNI_COMMAND": "DEL"}, json.dumps(doc).encode()
            )
            if code:
                summary.fail(f"concurrent DEL pod{i}: {out[:200]!r}")
        else:
            with world.host_ns:
                out, code, _ = skel.run("mh-macvlan", env, json.dumps(doc).encode())
            if code:
                summary.fail(f"concurrent ADD pod{i}: {out[:200]!r}")
                return
            address = json.loads(out)["ips"][0]["address"]
            lease = world.data / "robust" / address.split("/")[0]
            holder = lease.read_bytes() if lease.exists() else b""
            if holder != f"pod{i}\r\nnet1".encode():
                summary.fail(f"ADD pod{i} returned {address}, whose lease says {holder!r}")
            with lock:
                if address in live:
                    lease = world.data / "robust" / address.split("/")[0]
                    holder = lease.read_bytes() if lease.exists() else b"(no lease file)"
                    summary.fail(
                        f"{address} given to pod{i} while pod{live[address]} holds it; "
                        f"the lease file says {holder!r}"
                    )
                live[address] = str(i)
                attached[i] = address
        summary.concurrent_ops += 1

    kernel_samples = [0]

    def watch_kernels() -> None:
        """Sample every pod's kernel: no address may be up in two pods at once."""
        socks = []
        for pod in pods:
            with NetNS(pod.path):
                socks.append(rtnl.Rtnl())
        try:
            while time.monotonic() < deadline:
                seen: dict[str, int] = {}
                for i, sock in enumerate(socks):
                    for addr in sock.addrs(version=4):
                        ip = str(addr.interface.ip)
                        if ip.startswith("10.66.") and seen.setdefault(ip, i) != i:
                            summary.fail(f"{ip} up in pod{seen[ip]} and pod{i} at once")
                kernel_samples[0] += 1
                time.sleep(0.05)
        finally:
            for sock in socks:
                sock.close()

    try:
        with ThreadPoolExecutor(9) as ex:
            watcher = ex.submit(watch_kernels)
            list(ex.map(worker, [rng.randrange(10**9) for _ in range(8)]))
            watcher.result()
        print(f"   {kernel_samples[0]} samples of all {pods_n} pods' kernels", flush=True)
        for i in list(attached):
            env = {**world.env("DEL", CNI_CONTAINERID=f"pod{i}"), "CNI_NETNS": pods[i].path}
            skel.run("mh-macvlan", env, json.dumps(doc).encode())
        if leases(world.data):
            summary.leak(f"leases after the concurrent run: {leases(world.data)}")
        stray = [p.name for p in pods if p.links() != ["lo"]]
        if stray:
            summary.leak(f"links left in {len(stray)} pods")
    finally:
        for pod in pods:
            pod.delete()
    run_stuck_lock(world, summary)


def run_stuck_lock(world: World, summary: Summary) -> None:
    netdir = world.data / "robust"
    netdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(netdir / "lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a holder that never lets go
    try:
        conf = world.conf("mh-ipam")
        conf["ipam"]["lockTimeout"] = 1
        start = time.monotonic()
        out, code, _ = skel.run("mh-ipam", world.env("ADD"), json.dumps(conf).encode())
        took = time.monotonic() - start
        summary.cases += 1
        doc = error_doc(out, code)
        if doc is None or doc["code"] != 11 or not 0.9 < took < 5:
            summary.fail(f"stuck lock: code {doc and doc['code']} after {took:.1f} s")
    finally:
        os.close(fd)


# ---- 5. resource faults --------------------------------------------------------------------


def run_faults(world: World, summary: Summary) -> None:
    print("5. a full disk, a read-only store, a missing master, a master going away", flush=True)
    mnt = world.tmp / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        filler = mnt / "filler"
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={filler}", "bs=4k", "count=100"],
            capture_output=True,
            check=False,
        )
        conf = world.conf("mh-macvlan")
        conf["ipam"]["dataDir"] = str(mnt / "ipam")
        expect_clean(world, summary, "full disk", conf, {5})
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        expect_clean(world, summary, "read-only store", conf, {5, 50})
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    expect_clean(world, summary, "missing master", world.conf("mh-macvlan", master="gone0"), {7})
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            world.host.ip("link", "del", "eno1", check=False)
            time.sleep(0.01)
            world.host.ip("link", "add", "eno1", "type", "veth", "peer", "name", "gw0", check=False)
            world.host.ip("link", "set", "eno1", "up", check=False)

    flapper = threading.Thread(target=flap)
    flapper.start()
    try:
        for i in range(15):
            env = world.env("ADD", CNI_CONTAINERID=f"flap{i}")
            with world.host_ns:
                out, code, _ = skel.run(
                    "mh-macvlan", env, json.dumps(world.conf("mh-macvlan")).encode()
                )
            summary.cases += 1
            doc = error_doc(out, code) if code else None
            if code and (doc is None or doc["code"] == 999):
                summary.fail(f"master going away: {out[:200]!r}")
            skel.run(
                "mh-macvlan",
                {**env, "CNI_COMMAND": "DEL"},
                json.dumps(world.conf("mh-macvlan")).encode(),
            )
    finally:
        stop.set()
        flapper.join()
    if world.pod.links() != ["lo"] or leases(world.data):
        summary.leak(f"after the master flapped: {world.pod.links()} {leases(world.data)}")


def expect_clean(
    world: World, summary: Summary, label: str, conf: dict[str, Any], codes: set[int]
) -> None:
    summary.cases += 1
    with world.host_ns:
        out, code, _ = skel.run(
            "mh-macvlan", world.env("ADD", CNI_CONTAINERID="fault"), json.dumps(conf).encode()
        )
    doc = error_doc(out, code)
    if doc is None or doc["code"] not in codes:
        summary.fail(f"{label}: {out[:200]!r}")
    ipam_dir = Path(conf["ipam"]["dataDir"]) / "robust"
    if ipam_dir.exists() and any(
        p.stat().st_size == 0 and p.name[0].isdigit() for p in ipam_dir.iterdir()
    ):
        summary.leak(f"{label}: a half-written lease")
    if world.pod.links() != ["lo"]:
        summary.leak(f"{label}: links {world.pod.links()}")


# ---- 6. security ---------------------------------------------------------------------------


def run_security(world: World, summary: Summary) -> None:
    print("6. file modes, planted symlinks, no shell anywhere", flush=True)
    outside = world.tmp / "outside"
    outside.mkdir(mode=0o700)
    victim = outside / "victim"
    victim.write_text("untouched")
    netdir = world.data / "robust"
    netdir.mkdir(parents=True, exist_ok=True)
    # An attacker with write access to the store plants links to a file outside it,
    # under the next lease's name and the range's bookkeeping file's name.
    for name in ("10.66.0.2", "last_reserved_ip.0"):
        (netdir / name).unlink(missing_ok=True)
        (netdir / name).symlink_to(victim)
    env = world.env("ADD", CNI_CONTAINERID="sec1")
    conf = json.dumps(world.conf("mh-ipam")).encode()
    with world.host_ns:
        out, code, _ = skel.run("mh-ipam", env, conf)
    summary.cases += 1
    doc = error_doc(out, code) if code else None
    if code and (doc is None or doc["code"] == 999):
        summary.fail(f"planted symlinks: {out[:200]!r}")
    if victim.read_text() != "untouched" or sorted(p.name for p in outside.iterdir()) != ["victim"]:
        summary.fail("a symlink in the store was followed out of it")
    outcome = f"code {doc['code']}" if doc else out.decode().strip()[:120]
    print(f"   with planted symlinks ADD gave {outcome}")
    if code == 0:
        got = json.loads(out)["ips"][0]["address"].split("/")[0]
        if got == "10.66.0.2":
            summary.fail("a planted symlink was taken for a free lease file")
        lease = netdir / got
        summary.cases += 1
        if stat.S_IMODE(lease.stat().st_mode) != 0o600 or netdir.stat().st_mode & 0o007:
            summary.fail(
                f"modes: lease {oct(lease.stat().st_mode)}, dir {oct(netdir.stat().st_mode)}"
            )
        skel.run("mh-ipam", {**env, "CNI_COMMAND": "DEL"}, conf)
    (netdir / "10.66.0.2").unlink()
    (netdir / "last_reserved_ip.0").unlink(missing_ok=True)
    # The store's network directory itself a symlink out of the dataDir.
    other = world.tmp / "ipam2"
    other.mkdir()
    (other / "robust").symlink_to(outside)
    conf2 = world.conf("mh-ipam")
    conf2["ipam"]["dataDir"] = str(other)
    with world.host_ns:
        out, code, _ = skel.run("mh-ipam", env, json.dumps(conf2).encode())
    summary.cases += 1
    doc = error_doc(out, code)
    print(f"   with a symlinked network directory: {doc and (doc['code'], doc['msg'][:80])}")
    if doc is None or doc["code"] == 999 or sorted(p.name for p in outside.iterdir()) != ["victim"]:
        summary.fail(f"a symlinked network directory: exit {code}, {out[:200]!r}")
    for path in [*ROOT.glob("lib/*.py"), *ROOT.glob("plugins/*.py"), *ROOT.glob("ipam/*.py")]:
        text = path.read_text()
        summary.cases += 1
        for bad in ("shell=True", "os.system(", "os.popen(", "/bin/sh"):
            if bad in text:
                summary.fail(f"{path.name} uses {bad}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fuzz-seconds", type=float, default=15)
    parser.add_argument("--crash-rounds", type=int, default=20)
    parser.add_argument("--concurrency-seconds", type=float, default=10)
    parser.add_argument("--bystander-seconds", type=float, default=30)
    parser.add_argument("--storm-pods", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("robustness: run as root")
    registry.OWN_PROGRAM[0] = os.path.realpath(CNIBIN / "multihome")
    summary = Summary()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mhrobust") as tmp:
        world = World(Path(tmp))
        try:
            from conformance import robust_etcd  # hostile etcd, short daemon requests

            robust_etcd.run(world, summary)  # first: it writes the etcd profiles used below
            from conformance import robust_chain, robust_state  # issue 16's parts

            robust_state.run(summary, args.bystander_seconds)
            run_bad_inputs(world, summary)
            run_fuzz(world, summary, args.fuzz_seconds)
            run_crashes(world, summary, args.crash_rounds)
            kinds = ["macvlan", "ipvlan"] if HAVE_IPVLAN else ["macvlan"]
            robust_chain.run(summary, kinds, args.storm_pods)
            run_concurrency(world, summary, args.concurrency_seconds)
            run_faults(world, summary)
            run_security(world, summary)
        finally:
            world.close()
    print(
        f"robustness: {summary.cases} cases tried, {summary.crashes} crashes injected, "
        f"{summary.concurrent_ops} concurrent operations, {summary.leaks} leaks found, "
        f"{len(summary.failures)} failures, in {time.monotonic() - started:.0f} s"
    )
    print(
        f"robustness: bystanders: {summary.bystander_cases} cases, "
        f"{summary.bystander_changes} changed what they should not have, "
        f"{summary.dirty_failed_adds} failed ADDs left state; crash points: "
        f"{summary.crash_points} exercised, {summary.crash_residue} left residue after DEL; "
        f"random kills: {summary.random_kills}, {summary.random_partial} left partial state "
        f"before DEL; daemon deaths mid-request: {summary.daemon_deaths}; "
        f"pods at once: {args.storm_pods} x 2 modes, {summary.storm_duplicates} duplicates"
    )
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
