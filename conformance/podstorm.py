"""Many pods at once, each a real libcni run (build/cnitool) exec'ing our plugins.

All ADDs start together, then every pod's net1 is read with ``ip -j``: each
pod has one IPv4 and one IPv6 address, and no address is in two pods. Then
all DELs run together from the same host namespace, and nothing is left: no
net1 in any pod, no lease or index entry in the store. With ``thick`` a
daemon serves the plugins (its log counts what it served), else each plugin
runs in its own process. Used by tests/test_podstorm.py and make robustness.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance import crashrig
from tests.rig import CNIBIN, REFERENCE_BIN, Cnitool, Netns, unique

NET = "stormnet"


def conflist(master: str, data: Path) -> dict[str, Any]:
    ipam = {
        "type": "mh-ipam",
        "dataDir": str(data),
        "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]],
    }
    return {
        "cniVersion": "1.0.0",
        "name": NET,
        "plugins": [{"type": "mh-macvlan", "master": master, "ipam": ipam}],
    }


@dataclass
class StormFigures:
    pods: int = 0
    adds: int = 0  # successful ADDs
    dels: int = 0
    duplicates: int = 0  # addresses found in two pods' kernels (must be 0)
    served: int = 0  # requests the daemon served (thick mode)
    failures: list[str] = field(default_factory=list)


def _addresses(pod: Netns) -> list[str]:
    """net1's global addresses, read with ip -j."""
    data = [x for x in pod.ipj("addr", "show") if x["ifname"] == "net1"]
    return [a["local"] for x in data for a in x.get("addr_info", []) if a.get("scope") == "global"]


def storm(host: Netns, master: str, scratch: Path, n: int, thick: bool) -> StormFigures:
    figures = StormFigures(pods=n)
    cnitool = Cnitool(host, scratch / "net.d", scratch / "cache", f"{CNIBIN}:{REFERENCE_BIN}")
    data = scratch / "ipam"
    net = cnitool.write(conflist(master, data))
    daemon = crashrig.Daemon(scratch, "storm") if thick else None
    extra = {"MULTIHOME_SOCKET": str(daemon.sock if daemon else scratch / "none.sock")}
    pods = [Netns(unique("mhsp")) for _ in range(n)]
    try:

        def run(cmd: str, i: int) -> bool:
            proc = cnitool.run(cmd, net, pods[i], container_id=f"storm{i}", extra_env=extra)
            if proc.returncode != 0:
                figures.failures.append(f"{cmd} pod {i}: {proc.stderr.strip()[-300:]}")
            return proc.returncode == 0

        with ThreadPoolExecutor(max_workers=n) as ex:  # every ADD at once
            figures.adds = sum(ex.map(lambda i: run("add", i), range(n)))
        seen: Counter[str] = Counter()
        for i, pod in enumerate(pods):
            got = _addresses(pod)
            if sorted(":" in a for a in got) != [False, True]:
                figures.failures.append(f"pod {i} has net1 addresses {got}")
            seen.update(got)
        dups = {a: c for a, c in seen.items() if c > 1}
        figures.duplicates = len(dups)
        if dups:
            figures.failures.append(f"addresses in two pods at once: {sorted(dups)[:5]}")
        with ThreadPoolExecutor(max_workers=n) as ex:
            figures.dels = sum(ex.map(lambda i: run("del", i), range(n)))
        left = [i for i, pod in enumerate(pods) if "net1" in pod.links()]
        if left:
            figures.failures.append(f"net1 left in pods {left[:10]}")
        files = crashrig.file_state([data])
        if files:
            figures.failures.append(f"store files left: {sorted(files)[:5]}")
        if daemon is not None:
            figures.served = daemon.log.read_text().count("served ")
            if figures.served < 2 * n:
                figures.failures.append(f"the daemon served {figures.served} of {2 * n} calls")
    finally:
        for pod in pods:
            pod.delete()
        if daemon is not None:
            daemon.stop()
    return figures
