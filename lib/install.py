"""``multihome install``: put the frozen bundle into a node's CNI directory, atomically.

Layout under ``--dest`` (e.g. ``/host/opt/cni/bin``)::

    .multihome/<hash>/multihome        the bundle, copied whole (never hard-linked or
    .multihome/<hash>/_internal/...    dereferenced: a onedir executable needs its dir)
    .multihome/current -> <hash>
    mh-macvlan -> .multihome/current/multihome    one relative symlink per CNI type
    ...

A new version is copied under a temporary name and renamed into place; then
``current`` is swapped with one rename. Every plugin path resolves at all
times, to the old bundle or the new one. The previous version stays on disk
for calls still running from it; an older one is removed only once it has
been retired (no longer ``current``) for ``RETIRE_GRACE`` seconds, so a plugin
that started from it just before a quick second upgrade still finds its files.
Running it again with the same bundle changes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from . import registry

STORE = ".multihome"
CURRENT = "current"
EXECUTABLE = "multihome"
# How long a retired bundle stays on disk: longer than any CNI call may run (kubelet
# and CRI runtimes give a call minutes at most).
RETIRE_GRACE = 15 * 60


def bundle_id(bundle: Path) -> str:
    """The bundle's content hash from its MANIFEST (written by make dist)."""
    manifest = bundle / "MANIFEST"
    if manifest.is_file():
        lines = manifest.read_text().splitlines()
        if len(lines) > 1 and lines[1].strip():
            return lines[1].strip()
    digest = hashlib.sha256()
    for path in sorted(bundle.rglob("*")):
        if path.is_file() and not path.is_symlink():
            digest.update(str(path.relative_to(bundle)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def default_source() -> Path:
    """The bundle this program runs from, when frozen."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent
    raise SystemExit(
        "multihome install: not running from a frozen bundle; pass --source dist/bundle/multihome"
    )


def _swap_symlink(link: Path, target: str) -> bool:
    """Point ``link`` at ``target`` with one rename; False if it already does."""
    if link.is_symlink() and os.readlink(link) == target:
        return False
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.rename(tmp, link)
    return True


def _copy_bundle(source: Path, store: Path, version: str) -> bool:
    """Copy the bundle to ``store/version``; False if it is already there."""
    final = store / version
    if (final / EXECUTABLE).is_file() and bundle_id(final) == version:
        return False
    tmp = store / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, symlinks=True)
    if final.exists():  # a partial copy from an interrupted run: replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    return True


def install(source: Path, dest: Path, names: list[str] | None = None) -> list[str]:
    """Install or upgrade; returns what changed (empty when nothing had to)."""
    if not (source / EXECUTABLE).is_file():
        raise SystemExit(f"multihome install: {source} is not a multihome bundle")
    names = names or [*registry.PLUGINS, registry.COMMAND]
    store = dest / STORE
    store.mkdir(parents=True, exist_ok=True)
    version = bundle_id(source)
    changes = []
    if _copy_bundle(source, store, version):
        changes.append(f"copied bundle {version}")
    current = store / CURRENT
    previous = os.readlink(current) if current.is_symlink() else None
    if _swap_symlink(current, version):
        changes.append(f"current -> {version}")
        if previous and previous != version and (store / previous).is_dir():
            os.utime(store / previous)  # its retirement time, for the grace period
    for name in names:
        if _swap_symlink(dest / name, f"{STORE}/{CURRENT}/{EXECUTABLE}"):
            changes.append(f"linked {name}")
    retired = sorted(  # (retirement time, bundle), oldest first
        (e.stat().st_mtime, e)
        for e in store.iterdir()
        if e.name not in {version, CURRENT} and e.name[0] != "."
    )
    # The version before current always stays (on a re-run, the last one retired).
    keep = previous if previous and previous != version else retired[-1][1].name if retired else ""
    retired_before = time.time() - RETIRE_GRACE
    for mtime, entry in retired:
        if entry.name == keep or mtime > retired_before:
            continue  # a call may still be running from it
        shutil.rmtree(entry, ignore_errors=True)
        changes.append(f"removed old bundle {entry.name}")
    return changes


def uninstall(dest: Path) -> list[str]:
    """Remove our symlinks (only those pointing into the store) and the store."""
    removed = []
    target = f"{STORE}/{CURRENT}/{EXECUTABLE}"
    for entry in dest.iterdir() if dest.is_dir() else []:
        if entry.is_symlink() and os.readlink(entry) == target:
            entry.unlink()
            removed.append(entry.name)
    if (dest / STORE).exists():
        shutil.rmtree(dest / STORE)
        removed.append(STORE)
    return removed
