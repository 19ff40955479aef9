"""A scripted fake IPAM executable for delegation tests.

Copied into a temporary CNI_PATH directory as an executable. Its config's
``ipam`` object says what to do: ``record`` (a file to which it appends one
JSON line with its command, environment and stdin), ``result`` (a result
document to print on ADD), ``error`` (an error document to print, exiting 1),
``crash`` (text for stderr, exiting 2 with nothing on stdout).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    stdin = sys.stdin.buffer.read()
    conf = json.loads(stdin)
    ipam = conf.get("ipam", {})
    command = os.environ.get("CNI_COMMAND", "")
    if ipam.get("record"):
        with open(ipam["record"], "a") as fh:
            line = {"command": command, "env": dict(os.environ), "stdin": stdin.decode()}
            fh.write(json.dumps(line) + "\n")
    if command == "VERSION":
        print(json.dumps({"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "1.0.0", "1.1.0"]}))
        return 0
    if ipam.get("crash"):
        sys.stderr.write(ipam["crash"])
        return 2
    if ipam.get("error") and command in ipam.get("error_on", [command]):
        print(json.dumps(ipam["error"]))
        return 1
    if command == "ADD":
        print(json.dumps(ipam.get("result", {"cniVersion": conf.get("cniVersion", "1.1.0")})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
