"""Thick mode: the daemon dies at a crash point after the link exists.

During ADD the shim answers code 11, and the runtime's DEL (in the shim, the
daemon being dead) and its retry (through a new daemon) leave nothing behind.
During DEL, CHECK, GC and STATUS the shim re-runs the call itself and succeeds. Every wait
is on the daemon's log line or its crash-point file, never on a delay.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import crashrig
from tests.conftest import Topology
from tests.rig import CNIBIN

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "multihome"))]


def test_daemon_deaths_mid_request(topo: Topology, tmp_path: Path) -> None:
    crashrig.settle(topo.pod)  # topo gives the pod its Multus eth0; wait out its DAD
    world = crashrig.World(topo.pod, topo.host, [tmp_path / "data"])
    conf = crashrig.chain("macvlan", topo.master, tmp_path / "data")
    figures = crashrig.DaemonDeaths(world, conf, tmp_path).run()
    assert not figures.failures, "\n".join(figures.failures)
    assert figures.deaths == 6
    assert figures.partial == 2  # both ADD deaths left a link (and a lease) for DEL to remove
