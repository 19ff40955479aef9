"""The test rig: throwaway network namespaces, plugin and cnitool runners.

Every namespace and link a test makes has a unique name and is deleted by
name afterwards; the machine's own interfaces are never touched. Kernel
state is always read back with ``ip -j``, never with the code under test.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# make test-dist points this at the frozen bundle's dist/cni-bin.
CNIBIN = Path(os.environ.get("MULTIHOME_CNI_BIN", ROOT / "build" / "cni-bin")).resolve()
CNITOOL = ROOT / "build" / "cnitool"
# The same client on libcni 1.3.0 (spec 1.1.0: GC and STATUS); see conformance/cnitool13.
CNITOOL13 = ROOT / "build" / "cnitool13"
REFERENCE_BIN = Path("/usr/lib/cni")
VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
_counter = itertools.count()


def unique(prefix: str) -> str:
    """A name unique to this test process: ``<prefix><pid><n>``, at most 15 chars."""
    name = f"{prefix}{os.getpid() % 100000}x{next(_counter)}"
    assert len(name) <= 15, name
    return name


def sh(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Netns:
    """A named namespace made with ``ip netns add``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"
        sh("ip", "netns", "add", name)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.name, *args, check=check)

    def ipj(self, *args: str) -> Any:
        out = sh("ip", "-j", "-n", self.name, *args).stdout
        return json.loads(out) if out.strip() else []

    def exec(self, *cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *cmd, check=check, **kw)

    def links(self) -> list[str]:
        return [link["ifname"] for link in self.ipj("link", "show")]

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)


def plugin_env(command: str, **extra: str) -> dict[str, str]:
    env = {"CNI_COMMAND": command, "CNI_PATH": str(CNIBIN), "PATH": os.environ.get("PATH", "")}
    env.update(passed_env())
    env.update(extra)
    return env


def passed_env() -> dict[str, str]:
    """What a runtime's environment would hold for our plugins: the node's etcd settings
    file, when a test made one (tests.etcd_node)."""
    key = "MULTIHOME_ETCD_CONF"
    return {key: os.environ[key]} if key in os.environ else {}


def run_plugin(
    name: str,
    env: dict[str, str],
    stdin: bytes | str | dict[str, Any] = b"",
    bindir: Path = CNIBIN,
    netns: Netns | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Exec a plugin binary as a runtime would; optionally from inside ``netns``."""
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin)
    if isinstance(stdin, str):
        stdin = stdin.encode()
    cmd = [str(bindir / name)]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns.name, *cmd]
    return subprocess.run(cmd, input=stdin, env=env, capture_output=True, check=False, timeout=60)


def one_json(out: bytes) -> Any:
    """Stdout must hold exactly one JSON document."""
    text = out.decode()
    doc, end = json.JSONDecoder().raw_decode(text.lstrip())
    assert not text.lstrip()[end:].strip(), f"extra output after the JSON document: {text!r}"
    return doc


class Cnitool:
    """Runs build/cnitool (libcni) from inside the "host" namespace."""

    def __init__(
        self, host: Netns, confdir: Path, cachedir: Path, cni_path: str, tool: Path = CNITOOL
    ) -> None:
        self.host = host
        self.tool = tool
        self.confdir = confdir
        self.cachedir = cachedir
        self.cni_path = cni_path
        confdir.mkdir(parents=True, exist_ok=True)

    def write(self, conflist: dict[str, Any], filename: str | None = None) -> str:
        name = conflist["name"]
        ext = "conflist" if "plugins" in conflist else "conf"
        (self.confdir / (filename or f"{name}.{ext}")).write_text(json.dumps(conflist, indent=1))
        return str(name)

    def run(
        self,
        cmd: str,
        network: str,
        pod: Netns | str,
        *,
        ifname: str = "net1",
        args: str = "",
        cap_args: dict[str, Any] | None = None,
        container_id: str = "",
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NETCONFPATH": str(self.confdir),
            "CNI_PATH": self.cni_path,
            "CNI_CACHE_DIR": str(self.cachedir),
            "CNI_IFNAME": ifname,
        }
        if args:
            env["CNI_ARGS"] = args
        if cap_args is not None:
            env["CAP_ARGS"] = json.dumps(cap_args)
        if container_id:
            env["CNI_CONTAINERID"] = container_id
        env.update(passed_env())
        env.update(extra_env or {})  # libcni passes its environment on to the plugins
        path = pod.path if isinstance(pod, Netns) else pod
        argv = [str(self.tool), cmd, network] + ([path] if path else [])
        return self.host.exec(*argv, check=False, env=env)


# ---- Multus-shaped pods -------------------------------------------------------------
# Under Multus a pod already has eth0 from the cluster network, with its addresses and
# a default route, before any delegate runs (../shared/notes/multus-facts.md).


def cluster_eth0(pod: Netns, node: Netns, n: int = 1) -> tuple[str, str]:
    """Give ``pod`` the cluster network's eth0: a veth whose other end (the node side,
    with the gateways 10.244.<n>.1 and fd00:10:244:<n>::1) is in ``node``; addresses
    .5/::5 and a default route per family. Returns the pod's (IPv4, IPv6) addresses."""
    node_end = unique("mhc")
    pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", node_end, "netns", node.name)
    node.ip("addr", "add", f"10.244.{n}.1/24", "dev", node_end)
    node.ip("addr", "add", f"fd00:10:244:{n}::1/64", "dev", node_end, "nodad")
    node.ip("link", "set", node_end, "up")
    pod.ip("addr", "add", f"10.244.{n}.5/24", "dev", "eth0")
    pod.ip("addr", "add", f"fd00:10:244:{n}::5/64", "dev", "eth0", "nodad")
    pod.ip("link", "set", "eth0", "up")
    pod.ip("route", "add", "default", "via", f"10.244.{n}.1", "dev", "eth0")
    pod.ip("-6", "route", "add", "default", "via", f"fd00:10:244:{n}::1", "dev", "eth0")
    return f"10.244.{n}.5/24", f"fd00:10:244:{n}::5/64"


def multus_cni_args(
    pod_name: str, container_id: str, *, namespace: str = "default", uid: str = ""
) -> str:
    """CNI_ARGS exactly as a delegate gets it under Multus: Multus's own list
    (IgnoreUnknown=true), then the runtime's (containerd's IgnoreUnknown=1)."""
    uid = uid or f"uid-{pod_name}"
    pod = (
        f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod_name};"
        f"K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )
    return f"IgnoreUnknown=true;{pod};IgnoreUnknown=1;{pod}"


def have(tool: str) -> bool:
    return shutil.which(tool) is not None or Path(tool).exists()
