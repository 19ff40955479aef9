"""Network namespaces: opened once by file descriptor, entered per thread.

``open_netns`` never creates anything (pyroute2's helpers default to
``O_CREAT`` and would make a missing namespace appear). ``NetNS`` enters the
namespace on the calling thread only (setns is per thread) and always
restores the thread's original namespace, also on error.

We do not use the python-nsenter package here: it opens the namespace by
path on every entry and restores through ``/proc/self``, which is the main
thread's namespace rather than the calling thread's, and it pulls obsolete
``pathlib``/``argparse`` backports into the frozen bundle. The ctypes call it
wraps is the same one used below.
"""

from __future__ import annotations

import _thread
import ctypes
import os

from . import nsfd
from .errors import INVALID_NETNS, UNKNOWN_CONTAINER, CNIError

CLONE_NEWNET = 0x40000000
_THREAD_NS = "/proc/thread-self/ns/net"
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_netns(path: str) -> int:
    """Open ``path`` read-only (or dup the descriptor a shim passed) and check it."""
    given = nsfd.lookup(path)
    try:
        fd = os.dup(given) if given is not None else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CNIError(UNKNOWN_CONTAINER, f"netns {path!r} does not exist") from None
    except OSError as exc:
        raise CNIError(INVALID_NETNS, f"cannot open netns {path!r}: {exc.strerror}") from None
    try:
        if os.fstat(fd).st_dev != os.stat(_THREAD_NS).st_dev:
            raise CNIError(INVALID_NETNS, f"{path!r} is not a network namespace")
    except BaseException:
        os.close(fd)
        raise
    return fd


class NetNS:
    """Hold a namespace open; ``with ns:`` runs the block inside it.

    Re-entrant across threads: each ``with`` saves and restores the calling
    thread's own namespace.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = open_netns(path)
        self._saved: dict[int, list[int]] = {}  # per thread: setns is per thread

    def __enter__(self) -> NetNS:
        saved = os.open(_THREAD_NS, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(self.fd)
        except BaseException:
            os.close(saved)
            raise
        self._saved.setdefault(_thread.get_ident(), []).append(saved)
        return self

    def __exit__(self, *exc: object) -> None:
        saved = self._saved[_thread.get_ident()].pop()
        try:
            setns(saved)  # failing here would leave the thread in the pod: never ignore
        finally:
            os.close(saved)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()
