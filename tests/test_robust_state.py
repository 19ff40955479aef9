"""A short run of make robustness's bystander part: no case changes what it should not."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conformance import robust_state
from multihome.lib import registry
from tests.conftest import needs_etcd
from tests.rig import CNIBIN

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-sbr"))]


def test_bystanders_survive_hostile_cases() -> None:
    needs_etcd()
    own = registry.OWN_PROGRAM[0]
    registry.OWN_PROGRAM[0] = str((CNIBIN / "multihome").resolve())  # delegate in-process
    failures: list[str] = []
    summary = SimpleNamespace(cases=0, fail=failures.append)
    try:
        robust_state.run(summary, seconds=20)
    finally:
        registry.OWN_PROGRAM[0] = own
    assert not failures, "\n".join(failures[:20])
    assert summary.bystander_cases > 20 and summary.bystander_changes == 0
