"""multihome install: atomic, idempotent, and never a missing or half-written plugin path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from multihome.lib import install, registry
from tests.rig import ROOT

BUNDLE = ROOT / "dist" / "bundle" / "multihome"
pytestmark = pytest.mark.needs_tool(str(BUNDLE / "MANIFEST"))
NAMES = [*registry.PLUGINS, registry.COMMAND]


def variant(tmp_path: Path, tag: str) -> Path:
    """A copy of the bundle that counts as another version (its MANIFEST hash differs)."""
    copy = tmp_path / f"bundle-{tag}"
    shutil.copytree(BUNDLE, copy, symlinks=True)
    lines = (copy / "MANIFEST").read_text().splitlines()
    lines[1] = f"{lines[1]}{tag}"
    (copy / "MANIFEST").write_text("\n".join(lines) + "\n")
    return copy


def version(dest: Path, name: str = "mh-route") -> dict[str, object]:
    proc = subprocess.run(
        [str(dest / name)],
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_fresh_install_and_rerun(tmp_path: Path) -> None:
    dest = tmp_path / "opt-cni-bin"
    changes = install.install(BUNDLE, dest)
    assert any(c.startswith("copied bundle") for c in changes)
    for name in NAMES:
        link = dest / name
        assert link.is_symlink() and os.readlink(link) == ".multihome/current/multihome"
    real = (dest / "mh-ipam").resolve()
    assert real.is_file() and not real.is_symlink() and (real.parent / "_internal").is_dir()
    assert os.stat(real).st_nlink == 1  # copied, not hard-linked
    assert version(dest)["supportedVersions"]
    store = dest / ".multihome"
    before = {p.name: p.stat().st_ino for p in store.iterdir()}
    assert install.install(BUNDLE, dest) == []  # idempotent
    assert {p.name: p.stat().st_ino for p in store.iterdir()} == before


def test_upgrade_while_plugins_run(tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    install.install(BUNDLE, dest)
    failures: list[str] = []
    runs = [0]
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            proc = subprocess.run(
                [str(dest / "mh-sbr")],
                env={"CNI_COMMAND": "VERSION"},
                capture_output=True,
                check=False,
                timeout=30,
            )
            runs[0] += 1
            if proc.returncode != 0 or b"supportedVersions" not in proc.stdout:
                failures.append(proc.stderr.decode()[-300:])

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()

    def runs_after(start: int, more: int) -> None:
        # A frozen start-up takes about a second on a loaded 2-core CI machine; how many
        # runs fit into one install is not the point. Each new version must serve runs.
        deadline = time.monotonic() + 60
        while runs[0] < start + more and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        for tag in ("v2", "v3", "v4"):
            started = runs[0]
            changes = install.install(variant(tmp_path, tag), dest)
            assert any("current ->" in c for c in changes)
            runs_after(started, 2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [] and runs[0] > 5, (failures[:3], runs)
    store = dest / ".multihome"
    assert os.readlink(store / "current").endswith("v4")
    # Versions retired moments ago stay: a plugin may still be starting from one (a
    # frozen start on a loaded machine outlasts two quick upgrades).
    assert len(list(store.iterdir())) == 5  # current, v4, v3, v2 and the first
    # Once their grace period is over they go; the version before current stays.
    for entry in store.iterdir():
        if not entry.is_symlink():
            expired = entry.stat().st_mtime - install.RETIRE_GRACE - 1
            os.utime(entry, (expired, expired))
    changes = install.install(tmp_path / "bundle-v4", dest)
    assert len([c for c in changes if c.startswith("removed old bundle")]) == 2
    kept = sorted(p.name for p in store.iterdir())
    assert len(kept) == 3  # current, the version it points to, and the one before


def test_interrupted_copy_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    half = dest / ".multihome" / install.bundle_id(BUNDLE)
    half.mkdir(parents=True)
    (half / "junk").write_text("half-written")
    install.install(BUNDLE, dest)
    assert not (half / "junk").exists() and (half / "multihome").is_file()
    assert version(dest)


def test_uninstall_leaves_other_plugins(tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    dest.mkdir()
    (dest / "macvlan").write_text("#!/bin/sh\n")
    (dest / "mine").symlink_to("macvlan")
    install.install(BUNDLE, dest)
    removed = install.uninstall(dest)
    assert set(removed) == {*NAMES, ".multihome"}
    assert sorted(p.name for p in dest.iterdir()) == ["macvlan", "mine"]


def test_the_frozen_command_installs_itself(tmp_path: Path) -> None:
    dest = tmp_path / "host-opt-cni-bin"
    cmd = [str(ROOT / "dist" / "cni-bin" / "multihome"), "install", "--dest", str(dest)]
    first = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert "already installed" in again.stdout
    assert version(dest, "mh-macvlan")
