"""Plugin logging: never to stdout, which belongs to the protocol.

Messages go to stderr and, when the entry point configured one, to a log
file. The daemon can redirect the sink per request. Only the standard
library's C-level pieces are used so the lean path stays lean.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

TYPE_CHECKING = False  # mypy treats this name as True; nothing is imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable

_sinks: list[Callable[[str], object]] = [sys.stderr.write]
_prefix = ["multihome"]


def configure(prefix: str, log_file: str = "", to_stderr: bool = True) -> None:
    """Set the message prefix and where messages go."""
    _prefix[0] = prefix
    _sinks.clear()
    if to_stderr:
        _sinks.append(sys.stderr.write)
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _sinks.append(lambda line: os.write(fd, line.encode("utf-8", "replace")))


_local = _thread._local()


class captured:
    """``with captured() as lines:`` also collects this thread's log lines (the daemon
    returns them to the shim, whose stderr the runtime reads)."""

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        _local.capture = self.lines
        return self.lines

    def __exit__(self, *exc: object) -> None:
        _local.capture = None


def log(msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    line = f"{stamp} {_prefix[0]}[{os.getpid()}]: {msg}\n"
    capture = getattr(_local, "capture", None)
    if capture is not None:
        capture.append(line)
    for sink in _sinks:
        try:  # noqa: SIM105 - contextlib is not loaded on the lean path
            sink(line)
        except OSError:
            pass  # a log that cannot be written must not fail the plugin
