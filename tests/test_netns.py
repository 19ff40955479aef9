"""Entering namespaces: by fd, never creating one, always restoring."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from multihome.lib.errors import CNIError
from multihome.lib.netns import NetNS, open_netns
from tests.rig import Netns

pytestmark = pytest.mark.privileged


def current() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_enter_and_restore(netns_factory: Callable[[str], Netns]) -> None:
    pod = netns_factory("pod")
    pod.ip("link", "add", "mhmark0", "type", "veth", "peer", "name", "mhmark1")
    before = current()
    with NetNS(pod.path) as ns:
        assert current() == os.stat(pod.path).st_ino
        assert os.path.exists("/proc/thread-self/net/dev")
        assert "mhmark0" in Path("/proc/thread-self/net/dev").read_text()
        assert ns.path == pod.path
    assert current() == before


def test_restores_on_exception(netns_factory: Callable[[str], Netns]) -> None:
    pod = netns_factory("pod")
    before = current()
    with pytest.raises(RuntimeError), NetNS(pod.path):
        raise RuntimeError("inside")
    assert current() == before


def test_missing_path_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(CNIError) as err:
        open_netns(str(missing))
    assert err.value.code == 3
    assert not missing.exists()
    assert not Path("/run/netns/mh-never-made").exists()


def test_regular_file_is_rejected(tmp_path: Path) -> None:
    fake = tmp_path / "ns"
    fake.write_text("")
    with pytest.raises(CNIError) as err:
        open_netns(str(fake))
    assert err.value.code == 8


def test_per_thread(netns_factory: Callable[[str], Netns]) -> None:
    a, b = netns_factory("pa"), netns_factory("pb")
    seen: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def work(ns: Netns) -> None:
        with NetNS(ns.path):
            barrier.wait(timeout=5)
            seen[ns.name] = current()
            barrier.wait(timeout=5)

    threads = [threading.Thread(target=work, args=(ns,)) for ns in (a, b)]
    main_before = current()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {a.name: os.stat(a.path).st_ino, b.name: os.stat(b.path).st_ino}
    assert current() == main_before


def test_nested(netns_factory: Callable[[str], Netns]) -> None:
    a, b = netns_factory("pa"), netns_factory("pb")
    before = current()
    with NetNS(a.path):
        with NetNS(b.path):
            assert current() == os.stat(b.path).st_ino
        assert current() == os.stat(a.path).st_ino
    assert current() == before
