"""The node image, built and run here as a node would (no container registry needed).

- ``base_tarball()``: a minimal Debian root (debootstrap minbase), made once and
  cached outside the checkout; the archive's address is read from the machine's
  apt sources at run time.
- ``Podman``: podman with throwaway storage and settings under a work directory
  (runc, cgroupfs, vfs: what this kind of machine needs), which imports that
  root as a local base image and builds packaging/Containerfile on it.
- ``Node``: a throwaway "node root" (its opt/cni/bin, run/multihome,
  var/lib/cni, etc/multihome) and the DaemonSet's two containers run on it
  with podman, as packaging/kubernetes/daemonset.yaml says (args, host
  network, securityContext, mounts, probes: read from the manifest): the
  installer init step, then the daemon; and uninstall.yaml's container.

Used by tests/test_deploy.py (make test-dist) and conformance/bench.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MULTIHOME_BASE_CACHE", "/var/cache/multihome-dev"))
# Debian 11: the oldest glibc the bundle supports (make dist's floor, 2.31), as the
# portable build's root; its own minbase, not that 1.3 GB build root
SUITE = os.environ.get("MULTIHOME_BASE_SUITE", "bullseye")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BASE_TAG = f"localhost/multihome-base:{SUITE}"
IMAGE = "localhost/multihome:test"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
KUBE = ROOT / "packaging" / "kubernetes"
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


def podman_config(base: Path, network: str = "") -> dict[str, str]:
    """Throwaway podman settings and storage under ``base`` (runc, cgroupfs, vfs: what
    this kind of machine needs); ``network`` is more lines for its [network] table.
    Returns the environment that makes podman use them (tests/test_podman.py's too)."""
    (base / "containers.conf").write_text(f"""
[containers]
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[network]
{network}network_config_dir = "{base / "net.d"}"
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
    return {
        "CONTAINERS_CONF": str(base / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(base / "storage.conf"),
        "PATH": PATH,
    }


class Podman:
    """podman with storage, settings and events under ``base`` (removed by ``remove``)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.env = {**podman_config(base), "TMPDIR": str(base / "tmp")}
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


def pod_spec(manifest: str) -> dict[str, Any]:
    """The pod template of a DaemonSet in packaging/kubernetes/."""
    doc = yaml.safe_load((KUBE / manifest).read_text())
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def security_flags(container: dict[str, Any]) -> list[str]:
    """podman's form of a container's securityContext."""
    ctx = container.get("securityContext", {})
    flags = ["--user", str(ctx["runAsUser"])] if "runAsUser" in ctx else []
    if ctx.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if ctx.get("privileged"):
        flags.append("--privileged")
    caps = ctx.get("capabilities", {})
    flags += [f"--cap-drop={c}" for c in caps.get("drop", [])]
    flags += [f"--cap-add={c}" for c in caps.get("add", [])]
    return flags


class Node:
    """A throwaway node root and the DaemonSet's containers run on it, as a kubelet would.

    Args, securityContext, hostPath and emptyDir mounts and probes are read from
    the manifests; each hostPath is the same path under the node root.
    """

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
        self.spec = pod_spec("daemonset.yaml")
        (self.daemon,) = self.spec["containers"]

    def _run_flags(self, spec: dict[str, Any], container: dict[str, Any]) -> list[str]:
        flags = ["--network=host"] if spec.get("hostNetwork") else ["--network=none"]
        flags += security_flags(container)
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "hostPath" in volume:
                source = self.root / volume["hostPath"]["path"].lstrip("/")
            else:  # an emptyDir
                source = self.root / "pods" / self.name / mount["name"]
            source.mkdir(parents=True, exist_ok=True)
            mode = ":ro" if mount.get("readOnly") else ""
            flags += ["-v", f"{source}:{mount['mountPath']}{mode}"]
        return flags

    def install(self) -> None:
        """The init container: ``multihome install`` into the node's opt/cni/bin."""
        (init,) = self.spec["initContainers"]
        flags = self._run_flags(self.spec, init)
        self.podman("run", "--rm", *flags, self.image, *init["args"])

    def start(self, timeout: float = 60.0) -> None:
        """The daemon container, host network, the socket and /var/lib/cni from the node.

        /var/lib/cni and opt/cni/bin are bound at the node root's own paths too
        (a real node's are the same inside and out): a config's data directory
        and the runtime's CNI_PATH then name the same files on both sides.
        """
        flags = self._run_flags(self.spec, self.daemon)
        same = [f"{self.state}:{self.state}", f"{self.cni_bin}:{self.cni_bin}:ro"]
        flags += [arg for path in same for arg in ("-v", path)]
        self.podman("run", "-d", "--name", self.name, *flags, self.image, *self.daemon["args"])
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready:\n{self.logs()}")
            time.sleep(0.2)

    def ready(self) -> bool:
        """The readiness probe, exactly as the DaemonSet runs it (in the container)."""
        command = self.daemon["readinessProbe"]["exec"]["command"]
        return self.podman("exec", self.name, *command, check=False).returncode == 0

    def uninstall(self, polls: int = 300) -> None:
        """packaging/kubernetes/uninstall.yaml's container, until its readiness probe passes."""
        spec = pod_spec("uninstall.yaml")
        (container,) = spec["containers"]
        name = f"{self.name}-uninstall"
        flags = self._run_flags(spec, container)
        self.podman("run", "-d", "--name", name, *flags, self.image, *container["args"])
        try:
            probe = container["readinessProbe"]["exec"]["command"]
            for _ in range(polls):
                if self.podman("exec", name, *probe, check=False).returncode == 0:
                    return
                time.sleep(0.2)
            raise RuntimeError("the uninstaller never got ready")
        finally:
            self.podman("rm", "--force", "--time", "0", name, check=False)

    def logs(self) -> str:
        proc = self.podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.podman("kill", "--signal", "KILL", self.name, check=False)
            self.podman("wait", self.name, check=False)  # gone before the next call
        else:
            grace = str(self.spec["terminationGracePeriodSeconds"])
            self.podman("stop", "--time", grace, self.name, check=False)

    def remove(self) -> None:
        self.podman("rm", "--force", "--time", "0", self.name, check=False)
