"""make robustness, part: hostile input with bystanders, compared after every case.

Before any case, other owners get state a careless plugin could touch:
- in the very pod the cases use, ``bystander-a``/net2 (the full chain on the
  file store: link, addresses, mh-route's routes and state file, mh-sbr's rules
  and table) and ``bystander-e``/net3 (the full chain on etcd);
- in another pod, ``bystander-b``/net1 (the full chain on the file store);
- host-local-style leases of a ``foreign``/eth0 owner and an ID-only legacy
  lease, and mh-route state of a ``ghost`` owner whose pod is elsewhere.

Every case has a container ID of its own and is one of: an ADD of the whole
chain with one plugin's config mutated, hostile or (a third of the time) a
change a pod may well make (then the runtime's DEL of the chain); a DEL,
CHECK, STATUS or GC with a mutated config; a GC whose attachment list holds
the bystanders plus mutated entries. After each case, and after each failed
plugin of an ADD, the pods' addresses, routes (all tables) and rules and the
host's links are read with ``ip -j``, every file under the store and state
directories with its contents, and every etcd key of the network; anything
that differs from the state before is counted.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from conformance import crashrig, etcdrig
from tests.rig import CNIBIN, Netns, unique

HOSTILE: list[Any] = [
    None,
    -1,
    0,
    2**33,
    "",
    "..",
    "../x",
    "eth0",
    "net2",
    "10.0.0.1/33",
    "0.0.0.0/0",
    "::/0",
    "10.244.0.0/24",
    [],
    {},
    [1],
    [None],
    True,
    [{"dst": "0.0.0.0/0"}],
    [{"dst": "10.244.0.0/24"}],
    [{"dst": "203.0.113.0/24", "gw": "10.244.0.1"}],
    [[{"subnet": "203.0.113.0/24"}]],
    [[{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.250"}]],
    {"type": "etcd", "profile": "absent"},
]
# Changes a pod may well make: the ADD succeeds, so its DEL has real state to remove.
VALID: list[tuple[str, str, Any]] = [
    ("mh-macvlan", "mode", "private"),
    ("mh-macvlan", "mode", "vepa"),
    ("mh-macvlan", "mtu", 1400),
    ("mh-ipam", "routes", [{"dst": "198.18.0.0/15"}, {"dst": "10.244.0.0/16"}]),
    ("mh-route", "addroutes", [{"dst": "198.18.0.0/15", "gw": "203.0.113.1", "table": 300}]),
    ("mh-route", "flushroutes", True),
    ("mh-route", "delroutes", [{"dst": "0.0.0.0/0"}]),
    ("mh-sbr", "table", 150),
    ("mh-sbr", "addSourceHints", True),
]
KEYS = {
    "mh-macvlan": ["master", "mode", "mtu", "mac", "ipam", "linkInContainer", "bcqueuelen"],
    "mh-ipam": ["ranges", "routes", "exclude", "type", "store", "rangeStart", "subnet"],
    "mh-route": ["addroutes", "delroutes", "flushroutes", "flushgateway", "presets", "table"],
    "mh-sbr": ["table", "gateways", "addSourceHints", "sbrTable"],
}


class StateWorld:
    """The namespaces, the stores and the bystanders; ``snapshot`` reads them all."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host = Netns(unique("mhbh"))
        self.pod = Netns(unique("mhbp"))
        self.other = Netns(unique("mhbo"))
        self.host.ip("link", "add", "eno1", "type", "veth", "peer", "name", "gw0")
        self.host.ip("link", "set", "eno1", "up")
        self.host.ip("link", "set", "gw0", "up")
        for pod in (self.pod, self.other):
            crashrig.pod_like_multus(pod, self.host, unique("mhbe"))
        self.data = tmp / "data"
        self.etcd = etcdrig.EtcdCluster(tmp / "etcd", netns=self.host.name).start()
        self.prefix = f"/multihome/robust{os.getpid()}"
        self.store = {"type": "etcd", "profile": "bystanders", "node": "n1", "timeout": 2}
        _add_profile(self.etcd.endpoints, self.prefix)
        self.file_chain = crashrig.chain("macvlan", "eno1", self.data)
        self.etcd_chain = crashrig.chain("macvlan", "eno1", self.data, etcd=self.store)
        # (a case that turns the store into a file store must not reach the default dataDir)
        self.etcd_chain["plugins"][0]["ipam"]["dataDir"] = str(self.data / "ipam")
        self.bystanders = [("bystander-a", "net2"), ("bystander-e", "net3")]
        self.bystanders += [("bystander-b", "net1"), ("foreign", "eth0"), ("ghost", "net1")]

    def env(self, command: str, cid: str, ifname: str, pod: Netns | None) -> dict[str, str]:
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_IFNAME": ifname,
            "CNI_PATH": str(CNIBIN),
            "PATH": os.environ.get("PATH", ""),
        }
        if pod is not None:
            env["CNI_NETNS"] = pod.path
        if "MULTIHOME_ETCD_CONF" in os.environ:
            env["MULTIHOME_ETCD_CONF"] = os.environ["MULTIHOME_ETCD_CONF"]
        return env

    def seed(self, run: ChainRunner) -> None:
        for chain, cid, ifname, pod in (
            (self.file_chain, "bystander-a", "net2", self.pod),
            (self.etcd_chain, "bystander-e", "net3", self.pod),
            (self.file_chain, "bystander-b", "net1", self.other),
        ):
            if run.add(chain, cid, ifname, pod) is None:
                raise AssertionError(f"seeding {cid}/{ifname} failed: {run.last_error}")
        net = self.data / "ipam" / crashrig.NET
        (net / "203.0.113.250").write_bytes(b"foreign\r\neth0")  # as host-local writes it
        (net / "203.0.113.251").write_bytes(b"legacyid")  # an ID-only legacy lease
        ghost = self.data / "route" / crashrig.NET / "ghost-net1.json"
        ghost.write_text(json.dumps({"container": "ghost", "ifname": "net1", "added": []}))

    def snapshot(self, full: bool = True) -> dict[str, Any]:
        state = {
            **crashrig.kernel_state(self.pod, self.host),
            "files": crashrig.file_state([self.data]),
            "etcd": crashrig.etcd_state(self.etcd, self.prefix),
        }
        if full:
            other = crashrig.kernel_state(self.other, self.host)
            state.update({f"other {k}": v for k, v in other.items() if k != "host links"})
        return state

    def close(self) -> None:
        self.etcd.stop()
        for ns in (self.pod, self.other, self.host):
            ns.delete()


def _add_profile(endpoints: list[str], prefix: str, name: str = "bystanders") -> None:
    """Profile ``name`` in the node's etcd settings (the file the runs use)."""
    path = os.environ.get("MULTIHOME_ETCD_CONF")
    if not path:
        import tempfile

        path = os.path.join(tempfile.mkdtemp(prefix="mh-robust-etcd-"), "etcd.conf")
        os.environ["MULTIHOME_ETCD_CONF"] = path
    doc = json.loads(Path(path).read_text()) if os.path.exists(path) else {"profiles": {}}
    doc["profiles"][name] = {"endpoints": endpoints, "prefix": prefix}
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(doc))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


class ChainRunner:
    """A conflist run as libcni runs it, each plugin in-process from the host namespace."""

    def __init__(self, world: StateWorld) -> None:
        from multihome.lib.netns import NetNS

        self.world = world
        self.host_ns = NetNS(world.host.path)
        self.last_error = ""
        self.dirty_failures = 0  # plugins whose failed ADD left something (must be 0)
        self.failures: list[str] = []

    def call(
        self,
        command: str,
        conflist: dict[str, Any],
        i: int,
        cid: str,
        ifname: str,
        pod: Netns | None = None,
        **kw: Any,
    ) -> tuple[bytes, int]:
        from multihome.lib import skel

        plugin = conflist["plugins"][i]
        doc = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin, **kw}
        env = self.world.env(command, cid, ifname, pod)
        ptype = plugin.get("type")
        name = ptype if isinstance(ptype, str) and ptype.startswith("mh-") else "mh-noop"
        with self.host_ns:
            out, code, _ = skel.run(name, env, json.dumps(doc).encode())
        if code:
            self.last_error = out.decode("utf-8", "replace")[:300]
        return out, code

    def add(
        self, conflist: dict[str, Any], cid: str, ifname: str, pod: Netns, watch: bool = False
    ) -> dict[str, Any] | None:
        """The chain's ADD, plugin by plugin; None at the first failure. With ``watch``,
        a plugin whose ADD fails must leave things as it found them."""
        prev = None
        for i in range(len(conflist["plugins"])):
            before = self.world.snapshot(full=False) if watch else None
            extra = {"prevResult": prev} if prev is not None else {}
            out, code = self.call("ADD", conflist, i, cid, ifname, pod=pod, **extra)
            if code:
                if before is not None:
                    left = crashrig.diff(before, self.world.snapshot(full=False))
                    if left:
                        self.dirty_failures += 1
                        self.failures.append(
                            f"failed ADD of {conflist['plugins'][i].get('type')} ({cid}) left: "
                            + "; ".join(left[:4])
                        )
                return None
            prev = json.loads(out)
        return prev

    def delete(
        self, conflist: dict[str, Any], cid: str, ifname: str, pod: Netns | None, prev: Any
    ) -> None:
        """libcni's DEL: the plugins in reverse, with the cached result when there is one."""
        extra = {"prevResult": prev} if prev is not None else {}
        for i in reversed(range(len(conflist["plugins"]))):
            self.call("DEL", conflist, i, cid, ifname, pod=pod, **extra)


def mutate(rng: random.Random, conflist: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """One hostile change to one plugin of a copy of ``conflist``; and what it was."""
    doc = json.loads(json.dumps(conflist))
    if rng.random() < 0.3:
        kind, key, value = rng.choice(VALID)
        if kind == "mh-ipam":
            target = doc["plugins"][0]["ipam"]
        else:
            target = next(p for p in doc["plugins"] if p["type"] == kind)
        target[key] = value
        return doc, f"(valid) {kind}.{key}={json.dumps(value)[:40]}"
    i = rng.randrange(len(doc["plugins"]))
    target = doc["plugins"][i]
    kind = target["type"]
    if kind == "mh-macvlan" and rng.random() < 0.5:
        target, kind = target["ipam"], "mh-ipam"
    key = rng.choice(KEYS[kind] + list(target))
    if key in ("type", "dataDir", "stateDir") and kind != "mh-ipam":
        key = rng.choice(KEYS[kind])
    if key == "dataDir":
        key = "ranges"
    value = rng.choice(HOSTILE)
    target[key] = value
    return doc, f"{kind}.{key}={json.dumps(value)[:40]}"


class Cases:
    def __init__(self, world: StateWorld, seed: int = 16) -> None:
        self.world = world
        self.run = ChainRunner(world)
        self.rng = random.Random(seed)
        self.n = 0
        self.tried = 0
        self.changed = 0  # cases after which anything differed (must be 0)
        self.adds_ok = 0

    def _cid(self) -> str:
        self.n += 1
        return f"case{self.n}"

    def _compare(self, baseline: dict[str, Any], label: str) -> None:
        left = crashrig.diff(baseline, self.world.snapshot())
        self.tried += 1
        if left:
            self.changed += 1
            self.run.failures.append(f"{label}: changed " + "; ".join(left[:5]))

    def one(self, baseline: dict[str, Any]) -> None:
        chain = self.rng.choice([self.world.file_chain, self.world.etcd_chain])
        conf, what = mutate(self.rng, chain)
        cid = self._cid()
        command = self.rng.choice(["ADD", "ADD", "ADD", "DEL", "CHECK", "STATUS", "GC", "GC"])
        pod = self.world.pod
        if command == "ADD":
            result = self.run.add(conf, cid, "net1", pod, watch=True)
            self.adds_ok += result is not None
            self.run.delete(conf, cid, "net1", pod, result)  # the runtime's DEL
        elif command == "GC":
            keep = [{"containerID": c, "ifname": i} for c, i in self.world.bystanders]
            extra = self.rng.choice([*HOSTILE[:12], {"containerID": cid}, {"ifname": "net1"}])
            self.run.call(
                "GC", conf, 0, cid, "net1", **{"cni.dev/valid-attachments": [*keep, extra]}
            )
            for i in (1, 2):
                self.run.call("GC", conf, i, cid, "net1", **{"cni.dev/attachments": keep})
        else:
            i = self.rng.randrange(len(conf["plugins"]))
            prev = self.rng.choice([None, {"cniVersion": "1.0.0", "ips": []}])
            extra = {"prevResult": prev} if prev is not None else {}
            self.run.call(command, conf, i, cid, "net1", pod=pod, **extra)
        self._compare(baseline, f"{command} {cid} with {what}")


def run(summary: Any, seconds: float) -> None:
    """Seed the bystanders, then cases until ``seconds`` are up; figures into ``summary``."""
    import tempfile

    from multihome.lib import log

    print(f"0. hostile input with bystanders, state compared after each case, {seconds:g} s")
    with tempfile.TemporaryDirectory(prefix="mhbystand") as tmp:
        log.configure("multihome", str(Path(tmp) / "plugins.log"), to_stderr=False)
        world = StateWorld(Path(tmp))
        try:
            cases = Cases(world)
            world.seed(cases.run)
            # a first locked section notices the leases written behind its back (their
            # index entries are made then): a clean ADD and DEL before the baseline
            warm = cases.run.add(world.file_chain, "warmup", "net1", world.pod)
            cases.run.delete(world.file_chain, "warmup", "net1", world.pod, warm)
            baseline = world.snapshot()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                cases.one(baseline)
            # the bystanders are still whole: their own DEL removes exactly their state
            for chain, cid, ifname, pod in (
                (world.file_chain, "bystander-a", "net2", world.pod),
                (world.etcd_chain, "bystander-e", "net3", world.pod),
                (world.file_chain, "bystander-b", "net1", world.other),
            ):
                cases.run.delete(chain, cid, ifname, pod, None)
        finally:
            world.close()
            log.configure("multihome")
    for failure in cases.run.failures:
        summary.fail(failure)
    summary.cases += cases.tried
    summary.bystander_cases = cases.tried
    summary.bystander_changes = cases.changed
    summary.dirty_failed_adds = cases.run.dirty_failures
    print(
        f"   {cases.tried} cases ({cases.adds_ok} chain ADDs succeeded), "
        f"{cases.changed} changed what they should not have, "
        f"{cases.run.dirty_failures} failed plugin ADDs left state",
        flush=True,
    )
