"""Helpers for the etcd store tests: a network on a key prefix of its own, plugin
calls, and the keys read back by the rig (never by the code under test)."""

from __future__ import annotations

import itertools
import json
import subprocess
from typing import Any

from conformance import etcdrig
from tests import etcd_node
from tests.ipam_helpers import SEED_RANGES
from tests.rig import Netns, one_json, plugin_env, run_plugin

NET = "vlan200"
_prefixes = itertools.count()


class Net:
    """One network's config on an etcd store, under a key prefix of its own.

    The endpoints, ``tls`` and the prefix go into a profile of the node file (as an
    admin writes them); the NAD names that profile and holds only the other keys."""

    def __init__(
        self,
        endpoints: list[str],
        node: str = "node-a",
        tls: dict[str, str] | None = None,
        **store: Any,
    ) -> None:
        self.prefix = f"/multihome/mhtest{next(_prefixes)}"
        self.profile = ""
        if endpoints:
            profile: dict[str, Any] = {"endpoints": endpoints, "prefix": self.prefix}
            if tls is not None:
                profile["tls"] = tls
            self.profile = etcd_node.add_profile(profile)
        self.store = {"type": "etcd", "profile": self.profile or "none", "node": node}
        self.store.update(store)
        self.ranges: list[Any] = SEED_RANGES
        self.ipam: dict[str, Any] = {}

    def conf(self, node: str | None = None, **top: Any) -> dict[str, Any]:
        store = {**self.store, **({"node": node} if node else {})}
        ipam = {"type": "mh-ipam", "ranges": self.ranges, "store": store, **self.ipam}
        return {"cniVersion": "1.1.0", "name": NET, "type": "mh-macvlan", "ipam": ipam, **top}


def call(
    command: str, doc: dict[str, Any], pod: Netns | None, cid: str = "ctr1", **env: str
) -> subprocess.CompletedProcess[bytes]:
    full = plugin_env(command, CNI_CONTAINERID=cid, CNI_IFNAME="net1", **env)
    if pod is not None:
        full["CNI_NETNS"] = pod.path
    return run_plugin("mh-ipam", full, doc)


def ok(proc: subprocess.CompletedProcess[bytes]) -> Any:
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    return one_json(proc.stdout) if proc.stdout else None


def addresses(result: dict[str, Any]) -> list[str]:
    return [ip["address"] for ip in result["ips"]]


def lease_docs(cluster: etcdrig.EtcdCluster, net: Net) -> dict[str, Any]:
    """address key -> its value, read by the rig (not by the code under test)."""
    base = f"{net.prefix}/{NET}/ips/"
    return {k[len(base) :]: json.loads(v) for k, v in cluster.get_prefix(base).items()}


def leases(cluster: etcdrig.EtcdCluster, net: Net) -> dict[str, str]:
    """address key -> holder as host-local writes it, ``containerID\r\nifname``."""
    return {k: f"{v['id']}\r\n{v['if']}" for k, v in lease_docs(cluster, net).items()}


def owners(cluster: etcdrig.EtcdCluster, net: Net) -> dict[str, Any]:
    base = f"{net.prefix}/{NET}/owners/"
    return {k[len(base) :]: json.loads(v) for k, v in cluster.get_prefix(base).items()}
