"""Throwaway etcd servers for the tests and the benchmark: Debian's etcd, loopback only.

Every member listens on 127.0.0.1 ports picked free at start, keeps its data
in a directory the caller owns, and is killed with SIGKILL at the end (a
graceful stop takes seconds and proves nothing here). ``TLSFiles`` makes a
CA, a server certificate for 127.0.0.1 and a client certificate with the
openssl command, for clusters that require client certificates.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# MULTIHOME_ETCD names another etcd binary (a missing path shows what CI does without one).
ETCD = os.environ.get("MULTIHOME_ETCD") or shutil.which("etcd") or "/usr/bin/etcd"


def missing() -> str:
    """Empty when etcd can run here, else why not."""
    if not Path(ETCD).exists():
        return "etcd is not installed (apt-get install etcd-server; make test does it)"
    return ""


def free_ports(count: int) -> list[int]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()
    return ports


@dataclass
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, where: Path) -> TLSFiles:
        where.mkdir(parents=True, exist_ok=True)

        def ssl_cmd(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=where)

        ssl_cmd("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                "/CN=multihome-test-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
        for name, ext in (
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth",
            ),
            ("client", "extendedKeyUsage=clientAuth"),
        ):
            (where / f"{name}.ext").write_text(ext + "\n")
            ssl_cmd("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=multihome-{name}",
                    "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
            ssl_cmd("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                    "-out", f"{name}.crt")  # fmt: skip
        return cls(
            where / "ca.crt",
            where / "server.crt",
            where / "server.key",
            where / "client.crt",
            where / "client.key",
        )


class Member:
    def __init__(self, name: str, client_port: int, peer_port: int, data: Path) -> None:
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """``size`` members on loopback; ``endpoints`` is what an etcd store config lists."""

    def __init__(
        self, workdir: Path, size: int = 1, tls: TLSFiles | None = None, netns: str = ""
    ) -> None:
        self.workdir = workdir
        self.tls = tls
        self.netns = netns  # run inside this named namespace (its loopback), not ours
        ports = free_ports(2 * size)
        self.members = [
            Member(f"m{i}", ports[2 * i], ports[2 * i + 1], workdir / f"m{i}") for i in range(size)
        ]
        self.scheme = "https" if tls else "http"

    def url(self, member: Member) -> str:
        return f"{self.scheme}://127.0.0.1:{member.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.url(m) for m in self.members]

    def _command(self, member: Member, state: str) -> list[str]:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        cmd = [
            ETCD,
            "--name", member.name,
            "--data-dir", str(member.data),
            "--listen-client-urls", self.url(member),
            "--advertise-client-urls", self.url(member),
            "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-cluster", initial,
            "--initial-cluster-state", state,
            "--initial-cluster-token", f"mh-{self.members[0].client_port}",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--log-level", "error",
        ]  # fmt: skip
        if self.tls:
            cmd += [
                "--cert-file", str(self.tls.server_cert),
                "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca),
                "--client-cert-auth",
            ]  # fmt: skip
        return cmd

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for member in self.members:
            self._spawn(member, "new")
        self.wait_healthy(timeout)
        return self

    def _spawn(self, member: Member, state: str) -> None:
        member.data.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"{member.name}.log").open("ab")
        cmd = self._command(member, state)
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]  # (ip execs etcd: same pid)
        member.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def _context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls.ca))
        ctx.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return ctx

    def request(self, member: Member, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        url = self.url(member) + path  # always http(s)://127.0.0.1
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
        with (
            self._inside(),
            urllib.request.urlopen(req, timeout=2, context=self._context()) as reply,  # noqa: S310
        ):
            return json.loads(reply.read())

    def _inside(self) -> contextlib.AbstractContextManager[object]:
        """This thread in the cluster's namespace while it connects (setns is per thread)."""
        if not self.netns:
            return contextlib.nullcontext()
        from multihome.lib.netns import NetNS

        return NetNS(f"/run/netns/{self.netns}")

    def healthy(self, member: Member) -> bool:
        try:
            return self.request(member, "/health").get("health") == "true"
        except (OSError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 30.0, members: list[Member] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for member in members or self.members:
            while not self.healthy(member):
                if not member.alive:
                    log = (self.workdir / f"{member.name}.log").read_text(errors="replace")
                    raise RuntimeError(f"etcd {member.name} exited: {log[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {member.name} not healthy after {timeout:g}s")
                time.sleep(0.02)

    def leader(self) -> Member:
        """The member that is leader now (waiting out an election)."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ids: dict[str, Member] = {}
            leader = ""
            for member in self.members:
                if not member.alive:
                    continue
                try:
                    status = self.request(member, "/v3/maintenance/status", {})
                except (OSError, ValueError):
                    continue
                ids[status["header"]["member_id"]] = member
                leader = status.get("leader", "") or leader
            if leader in ids:
                return ids[leader]
            time.sleep(0.05)
        raise RuntimeError("no etcd leader")

    def kill(self, member: Member) -> None:
        if member.proc is not None and member.alive:
            member.proc.send_signal(signal.SIGKILL)
            member.proc.wait()

    def restart(self, member: Member) -> None:
        self.kill(member)
        self._spawn(member, "existing")

    def stop(self) -> None:
        for member in self.members:
            self.kill(member)

    def get_prefix(self, prefix: str, member: Member | None = None) -> dict[str, str]:
        """Keys and values under ``prefix``, read serializably from one member (a
        member without quorum still answers from its own copy)."""
        raw = prefix.encode()
        end = raw[:-1] + bytes([raw[-1] + 1])
        body = {
            "key": base64.b64encode(raw).decode(),
            "range_end": base64.b64encode(end).decode(),
            "serializable": True,
        }
        target = member or next(m for m in self.members if m.alive)
        reply = self.request(target, "/v3/kv/range", body)
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in reply.get("kvs", [])
        }

    def put(self, key: str, value: str) -> None:
        """Write one key behind the plugin's back (what a fault or an operator might do)."""
        body = {
            "key": base64.b64encode(key.encode()).decode(),
            "value": base64.b64encode(value.encode()).decode(),
        }
        self.request(next(m for m in self.members if m.alive), "/v3/kv/put", body)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
