"""Whole chains of our plugins, as NADs hold them, and what tests read back of them.

Shared by the libcni 1.3.0 tests (test_libcni13.py), the Multus-shaped calls
(test_multus_calls.py) and the stripped DEL (test_stripped_del.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.ipam_helpers import SEED_RANGES
from tests.rig import Netns

# The README's abcdesktop NAD: in a dual-stack pod, default-ipv6's ::/0 takes the place
# of eth0's IPv6 default until DEL.
PRESETS = ["public-ipv4", "default-ipv6"]


def macvlan_chain(
    name: str,
    master: str,
    *,
    datadir: Path | None,
    statedir: Path | None,
    version: str = "1.1.0",
    store: dict[str, Any] | None = None,
    capabilities: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """mh-macvlan + mh-ipam (dual stack) + mh-sbr + mh-route: the abcdesktop NAD.
    ``datadir``/``statedir`` None leave the plugins' default directories."""
    ipam: dict[str, Any] = {"type": "mh-ipam", "ranges": SEED_RANGES}
    if datadir is not None:
        ipam["dataDir"] = str(datadir)
    if store is not None:
        ipam["store"] = store
    main: dict[str, Any] = {"type": "mh-macvlan", "master": master, "ipam": ipam}
    if capabilities:
        main["capabilities"] = capabilities
    route: dict[str, Any] = {"type": "mh-route", "presets": PRESETS}
    if statedir is not None:
        route["stateDir"] = str(statedir)
    return {
        "cniVersion": version,
        "name": name,
        "plugins": [main, {"type": "mh-sbr", "addSourceHints": True}, route],
    }


def ipvlan_chain(name: str, master: str, *, version: str = "1.1.0") -> dict[str, Any]:
    """mh-ipvlan + mh-static (dual stack, gateways) + mh-sbr."""
    static = {
        "type": "mh-static",
        "addresses": [
            {"address": "203.0.113.20/24", "gateway": "203.0.113.1"},
            {"address": "2001:db8:200::20/64", "gateway": "2001:db8:200::1"},
        ],
    }
    return {
        "cniVersion": version,
        "name": name,
        "plugins": [
            {"type": "mh-ipvlan", "master": master, "ipam": static},
            {"type": "mh-sbr"},
        ],
    }


def ok(proc: subprocess.CompletedProcess[str], what: str = "") -> Any:
    """A libcni client run that must succeed; its stdout's JSON (or None)."""
    assert proc.returncode == 0, f"{what}: {proc.stdout} {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def failed(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """A cnitool13 run that must fail: the CNI error it printed."""
    assert proc.returncode != 0, proc.stdout
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def leases(datadir: Path, network: str) -> dict[str, str]:
    """host-local's store: address -> "containerID ifname"."""
    netdir = datadir / network
    if not netdir.is_dir():
        return {}
    return {
        p.name: " ".join(p.read_text().split())
        for p in netdir.iterdir()
        if p.name != "lock" and not p.name.startswith("last_reserved_ip")
    }


def route_states(statedir: Path, network: str) -> list[str]:
    netdir = statedir / network
    return sorted(p.name for p in netdir.iterdir()) if netdir.is_dir() else []


def kernel(pod: Netns) -> dict[str, Any]:
    """Everything of the pod's networking the chain touches, read with ``ip -j``."""
    state: dict[str, Any] = {
        "links": sorted(
            (x["ifname"], x.get("address"), x.get("ifalias", "")) for x in pod.ipj("link", "show")
        ),
        "addrs": sorted(
            f"{x['ifname']} {a['local']}/{a['prefixlen']}"
            for x in pod.ipj("addr", "show")
            for a in x["addr_info"]
            if a["scope"] == "global"
        ),
    }
    for family in ("-4", "-6"):
        state[f"rules{family}"] = pod.ipj(family, "rule", "show")
        state[f"routes{family}"] = sorted(
            json.dumps(r, sort_keys=True)
            for r in pod.ipj(family, "route", "show", "table", "all")
            if not (r.get("protocol") == "kernel" and r["dst"].startswith("fe80"))
            and r.get("type") not in ("local", "multicast", "broadcast")
        )
    return state


def sbr_tables(pod: Netns) -> dict[str, str]:
    """The pod's source rules: ``from`` address -> table."""
    out = {}
    for family in ("-4", "-6"):
        for rule in pod.ipj(family, "rule", "show"):
            if "src" in rule and rule.get("table") not in ("local", "main", "default"):
                out[rule["src"]] = str(rule["table"])
    return out
