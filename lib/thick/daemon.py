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
import threading
import time
from collections.abc import Iterator

from .. import jsonfast, log, netns, nsfd, registry, skel
from ..buildinfo import build_id
from ..errors import INTERNAL, CNIError
from . import wire

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
        from .. import delegate, ifconfig, result  # noqa: F401 - the imports are the point

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
                log.log(f"refused a call of another build: shim {build!r}")
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
            log.log(f"test stall: {name} waits {self.stall[name]:g} s")
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

    def serve_forever(self, grace: float = 25.0) -> None:
        """Serve until SIGTERM or SIGINT, then stop as a DaemonSet's pod should.

        Stopping: remove the socket first (shims that come later find no
        daemon and run the plugin themselves), serve the connections already
        queued, close, then give the calls in flight up to ``grace`` seconds.
        """
        self.warm()
        sock = self.listen()
        stopping: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _: stopping.append(signum))
        log.log(f"serving on {self.path} ({self.build})")
        workers: list[threading.Thread] = []
        sock.settimeout(0.2)  # how soon a signal is noticed; a connection is taken at once
        try:
            while not stopping:
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                workers = [w for w in workers if w.is_alive()]
                workers.append(self._start(conn))
            log.log(f"stopping (signal {stopping[0]}): {self.path} removed")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            time.sleep(0.1)  # a shim that found the path just before it was removed
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    workers.append(self._start(sock.accept()[0]))
        finally:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._finish(workers, grace)

    def _start(self, conn: socket.socket) -> threading.Thread:
        conn.setblocking(True)
        worker = threading.Thread(target=self.handle, args=(conn,), daemon=True)
        worker.start()
        return worker

    def _finish(self, workers: list[threading.Thread], grace: float) -> None:
        deadline = time.monotonic() + grace
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        left = sum(w.is_alive() for w in workers)
        if left:
            log.log(f"stopped after {grace:g} s with {left} calls still running")
        else:
            log.log(f"stopped: every call finished ({self.served} served)")
