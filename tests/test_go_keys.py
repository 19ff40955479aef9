"""Config keys as Go's encoding/json reads them, which is what the reference plugins do.

A key that matches a known one but for case is taken for it (``datadir`` is
``dataDir``), and of duplicate keys the last wins (corpus #26).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from multihome.ipam.config import IPAMNetConf
from multihome.lib import jsonfast
from multihome.lib.models import parse
from multihome.plugins.link import LinkConf
from tests.rig import CNIBIN, REFERENCE_BIN, Netns, one_json, plugin_env, run_plugin

BASE = {"cniVersion": "1.0.0", "name": "n", "type": "mh-macvlan"}


def test_a_key_in_another_case_is_taken_for_the_known_one() -> None:
    conf = parse(
        IPAMNetConf,
        {
            **BASE,
            "ipam": {
                "TYPE": "mh-ipam",
                "datadir": "/d",
                "ranges": [[{"SUBNET": "10.1.0.0/24", "rangestart": "10.1.0.9"}]],
            },
        },
    )
    assert str(conf.ipam.data_dir) == "/d"
    assert str(conf.ipam.ranges[0][0].range_start) == "10.1.0.9"
    assert parse(LinkConf, {**BASE, "Master": "eno9", "MODE": "private"}).master == "eno9"


@pytest.mark.parametrize(("first", "last"), [("dataDir", "datadir"), ("datadir", "dataDir")])
def test_of_two_keys_naming_one_field_the_last_wins(first: str, last: str) -> None:
    conf = parse(IPAMNetConf, {**BASE, "ipam": {"type": "mh-ipam", first: "/a", last: "/b"}})
    assert str(conf.ipam.data_dir) == "/b"


def test_duplicate_keys_the_last_wins() -> None:
    text = '{"a": 1, "b": {"c": [1], "c": [2]}, "a": 3}'
    assert jsonfast.loads(text) == {"a": 3, "b": {"c": [2]}}


def duplicated() -> str:
    """Corpus #26's shape: ``ranges`` twice, and ``datadir`` in lower case."""
    return (
        '{"cniVersion": "0.4.0", "name": "dup", "type": "macvlan", "ipam": {"type": "%s",'
        ' "ranges": [[{"subnet": "203.0.113.0/24"}]],'
        ' "ranges": [[{"subnet": "198.51.100.0/24"}]], "datadir": %s}}'
    )


@pytest.mark.privileged
@pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))
@pytest.mark.needs_tool(str(REFERENCE_BIN / "host-local"))
@pytest.mark.parametrize(("plugin", "bindir"), [("mh-ipam", CNIBIN), ("host-local", REFERENCE_BIN)])
def test_ipam_reads_corpus_26_as_the_reference_does(
    plugin: str, bindir: Path, netns_factory: Callable[[str], Netns], tmp_path: Path
) -> None:
    pod = netns_factory("pod")
    doc = duplicated() % (plugin, json.dumps(str(tmp_path)))
    env = plugin_env("ADD", CNI_CONTAINERID="c1", CNI_IFNAME="net1", CNI_NETNS=pod.path)
    proc = run_plugin(plugin, env, doc, bindir=bindir)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert [ip["address"] for ip in one_json(proc.stdout)["ips"]] == ["198.51.100.2/24"]
    assert (tmp_path / "dup" / "198.51.100.2").exists()
    proc = run_plugin(plugin, {**env, "CNI_COMMAND": "DEL"}, doc, bindir=bindir)
    assert proc.returncode == 0, proc.stdout.decode()
    assert not (tmp_path / "dup" / "198.51.100.2").exists()
