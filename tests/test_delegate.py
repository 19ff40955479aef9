"""IPAM delegation through a scripted fake IPAM executable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from multihome.lib import delegate
from tests.rig import CNIBIN, Netns, one_json, plugin_env, run_plugin
from tests.shapes import check_error, check_result

pytestmark = [pytest.mark.needs_tool(str(CNIBIN / "mh-noop")), pytest.mark.privileged]


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def add(
    pod: Netns, fake: Path, ipam: dict[str, Any], version: str = "1.0.0", **env: str
) -> tuple[Any, int, bytes]:
    conf = {
        "cniVersion": version,
        "name": "delnet",
        "type": "mh-noop",
        "ipam": {"type": "fake-ipam", **ipam},
        "futureKey": {"kept": [1, 2]},
    }
    full = plugin_env(
        "ADD",
        CNI_CONTAINERID="ctr-d",
        CNI_NETNS=pod.path,
        CNI_IFNAME="net1",
        CNI_PATH=f"{CNIBIN}:{fake}",
        **env,
    )
    proc = run_plugin("mh-noop", full, json.dumps(conf, indent=3).encode())
    return one_json(proc.stdout), proc.returncode, proc.stderr


def test_result_is_parsed_and_converted(pod: Netns, fake_ipam_dir: Path) -> None:
    result = {
        "cniVersion": "0.3.1",
        "ips": [{"version": "4", "address": "10.7.0.9/16", "gateway": "10.7.0.1"}],
    }
    doc, code, _ = add(pod, fake_ipam_dir, {"result": result})
    assert code == 0
    check_result(doc, "1.0.0")
    assert doc["ips"] == [{"address": "10.7.0.9/16", "gateway": "10.7.0.1"}]


def test_same_env_and_verbatim_stdin(pod: Netns, fake_ipam_dir: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    add(
        pod,
        fake_ipam_dir,
        {"record": str(rec)},
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=p",
        LD_LIBRARY_PATH="/caller/lib",
    )
    seen = json.loads(rec.read_text())
    assert seen["command"] == "ADD"
    env = seen["env"]
    assert env["CNI_CONTAINERID"] == "ctr-d" and env["CNI_IFNAME"] == "net1"
    assert env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=p"
    assert env["CNI_NETNS"] == pod.path
    # the caller's library path, never a frozen bundle's own (dev and frozen binaries alike)
    assert env["LD_LIBRARY_PATH"] == "/caller/lib"
    assert not [k for k in env if k.startswith("_PYI_") or k == "LD_LIBRARY_PATH_ORIG"]
    assert '"futureKey": {\n      "kept"' in seen["stdin"]  # the exact bytes, indentation and all


def test_error_is_propagated_unchanged(pod: Netns, fake_ipam_dir: Path) -> None:
    error = {"cniVersion": "1.0.0", "code": 11, "msg": "pool busy", "details": "try later"}
    doc, code, _ = add(pod, fake_ipam_dir, {"error": error})
    assert code == 1
    check_error(doc, 11)
    assert (doc["msg"], doc["details"]) == ("pool busy", "try later")


def test_crash_without_json_reports_stderr(pod: Netns, fake_ipam_dir: Path) -> None:
    doc, code, _ = add(pod, fake_ipam_dir, {"crash": "segfault in allocator"})
    assert code == 1
    check_error(doc, 101)
    assert "segfault in allocator" in doc["details"]


def test_missing_ipam_binary(pod: Netns, fake_ipam_dir: Path) -> None:
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "mh-noop", "ipam": {"type": "nope-ipam"}}
    full = plugin_env(
        "ADD",
        CNI_CONTAINERID="c",
        CNI_NETNS=pod.path,
        CNI_IFNAME="net1",
        CNI_PATH=str(fake_ipam_dir),
    )
    doc = one_json(run_plugin("mh-noop", full, conf).stdout)
    check_error(doc, 100)
    assert "nope-ipam" in doc["msg"]


@pytest.mark.parametrize("bad", ["../fake-ipam", "/bin/sh", "a b"])
def test_ipam_type_cannot_be_a_path(bad: str, pod: Netns, fake_ipam_dir: Path) -> None:
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "mh-noop", "ipam": {"type": bad}}
    full = plugin_env(
        "ADD",
        CNI_CONTAINERID="c",
        CNI_NETNS=pod.path,
        CNI_IFNAME="net1",
        CNI_PATH=str(fake_ipam_dir),
    )
    check_error(one_json(run_plugin("mh-noop", full, conf).stdout), 7)


def test_status_failure_becomes_code_50(fake_ipam_dir: Path) -> None:
    conf = {
        "cniVersion": "1.1.0",
        "name": "n",
        "type": "mh-noop",
        "ipam": {"type": "fake-ipam", "error": {"code": 5, "msg": "disk gone"}},
    }
    proc = run_plugin("mh-noop", plugin_env("STATUS", CNI_PATH=str(fake_ipam_dir)), conf)
    doc = one_json(proc.stdout)
    check_error(doc, 50)
    assert "disk gone" in doc["msg"]


def test_child_env_scrubs_bundle_variables() -> None:
    env = {"LD_LIBRARY_PATH": "/b/_internal", "_PYI_X": "1", "CNI_COMMAND": "ADD", "A": "b"}
    assert delegate.child_env(env, "DEL", frozen=True) == {"CNI_COMMAND": "DEL", "A": "b"}
    unfrozen = delegate.child_env(env, "DEL", frozen=False)
    assert unfrozen == {"CNI_COMMAND": "DEL", "A": "b", "LD_LIBRARY_PATH": "/b/_internal"}


def test_child_env_restores_the_callers_library_path() -> None:
    """What PyInstaller's bootloader leaves: its own path, and the caller's in _ORIG."""
    env = {
        "LD_LIBRARY_PATH": "/b/_internal:/orig",
        "LD_LIBRARY_PATH_ORIG": "/orig",
        "_PYI_ARCHIVE_FILE": "/b/x",
        "CNI_COMMAND": "ADD",
    }
    got = delegate.child_env(env, "ADD", frozen=True)
    assert got == {"CNI_COMMAND": "ADD", "LD_LIBRARY_PATH": "/orig"}
