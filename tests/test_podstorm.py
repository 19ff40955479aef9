"""60 pods at once through libcni, exec'd plugins, with and without the daemon:
no address of either family in two pods (read with ip -j), nothing left after DEL."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import podstorm
from tests.conftest import Topology
from tests.rig import CNIBIN, CNITOOL

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.needs_tool(str(CNIBIN / "multihome")),
    pytest.mark.needs_tool(str(CNITOOL)),
]


@pytest.mark.parametrize("thick", [False, True], ids=["no-daemon", "thick"])
def test_sixty_pods_at_once(thick: bool, topo: Topology, tmp_path: Path) -> None:
    figures = podstorm.storm(topo.host, topo.master, tmp_path, 60, thick)
    assert not figures.failures, "\n".join(figures.failures)
    assert figures.adds == figures.dels == 60 and figures.duplicates == 0
