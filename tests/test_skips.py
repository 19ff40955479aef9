"""Strict skips: under CI a skip fails unless tests/skips.py allows its reason.

Each case runs pytest in a subprocess on a small sample file with this suite's
conftest loaded as a plugin, so the real hooks decide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import skips
from tests.rig import ROOT

SAMPLE = """
import pytest

def test_passes():
    pass

def test_skips_for_a_missing_tool():
    pytest.skip("needs etcd: etcd is not installed")

def test_skips_for_the_guest():
    pytest.skip("needs_kernel(ipvlan): kernel lacks link type ipvlan; run 'make test-vm'")

@pytest.mark.needs_tool("/nonexistent/podman")
def test_needs_a_missing_tool():
    pass

@pytest.mark.xfail(reason="an expected failure is not a skip", strict=True)
def test_expected_failure():
    raise AssertionError
"""


def run_pytest(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"CI", "MULTIHOME_VM_GUEST", "MULTIHOME_CNI_BIN", "PYTEST_ADDOPTS"}
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_sample(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    sample = tmp_path / "test_sample.py"
    sample.write_text(SAMPLE)
    return run_pytest(
        ["-p", "tests.conftest", "-c", str(ROOT / "pyproject.toml"), str(sample)], **env
    )


def outcome(proc: subprocess.CompletedProcess[str], test: str) -> str:
    """The outcome word of ``test`` in pytest's verbose progress lines."""
    for line in proc.stdout.splitlines():
        words = line.split()
        if len(words) > 1 and words[0].endswith(f"::{test}"):
            return words[1]
    raise AssertionError(f"{test} not in the output:\n{proc.stdout}")


def test_without_ci_a_skip_is_a_skip(tmp_path: Path) -> None:
    proc = run_sample(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcome(proc, "test_skips_for_a_missing_tool") == "SKIPPED"
    assert outcome(proc, "test_needs_a_missing_tool") == "SKIPPED"
    assert outcome(proc, "test_skips_for_the_guest") == "SKIPPED"


def test_under_ci_only_allowed_skips_pass(tmp_path: Path) -> None:
    proc = run_sample(tmp_path, CI="true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert outcome(proc, "test_passes") == "PASSED"
    assert outcome(proc, "test_skips_for_a_missing_tool") == "FAILED"
    assert outcome(proc, "test_needs_a_missing_tool") == "ERROR"
    assert outcome(proc, "test_skips_for_the_guest") == "SKIPPED"
    assert outcome(proc, "test_expected_failure") == "XFAIL"
    assert "strict skip (CI is set): 'needs etcd: etcd is not installed'" in proc.stdout
    assert "/nonexistent/podman is missing" in proc.stdout


def test_in_the_guest_a_needs_kernel_skip_fails(tmp_path: Path) -> None:
    proc = run_sample(tmp_path, CI="true", MULTIHOME_VM_GUEST="uml")
    assert proc.returncode == 1
    assert outcome(proc, "test_skips_for_the_guest") == "FAILED"


@pytest.mark.parametrize(
    ("reason", "env", "ok"),
    [
        (f"{skips.BUNDLE_ONLY} x", {}, True),
        (f"{skips.BUNDLE_ONLY} x", {"MULTIHOME_CNI_BIN": "/d"}, False),
        (f"{skips.DEV_ONLY} x", {"MULTIHOME_CNI_BIN": "/d"}, True),
        (f"{skips.DEV_ONLY} x", {}, False),
        ("needs_kernel(vlan): x", {}, True),
        ("needs_kernel(vlan): x", {"MULTIHOME_VM_GUEST": "qemu"}, False),
        (f"{skips.CORPUS} x", {}, not skips.SHARED.exists()),
        ("privileged: needs root for network namespaces", {}, False),
        ("needs_tool: /usr/lib/cni/host-local is missing", {}, False),
        ("Skipped: needs_kernel(ipvlan): x", {}, True),
    ],
)
def test_the_allow_list(
    reason: str, env: dict[str, str], ok: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MULTIHOME_CNI_BIN", "MULTIHOME_VM_GUEST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert skips.allowed(reason) is ok


@pytest.mark.privileged
def test_ci_without_etcd_fails_instead_of_skipping() -> None:
    test = "tests/test_etcd_store.py::test_a_dead_endpoint_is_skipped_for_the_next"
    proc = run_pytest([test], CI="true", MULTIHOME_ETCD="/nonexistent/etcd")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "strict skip (CI is set): 'needs etcd: etcd is not installed" in proc.stdout
    assert " skipped" not in proc.stdout.splitlines()[-1]
