"""``multihome lint --fix``: reference NADs rewritten into ours, comments and layout kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from multihome.lib import cli, lint
from multihome.lib.lint import fix
from multihome.plugins import routesets
from tests.test_corpus import FILES, needs_corpus

SEEDS = Path(__file__).parent / "data" / "seeds"
GW4, GW6 = "203.0.113.1", "2001:db8:200::1"


def pasted_nad(gw4: str = GW4) -> str:
    routes = [{"dst": str(n), "gw": gw4} for n in routesets.compute(["public-ipv4"])]
    routes.append({"dst": "::/0", "gw": GW6})
    lines = ",\n".join(f"            {json.dumps(r)}" for r in routes)
    return f"""# The VLAN for the desktops (a comment the fix keeps)
apiVersion: "k8s.cni.cncf.io/v1"
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf-1
spec:
  config: '{{
      "cniVersion": "1.0.0",
      "type": "macvlan",
      "master": "eno1.200",
      "ipam": {{
          "type": "host-local",
          "ranges": [[{{"subnet": "203.0.113.0/24", "gateway": "{GW4}"}}],
                     [{{"subnet": "2001:db8:200::/64", "gateway": "{GW6}"}}]],
          "routes": [
{lines}
          ]
      }}
    }}'
"""


def test_a_pasted_public_list_becomes_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "nad.yaml"
    path.write_text(pasted_nad())
    done = fix.fix_file(path)
    assert [(f.level, f.message) for f in done] == [
        ("fixed", '48 pasted routes -> {"presets": ["public-ipv4", "default-ipv6"]}'),
        ("fixed", "type macvlan -> mh-macvlan"),
        ("fixed", "type host-local -> mh-ipam"),
    ]
    text = path.read_text()
    assert text.splitlines()[:8] == pasted_nad().splitlines()[:8]  # comment and layout kept
    conf = json.loads(yaml.safe_load(text)["spec"]["config"])
    assert conf["type"] == "mh-macvlan"
    assert conf["ipam"]["routes"] == [{"presets": ["public-ipv4", "default-ipv6"]}]
    assert not [f for f in lint.lint_file(path) if f.level == "error"]
    assert fix.fix_file(path) == []  # a second run has nothing left to do


def test_a_gateway_other_than_the_ranges_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "nad.yaml"
    path.write_text(pasted_nad(gw4="203.0.113.254"))
    fix.fix_file(path)
    conf = json.loads(yaml.safe_load(path.read_text())["spec"]["config"])
    assert conf["ipam"]["routes"] == [
        {"presets": ["public-ipv4", "default-ipv6"], "gw": "203.0.113.254"}
    ]


def test_a_nearly_public_list_is_left_with_what_it_gets_wrong(tmp_path: Path) -> None:
    path = tmp_path / "abcdesktop-ipv4.yaml"
    shutil.copy(SEEDS / "abcdesktop-ipv4.yaml", path)
    before = path.read_text()
    done = fix.fix_file(path)
    wrong = [f for f in done if f.level == "warning"]
    assert len(wrong) == 1 and "leaves out 192.169.0.0/16" in wrong[0].message
    after = path.read_text()
    assert after == before.replace('"macvlan"', '"mh-macvlan"').replace(
        '"host-local"', '"mh-ipam"'
    )  # the comment inside the config too, everything but the two types


def test_a_conflist_and_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "net.conflist"
    path.write_text(
        '{"cniVersion": "1.0.0", "name": "n", "plugins": [\n'
        '  {"type": "macvlan", "master": "eno1", "ipam": {"type": "static",\n'
        '   "addresses": [{"address": "192.168.0.20/24"}]}},\n'
        '  {"type": "sbr"}, {"type": "route-overwrite", "flushroutes": true}]}\n'
    )
    assert cli.main(["lint", "--fix", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}:4: fixed: type route-overwrite -> mh-route" in out
    assert [p["type"] for p in json.loads(path.read_text())["plugins"]] == [
        "mh-macvlan",
        "mh-sbr",
        "mh-route",
    ]


@needs_corpus
def test_fix_on_the_corpus_adds_no_error(tmp_path: Path) -> None:
    for source in FILES:
        path = tmp_path / source.name
        shutil.copy(source, path)
        before = {f.message for f in lint.lint_file(path) if f.level == "error"}
        fix.fix_file(path)
        after = {f.message for f in lint.lint_file(path) if f.level == "error"}
        assert len(after) <= len(before), (source.name, before, after)  # (#40's old name goes)


def test_a_key_in_another_case_gets_the_known_spelling(tmp_path: Path) -> None:
    path = tmp_path / "net.conf"
    path.write_text(
        '{"cniVersion": "0.3.1", "name": "n", "type": "macvlan", "Master": "em2",\n'
        ' "ipam": {"type": "host-local", "datadir": "/k8s/test",\n'
        '  "ranges": [[{"subnet": "2.2.2.0/24"}]]}}\n'
    )
    done = [(f.line, f.message) for f in fix.fix_file(path)]
    assert (1, "key Master -> master") in done and (2, "key datadir -> dataDir") in done
    conf = json.loads(path.read_text())
    assert conf["master"] == "em2" and conf["ipam"]["dataDir"] == "/k8s/test"
    assert not [f for f in lint.lint_file(path) if "is read as" in f.message]
