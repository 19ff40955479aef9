"""The etcd store's trust model: the node's settings, not a NAD, decide which etcd the
plugin reaches, with which credentials, and under which keys.

Every refusal is code 7 and is made before any connection: the endpoints here are
listening sockets nobody accepts on, and each must have seen no connection at all.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import etcd_node
from tests.etcd_helpers import call
from tests.ipam_helpers import SEED_RANGES
from tests.rig import CNIBIN, Netns, one_json
from tests.shapes import check_error

pytestmark = [pytest.mark.privileged, pytest.mark.needs_tool(str(CNIBIN / "mh-ipam"))]


class Listener:
    """A loopback port that queues connections and never accepts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.https = self.url.replace("http:", "https:")

    def connections(self) -> int:
        self.sock.setblocking(False)
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listeners() -> Iterator[Callable[[], Listener]]:
    made: list[Listener] = []

    def make() -> Listener:
        made.append(Listener())
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def pod(netns_factory: Callable[[str], Netns]) -> Netns:
    return netns_factory("pod")


def nad(store: dict[str, Any]) -> dict[str, Any]:
    ipam = {"type": "mh-ipam", "ranges": SEED_RANGES, "store": {"type": "etcd", **store}}
    return {"cniVersion": "1.1.0", "name": "trust", "type": "mh-macvlan", "ipam": ipam}


def refused(doc: dict[str, Any], pod: Netns, needle: str, **env: str) -> None:
    """ADD, DEL and STATUS each give code 7 naming ``needle``."""
    for command in ("ADD", "DEL", "STATUS"):
        err = one_json(call(command, doc, pod if command != "STATUS" else None, **env).stdout)
        check_error(err, 7)
        assert needle in err["msg"] + err.get("details", ""), (command, err)


KUBE_PKI = "/etc/kubernetes/pki"


def test_a_nad_cannot_name_credentials(pod: Netns, listeners: Callable[[], Listener]) -> None:
    """The kubeadm control plane's etcd client certificate, named by a NAD: refused."""
    etcd = listeners()
    profile = etcd_node.add_profile({"endpoints": [etcd.https]})
    tls = {
        "ca": f"{KUBE_PKI}/etcd/ca.crt",
        "cert": f"{KUBE_PKI}/apiserver-etcd-client.crt",
        "key": f"{KUBE_PKI}/apiserver-etcd-client.key",
    }
    refused(nad({"profile": profile, "tls": tls}), pod, "credentials are the node's")
    # even with the endpoints spelled out, as a NAD of the old form would
    doc = nad({"profile": profile, "endpoints": [etcd.https], "tls": tls})
    refused(doc, pod, "credentials are the node's")
    assert etcd.connections() == 0


def test_a_nad_cannot_name_another_etcd(pod: Netns, listeners: Callable[[], Listener]) -> None:
    allowed, other = listeners(), listeners()
    profile = etcd_node.add_profile({"endpoints": [allowed.url]})
    refused(nad({"profile": profile, "endpoints": [other.url]}), pod, other.url)
    both = nad({"profile": profile, "endpoints": [allowed.url, other.url]})
    refused(both, pod, "not an endpoint of profile")
    assert allowed.connections() == 0 and other.connections() == 0


@pytest.mark.parametrize("prefix", ["/registry", "/", "/multihome", "/multihome/ipamx", "x"])
def test_a_nad_cannot_write_outside_its_profile_prefix(
    prefix: str, pod: Netns, listeners: Callable[[], Listener]
) -> None:
    etcd = listeners()
    profile = etcd_node.add_profile({"endpoints": [etcd.url], "prefix": "/multihome/ipam"})
    refused(nad({"profile": profile, "prefix": prefix}), pod, "is not under profile")
    assert etcd.connections() == 0


def test_a_profile_nobody_wrote(pod: Netns, listeners: Callable[[], Listener]) -> None:
    etcd = listeners()
    refused(nad({"profile": "nosuch", "endpoints": [etcd.url]}), pod, "'nosuch' is not in")
    assert etcd.connections() == 0


@pytest.mark.parametrize(
    ("profile", "needle"),
    [
        # TLS files outside the node's etcd directory, even in the node file
        ({"tls": {"ca": f"{KUBE_PKI}/etcd/ca.crt"}}, "is not in"),
        ({"tls": {"ca": "@TLS/../../escape.crt"}}, "is not in"),
        # a prefix outside /multihome/, even in the node file
        ({"prefix": "/registry"}, "is not under /multihome/"),
        ({"prefix": "/multihomeX"}, "is not under /multihome/"),
    ],
)
def test_a_profile_is_confined_too(
    profile: dict[str, Any], needle: str, pod: Netns, listeners: Callable[[], Listener]
) -> None:
    etcd = listeners()
    text = json.dumps(profile).replace("@TLS", str(etcd_node.TLS_DIR))
    name = etcd_node.add_profile({"endpoints": [etcd.https], **json.loads(text)})
    refused(nad({"profile": name}), pod, needle)
    assert etcd.connections() == 0


def test_a_tls_symlink_out_of_the_directory(
    pod: Netns, listeners: Callable[[], Listener], tmp_path: Path
) -> None:
    etcd = listeners()
    link = etcd_node.tls_dir("link") / "ca.crt"
    (tmp_path / "ca.crt").write_text("not ours\n")
    link.symlink_to(tmp_path / "ca.crt")
    name = etcd_node.add_profile({"endpoints": [etcd.https], "tls": {"ca": str(link)}})
    refused(nad({"profile": name}), pod, "is not in")
    assert etcd.connections() == 0


def test_the_node_file_must_be_roots_alone(
    pod: Netns, listeners: Callable[[], Listener], tmp_path: Path
) -> None:
    etcd = listeners()
    conf = tmp_path / "etcd.conf"
    conf.write_text(json.dumps({"profiles": {"default": {"endpoints": [etcd.url]}}}))
    env = {etcd_node.ENV: str(conf)}
    conf.chmod(0o666)
    refused(nad({}), pod, "writable by root only", **env)
    conf.chmod(0o644)
    os.chown(conf, 65534, 0)
    refused(nad({}), pod, "owned by root", **env)
    conf.unlink()
    refused(nad({}), pod, "the node's etcd settings", **env)
    assert etcd.connections() == 0


def test_the_node_file_path_comes_only_from_the_environment(
    pod: Netns, listeners: Callable[[], Listener], tmp_path: Path
) -> None:
    """A NAD has no key for it: whatever one says, the file the environment names is read
    (here it has no profile ``default``)."""
    etcd = listeners()
    conf = tmp_path / "etcd.conf"
    conf.write_text(json.dumps({"profiles": {"default": {"endpoints": [etcd.url]}}}))
    for key in ("conf", "confFile", etcd_node.ENV):
        err = one_json(call("ADD", nad({key: str(conf)}), pod).stdout)
        check_error(err, 7)
    assert etcd.connections() == 0


def test_the_leases_cli_follows_the_profile_too(
    listeners: Callable[[], Listener], tmp_path: Path
) -> None:
    etcd = listeners()
    profile = etcd_node.add_profile({"endpoints": [etcd.url]})
    path = tmp_path / "nad.conf"
    path.write_text(json.dumps(nad({"profile": profile, "prefix": "/registry"})))
    proc = subprocess.run(
        [str(CNIBIN / "multihome"), "leases", "list", "--config", str(path), "--store", "etcd"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode != 0 and "is not under profile" in proc.stderr, proc.stderr
    assert etcd.connections() == 0
