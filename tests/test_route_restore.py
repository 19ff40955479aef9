"""mh-route's record of what it removed and added, put back exactly.

Pods shaped as Calico's and Cilium's (eth0 with a /32 and ``default via
169.254.1.1 dev eth0 onlink``), an ECMP default over two interfaces, two
attachments that each take the default, and route sets of 5,000 routes. The
kernel's state is read back with ``ip -j``.
"""

from __future__ import annotations

import errno
import ipaddress
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from multihome.lib import rtnl
from multihome.lib.errors import CNIError
from multihome.lib.result import IPConfig, Result
from multihome.plugins import route, sbr
from tests.rig import CNIBIN, Netns, one_json, plugin_env, run_plugin

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-route"))]
NETS = {"net1": ("203.0.113.5/24", "203.0.113.1"), "net2": ("198.51.100.5/24", "198.51.100.1")}


def veth(pod: Netns, name: str, address: str = "") -> None:
    pod.ip("link", "add", name, "type", "veth", "peer", "name", f"p{name}")
    if address:
        pod.ip("addr", "add", address, "dev", name)
    pod.ip("link", "set", name, "up")
    pod.ip("link", "set", f"p{name}", "up")


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    """net1 and net2 as secondary networks; each test gives eth0 its shape."""
    ns = netns_factory("pod")
    for name, (address, _) in NETS.items():
        veth(ns, name, address)
    return ns


def calico_eth0(pod: Netns) -> None:
    veth(pod, "eth0", "10.244.1.7/32")
    pod.ip("route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    pod.ip("route", "add", "default", "via", "169.254.1.1", "dev", "eth0", "onlink")


def defaults(pod: Netns) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = pod.ipj("-4", "route", "show", "default")
    return found


def mh_route(
    command: str,
    pod: Netns,
    state: Path,
    ifname: str = "net1",
    cid: str = "c1",
    **extra: Any,
) -> subprocess.CompletedProcess[bytes]:
    address, gw = NETS[ifname]
    conf = {
        "cniVersion": "1.0.0",
        "name": f"rt-{ifname}",
        "type": "mh-route",
        "stateDir": str(state),
        "flushgateway": True,
        "addroutes": [{"dst": "0.0.0.0/0", "gw": gw}],
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": ifname, "sandbox": pod.path}],
            "ips": [{"address": address, "gateway": gw, "interface": 0}],
        },
        **extra,
    }
    env = plugin_env(command, CNI_CONTAINERID=cid, CNI_IFNAME=ifname, CNI_NETNS=pod.path)
    return run_plugin("mh-route", env, conf)


def ok(proc: subprocess.CompletedProcess[bytes]) -> None:
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


def test_calico_onlink_default_is_put_back(pod: Netns, tmp_path: Path) -> None:
    calico_eth0(pod)
    before = defaults(pod)
    assert "onlink" in before[0]["flags"]
    ok(mh_route("ADD", pod, tmp_path))
    assert [(r["gateway"], r["dev"]) for r in defaults(pod)] == [("203.0.113.1", "net1")]
    ok(mh_route("CHECK", pod, tmp_path))
    proc = mh_route("DEL", pod, tmp_path)
    ok(proc)
    assert defaults(pod) == before
    assert b"error" not in proc.stderr


def test_ecmp_default_over_two_interfaces(pod: Netns, tmp_path: Path) -> None:
    veth(pod, "eth0", "10.0.0.5/24")
    veth(pod, "eth1", "10.1.0.5/24")
    pod.ip(
        "route", "add", "default",
        "nexthop", "via", "10.0.0.1", "dev", "eth0",
        "nexthop", "via", "10.1.0.1", "dev", "eth1", "weight", "2",
    )  # fmt: skip
    before = defaults(pod)
    ok(mh_route("ADD", pod, tmp_path))
    assert [(r["gateway"], r["dev"]) for r in defaults(pod)] == [("203.0.113.1", "net1")]
    ok(mh_route("DEL", pod, tmp_path))
    assert defaults(pod) == before


def test_a_restore_that_fails_is_logged(pod: Netns, tmp_path: Path) -> None:
    veth(pod, "eth0", "10.0.0.5/24")
    pod.ip("route", "add", "default", "via", "10.0.0.1", "dev", "eth0")
    ok(mh_route("ADD", pod, tmp_path))
    pod.ip("addr", "flush", "dev", "eth0")  # 10.0.0.1 is unreachable now
    proc = mh_route("DEL", pod, tmp_path)
    ok(proc)  # DEL still succeeds, and says what it could not do
    assert b"error: cannot restore route 0.0.0.0/0 via 10.0.0.1 dev eth0" in proc.stderr
    assert defaults(pod) == []


def test_a_route_add_cannot_remove_fails_the_add(pod: Netns, tmp_path: Path) -> None:
    """A default through a nexthop object cannot be deleted by its gateway: ADD
    fails and changes nothing (it used to go on and fail with File exists)."""
    veth(pod, "eth0", "10.0.0.5/24")
    pod.ip("nexthop", "add", "id", "7", "via", "10.0.0.1", "dev", "eth0")
    pod.ip("route", "add", "default", "nhid", "7")
    before = defaults(pod)
    proc = mh_route("ADD", pod, tmp_path)
    assert proc.returncode == 1
    error = one_json(proc.stdout)
    assert error["code"] == 102
    assert error["msg"].startswith("removing route 0.0.0.0/0 via 10.0.0.1 dev eth0: ")
    assert defaults(pod) == before
    assert not list(tmp_path.glob("*/*.json"))


@pytest.mark.parametrize("order", [("net1", "net2"), ("net2", "net1")])
def test_two_attachments_take_the_default(
    pod: Netns, tmp_path: Path, order: tuple[str, str]
) -> None:
    """Deleted in ADD order (hot-unplug) or in reverse (Multus): eth0's default
    comes back either way, and each DEL leaves a default in place."""
    veth(pod, "eth0", "10.0.0.5/24")
    pod.ip("route", "add", "default", "via", "10.0.0.1", "dev", "eth0")
    before = defaults(pod)
    ok(mh_route("ADD", pod, tmp_path, "net1"))
    ok(mh_route("ADD", pod, tmp_path, "net2"))
    first, second = order
    proc = mh_route("DEL", pod, tmp_path, first)
    ok(proc)
    assert b"error" not in proc.stderr
    assert [r["dev"] for r in defaults(pod)] == [second]
    pod.ip("link", "del", first)  # the main plugin's DEL
    proc = mh_route("DEL", pod, tmp_path, second)
    ok(proc)
    assert b"error" not in proc.stderr
    assert defaults(pod) == before


def test_5000_routes_and_their_rollback(pod: Netns, tmp_path: Path) -> None:
    veth(pod, "eth0", "10.0.0.5/24")
    pod.ip("route", "add", "default", "via", "10.0.0.1", "dev", "eth0")
    before = pod.ipj("-4", "route", "show", "table", "all")
    nets = ipaddress.ip_network("100.64.0.0/10").subnets(new_prefix=24)
    many = [{"dst": str(next(nets)), "gw": "203.0.113.1"} for _ in range(5000)]
    ok(mh_route("ADD", pod, tmp_path, addroutes=many))
    assert len(pod.ipj("-4", "route", "show", "dev", "net1")) == 5000 + 1  # + the subnet's
    ok(mh_route("DEL", pod, tmp_path))
    assert pod.ipj("-4", "route", "show", "table", "all") == before
    # the last of 5,001 fails (its gateway is on no route of net1): all of it is undone
    bad = [*many, {"dst": "198.18.0.0/24", "gw": "192.0.2.1"}]
    proc = mh_route("ADD", pod, tmp_path, addroutes=bad)
    assert proc.returncode == 1
    assert one_json(proc.stdout)["code"] == 102
    assert pod.ipj("-4", "route", "show", "table", "all") == before


class Breaking(rtnl.Rtnl):
    """The kernel does a batch's second window, then the socket fails (as ENOBUFS
    did): which requests were done is known only to the kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.windows = 0

    def _window(self, requests: list[rtnl.Request]) -> list[rtnl.NetlinkError | None]:
        self.windows += 1
        if self.windows == 2:
            self._send(requests, rtnl.NLM_F_ACK)
            raise OSError(errno.ENOBUFS, "No buffer space available")
        return super()._window(requests)


def breaking_socket(pod: Netns) -> Breaking:
    with rtnl.in_netns(pod.path) as (ns, _), ns:
        return Breaking()


def test_a_batch_cut_short_is_rolled_back(pod: Netns) -> None:
    veth(pod, "eth0", "10.0.0.5/24")
    pod.ip("route", "add", "default", "via", "10.0.0.1", "dev", "eth0")
    before = pod.ipj("-4", "route", "show", "table", "all")
    conf = route.RouteConf.model_validate(
        {
            "name": "b",
            "type": "mh-route",
            "flushgateway": True,
            "addroutes": [{"dst": "0.0.0.0/0", "gw": "203.0.113.1"}]
            + [{"dst": f"100.64.{i}.0/24", "gw": "203.0.113.1"} for i in range(200)],
        }
    )
    prev = Result(
        ips=[
            IPConfig(
                address=ipaddress.ip_interface("203.0.113.5/24"),
                gateway=ipaddress.ip_address("203.0.113.1"),
            )
        ]
    )
    with breaking_socket(pod) as sock:
        with pytest.raises(CNIError) as err:
            route.apply(sock, route.plan(conf, prev, "net1"), "net1")
        assert err.value.code == 102 and sock.windows >= 2
    assert pod.ipj("-4", "route", "show", "table", "all") == before


def test_sbr_batch_cut_short_is_rolled_back(pod: Netns) -> None:
    for i in range(150):
        pod.ip("route", "add", f"100.64.{i}.0/24", "via", "203.0.113.1", "dev", "net1")
    before = pod.ipj("-4", "route", "show", "table", "all")
    with breaking_socket(pod) as sock:
        oif = sock.link("net1")
        assert oif is not None
        main, used = sbr.survey(sock, oif.index)
        ip = ipaddress.ip_interface("203.0.113.5/24")
        conf = sbr.SbrConf.model_validate({"name": "s", "type": "mh-sbr"})
        the_plan = sbr.plan(
            [(ip, ipaddress.ip_address("203.0.113.1"))], main, used, conf, oif.index
        )
        with pytest.raises(CNIError):
            sbr.apply(sock, the_plan)
        assert sock.windows >= 2
    assert pod.ipj("-4", "route", "show", "table", "all") == before
    assert not [r for r in pod.ipj("-4", "rule", "show") if r.get("src") == "203.0.113.5"]
