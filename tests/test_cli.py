"""The ``multihome`` command for humans."""

from __future__ import annotations

import json
import subprocess

import pytest

from multihome.lib import cli
from tests.rig import CNIBIN


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("multihome ")
    assert json.loads(lines[1])["supportedVersions"][-1] == "1.1.0"


def test_plugins_lists_every_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins"]) == 0
    assert "mh-noop" in capsys.readouterr().out


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: multihome" in capsys.readouterr().out


@pytest.mark.needs_tool(str(CNIBIN / "multihome"))
def test_multicall_name_runs_the_command() -> None:
    proc = subprocess.run(
        [str(CNIBIN / "multihome"), "plugins"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "mh-noop" in proc.stdout
