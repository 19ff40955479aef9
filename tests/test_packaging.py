"""The DaemonSet, the uninstaller and the container build file say what our CLI does."""

from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from multihome.lib import cli
from tests.rig import ROOT

KUBE = ROOT / "packaging" / "kubernetes"


def containers(name: str) -> list[dict[str, Any]]:
    doc = yaml.safe_load((KUBE / name).read_text())
    assert doc["kind"] == "DaemonSet" and doc["metadata"]["namespace"] == "kube-system"
    spec = doc["spec"]["template"]["spec"]
    assert {v["hostPath"]["path"] for v in spec["volumes"]} == {"/opt/cni/bin"}
    result: list[dict[str, Any]] = spec["containers"]
    return result


@pytest.mark.parametrize("name", ["daemonset.yaml", "uninstall.yaml"])
def test_manifest_args_are_ours(name: str) -> None:
    for container in containers(name):
        ns = cli.build_parser().parse_args(container["args"])
        assert ns.command == "install" and ns.dest == "/host/opt/cni/bin" and ns.then_sleep
        assert ns.uninstall is (name == "uninstall.yaml")
        assert container["readinessProbe"]["exec"]["command"]


def test_readiness_probe_runs_an_installed_plugin() -> None:
    probe = containers("daemonset.yaml")[0]["readinessProbe"]["exec"]["command"][-1]
    assert "CNI_COMMAND=VERSION /host/opt/cni/bin/mh-macvlan" in probe


def test_containerfile_runs_the_installer() -> None:
    text = (ROOT / "packaging" / "Containerfile").read_text()
    assert "COPY dist/bundle/multihome /opt/multihome" in text
    cmd = next(line for line in text.splitlines() if line.startswith("CMD"))
    args = yaml.safe_load(cmd.removeprefix("CMD "))
    assert cli.build_parser().parse_args(args).command == "install"


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
