"""Helpers for the IPAM tests: requests built in-process and an in-memory store."""

from __future__ import annotations

from typing import Any

from multihome.lib.models import IPAddress
from multihome.lib.request import Request

SEED_RANGES = [
    [
        {
            "subnet": "203.0.113.0/24",
            "rangeStart": "203.0.113.10",
            "rangeEnd": "203.0.113.50",
            "gateway": "203.0.113.1",
        }
    ],
    [
        {
            "subnet": "2001:db8:200::/64",
            "rangeStart": "2001:db8:200::10",
            "rangeEnd": "2001:db8:200::ff",
            "gateway": "2001:db8:200::1",
        }
    ],
]


def request(
    ipam: dict[str, Any],
    version: str = "1.1.0",
    cni_args: dict[str, str] | None = None,
    command: str = "ADD",
    **top: Any,
) -> Request:
    conf = {
        "cniVersion": version,
        "name": "ipamnet",
        "type": "mh-macvlan",
        "ipam": {"type": "mh-ipam", **ipam},
        **top,
    }
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "ctr",
        "CNI_IFNAME": "net1",
        "CNI_NETNS": "/x",
        "CNI_PATH": "/x",
    }
    return Request("mh-ipam", env, b"", conf=conf, cni_version=version, args=cni_args or {})


class MemoryStore:
    """The allocator's Store protocol over a dict, for pure tests."""

    def __init__(self) -> None:
        self.leases: dict[IPAddress, tuple[str, str]] = {}
        self.last: dict[int, IPAddress] = {}

    def owned(self, owner: tuple[str, str]) -> list[IPAddress]:
        return [ip for ip, o in self.leases.items() if o == owner]

    def reserve(self, ip: IPAddress, owner: tuple[str, str], set_index: int) -> bool:
        if ip in self.leases:
            return False
        self.leases[ip] = owner
        self.last[set_index] = ip
        return True

    def release(self, ip: IPAddress, owner: tuple[str, str]) -> None:
        if self.leases.get(ip) == owner:
            del self.leases[ip]

    def last_reserved(self, set_index: int) -> IPAddress | None:
        return self.last.get(set_index)
