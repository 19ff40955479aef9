"""The shim side of thick mode: hand the call to the daemon, or say why not.

Lean by design (``_socket``, ``_struct``, ``os``): it runs in every plugin
process. ``call`` returns the daemon's reply (its code ``wire.REFUSED``
means: run the plugin in-process, e.g. after a build mismatch), ``None``
when there is no daemon to talk to (no socket, a stale one, no
permission), or ``DIED`` when the daemon went away after taking the request
(it may have done part of the work).
"""

from __future__ import annotations

import _socket
import os

from . import wire

DEFAULT_SOCKET = "/run/multihome/multihome.sock"
DIED = (-2, b"", b"")
TIMEOUT = 300.0  # a kubelet gives up on a CNI call long before this


def _recv_exact(sock: _socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _netns_fds(env: dict[str, str]) -> list[int]:
    """Our own namespace (the daemon acts from it, as this process would), then the pod's."""
    fds = [os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)]
    path = env.get("CNI_NETNS", "")
    if path:
        try:  # noqa: SIM105 - contextlib is not loaded on this path
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass  # gone or not ours to open: the daemon reports it as it would
    return fds


def call(
    path: str, build: str, name: str, env: dict[str, str], stdin: bytes
) -> tuple[int, bytes, bytes] | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    fds: list[int] = []
    try:
        try:
            sock.connect(path)
        except OSError:
            return None  # no daemon (missing or stale socket, no permission)
        sock.settimeout(TIMEOUT)
        fds = _netns_fds(env)
        frame = wire.pack_request(build.encode(), name.encode(), env, stdin)
        ancillary = (
            [
                (
                    _socket.SOL_SOCKET,
                    _socket.SCM_RIGHTS,
                    b"".join(fd.to_bytes(4, "little", signed=True) for fd in fds),
                )
            ]
            if fds
            else []
        )
        try:
            sent = sock.sendmsg([frame], ancillary)
            if sent < len(frame):
                sock.sendall(frame[sent:])
            head = _recv_exact(sock, wire.REPLY_HEAD)
        except OSError:
            head = None
        if head is None:
            return DIED
        code, n_out, n_err = wire.reply_sizes(head)
        body = _recv_exact(sock, n_out + n_err)
        if body is None:
            return DIED
        return code, body[:n_out], body[n_out:]  # code wire.REFUSED: run it ourselves
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()
