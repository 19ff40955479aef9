"""The node image, built and run here as a node would (no container registry needed).

- ``base_tarball()``: a minimal Debian root (debootstrap minbase), made once and
  cached outside the checkout; the archive's address is read from the machine's
  apt sources at run time.
- ``Podman``: podman with throwaway storage and settings under a work directory
  (runc, cgroupfs, vfs: what this kind of machine needs), which imports that
  root as a local base image and builds packaging/Containerfile on it.
- ``Node``: a throwaway "node root" (its opt/cni/bin, run/multihome,
  var/lib/cni) and the DaemonSet's two containers run on it with podman:
  the installer init step, then the daemon with host network and the same
  privileges as packaging/kubernetes/daemonset.yaml.

Used by tests/test_deploy.py (make test-dist) and conformance/bench.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MULTIHOME_BASE_CACHE", "/var/cache/multihome-dev"))
# Debian 11: the oldest glibc the bundle supports (make dist's floor, 2.31), as the
# portable build's root; its own minbase, not that 1.3 GB build root
SUITE = os.environ.get("MULTIHOME_BASE_SUITE", "bullseye")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BASE_TAG = f"localhost/multihome-base:{SUITE}"
IMAGE = "localhost/multihome:test"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# as in packaging/kubernetes/daemonset.yaml: the installer gets these, the daemon
# is privileged (NET_ADMIN + SYS_ADMIN alone fail on the read-only /proc/sys)
INSTALL_CAPS = ("DAC_OVERRIDE", "CHOWN", "FOWNER")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def archive_url() -> str:
    """The Debian archive this machine's apt uses (the first deb822 URIs line)."""
    for line in SOURCES.read_text().splitlines():
        match = re.match(r"URIs:\s*(\S+)", line)
        if match:
            return match.group(1)
    raise RuntimeError(f"no URIs line in {SOURCES}")


def base_tarball() -> Path:
    """A Debian minbase root as a tarball, made once per machine (a minute or two)."""
    tarball = CACHE / f"debian-{SUITE}-minbase.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"root-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    suite = [SUITE, str(work), archive_url()]
    try:
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--keyring={KEYRING}", *suite],
            check=True,
            capture_output=True,
            env={"PATH": PATH},
        )
        shutil.rmtree(work / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        tmp = tarball.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(work), "-cf", str(tmp), "."], check=True)
        tmp.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


class Podman:
    """podman with storage, settings and events under ``base`` (removed by ``remove``)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        (base / "containers.conf").write_text(f"""
[containers]
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{base / "events.log"}"
tmp_dir = "{base / "tmp"}"
""")
        (base / "storage.conf").write_text(f"""
[storage]
driver = "vfs"
graphroot = "{base / "storage"}"
runroot = "{base / "run"}"
""")
        self.env = {
            "CONTAINERS_CONF": str(base / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
            "PATH": PATH,
            "TMPDIR": str(base / "tmp"),
        }
        (base / "tmp").mkdir(exist_ok=True)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {proc.returncode}\n{proc.stderr}")
        return proc

    def build_image(self, context: Path = ROOT) -> str:
        """Import the cached Debian root as the base, build packaging/Containerfile on it.

        ``context`` holds dist/bundle/multihome (make dist).
        """
        self("import", str(base_tarball()), BASE_TAG)
        self(
            "build",
            "--network=none",
            "--build-arg",
            f"BASE={BASE_TAG}",
            "-f",
            str(ROOT / "packaging" / "Containerfile"),
            "-t",
            IMAGE,
            str(context),
        )
        return IMAGE

    def remove(self) -> None:
        self("rm", "--all", "--force", "--time", "0", check=False)
        self("rmi", "--all", "--force", check=False)
        # vfs layers hold read-only copies; podman's own reset removes them cleanly
        self("system", "reset", "--force", check=False)
        shutil.rmtree(self.base, ignore_errors=True)


class Node:
    """A throwaway node root and the DaemonSet's containers run on it, as a kubelet would."""

    def __init__(self, podman: Podman, root: Path, image: str = IMAGE) -> None:
        self.podman = podman
        self.root = root
        self.image = image
        self.cni_bin = root / "opt" / "cni" / "bin"
        self.run_dir = root / "run" / "multihome"
        self.state = root / "var" / "lib" / "cni"
        for path in (self.cni_bin, self.run_dir, self.state):
            path.mkdir(parents=True, exist_ok=True)
        self.sock = self.run_dir / "multihome.sock"
        self.name = f"mh-daemon-{os.getpid()}-{time.monotonic_ns() % 100000}"

    def install(self) -> None:
        """The init container: ``multihome install`` into the node's opt/cni/bin."""
        caps = [f"--cap-add={c}" for c in INSTALL_CAPS]
        self.podman(
            "run", "--rm", "--network=host", "--read-only", "--cap-drop=ALL", *caps,
            "-v", f"{self.cni_bin}:/host/opt/cni/bin",
            self.image, "install", "--dest", "/host/opt/cni/bin",
        )  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """The daemon container, host network, the socket and /var/lib/cni from the node.

        /var/lib/cni and opt/cni/bin are bound at the node root's own paths too
        (a real node's are the same inside and out): a config's data directory
        and the runtime's CNI_PATH then name the same files on both sides.
        """
        self.podman(
            "run", "-d", "--name", self.name, "--network=host", "--read-only", "--privileged",
            "-v", f"{self.run_dir}:/run/multihome",
            "-v", f"{self.state}:/var/lib/cni",
            "-v", f"{self.state}:{self.state}",
            "-v", f"{self.cni_bin}:/opt/cni/bin:ro",
            "-v", f"{self.cni_bin}:{self.cni_bin}:ro",
            self.image, "daemon",
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready:\n{self.logs()}")
            time.sleep(0.2)

    def ready(self) -> bool:
        """The readiness probe, exactly as the DaemonSet runs it (in the container)."""
        return self.podman("exec", self.name, "multihome", "probe", check=False).returncode == 0

    def logs(self) -> str:
        proc = self.podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.podman("kill", "--signal", "KILL", self.name, check=False)
            self.podman("wait", self.name, check=False)  # gone before the next call
        else:
            self.podman("stop", "--time", "30", self.name, check=False)

    def remove(self) -> None:
        self.podman("rm", "--force", "--time", "0", self.name, check=False)
