"""multihome lint catches the faults of every seed's YAML, with their lines."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from multihome.lib import cli, lint
from tests.rig import CNIBIN, ROOT

SEEDS = Path(__file__).parent / "data" / "seeds"


pytestmark = pytest.mark.usefixtures("no_node_etcd_conf")


def findings(path: Path) -> list[tuple[int, str, str]]:
    return [(f.line, f.level, f.message) for f in lint.lint_file(path)]


def errors(path: Path) -> list[tuple[int, str]]:
    return sorted((line, msg) for line, level, msg in findings(path) if level == "error")


def test_abcdesktop_ipv4_comment_and_missing_public_block() -> None:
    found = errors(SEEDS / "abcdesktop-ipv4.yaml")
    assert found[0][0] == 9 and "comment" in found[0][1] and "Interface on your host" in found[0][1]
    assert found[1][0] == 17 and "192.169.0.0/16" in found[1][1]
    assert len(found) == 2


def test_abcdesktop_dual_stack_routes_cluster_space() -> None:
    """Private space through the VLAN is a warning, an error when it is the cluster's;
    loopback and link-local space are never routed."""
    found = errors(SEEDS / "abcdesktop-dualstack.yaml")
    assert [(line, msg.split(" sends ")[1].split(" ")[0]) for line, msg in found] == [
        (34, "127.0.0.0/8"),
        (37, "169.254.0.0/16"),
    ]
    private = [f for f in findings(SEEDS / "abcdesktop-dualstack.yaml") if "RFC 1918" in f[2]]
    assert [(line, level) for line, level, _ in private] == [(31, "warning")]
    cluster = [ipaddress.ip_network("10.244.0.0/16")]
    found = lint.lint_file(SEEDS / "abcdesktop-dualstack.yaml", cluster)
    assert [(f.line, f.level) for f in found if "the cluster's" in f.message] == [(31, "error")]


def test_anthos_comment() -> None:
    found = errors(SEEDS / "anthos-multinic.yaml")
    assert found == [(9, found[0][1])] and "defines the node interface" in found[0][1]


def test_gke_placeholder() -> None:
    found = errors(SEEDS / "gke-ipvlan-whereabouts.yaml")
    assert len(found) == 1 and found[0][0] == 17 and "SECONDARY_RA" in found[0][1]


def test_microk8s_global_pool_on_a_per_node_store() -> None:
    found = findings(SEEDS / "microk8s-static-sbr.yaml")
    assert not [f for f in found if f[1] == "error"]
    pool = [f for f in found if "per-node store" in f[2]]
    assert [(line, level) for line, level, _ in pool] == [(57, "warning")]


def test_examples_have_no_errors() -> None:
    for path in sorted((ROOT / "packaging" / "examples").glob("*.yaml")):
        assert not errors(path), path


ETCD_IPAM = {"type": "mh-ipam", "ranges": [[{"subnet": "10.1.0.0/24"}]]}


def test_a_shared_pool_on_etcd_is_fine(tmp_path: Path) -> None:
    nad = (ROOT / "packaging" / "examples" / "cluster-pool-etcd.yaml").read_text()
    assert "namespace: kube-system" in nad
    found = findings(ROOT / "packaging" / "examples" / "cluster-pool-etcd.yaml")
    assert not [f for f in found if "per-node store" in f[2] or f[1] == "error"], found
    plain = tmp_path / "plain.yaml"
    plain.write_text(nad.replace('"store"', '"store-off"'))  # the same pool on files
    assert [f for f in findings(plain) if "per-node store" in f[2]]


def conflist(tmp_path: Path, plugins: list[dict[str, Any]]) -> Path:
    path = tmp_path / "net.conflist"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": plugins}, indent=2))
    return path


@pytest.mark.parametrize(
    ("plugin", "level", "fragment"),
    [
        (
            {
                "type": "mh-macvlan",
                "master": "eno1",
                "ipam": {
                    "type": "mh-ipam",
                    "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.128/25"}]],
                },
            },
            "error",
            "overlaps",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "eno1",
                "ipam": {
                    "type": "mh-ipam",
                    "ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}]],
                },
            },
            "error",
            "outside its subnet",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "eno1",
                "ipam": {
                    "type": "mh-static",
                    "addresses": [{"address": "192.168.0.20/24", "gateway": "10.0.0.1"}],
                },
            },
            "error",
            "outside",
        ),
        ({"type": "mh-macvlan", "ipam": {}}, "warning", "no master"),
        ({"type": "mh-ipvlan", "master": "eth1", "mac": "c2:00:00:00:00:01"}, "warning", "'mac'"),
        ({"type": "mh-macvlan", "master": "eno1", "mastr": "eno2"}, "warning", "'mastr'"),
        (
            {"type": "mh-macvlan", "master": "eno1", "ipam": {"type": "mh-ipam", "range": "x"}},
            "warning",
            "'range'",
        ),
        (
            {"type": "mh-route", "addroutes": [{"dst": "10.0.0.0/7", "gw": "203.0.113.1"}]},
            "warning",
            "10.0.0.0/8",
        ),
        (
            {"type": "mh-route", "addroutes": [{"dst": "10.0.0.0/7", "gw": "203.0.113.1"}]},
            "error",
            "must be chained after an interface plugin",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {"ranges": [[{"subnet": "10.1.0.0/24"}]]},
            },
            "error",
            "no type",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {
                    "type": "mh-ipam",
                    "ranges": [
                        [
                            {
                                "subnet": "10.1.0.0/24",
                                "rangeStart": "10.1.0.9",
                                "rangeEnd": "10.1.0.2",
                            }
                        ]
                    ],
                },
            },
            "error",
            "rangeStart 10.1.0.9 is above rangeEnd 10.1.0.2",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {"type": "mh-ipam", "ranges": [{"subnet": "10.1.0.0/24"}]},
            },
            "error",
            "flat list of ranges",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {"type": "mh-ipam", "subnet": "10.1.0.0/24", "rangeEnd": "10.1.0.255"},
            },
            "warning",
            "the broadcast address of 10.1.0.0/24",
        ),
        (
            {"type": "mh-macvlan", "master": "e", "ipam": {"type": "mh-ipam", "datadir": "/x"}},
            "warning",
            "key 'datadir' is read as 'dataDir'",
        ),
        (
            {"type": "mh-macvlan", "Master": "e"},
            "warning",
            "key 'Master' is read as 'master'",
        ),
        ({"type": "route-overwrite", "flushroutes": True}, "error", "old name"),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {**ETCD_IPAM, "routes": [{"presets": ["pub"]}]},
            },
            "error",
            "unknown route preset 'pub'",
        ),
        (
            {"type": "mh-ipvlan", "master": "e", "ipam": {"type": "dhcp"}},
            "warning",
            "ipvlan with dhcp",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {
                    "type": "mh-static",
                    "addresses": [{"address": "10.10.0.1/24"}],
                    "routes": [{"dst": "192.168.0.0/16", "gw": "10.10.5.1"}],
                },
            },
            "error",
            "the gateway is on none of the interface's subnets",
        ),
        (
            {"type": "mh-macvlan", "master": "e", "ipam": {**ETCD_IPAM, "store": {"type": "etcd"}}},
            "error",
            "profile 'default' is not in",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {**ETCD_IPAM, "store": {"type": "etcd", "tls": {"ca": "/etc/x.crt"}}},
            },
            "error",
            "cannot name etcd credentials",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {**ETCD_IPAM, "store": {"type": "etcd", "prefix": "/registry"}},
            },
            "error",
            "under /multihome/",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {
                    **ETCD_IPAM,
                    "store": {"type": "etcd", "profile": "plain", "endpoints": ["http://f:1"]},
                },
            },
            "error",
            "not an endpoint of profile 'plain'",
        ),
        (
            {"type": "mh-macvlan", "master": "e", "ipam": {**ETCD_IPAM, "store": {"type": "zk"}}},
            "error",
            "ipam.store: type",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {**ETCD_IPAM, "store": {"type": "etcd", "profile": "plain"}},
            },
            "warning",
            "in clear",
        ),
        (
            {
                "type": "mh-macvlan",
                "master": "e",
                "ipam": {**ETCD_IPAM, "store": {"type": "etcd", "endpoint": "https://e:2379"}},
            },
            "warning",
            "ipam.store: unknown key 'endpoint'",
        ),
    ],
)
def test_conflist_faults(
    plugin: dict[str, Any],
    level: str,
    fragment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = tmp_path / "etcd.conf"  # the node's etcd profiles, which lint reads when present
    node.write_text(json.dumps({"profiles": {"plain": {"endpoints": ["http://e:2379"]}}}))
    monkeypatch.setenv("MULTIHOME_ETCD_CONF", str(node))
    found = findings(conflist(tmp_path, [plugin]))
    assert any(lvl == level and fragment in msg for _, lvl, msg in found), found


def test_clean_conflist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = conflist(
        tmp_path,
        [
            {
                "type": "mh-macvlan",
                "master": "eno1",
                "ipam": {"type": "mh-ipam", "subnet": "203.0.113.0/24"},
            },
            {"type": "mh-route", "presets": ["public-ipv4"]},
        ],
    )
    assert cli.main(["lint", str(path)]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.needs_tool(str(CNIBIN / "multihome"))
def test_command_exit_codes_and_format() -> None:
    proc = subprocess.run(
        [
            str(CNIBIN / "multihome"),
            "lint",
            str(SEEDS / "abcdesktop-ipv4.yaml"),
            str(SEEDS / "microk8s-static-sbr.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{SEEDS / 'abcdesktop-ipv4.yaml'}:9: error: spec.config is not JSON" in proc.stdout
    warn_only = subprocess.run(
        [str(CNIBIN / "multihome"), "lint", str(SEEDS / "microk8s-static-sbr.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert warn_only.returncode == 0 and "warning" in warn_only.stdout


def test_conflist_level_capabilities_template_version_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "net.conflist"
    path.write_text(
        '{"cniVersion": "{{ CNI_VERSION }}", "name": "n", "capabilities": {"ips": true},\n'
        ' "plugins": [{"type": "mh-macvlan", "master": "e",\n'
        '  "ipam": {"type": "mh-static", "addresses": [], "addresses": []}}]}'
    )
    found = findings(path)
    assert (1, "error") in [(line, level) for line, level, msg in found if "template" in msg]
    assert [(line, level) for line, level, msg in found if "conflist level" in msg] == [
        (1, "warning")
    ]
    assert [(line, level) for line, level, msg in found if "appears twice" in msg] == [
        (3, "warning")
    ]


def test_bare_spec_config_and_pod_annotations(tmp_path: Path) -> None:
    """A pasted ``spec:`` without ``kind`` is linted; a Pod's annotation keys too."""
    path = tmp_path / "nad.yaml"
    path.write_text(
        'spec:\n  config: \'{"cniVersion": "0.3.1", "type": "sbr" <-- note}\'\n'
        "---\nkind: Pod\nmetadata:\n  annotations:\n    k8s.v1.cni.cncf.io/networks: "
        '\'[{"name": "n", "ips": "10.1.0.2/24", "gateway": ["10.1.0.1"]}]\'\n'
    )
    found = findings(path)
    assert [(line, level) for line, level, msg in found if "not JSON" in msg] == [(2, "error")]
    assert [level for _, level, msg in found if '"ips" must be a list' in msg] == ["error"]
    assert [level for _, level, msg in found if "'gateway' is not a Multus key" in msg] == [
        "warning"
    ]
