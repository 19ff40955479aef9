"""The one allow-list of skips. In CI (env ``CI`` set) any other skip fails the run.

A skip is allowed only when its reason starts with one of the tags below and the
tag's condition holds in this run. Missing namespaces or a missing tool (etcd,
podman, cnitool, the reference plugins, busybox) are never allowed: set-up
(``make test``, ``.ci/run``) installs them, or CI fails. A test that may skip for a
new reason either gets a tag here, with its condition, or must not skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The read-only test data beside a checkout (CI lays it beside its clone).
SHARED = ROOT.parent / "shared"
BUNDLE_MANIFEST = ROOT / "dist" / "bundle" / "multihome" / "MANIFEST"

NEEDS_KERNEL = "needs_kernel("
BUNDLE_ONLY = "bundle-only:"
DEV_ONLY = "dev-only:"
CORPUS = "../shared absent:"


def dist_run() -> bool:
    """``make test-dist``: the suites run against the frozen binaries."""
    return "MULTIHOME_CNI_BIN" in os.environ


def in_guest() -> bool:
    """Inside ``make test-vm``'s guest (conformance/vm/ sets it)."""
    return bool(os.environ.get("MULTIHOME_VM_GUEST"))


def strict() -> bool:
    return bool(os.environ.get("CI"))


@dataclass(frozen=True)
class Allowed:
    when: str
    holds: Callable[[], bool]


ALLOWED: dict[str, Allowed] = {
    NEEDS_KERNEL: Allowed(
        "on the host: make test-vm runs these in a guest kernel, where no skip is allowed",
        lambda: not in_guest(),
    ),
    BUNDLE_ONLY: Allowed(
        "during make test: make test-dist runs these against the frozen bundle",
        lambda: not dist_run(),
    ),
    DEV_ONLY: Allowed(
        "during make test-dist: make test runs these against the development binaries",
        dist_run,
    ),
    CORPUS: Allowed("when ../shared (the test corpus) is absent", lambda: not SHARED.exists()),
}


def allowed(reason: str) -> bool:
    """True when a skip with this reason is on the allow-list and its condition holds."""
    reason = reason.removeprefix("Skipped: ")
    for tag, entry in ALLOWED.items():
        if reason.startswith(tag):
            return entry.holds()
    return False


def reason_of(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def enforce(report: pytest.TestReport) -> None:
    """Under CI, turn a skip that is not allowed into a failure that says why."""
    if not (report.skipped and strict()) or hasattr(report, "wasxfail"):
        return
    reason = reason_of(report)
    if allowed(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"strict skip (CI is set): {reason!r} is not on the allow-list in tests/skips.py. "
        "Install what the test needs (make test does) instead of skipping."
    )


def corpus(path: Path) -> pytest.MarkDecorator:
    """Skip (allowed) when a file of the ../shared corpus is absent."""
    return pytest.mark.skipif(not path.exists(), reason=f"{CORPUS} {path} is absent")
