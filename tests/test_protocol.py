"""Protocol conformance of the real executables, for every command and version.

Each case execs ``build/cni-bin/mh-noop`` as a runtime would (env + stdin),
delegating to the scripted fake IPAM, and checks stdout against the spec's
shape for the config's version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rig import CNIBIN, VERSIONS, Netns, one_json, plugin_env, run_plugin
from tests.shapes import check_error, check_result, check_version_reply

pytestmark = pytest.mark.needs_tool(str(CNIBIN / "mh-noop"))

IPAM_RESULT = {
    "cniVersion": "1.1.0",
    "ips": [
        {"address": "10.88.0.5/24", "gateway": "10.88.0.1"},
        {"address": "2001:db8:88::5/64", "gateway": "2001:db8:88::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
    "dns": {"nameservers": ["10.88.0.53"]},
}


def netconf(version: str, record: Path, **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "protonet",
        "type": "mh-noop",
        "ipam": {"type": "fake-ipam", "record": str(record), "result": IPAM_RESULT},
        **extra,
    }


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def env_for(command: str, pod: Netns, fake: Path) -> dict[str, str]:
    return plugin_env(
        command,
        CNI_CONTAINERID="ctr-proto",
        CNI_NETNS=pod.path,
        CNI_IFNAME="net1",
        CNI_PATH=f"{CNIBIN}:{fake}",
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_version() -> None:
    proc = run_plugin("mh-noop", plugin_env("VERSION"), b'{"cniVersion":"0.4.0"}')
    assert proc.returncode == 0
    doc = one_json(proc.stdout)
    check_version_reply(doc)
    assert doc["supportedVersions"] == list(VERSIONS)


@pytest.mark.privileged
@pytest.mark.parametrize("version", VERSIONS)
def test_add(version: str, pod: Netns, fake_ipam_dir: Path, tmp_path: Path) -> None:
    conf = netconf(version, tmp_path / "rec")
    proc = run_plugin("mh-noop", env_for("ADD", pod, fake_ipam_dir), conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = one_json(proc.stdout)
    check_result(doc, version)
    text = json.dumps(doc)
    assert "10.88.0.5/24" in text and "2001:db8:88::5/64" in text


@pytest.mark.privileged
@pytest.mark.parametrize("version", [v for v in VERSIONS if v >= "0.3.0"])
def test_add_chained_passes_prev_result(
    version: str, pod: Netns, fake_ipam_dir: Path, tmp_path: Path
) -> None:
    prev = {
        "cniVersion": version,
        "interfaces": [{"name": "net1", "sandbox": pod.path}],
        "ips": [{"address": "192.0.2.7/24", "interface": 0}],
    }
    if version < "1.0.0":
        prev["ips"][0]["version"] = "4"
    conf = {"cniVersion": version, "name": "protonet", "type": "mh-noop", "prevResult": prev}
    proc = run_plugin("mh-noop", env_for("ADD", pod, fake_ipam_dir), conf)
    assert proc.returncode == 0, proc.stdout
    doc = one_json(proc.stdout)
    check_result(doc, version)
    assert doc["ips"][0]["address"] == "192.0.2.7/24"
    assert doc["interfaces"] == [{"name": "net1", "sandbox": pod.path}]


@pytest.mark.privileged
@pytest.mark.parametrize("version", VERSIONS)
def test_del(version: str, pod: Netns, fake_ipam_dir: Path, tmp_path: Path) -> None:
    conf = netconf(version, tmp_path / "rec")
    proc = run_plugin("mh-noop", env_for("DEL", pod, fake_ipam_dir), conf)
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert [r["command"] for r in records(tmp_path / "rec")] == ["DEL"]


@pytest.mark.privileged
@pytest.mark.parametrize("version", VERSIONS)
def test_check(version: str, pod: Netns, fake_ipam_dir: Path, tmp_path: Path) -> None:
    conf = netconf(
        version,
        tmp_path / "rec",
        prevResult={
            "cniVersion": version,
            **(
                {"ip4": {"ip": "10.88.0.5/24"}}
                if version < "0.3.0"
                else {"ips": [{"address": "10.88.0.5/24"}]}
            ),
        },
    )
    proc = run_plugin("mh-noop", env_for("CHECK", pod, fake_ipam_dir), conf)
    if version < "0.4.0":
        assert proc.returncode != 0
        check_error(one_json(proc.stdout), 1)
    else:
        assert (proc.returncode, proc.stdout) == (0, b""), proc.stdout
        assert [r["command"] for r in records(tmp_path / "rec")] == ["CHECK"]


@pytest.mark.parametrize("command", ["STATUS", "GC"])
@pytest.mark.parametrize("version", VERSIONS)
def test_status_and_gc(command: str, version: str, fake_ipam_dir: Path, tmp_path: Path) -> None:
    conf = netconf(version, tmp_path / "rec")
    if command == "GC":
        conf["cni.dev/valid-attachments"] = [{"containerID": "a", "ifname": "net1"}]
    proc = run_plugin("mh-noop", plugin_env(command, CNI_PATH=f"{CNIBIN}:{fake_ipam_dir}"), conf)
    if version != "1.1.0":
        assert proc.returncode != 0
        check_error(one_json(proc.stdout), 1)
        return
    assert (proc.returncode, proc.stdout) == (0, b""), proc.stdout
    assert [r["command"] for r in records(tmp_path / "rec")] == [command]


@pytest.mark.parametrize(
    ("env", "stdin", "code"),
    [
        ({"CNI_COMMAND": "ADD"}, b"{}", 4),
        ({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "net1"}, b"{}", 4),
        ({"CNI_COMMAND": "BOGUS"}, b"{}", 4),
        (
            {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "net1", "CNI_PATH": "/x"},
            b"{not json",
            6,
        ),
        (
            {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "net1", "CNI_PATH": "/x"},
            b'{"cniVersion":"7.0.0","name":"n","type":"mh-noop"}',
            1,
        ),
        (
            {
                "CNI_COMMAND": "DEL",
                "CNI_CONTAINERID": "c",
                "CNI_IFNAME": "net1/x",
                "CNI_PATH": "/x",
            },
            b'{"cniVersion":"1.0.0","name":"n","type":"mh-noop"}',
            4,
        ),
    ],
)
def test_errors_are_one_json_document(env: dict[str, str], stdin: bytes, code: int) -> None:
    proc = run_plugin("mh-noop", env, stdin)
    assert proc.returncode != 0
    doc = one_json(proc.stdout)
    check_error(doc, code)
    assert b"Traceback" not in proc.stderr


def test_no_command_prints_about() -> None:
    proc = run_plugin("mh-noop", {}, b"")
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert b"CNI plugin mh-noop" in proc.stderr
