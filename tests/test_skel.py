"""The dispatcher, called in-process: validation as libcni's skel does it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from multihome.lib import skel
from tests.rig import VERSIONS, Netns
from tests.shapes import check_error, check_result, check_version_reply

BASE_ENV = {"CNI_CONTAINERID": "ctr1", "CNI_IFNAME": "net1", "CNI_PATH": "/nonexistent"}


def conf(version: str = "1.1.0", **extra: Any) -> bytes:
    doc = {"cniVersion": version, "name": "testnet", "type": "mh-noop", **extra}
    return json.dumps(doc).encode()


def call(command: str, stdin: bytes = b"", plugin: str = "mh-noop", **env: str) -> tuple[Any, int]:
    full = {**BASE_ENV, "CNI_COMMAND": command, **env}
    full = {k: v for k, v in full.items() if v != "<unset>"}
    out, code, _ = skel.run(plugin, full, stdin)
    return (json.loads(out) if out else None), code


def test_no_command_prints_about_on_stderr() -> None:
    out, code, err = skel.run("mh-noop", {}, b"")
    assert (out, code) == (b"", 0)
    assert "mh-noop" in err and "1.1.0" in err


def test_version_ignores_stdin() -> None:
    doc, code = call("VERSION", b"not json")
    assert code == 0
    check_version_reply(doc)
    assert doc["supportedVersions"] == list(VERSIONS)


def test_unknown_command() -> None:
    doc, code = call("FROB", conf())
    assert code == 1
    check_error(doc, 4)
    assert "FROB" in doc["msg"]


@pytest.mark.parametrize(
    ("command", "unset", "named"),
    [
        ("ADD", "CNI_NETNS", "CNI_NETNS"),
        ("ADD", "CNI_CONTAINERID", "CNI_CONTAINERID"),
        ("ADD", "CNI_IFNAME", "CNI_IFNAME"),
        ("ADD", "CNI_PATH", "CNI_PATH"),
        ("CHECK", "CNI_NETNS", "CNI_NETNS"),
        ("DEL", "CNI_IFNAME", "CNI_IFNAME"),
        ("GC", "CNI_PATH", "CNI_PATH"),
        ("STATUS", "CNI_PATH", "CNI_PATH"),
    ],
)
def test_missing_env_names_the_variable(command: str, unset: str, named: str) -> None:
    doc, code = call(command, conf(), **{unset: "<unset>"})
    assert code == 1
    check_error(doc, 4)
    assert named in doc["msg"]


def test_del_does_not_need_netns() -> None:
    doc, code = call("DEL", conf())
    assert (doc, code) == (None, 0)


@pytest.mark.parametrize(
    "stdin", [b"", b"{", b'{"name": "x"', b"[1,2]", b'"str"', b"\xff\xfe", b'{"a":1} {"b":2}']
)
def test_bad_json_is_code_6(stdin: bytes) -> None:
    doc, code = call("DEL", stdin)
    assert code == 1
    check_error(doc, 6)


@pytest.mark.parametrize("version", ["0.5.0", "2.0.0", "banana", "1.1"])
def test_unknown_version_is_code_1(version: str) -> None:
    doc, code = call("DEL", conf(version))
    assert code == 1
    check_error(doc, 1)
    assert "1.1.0" in doc["details"]


def test_missing_version_means_010() -> None:
    stdin = json.dumps({"name": "testnet", "type": "mh-noop"}).encode()
    doc, code = call("DEL", stdin)
    assert (doc, code) == (None, 0)


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-lead", "sp ace", 7])
def test_bad_network_name_is_code_7(name: object) -> None:
    stdin = json.dumps({"cniVersion": "1.0.0", "name": name, "type": "mh-noop"}).encode()
    doc, code = call("DEL", stdin)
    assert code == 1
    check_error(doc, 7)
    assert doc["cniVersion"] == "1.0.0"


@pytest.mark.parametrize("cid", ["../x", "a/b", "-x", "a b", "ä"])
def test_bad_container_id_is_code_4(cid: str) -> None:
    doc, code = call("DEL", conf(), CNI_CONTAINERID=cid)
    assert code == 1
    check_error(doc, 4)


@pytest.mark.parametrize("ifname", ["a" * 16, ".", "..", "a/b", "a:b", "a b", "a\tb"])
def test_bad_ifname_is_code_4(ifname: str) -> None:
    doc, code = call("DEL", conf(), CNI_IFNAME=ifname)
    assert code == 1
    check_error(doc, 4)


def test_fifteen_char_ifname_is_fine() -> None:
    assert call("DEL", conf(), CNI_IFNAME="a" * 15) == (None, 0)


def test_bad_cni_args_is_code_4() -> None:
    doc, code = call("DEL", conf(), CNI_ARGS="FOO=bar")
    assert code == 1
    check_error(doc, 4)
    assert "CNI_ARGS" in doc["msg"]


@pytest.mark.parametrize("version", VERSIONS)
def test_check_needs_040(version: str) -> None:
    doc, code = call("CHECK", conf(version), CNI_NETNS="/proc/1/ns/net")
    if version in ("0.1.0", "0.2.0", "0.3.0", "0.3.1"):
        check_error(doc, 1)
        assert "CHECK" in doc["msg"]
    else:  # passes version gating, then needs a netns that is not ours (pid 1's may be ours)
        assert code == 0 or doc["code"] in (7, 8)


@pytest.mark.parametrize("command", ["GC", "STATUS"])
@pytest.mark.parametrize("version", VERSIONS)
def test_gc_and_status_need_110(command: str, version: str) -> None:
    doc, code = call(command, conf(version))
    if version == "1.1.0":
        assert (doc, code) == (None, 0)
    else:
        check_error(doc, 1)
        assert doc["cniVersion"] == version


def test_unknown_plugin_name() -> None:
    doc, code = call("DEL", conf(), plugin="mh-nothing")
    assert code == 1
    check_error(doc, 100)


def test_netns_missing_is_code_3() -> None:
    doc, code = call("ADD", conf(), CNI_NETNS="/run/netns/mh-does-not-exist")
    assert code == 1
    check_error(doc, 3)


def test_netns_not_a_namespace_is_code_8(tmp_path: Any) -> None:
    fake = tmp_path / "ns"
    fake.write_text("")
    doc, code = call("ADD", conf(), CNI_NETNS=str(fake))
    assert code == 1
    check_error(doc, 8)


def test_own_netns_is_code_8_unless_overridden() -> None:
    doc, _ = call("ADD", conf(), CNI_NETNS="/proc/self/ns/net")
    check_error(doc, 8)
    doc, code = call("ADD", conf(), CNI_NETNS="/proc/self/ns/net", CNI_NETNS_OVERRIDE="1")
    assert code == 0
    check_result(doc, "1.1.0")


@pytest.mark.privileged
@pytest.mark.parametrize("version", VERSIONS)
def test_add_passes_prev_result_through(
    version: str, netns_factory: Callable[[str], Netns]
) -> None:
    pod = netns_factory("pod")
    prev = (
        {"cniVersion": version, "ips": [{"address": "10.9.0.5/24"}]}
        if version >= "0.3.0"
        else {"cniVersion": version, "ip4": {"ip": "10.9.0.5/24"}}
    )
    doc, code = call("ADD", conf(version, prevResult=prev), CNI_NETNS=pod.path)
    assert code == 0, doc
    check_result(doc, version)
    assert "10.9.0.5/24" in json.dumps(doc)


def test_internal_errors_are_999_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from multihome.plugins import noop

    def boom(self: object, req: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(noop.Noop, "delete", boom)
    doc, code = call("DEL", conf())
    assert code == 1
    check_error(doc, 999)
    assert "kaboom" in doc["msg"]


def test_invalid_config_types_are_code_7() -> None:
    doc, code = call("DEL", conf(ipam="not-an-object"))
    assert code == 1
    check_error(doc, 7)
    assert "ipam" in doc["details"]
