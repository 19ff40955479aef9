"""``multihome daemon``: serve plugin calls from a warm process (thick mode).

It imports every plugin, pydantic and the config models once, then serves
shims on a root-only Unix socket, a thread per request. Each request names
the plugin, carries its environment and stdin, and passes the pod's
namespace as a descriptor; the thread enters namespaces on its own (setns
is per thread) and runs the same dispatcher as a plugin process would. A
request that fails, even with an unexpected exception, fails alone.

The peer must be root (SO_PEERCRED), and must be the same build: a shim of
another build is refused and runs the plugin itself.
"""

from __future__ import annotations

import array
import contextlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator

from . import jsonfast, log, netns, nsfd, registry, skel, wire
from .buildinfo import build_id
from .errors import INTERNAL, CNIError

_CRED = struct.Struct("3i")


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    return int(_CRED.unpack(creds)[1])


def _recv_request(conn: socket.socket, fds: list[int]) -> tuple[str, str, dict[str, str], bytes]:
    """Read one request; the descriptors it carried go into ``fds`` at once.

    The caller owns ``fds`` from the moment ``recvmsg`` returns and closes them
    whatever happens next: a request that ends early or speaks another protocol
    must not keep the pod's namespace alive. Descriptors beyond the two a
    request carries are closed here.
    """
    got = array.array("i")
    head, ancdata, _, _ = conn.recvmsg(wire.REQUEST_HEAD, socket.CMSG_SPACE(2 * got.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got.frombytes(data[: len(data) - len(data) % got.itemsize])
    fds.extend(got[:2])
    for extra in got[2:]:
        os.close(extra)
    while len(head) < wire.REQUEST_HEAD:
        more = conn.recv(wire.REQUEST_HEAD - len(head))
        if not more:
            raise ConnectionError("short request")
        head += more
    size = wire.request_size(head)
    body = bytearray()
    while len(body) < size:
        more = conn.recv(min(size - len(body), 1 << 20))
        if not more:
            raise ConnectionError("short request")
        body += more
    return wire.unpack_request(head, bytes(body))


@contextlib.contextmanager
def _callers_netns(fd: int) -> Iterator[None]:
    """This thread in the shim's own namespace for the request (setns is per thread)."""
    if fd < 0:
        yield
        return
    saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns.setns(fd)
        try:
            yield
        finally:
            netns.setns(saved)
    finally:
        os.close(saved)


class Daemon:
    def __init__(self, path: str, stall: dict[str, float] | None = None) -> None:
        self.path = path
        self.build = build_id()
        self.stall = stall or {}  # for tests: plugin name -> seconds to wait first
        self.served = 0

    def warm(self) -> None:
        for name in registry.PLUGINS:
            registry.load(name)
        from . import delegate, ifconfig, result  # noqa: F401 - the imports are the point

    def listen(self) -> socket.socket:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of a daemon that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)  # created 0600: root only
        finally:
            os.umask(old)
        sock.listen(256)
        return sock

    def handle(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            if _peer_uid(conn) != 0:
                log.log("refused a connection from a non-root peer")
                return
            build, name, env, stdin = _recv_request(conn, fds)
            if build != self.build:
                reason = f"daemon is {self.build!r}, shim is {build!r}: running in-process\n"
                conn.sendall(wire.pack_reply(wire.REFUSED, b"", reason.encode()))
                return
            conn.sendall(wire.pack_reply(*self._serve(name, env, stdin, fds)))
        except Exception as exc:  # one request's failure never reaches the others
            log.log(f"request failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                doc = CNIError(INTERNAL, f"daemon: {type(exc).__name__}: {exc}").to_dict("1.1.0")
                conn.sendall(wire.pack_reply(1, (jsonfast.dumps(doc) + "\n").encode(), b""))
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()

    def _serve(
        self, name: str, env: dict[str, str], stdin: bytes, fds: list[int]
    ) -> tuple[int, bytes, bytes]:
        if name in self.stall:
            time.sleep(self.stall[name])
        netns = env.get("CNI_NETNS", "")
        if len(fds) > 1 and netns:
            nsfd.provide(netns, fds[1])
        try:
            with _callers_netns(fds[0] if fds else -1), log.captured() as lines:
                out, code, err = skel.run(name, env, stdin)
        finally:
            nsfd.withdraw(netns)
        self.served += 1
        log.log(
            f"served {env.get('CNI_COMMAND', '?')} {name} {env.get('CNI_CONTAINERID', '')}"
            f"/{env.get('CNI_IFNAME', '')}: exit {code}"
        )
        return code, out, (err + "".join(lines)).encode()

    def serve_forever(self) -> None:
        self.warm()
        sock = self.listen()
        log.log(f"serving on {self.path} ({self.build})")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while True:
                conn, _ = sock.accept()
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
