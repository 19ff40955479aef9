"""``multihome probe``: is the daemon serving? A real request over its socket.

It sends a STATUS call of the built-in no-op plugin (``mh-noop``) to the
daemon, as a shim would, and succeeds only when the daemon itself answered
it: no socket, a stale one, a refusal (another build) or a failed call all
fail the probe. The DaemonSet's readiness and liveness probes run it.
"""

from __future__ import annotations

import json
import sys

from ..buildinfo import build_id
from . import shim

NOOP_STATUS = {"cniVersion": "1.1.0", "name": "multihome-probe", "type": "mh-noop"}


def probe(path: str) -> tuple[bool, str]:
    env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/opt/cni/bin"}
    reply = shim.call(path, build_id(), "mh-noop", env, json.dumps(NOOP_STATUS).encode())
    if reply is None:
        return False, f"no daemon on {path}"
    if reply is shim.DIED:
        return False, f"the daemon on {path} closed the connection"
    code, out, err = reply
    if code != 0:
        why = (out or err).decode("utf-8", "replace").strip()
        return False, f"the daemon on {path} answered {code}: {why}"
    return True, f"the daemon on {path} serves {build_id()}"


def main(path: str) -> int:
    ok, message = probe(path)
    print(f"multihome probe: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
