"""Network namespaces handed over as file descriptors, per thread.

A shim passes the daemon an open descriptor of CNI_NETNS (SCM_RIGHTS): the
daemon may live in a container that cannot see the host's /run/netns. While
a request is served, its thread registers the descriptor under the path it
stands for; ``NetNS`` and the dispatcher's checks use it instead of opening
the path. Stdlib C modules only: the dispatcher imports this.
"""

from __future__ import annotations

import _thread

_fds: dict[tuple[int, str], int] = {}


def provide(path: str, fd: int) -> None:
    _fds[(_thread.get_ident(), path)] = fd


def withdraw(path: str) -> None:
    _fds.pop((_thread.get_ident(), path), None)


def lookup(path: str) -> int | None:
    """The descriptor this thread was given for ``path``, if any."""
    return _fds.get((_thread.get_ident(), path))
