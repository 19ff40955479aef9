"""Build the frozen multicall bundle (``make dist`` runs it inside a Debian 11 root).

PyInstaller ``--onedir`` (never onefile: that unpacks itself on every run)
into ``dist/bundle/multihome/``, and ``dist/cni-bin/`` with a relative symlink
per CNI type and one named ``multihome``. The bundle holds compiled modules
only, and leaves out what no code path of ours imports. A MANIFEST records
the version and a hash of the bundle's contents, which the installer uses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Never imported by any multihome code path: dropping them shrinks the bundle
# and its start-up. (inspect stays: pydantic needs it; ssl stays: the etcd
# store imports it for https:// endpoints, and only then.)
EXCLUDE = [
    "tkinter",
    "unittest",
    "pydoc",
    "doctest",
    "pdb",
    "sqlite3",
    "xmlrpc",
    "multiprocessing",
    "asyncio",
    "pyroute2",
    "lib2to3",
    "distutils",
    "setuptools",
    "pip",
    "pytest",
    "hypothesis",
    "mypy",
    "ruff",
    "curses",
    "readline",
    "idlelib",
    "ensurepip",
    "venv",
    "turtle",
    "turtledemo",
    "test",
    "xml",
    "pyexpat",
]
# The oldest glibc the bundle may need, computed from its ELF files' symbol versions
# and enforced here. make dist runs this inside a Debian 11 root with a CPython
# built there (packaging/portable/build.py), so nothing needs more than 2.31:
# Debian 11, Ubuntu 20.04, RHEL 9 and newer.
GLIBC_FLOOR = (2, 31)


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.name != "MANIFEST"):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def glibc_needed(app: Path) -> tuple[int, int]:
    """The newest GLIBC_x.y symbol version any ELF file of the bundle refers to."""
    import re  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    newest = (2, 0)
    for path in [app / "multihome", *app.rglob("*.so*")]:
        if path.is_symlink() or not path.is_file():
            continue
        out = subprocess.run(
            ["objdump", "-T", str(path)], capture_output=True, text=True, check=False
        ).stdout
        for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", out):
            newest = max(newest, (int(major), int(minor)))
    return newest


def check_floor(app: Path) -> tuple[int, int]:
    """The glibc the bundle needs; exits (make dist fails) when that is above the floor."""
    glibc = glibc_needed(app)
    if glibc > GLIBC_FLOOR:
        sys.exit(
            f"build_dist: the bundle needs glibc {glibc[0]}.{glibc[1]}, more than the "
            f"declared floor {GLIBC_FLOOR[0]}.{GLIBC_FLOOR[1]}"
        )
    return glibc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    pkgroot = ROOT / "build" / "pkgroot"
    sys.path.insert(0, str(pkgroot))
    import PyInstaller.__main__  # noqa: PLC0415 - a build-time tool, heavy to import

    from multihome.lib import buildinfo, registry  # noqa: PLC0415 - after the path is set

    bundle_dir = args.dist / "bundle"
    os.environ["MULTIHOME_PYI_OPTS"] = json.dumps(
        {
            "entry": str(ROOT / "packaging" / "bundle_entry.py"),
            "pkgroot": str(pkgroot),
            "hidden": [*registry.PLUGINS.values(), "multihome.lib.cli", "multihome.lib.lint"],
            "exclude": EXCLUDE,
        }
    )
    os.environ["PYINSTALLER_CONFIG_DIR"] = str(ROOT / "build" / "pyi-config")
    PyInstaller.__main__.run(
        [
            str(ROOT / "packaging" / "multihome.spec"),
            "--noconfirm",
            "--clean",
            "--distpath",
            str(bundle_dir),
            "--workpath",
            str(ROOT / "build" / "pyi"),
            "--log-level",
            "WARN",
        ]
    )

    app = bundle_dir / "multihome"
    glibc = check_floor(app)
    (app / "MANIFEST").write_text(
        f"multihome {buildinfo.VERSION}\n{tree_hash(app)}\nglibc {glibc[0]}.{glibc[1]}\n"
    )
    cni_bin = args.dist / "cni-bin"
    shutil.rmtree(cni_bin, ignore_errors=True)
    cni_bin.mkdir(parents=True)
    for name in [*registry.PLUGINS, registry.COMMAND]:
        (cni_bin / name).symlink_to(os.path.relpath(app / "multihome", cni_bin))
    size = sum(p.stat().st_size for p in app.rglob("*") if p.is_file() and not p.is_symlink())
    print(
        f"bundle: {app} ({size / 1e6:.1f} MB, needs glibc >= {glibc[0]}.{glibc[1]}), "
        f"CNI binaries: {cni_bin}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
