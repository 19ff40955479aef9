"""What cannot work is refused, where the reference does something silently wrong.

- ``ipam`` with keys but no type (corpus #35): the reference gives an interface
  with no address and no error; ours refuses with code 7 naming ``ipam.type``.
  ``"ipam": {}`` stays an L2-only interface.
- An IPv4 subnet's network and broadcast addresses are never handed out, even
  when ``rangeEnd`` names the broadcast address (corpus #36; host-local does).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multihome.ipam import config
from multihome.lib.errors import CNIError
from tests.conftest import Topology
from tests.ipam_helpers import request
from tests.rig import CNIBIN, Cnitool


def test_a_range_never_ends_on_the_broadcast_or_starts_on_the_network() -> None:
    (rng,), (wide,) = config.load(
        request(
            {
                "ranges": [
                    [
                        {
                            "subnet": "10.10.8.0/24",
                            "rangeStart": "10.10.8.201",
                            "rangeEnd": "10.10.8.255",
                        }
                    ],
                    [
                        {
                            "subnet": "10.10.9.0/24",
                            "rangeStart": "10.10.9.0",
                            "rangeEnd": "10.10.9.255",
                        }
                    ],
                ]
            }
        )
    ).range_sets
    assert str(rng) == "10.10.8.201-10.10.8.254"
    assert str(wide) == "10.10.9.1-10.10.9.254"


def test_a_range_of_only_the_broadcast_address_is_code_7() -> None:
    with pytest.raises(CNIError) as err:
        config.load(
            request(
                {
                    "ranges": [
                        [
                            {
                                "subnet": "10.1.0.0/24",
                                "rangeStart": "10.1.0.255",
                                "rangeEnd": "10.1.0.255",
                            }
                        ]
                    ]
                }
            )
        )
    assert err.value.code == 7
    assert "only the network or broadcast address" in err.value.msg


@pytest.mark.privileged
@pytest.mark.needs_tool(str(CNIBIN / "mh-macvlan"))
def test_ipam_without_type_is_code_7_and_leaves_nothing(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    ipam = {"ranges": [[{"subnet": "10.10.0.0/16", "rangeStart": "10.10.1.20"}]]}
    net = cnitool.write(
        {
            "cniVersion": "1.0.0",
            "name": "untyped",
            "plugins": [{"type": "mh-macvlan", "master": topo.master, "ipam": ipam}],
        }
    )
    proc = cnitool.run("add", net, topo.pod)
    assert proc.returncode != 0
    error = json.loads(proc.stdout) if proc.stdout.strip() else {}
    text = proc.stdout + proc.stderr
    assert "ipam.type is missing" in text and "ranges" in text
    assert error.get("code", 7) == 7
    assert "net1" not in topo.pod.links()
    assert cnitool.run("del", net, topo.pod).returncode == 0
