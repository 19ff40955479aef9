"""The DaemonSet, the uninstaller and the container build file say what our CLI does."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from multihome.ipam import config as ipam_config
from multihome.lib import cli
from multihome.lib.thick import shim
from multihome.plugins import route
from tests.rig import ROOT

KUBE = ROOT / "packaging" / "kubernetes"


def pod_spec(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((KUBE / name).read_text())
    assert doc["kind"] == "DaemonSet" and doc["metadata"]["namespace"] == "kube-system"
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def mounts(container: dict[str, Any], spec: dict[str, Any]) -> dict[str, str]:
    """mountPath -> the host path it shows."""
    host = {v["name"]: v.get("hostPath", {}).get("path", "") for v in spec["volumes"]}
    return {m["mountPath"]: host[m["name"]] for m in container["volumeMounts"]}


def test_daemonset_installs_then_runs_the_daemon() -> None:
    spec = pod_spec("daemonset.yaml")
    (init,) = spec["initContainers"]
    ns = cli.build_parser().parse_args(init["args"])
    assert ns.command == "install" and ns.dest == "/host/opt/cni/bin" and not ns.then_sleep
    assert mounts(init, spec) == {"/host/opt/cni/bin": "/opt/cni/bin"}
    (daemon,) = spec["containers"]
    ns = cli.build_parser().parse_args(daemon["args"])
    assert ns.command == "daemon" and ns.socket == shim.DEFAULT_SOCKET
    assert ns.grace < spec["terminationGracePeriodSeconds"]
    assert spec["hostNetwork"] is True
    paths = mounts(daemon, spec)
    assert paths["/run/multihome"] == "/run/multihome" == os.path.dirname(shim.DEFAULT_SOCKET)
    assert paths["/var/lib/cni"] == "/var/lib/cni"
    for default in (ipam_config.DEFAULT_DATA_DIR, route.DEFAULT_STATE_DIR):
        assert default.startswith("/var/lib/cni/")  # the files a binary without it uses
    for probe in ("readinessProbe", "livenessProbe"):
        command = daemon[probe]["exec"]["command"]
        assert command[0] == "/opt/multihome/multihome"
        assert cli.build_parser().parse_args(command[1:]).command == "probe"


def test_uninstaller_args_are_ours() -> None:
    spec = pod_spec("uninstall.yaml")
    (container,) = spec["containers"]
    ns = cli.build_parser().parse_args(container["args"])
    assert ns.command == "install" and ns.dest == "/host/opt/cni/bin" and ns.then_sleep
    assert ns.uninstall
    assert mounts(container, spec) == {"/host/opt/cni/bin": "/opt/cni/bin"}
    assert container["readinessProbe"]["exec"]["command"]


def test_containerfile_runs_the_daemon_on_a_base_given_as_argument() -> None:
    text = (ROOT / "packaging" / "Containerfile").read_text()
    assert "COPY dist/bundle/multihome /opt/multihome" in text
    assert re.search(r"^ARG BASE=\S+$", text, re.M) and "FROM ${BASE}" in text
    cmd = next(line for line in text.splitlines() if line.startswith("CMD"))
    args = yaml.safe_load(cmd.removeprefix("CMD "))
    assert cli.build_parser().parse_args(args).command == "daemon"


@pytest.mark.needs_tool(str(ROOT / "dist" / "bundle" / "multihome" / "MANIFEST"))
def test_then_sleep_installs_and_stops_on_sigterm(tmp_path: Path) -> None:
    cmd = [
        str(ROOT / "dist" / "cni-bin" / "multihome"),
        "install",
        "--dest",
        str(tmp_path),
        "--then-sleep",
    ]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        _drive(proc, tmp_path)


def _drive(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    try:
        assert proc.stdout is not None
        assert "copied bundle" in proc.stdout.readline()
        probe = f"CNI_COMMAND=VERSION {shlex.quote(str(tmp_path / 'mh-macvlan'))} </dev/null"
        assert (
            subprocess.run(["/bin/sh", "-c", probe], capture_output=True, check=False).returncode
            == 0
        )
        time.sleep(0.2)
        assert proc.poll() is None  # still up for the readiness probe
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
