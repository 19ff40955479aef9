"""The frozen bundle on a Debian 11 node (glibc 2.31): everything runs inside that root.

The node is an overlay over the Debian 11 root ``make dist`` builds in (so the
cached root is never changed), holding ``dist/`` at ``/opt/dist`` and a static
libcni client (``build/cnitool-static``, CGO_ENABLED=0) at
``/usr/local/bin/cnitool``. Every program starts through ``chroot``, in a mount
namespace of its own with ``/proc``, ``/sys``, ``/dev`` and ``/run/netns``
bound in, so the root's loader and glibc 2.31 load the bundle: nothing of the
root is ever executed from the host. Kernel state is read from the host with
``ip -j``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import skips
from tests.rig import ROOT, Netns, unique
from tests.test_examples import gateways, hermetic, load, make_host

NODE_ROOT = Path(os.environ.get("MULTIHOME_BUILD_CACHE", "/var/cache/multihome")) / "bullseye-root"
DIST = ROOT / "dist"
CNITOOL_STATIC = ROOT / "build" / "cnitool-static"
SEEDS = Path(__file__).parent / "data" / "seeds"
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# In the node's own mount namespace: bind the host's kernel views, then chroot.
ENTER = (
    'r=$1; shift; for d in proc sys dev run/netns; do mount --rbind "/$d" "$r/$d"; done; '
    'exec chroot "$r" "$@"'
)
pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(skips.BUNDLE_MANIFEST))]


class Node:
    """An overlay of the Debian 11 root, with the bundle and the static libcni client."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "root"
        for sub in ("upper", "work", "root"):
            (tmp / sub).mkdir()
        opts = f"lowerdir={NODE_ROOT},upperdir={tmp / 'upper'},workdir={tmp / 'work'}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.path)], check=True
        )
        subprocess.run(["mount", "--make-private", str(self.path)], check=True)
        shutil.copytree(DIST / "bundle", self.path / "opt" / "dist" / "bundle", symlinks=True)
        shutil.copytree(DIST / "cni-bin", self.path / "opt" / "dist" / "cni-bin", symlinks=True)
        shutil.copy2(CNITOOL_STATIC, self.path / "usr" / "local" / "bin" / "cnitool")
        (self.path / "run" / "netns").mkdir(parents=True, exist_ok=True)

    def argv(self, *cmd: str, netns: str = "") -> list[str]:
        enter = ["unshare", "--mount", "sh", "-c", ENTER, "sh", str(self.path), *cmd]
        return ["ip", "netns", "exec", netns, *enter] if netns else enter

    def run(
        self, *cmd: str, env: dict[str, str] | None = None, netns: str = "", stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*cmd, netns=netns),
            env={"PATH": HOST_PATH, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    def close(self) -> None:
        if subprocess.run(["umount", str(self.path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    missing = [str(p) for p in (NODE_ROOT / "etc" / "debian_version", CNITOOL_STATIC)]
    missing = [p for p in missing if not Path(p).exists()]
    if missing and not skips.dist_run():
        pytest.skip(f"{skips.BUNDLE_ONLY} needs {', '.join(missing)}; make test-dist builds them")
    assert not missing, f"{missing}: make dist and make test-dist make them"
    made = Node(tmp_path_factory.mktemp("node"))
    yield made
    made.close()


class NodeDaemon:
    """``multihome daemon`` started inside the node, in the "host" namespace."""

    def __init__(self, node: Node, netns: str, log: Path) -> None:
        self.sock = f"/run/{unique('mhd')}/mh.sock"
        self.log = log
        self._fh = log.open("w")
        argv = node.argv(
            "/opt/dist/cni-bin/multihome", "daemon", "--socket", self.sock, netns=netns
        )
        self.proc = subprocess.Popen(argv, stderr=self._fh, env={"PATH": HOST_PATH})
        deadline = time.monotonic() + 20
        while "serving on" not in log.read_text():
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.05)

    def served(self) -> int:
        return self.log.read_text().count("served ")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self._fh.close()


def load_build_dist() -> Any:
    spec = importlib.util.spec_from_file_location(
        "build_dist", ROOT / "packaging" / "build_dist.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bundle_needs_at_most_glibc_2_31() -> None:
    floor = (DIST / "bundle" / "multihome" / "MANIFEST").read_text().splitlines()[2].split()[1]
    assert tuple(int(n) for n in floor.split(".")) <= (2, 31)
    assert load_build_dist().GLIBC_FLOOR == (2, 31)


def test_make_dist_refuses_a_file_that_needs_more(tmp_path: Path) -> None:
    app = tmp_path / "multihome"
    app.mkdir()
    shutil.copy2("/usr/bin/ls", app / "multihome")  # Debian 12's: GLIBC_2.34 symbols
    with pytest.raises(SystemExit, match=r"more than the declared floor 2\.31"):
        load_build_dist().check_floor(app)


def test_the_node_has_glibc_2_31(node: Node) -> None:
    proc = node.run("/usr/bin/ldd", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith(" 2.31")
    assert not list((node.path / "opt" / "dist").rglob("libc.so*"))  # the node's own libc runs


def test_version_of_every_plugin(node: Node) -> None:
    for link in sorted((DIST / "cni-bin").iterdir()):
        if link.name == "multihome":
            continue
        proc = node.run(f"/opt/dist/cni-bin/{link.name}", env={"CNI_COMMAND": "VERSION"})
        assert proc.returncode == 0, (link.name, proc.stdout, proc.stderr)
        assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"


def sbr_table(pod: Netns, address: str) -> int:
    family = "-6" if ":" in address else "-4"
    rules = [r for r in pod.ipj(family, "rule", "show") if r.get("src") == address]
    assert len(rules) == 1, rules
    return int(rules[0]["table"])


def check_kernel(pod: Netns, v4: str, v6: str) -> None:
    """What the abcdesktop dual-stack chain leaves in the pod, read with ip -j."""
    local = pod.ipj("addr", "show", "dev", "net1")[0]["addr_info"]
    addrs = {f"{a['local']}/{a['prefixlen']}" for a in local}
    assert {f"{v4}/24", f"{v6}/64"} <= addrs, addrs
    pod.exec("ping", "-c", "1", "-W", "3", "-I", v4, "203.0.113.1")
    main4 = pod.ipj("-4", "route", "show")
    public = [r for r in main4 if r.get("gateway") == "203.0.113.1" and r["dev"] == "net1"]
    assert len(public) >= 30, main4  # mh-route's public-ipv4 set
    assert not [r for r in public if r["dst"].startswith(("10.", "192.168.", "default"))]
    for address, gateway, family in ((v4, "203.0.113.1", "-4"), (v6, "2001:db8:200::1", "-6")):
        table = pod.ipj(family, "route", "show", "table", str(sbr_table(pod, address)))
        assert [r for r in table if r["dst"] == "default" and r.get("gateway") == gateway], table
    main6 = pod.ipj("-6", "route", "show")
    assert [r for r in main6 if r["dst"] == "default" and r.get("gateway") == "2001:db8:200::1"]


@pytest.mark.parametrize("mode", ["no-daemon", "thick"])
def test_abcdesktop_dualstack_chain(
    node: Node, mode: str, netns_factory: Callable[[str], Netns], tmp_path: Path
) -> None:
    state = f"/var/lib/{unique('mht')}"  # inside the node
    conf = hermetic(load("abcdesktop-vlan-dualstack.yaml"), Path(state))
    conf["name"] = unique("mhn")
    host, _ = make_host(netns_factory, conf["plugins"][0]["master"], gateways(conf))
    pod = netns_factory("pod")
    netconf = node.path / state[1:] / "net.d"
    netconf.mkdir(parents=True)
    (netconf / f"{conf['name']}.conflist").write_text(json.dumps(conf))
    daemon = NodeDaemon(node, host.name, tmp_path / "daemon.log") if mode == "thick" else None
    env = {
        "NETCONFPATH": f"{state}/net.d",
        "CNI_PATH": "/opt/dist/cni-bin",
        "CNI_CACHE_DIR": f"{state}/cache",
        "CNI_IFNAME": "net1",
        "MULTIHOME_SOCKET": daemon.sock if daemon else f"{state}/no-daemon.sock",
    }
    try:
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        for cmd in ("add", "check", "del"):
            proc = node.run(
                "/usr/local/bin/cnitool", cmd, conf["name"], pod.path, env=env, netns=host.name
            )
            assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
            results[cmd] = proc
            if cmd == "add":
                ips = [ip["address"] for ip in json.loads(proc.stdout)["ips"]]
                assert ips == ["203.0.113.10/24", "2001:db8:200::10/64"]
                check_kernel(pod, "203.0.113.10", "2001:db8:200::10")
        assert pod.links() == ["lo"]
        assert not [r for r in pod.ipj("rule", "show") if r.get("src") == "203.0.113.10"]
        leases = node.path / state[1:] / "ipam"
        assert not [p for p in leases.rglob("*") if p.is_file() and p.name[0].isdigit()]
        if daemon:
            assert daemon.served() == 9, daemon.log.read_text()  # 3 plugins x ADD/CHECK/DEL
    finally:
        if daemon:
            daemon.stop()


def test_install_into_the_node(node: Node) -> None:
    dest = f"/opt/{unique('cni')}/bin"
    proc = node.run("/opt/dist/cni-bin/multihome", "install", "--dest", dest)
    assert proc.returncode == 0, proc.stderr
    link = node.path / dest[1:] / "mh-macvlan"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    again = node.run("/opt/dist/cni-bin/multihome", "install", "--dest", dest)
    assert "already installed" in again.stdout, again.stdout + again.stderr
    version = node.run(f"{dest}/mh-macvlan", env={"CNI_COMMAND": "VERSION"})
    assert version.returncode == 0, version.stderr
    assert "1.1.0" in json.loads(version.stdout)["supportedVersions"]


def test_lint_a_seed(node: Node) -> None:
    shutil.copy2(SEEDS / "abcdesktop-ipv4.yaml", node.path / "tmp" / "abcdesktop-ipv4.yaml")
    proc = node.run("/opt/dist/cni-bin/multihome", "lint", "/tmp/abcdesktop-ipv4.yaml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert "abcdesktop-ipv4.yaml:9: error" in out and "comment" in out
    assert "abcdesktop-ipv4.yaml:17: error" in out and "192.169.0.0/16" in out
