"""The multicall entry point: one program, a plugin per ``basename(argv[0])``.

This is the only place that touches the process: it reads os.environ and
stdin, calls ``skel.run`` and writes the reply. It imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

from . import registry


def _read_stdin(command: str) -> bytes:
    if not command or os.isatty(0):
        return b""  # a human at a terminal asking for the "about" text
    chunks = []
    while chunk := os.read(0, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _via_daemon(name: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes, bytes] | None:
    """Thick mode: the daemon's reply, or None to run the plugin in this process."""
    command = env.get("CNI_COMMAND", "")
    if not command or command == "VERSION":
        return None  # answered here at once
    from .buildinfo import build_id
    from .thick import shim, wire

    path = env.get("MULTIHOME_SOCKET") or shim.DEFAULT_SOCKET
    reply = shim.call(path, build_id(), name, env, stdin)
    if reply is shim.DIED:
        if command == "ADD":  # it may have done part of the work: let the runtime DEL and retry
            from .errors import TRY_AGAIN_LATER, CNIError
            from .skel import _encode

            err = CNIError(TRY_AGAIN_LATER, "the multihome daemon died during ADD; try again")
            return 1, _encode(err.to_dict("1.1.0")), b""
        return None  # DEL, CHECK, STATUS and GC are safe to run again here
    if reply is not None and reply[0] == wire.REFUSED:
        sys.stderr.write(reply[2].decode("utf-8", "replace"))
        return None
    return reply


def main() -> None:
    name = os.path.basename(sys.argv[0])
    registry.OWN_PROGRAM[0] = os.path.realpath(sys.argv[0])
    if name == registry.COMMAND:
        from .cli import main as cli_main

        sys.exit(cli_main(sys.argv[1:]))
    env = dict(os.environ)
    from . import log, skel

    log.configure(name, env.get("MULTIHOME_LOG_FILE", ""))
    stdin = _read_stdin(env.get("CNI_COMMAND", ""))
    reply = _via_daemon(name, env, stdin) if name in registry.PLUGINS else None
    if reply is not None:
        code, out, raw_err = reply
        err = raw_err.decode("utf-8", "replace")
    else:
        out, code, err = skel.run(name, env, stdin)
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()
    view = memoryview(out)
    while view:
        view = view[os.write(1, view) :]
    sys.exit(code)
