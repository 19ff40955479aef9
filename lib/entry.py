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


def main() -> None:
    name = os.path.basename(sys.argv[0])
    if name == registry.COMMAND:
        from .cli import main as cli_main

        sys.exit(cli_main(sys.argv[1:]))
    env = dict(os.environ)
    from . import log, skel

    log.configure(name, env.get("MULTIHOME_LOG_FILE", ""))
    out, code, err = skel.run(name, env, _read_stdin(env.get("CNI_COMMAND", "")))
    if err:
        sys.stderr.write(err)
        sys.stderr.flush()
    view = memoryview(out)
    while view:
        view = view[os.write(1, view) :]
    sys.exit(code)
