"""The node's etcd settings for tests: one node file for the test process, one profile per
test network, found by the plugins through ``MULTIHOME_ETCD_CONF`` (which tests.rig passes on
to every plugin and libcni run, as a runtime passes its environment)."""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

ENV = "MULTIHOME_ETCD_CONF"
_names = itertools.count()
_dir = Path(tempfile.mkdtemp(prefix="mh-etcd-node-"))
atexit.register(shutil.rmtree, _dir, True)
CONF = _dir / "etcd.conf"
TLS_DIR = _dir / "etcd"  # the only place a profile's TLS files may be
TLS_DIR.mkdir()
os.environ[ENV] = str(CONF)
CONF.write_text(json.dumps({"profiles": {}}))


def tls_dir(name: str) -> Path:
    """A fresh directory for TLS files, inside the node's etcd directory."""
    path = TLS_DIR / f"{name}{next(_names)}"
    path.mkdir()
    return path


def add_profile(profile: dict[str, Any], name: str | None = None) -> str:
    """Add ``profile`` (endpoints, tls, prefix) to the node file; its name."""
    name = name or f"p{next(_names)}"
    doc = json.loads(CONF.read_text())
    doc["profiles"][name] = profile
    tmp = CONF.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.chmod(0o644)
    tmp.replace(CONF)
    return name
