"""Named crash points: the robustness tests kill a plugin at an exact step.

Each state-changing step of a plugin calls ``here("<plugin>.<step>")``. Only
tests set the variables below, in a process's environment when it starts (they
are read once, at import); without them a call is one test of a module flag
(``os`` is imported by every plugin already, so this module costs nothing).

- ``MULTIHOME_CRASH_AT=<point>`` or ``<point>#<n>``: ``os._exit(CRASHED)`` at the
  first (or n-th) time this process reaches that point, as a kill -9 would:
  no cleanup, no rollback, no output.
- ``MULTIHOME_CRASH_FILE=<path>``: written with the point's name just before
  the exit, so a test waits on a file, never on a clock.
- ``MULTIHOME_CRASH_TRACE=<path>``: every point reached is appended to it, one
  line each, so a test learns the points of a whole chain by running it once.

This reads ``os.environ`` on purpose: the points belong to the process (a
daemon started with them dies at its first request that reaches the point),
not to one CNI request.
"""

from __future__ import annotations

import os

CRASHED = 137  # what a shell reports for a process killed by SIGKILL
_seen: dict[str, int] = {}


def armed() -> bool:
    """Whether this process was started with crash points on (read once, at import)."""
    env = os.environ
    return "MULTIHOME_CRASH_AT" in env or "MULTIHOME_CRASH_TRACE" in env


_ARMED = armed()


def here(point: str) -> None:
    """Die here if a test asked for ``point``; note the point if it traces."""
    if _ARMED:
        _reached(point)


def _reached(point: str) -> None:
    env = os.environ
    count = _seen[point] = _seen.get(point, 0) + 1
    trace = env.get("MULTIHOME_CRASH_TRACE")
    if trace:
        _append(trace, f"{point}\n")
    want, _, nth = env.get("MULTIHOME_CRASH_AT", "").partition("#")
    if want != point or count != (int(nth) if nth.isdigit() else 1):
        return
    marker = env.get("MULTIHOME_CRASH_FILE")
    if marker:
        _append(marker, f"{point}#{count} pid {os.getpid()}\n")
    os._exit(CRASHED)


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
