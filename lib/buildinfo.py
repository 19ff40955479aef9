"""Which build this is, for the shim-daemon handshake. Lean: os and sys only."""

from __future__ import annotations

import os
import sys

VERSION = "0.1.0"


def build_id() -> str:
    """The version, and the bundle's content hash when frozen (MANIFEST, by make dist)."""
    override = os.environ.get("MULTIHOME_BUILD_ID")
    if override:
        return override
    if getattr(sys, "frozen", False):
        manifest = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "MANIFEST")
        try:
            with open(manifest) as fh:
                lines = fh.read().splitlines()
            return f"multihome {VERSION} {lines[1]}"
        except (OSError, IndexError):
            pass
    return f"multihome {VERSION} dev"
