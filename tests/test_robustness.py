"""Regressions found by conformance/robustness.py: each one once crashed or leaked."""

from __future__ import annotations

import os
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from multihome.lib.netns import NetNS
from tests.conftest import Topology
from tests.link_helpers import conflist, mh_ipam
from tests.rig import CNIBIN, Cnitool, Netns, one_json
from tests.shapes import check_error
from tests.test_link import direct, leases
from tests.test_mh_ipam import call, conf

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))]


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def test_overlong_network_name_is_code_7(pod: Netns, tmp_path: Path) -> None:
    # (it was used as a directory name: ENAMETOOLONG surfaced as an internal error)
    doc = {**conf(tmp_path), "name": "n" * 5000}
    check_error(one_json(call("ADD", doc, pod).stdout), 7)
    assert list(tmp_path.iterdir()) == []


def test_overlong_container_id_is_code_4(pod: Netns, tmp_path: Path) -> None:
    check_error(one_json(call("ADD", conf(tmp_path), pod, cid="c" * 5000).stdout), 4)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_store_is_code_5_and_leaves_no_temporary_file(pod: Netns, tiny: Path) -> None:
    (tiny / "vlan200").mkdir()
    filler = tiny / "filler"
    with filler.open("wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"x" * 4096)
    check_error(one_json(call("ADD", conf(tiny), pod).stdout), 5)
    assert sorted(p.name for p in (tiny / "vlan200").iterdir() if p.name != "lock") == []


def test_read_only_store_is_code_5(pod: Netns, tiny: Path) -> None:
    (tiny / "vlan200").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny)], check=True)
    check_error(one_json(call("ADD", conf(tiny), pod).stdout), 5)


def test_del_removes_a_link_an_interrupted_add_left_under_its_temporary_name(
    topo: Topology, tmp_path: Path
) -> None:
    # An ADD killed between creating the link (under a temporary name, in the pod) and
    # renaming it leaves one; the owner alias lets DEL find it.
    topo.host.ip(
        "link", "add", "link", topo.master, "name", "mhleft", "type", "macvlan", "mode", "bridge"
    )
    topo.host.ip("link", "set", "mhleft", "alias", "multihome c1 net1", "netns", topo.pod.path)
    conf_ = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)))
    assert direct("macvlan", "DEL", topo, conf_, topo.pod.path).returncode == 0
    names = [x["ifname"] for x in topo.pod.ipj("link", "show")]
    assert "mhleft" not in names
    assert leases(tmp_path) == []


def test_a_retried_add_clears_its_own_leftover_first(topo: Topology, tmp_path: Path) -> None:
    topo.host.ip(
        "link", "add", "link", topo.master, "name", "mhleft", "type", "macvlan", "mode", "bridge"
    )
    topo.host.ip("link", "set", "mhleft", "alias", "multihome c1 net1", "netns", topo.pod.path)
    conf_ = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)))
    proc = direct("macvlan", "ADD", topo, conf_, topo.pod.path)
    assert proc.returncode == 0, proc.stdout
    names = sorted(x["ifname"] for x in topo.pod.ipj("link", "show"))
    assert names == ["eth0", "lo", "net1"]
    assert direct("macvlan", "DEL", topo, conf_, topo.pod.path).returncode == 0


def test_netns_shared_by_threads_restores_each_thread(
    netns_factory: Callable[[str], Netns],
) -> None:
    # One NetNS object entered by several threads at once (the daemon does this).
    pod = netns_factory("pod")
    shared = NetNS(pod.path)
    target = os.stat(pod.path).st_ino
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def body() -> None:
        own = os.stat("/proc/thread-self/ns/net").st_ino
        for n in range(50):
            with shared:
                if n == 0:
                    barrier.wait()  # all four inside at once
                if os.stat("/proc/thread-self/ns/net").st_ino != target:
                    errors.append("not inside")
            if os.stat("/proc/thread-self/ns/net").st_ino != own:
                errors.append("not restored")

    threads = [threading.Thread(target=body) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_add_killed_after_the_rename_can_be_retried(topo: Topology, tmp_path: Path) -> None:
    # Killed after net1 got its name (the runtime never saw a result): the retry must
    # not fail with "net1 already exists", and keeps the same lease.
    conf_ = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)))
    first = direct("macvlan", "ADD", topo, conf_, topo.pod.path)
    assert first.returncode == 0, first.stdout
    again = direct("macvlan", "ADD", topo, conf_, topo.pod.path)
    assert again.returncode == 0, again.stdout
    assert one_json(again.stdout)["ips"] == one_json(first.stdout)["ips"]
    assert sorted(x["ifname"] for x in topo.pod.ipj("link", "show")) == ["eth0", "lo", "net1"]
    assert len(leases(tmp_path)) == 2  # dual stack: one v4 and one v6, not two of each
    assert direct("macvlan", "DEL", topo, conf_, topo.pod.path).returncode == 0
    assert leases(tmp_path) == []


def test_links_carry_their_owner_alias(topo: Topology, tmp_path: Path) -> None:
    # (the kernel ignores IFLA_IFALIAS when it creates a link: it is set afterwards)
    conf_ = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)))
    assert direct("macvlan", "ADD", topo, conf_, topo.pod.path).returncode == 0
    (net1,) = [x for x in topo.pod.ipj("link", "show") if x["ifname"] == "net1"]
    assert net1["ifalias"] == "multihome c1 net1"
    assert direct("macvlan", "DEL", topo, conf_, topo.pod.path).returncode == 0


def test_del_finds_an_untagged_link_by_its_temporary_name(topo: Topology, tmp_path: Path) -> None:
    # Killed between creating the link and tagging it: the name itself says whose it is.
    tmp = f"mh{zlib.crc32(b'multihome c1 net1'):08x}"
    topo.host.ip("link", "add", "link", topo.master, "name", tmp, "type", "macvlan")
    topo.host.ip("link", "set", tmp, "netns", topo.pod.path)
    conf_ = conflist("macvlan", topo.master, mh_ipam(str(tmp_path)))
    assert direct("macvlan", "DEL", topo, conf_, topo.pod.path).returncode == 0
    assert [x["ifname"] for x in topo.pod.ipj("link", "show")] == ["lo", "eth0"]


def test_sbr_del_leaves_the_rules_of_another_network_with_the_same_address(
    topo: Topology, cnitool: Cnitool, tmp_path: Path
) -> None:
    """Two networks of one pod lease from overlapping ranges (their own stores): both
    interfaces get 203.0.113.10. DEL of one removed the other's rules too (found by make
    robustness's bystanders)."""

    def net(name: str, data: str) -> str:
        return cnitool.write(
            {
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [
                    {"type": "mh-macvlan", "master": topo.master, "ipam": mh_ipam(data)},
                    {"type": "mh-sbr"},
                ],
            }
        )

    a, b = net("sbra", str(tmp_path / "a")), net("sbrb", str(tmp_path / "b"))
    assert cnitool.run("add", a, topo.pod, ifname="net1", container_id="ca").returncode == 0
    assert cnitool.run("add", b, topo.pod, ifname="net2", container_id="cb").returncode == 0

    def rules() -> set[tuple[str, str]]:
        return {
            (r["src"], r["table"])
            for family in ("-4", "-6")
            for r in topo.pod.ipj(family, "rule", "show")
            if r.get("src", "").startswith(("203.0.113.", "2001:db8:200:"))
        }

    both = rules()
    assert len(both) == 4 and len({src for src, _ in both}) == 2  # one address per family
    b_tables = {
        str(r["table"]) for r in topo.pod.ipj("-4", "route", "show", "table", "all")
        if r.get("dev") == "net2" and r.get("table") not in ("main", "local")
    }  # fmt: skip
    assert cnitool.run("del", a, topo.pod, ifname="net1", container_id="ca").returncode == 0
    left = rules()
    assert len(left) == 2 and b_tables & {table for _, table in left}
    assert cnitool.run("del", b, topo.pod, ifname="net2", container_id="cb").returncode == 0
    assert rules() == set()
