"""The file store: host-local's format, atomic leases, no symlink following, bounded locks."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import stat
import time
from pathlib import Path

import pytest

from multihome.ipam import allocator, config
from multihome.ipam.store import FileStore
from multihome.lib.errors import CNIError
from tests.ipam_helpers import request

IP = ipaddress.ip_address


def test_lease_format_and_modes(tmp_path: Path) -> None:
    with FileStore(str(tmp_path), "net") as store, store.locked():
        assert store.reserve(IP("10.0.0.5"), ("ctr", "net1"), 0)
        assert store.reserve(IP("2001:db8::a"), ("ctr", "net1"), 1)
    netdir = tmp_path / "net"
    assert (netdir / "10.0.0.5").read_bytes() == b"ctr\r\nnet1"
    assert (netdir / "2001:db8::a").read_bytes() == b"ctr\r\nnet1"
    assert (netdir / "last_reserved_ip.0").read_text() == "10.0.0.5"
    assert (netdir / "last_reserved_ip.1").read_text() == "2001:db8::a"
    assert (netdir / "lock").exists()
    for path in netdir.iterdir():
        assert not path.stat().st_mode & stat.S_IWOTH, path
    assert stat.S_IMODE((netdir / "10.0.0.5").stat().st_mode) == 0o600
    assert not stat.S_IMODE(netdir.stat().st_mode) & 0o007


def test_taken_address_is_refused(tmp_path: Path) -> None:
    with FileStore(str(tmp_path), "net") as store, store.locked():
        assert store.reserve(IP("10.0.0.5"), ("a", "net1"), 0)
        assert not store.reserve(IP("10.0.0.5"), ("b", "net1"), 0)
        assert store.owned(("b", "net1")) == []
        assert (tmp_path / "net" / "10.0.0.5").read_bytes() == b"a\r\nnet1"


def test_legacy_lease_files_are_released_by_container_id(tmp_path: Path) -> None:
    netdir = tmp_path / "net"
    netdir.mkdir()
    (netdir / "10.0.0.9").write_text("oldctr")
    with FileStore(str(tmp_path), "net") as store, store.locked():
        assert store.release_owner(("oldctr", "eth0")) == [IP("10.0.0.9")]
    assert not (netdir / "10.0.0.9").exists()


def test_foreign_lease_found_by_scan_on_del(tmp_path: Path) -> None:
    netdir = tmp_path / "net"
    netdir.mkdir()
    (netdir / "10.0.0.7").write_bytes(b"refctr\r\nnet1")  # as reference host-local writes it
    with FileStore(str(tmp_path), "net") as store, store.locked():
        # ADD's O(1) view is the index, rebuilt because the lease was written behind its back
        assert store.owned(("refctr", "net1")) == [IP("10.0.0.7")]
        assert store.owned(("refctr", "net1"), scan=True) == [IP("10.0.0.7")]
        assert store.release_owner(("refctr", "net1")) == [IP("10.0.0.7")]


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    netdir = tmp_path / "store" / "net"
    netdir.mkdir(parents=True)
    (netdir / "10.0.0.5").symlink_to(victim)
    (netdir / "last_reserved_ip.0").symlink_to(victim)
    with FileStore(str(tmp_path / "store"), "net") as store, store.locked():
        assert store.holder(IP("10.0.0.5")) is None
        assert not store.reserve(IP("10.0.0.5"), ("a", "net1"), 0)
        assert store.reserve(IP("10.0.0.6"), ("a", "net1"), 0)  # rewrites last_reserved_ip.0
        store.release_owner(("a", "net1"))
    assert victim.read_text() == "precious"
    assert not (netdir / "last_reserved_ip.0").is_symlink()


def test_symlinked_network_dir_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "net").symlink_to(elsewhere)
    with pytest.raises(CNIError) as err:
        FileStore(str(tmp_path / "store"), "net")
    assert err.value.code == 50


def test_stuck_lock_holder_gives_code_11(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), "net", lock_timeout=0.3)
    fd = os.open(tmp_path / "net" / "lock", os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        start = time.monotonic()
        with pytest.raises(CNIError) as err, store.locked():
            pass
        assert err.value.code == 11
        assert 0.25 < time.monotonic() - start < 3
    finally:
        os.close(fd)
        store.close()


def test_index_survives_a_crash_between_intent_and_lease(tmp_path: Path) -> None:
    owner = ("ctr", "net1")
    with FileStore(str(tmp_path), "net") as store, store.locked():
        store._index_put(owner, [IP("10.0.0.5")])  # the crash happened before the link
        assert store.owned(owner) == []
        assert store.reserve(IP("10.0.0.5"), owner, 0)
        assert store.owned(owner) == [IP("10.0.0.5")]


class CountingStore(FileStore):
    reads = 0

    def _read(self, name: str, dir_fd: int) -> bytes | None:
        CountingStore.reads += 1
        return super()._read(name, dir_fd)


def test_add_reads_constant_files_with_30000_leases(tmp_path: Path) -> None:
    """Allocation must not grow with the number of leases (host-local reads them all)."""
    netdir = tmp_path / "big"
    netdir.mkdir()
    for i in range(30000):
        ip = ipaddress.ip_address(int(IP("10.20.0.2")) + i)
        (netdir / str(ip)).write_bytes(f"ctr{i}\r\neth0".encode())
    (netdir / "last_reserved_ip.0").write_text(str(ip))
    pool = config.load(
        request({"ranges": [[{"subnet": "10.20.0.0/16"}]], "dataDir": str(tmp_path)}, name="big")
    )
    with CountingStore(str(tmp_path), "big") as store:
        with store.locked():  # leases written behind our back: one rescan, the first time
            store.owned(("warm", "net1"))
        with store.locked():
            pass  # what the next ADD finds: nothing new
    with CountingStore(str(tmp_path), "big") as store, store.locked():
        CountingStore.reads = 0
        got = allocator.allocate(pool, store, ("newctr", "net1"))
        assert str(got[0][0]) == str(ipaddress.ip_address(int(ip) + 1))
        assert CountingStore.reads < 10, CountingStore.reads
        CountingStore.reads = 0
        assert store.release_owner(("newctr", "net1")) == [got[0][0]]
        assert CountingStore.reads < 10, CountingStore.reads


def test_a_lease_written_behind_our_back_is_seen_at_once(tmp_path: Path) -> None:
    """host-local on the same dataDir, within the same clock tick as our last write:
    the next ADD must not trust an index that lacks its lease."""
    netdir = tmp_path / "net"
    with FileStore(str(tmp_path), "net") as store:
        with store.locked():
            assert store.reserve(IP("10.0.0.5"), ("a", "net1"), 0)
        (netdir / "10.0.0.6").write_bytes(b"b\r\nnet1")  # as host-local writes it
        with store.locked():
            assert store.owned(("b", "net1")) == [IP("10.0.0.6")]
        (netdir / "10.0.0.5").unlink()  # host-local's DEL of our lease
        (netdir / "10.0.0.7").write_bytes(b"a\r\nnet1")  # and its ADD
        with store.locked():
            assert store.owned(("a", "net1")) == [IP("10.0.0.7")]
            assert store.owned(("b", "net1")) == [IP("10.0.0.6")]


def test_our_own_writes_need_no_rescan(tmp_path: Path) -> None:
    with CountingStore(str(tmp_path), "net") as store:
        with store.locked():
            assert store.reserve(IP("10.0.0.5"), ("a", "net1"), 0)
        for n in range(6, 40):
            (tmp_path / "net" / f"10.0.1.{n}").write_bytes(b"old\r\nnet1")
        with store.locked():
            store.owned(("a", "net1"))  # the one rescan
            assert store.reserve(IP("10.0.0.6"), ("a", "net1"), 0)
        CountingStore.reads = 0
        with store.locked():
            assert store.owned(("a", "net1")) == [IP("10.0.0.5"), IP("10.0.0.6")]
        assert CountingStore.reads < 6, CountingStore.reads


def test_a_rescan_reads_only_the_leases_made_since(tmp_path: Path) -> None:
    netdir = tmp_path / "net"
    netdir.mkdir()
    for n in range(2000):
        (netdir / str(ipaddress.ip_address(int(IP("10.1.0.2")) + n))).write_bytes(b"x\r\neth0")
    with CountingStore(str(tmp_path), "net") as store:
        with store.locked():
            assert store.owned(("a", "net1")) == []  # reads every lease, once
            assert store.reserve(IP("10.0.0.5"), ("a", "net1"), 0)
        (netdir / "10.0.0.6").write_bytes(b"b\r\nnet1")
        CountingStore.reads = 0
        with store.locked():
            assert store.owned(("b", "net1")) == [IP("10.0.0.6")]
        assert CountingStore.reads < 10, CountingStore.reads
