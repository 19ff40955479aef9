"""Hostile peers shared by the tests and ``make robustness``: loopback "etcd" servers
that answer as they are told, and a thick-mode client that sends short requests.

Both are rig code: they stand in for a misbehaving peer, never for the code under test.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Listener:
    """A loopback TCP listener serving each connection in a thread of its own, with
    ``handle``. Given ``ns`` (a context manager that enters a namespace), the socket is
    made, and stays, in that namespace."""

    def __init__(self, ns: Any = None) -> None:
        with ns if ns is not None else contextlib.nullcontext():
            self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class Server(Listener):
    """A loopback "etcd" that reads one request per connection and answers with ``mode``."""

    def __init__(self, mode: Callable[[socket.socket], None], ns: Any = None) -> None:
        self.mode = mode
        super().__init__(ns)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.mode(conn)
            except OSError:
                pass  # the client gave up: as it should


# Thick-mode requests that end early or speak another protocol (lib/thick/wire.py).
_HEAD = struct.Struct("=4sIIIII")
SHORT = {
    # the header announces 100 body bytes; the sender stops after 10
    "short body": _HEAD.pack(b"MHQ1", 1, 10, 10, 40, 40) + b"x" * 10,
    # the header itself is cut short
    "short head": b"MHQ1\x01\x00",
    # a shim speaking protocol 2
    "other protocol": _HEAD.pack(b"MHQ1", 2, 0, 0, 0, 0),
}


def held(pid: int, ino: int) -> list[str]:
    """The descriptors of process ``pid`` on the inode ``ino``."""
    out = []
    for n in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.stat(f"/proc/{pid}/fd/{n}").st_ino == ino:
                out.append(n)
        except OSError:
            pass
    return out


def send(sock: Path, frame: bytes, paths: list[str]) -> bytes:
    """Send ``frame`` with descriptors on ``paths``; read until the daemon closes."""
    fds = [os.open(p, os.O_RDONLY) for p in paths]
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            rights = struct.pack(f"{len(fds)}i", *fds)
            s.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            s.shutdown(socket.SHUT_WR)  # the sender is gone: no more bytes will come
            reply = b""
            try:
                while more := s.recv(65536):
                    reply += more
            except ConnectionResetError:
                pass  # closed with bytes of ours unread
            return reply  # the daemon closed the connection: it is done with the request
    finally:
        for fd in fds:
            os.close(fd)
