"""The shim-daemon protocol: one request and one reply per connection.

Request: ``MHQ1``, protocol version, then the lengths of the build id, the
plugin name, the environment (``k=v`` joined by NUL) and stdin, then those
bytes. Two descriptors travel with the first bytes (SCM_RIGHTS): the shim's
own network namespace, which the daemon acts from, and the pod's.

Reply: ``MHR1``, protocol version, the exit code (``-1``: the daemon refuses,
e.g. a build mismatch; the shim then runs the plugin itself), the lengths of
stdout and stderr, then those bytes.

Stdlib C modules only: every plugin call on a node goes through here.
"""

from __future__ import annotations

import _struct

PROTOCOL = 1
REFUSED = -1
_REQ = _struct.Struct("=4sIIIII")
_REP = _struct.Struct("=4sIiII")


def pack_request(build: bytes, name: bytes, env: dict[str, str], stdin: bytes) -> bytes:
    blob = b"\0".join(f"{k}={v}".encode("utf-8", "surrogateescape") for k, v in env.items())
    head = _REQ.pack(b"MHQ1", PROTOCOL, len(build), len(name), len(blob), len(stdin))
    return head + build + name + blob + stdin


def request_size(head: bytes) -> int:
    magic, proto, *lengths = _REQ.unpack(head)
    if magic != b"MHQ1" or proto != PROTOCOL:
        raise ValueError("not a multihome request of this protocol")
    return sum(lengths)


def unpack_request(head: bytes, body: bytes) -> tuple[str, str, dict[str, str], bytes]:
    _, _, n_build, n_name, n_env, _ = _REQ.unpack(head)
    build = body[:n_build].decode()
    name = body[n_build : n_build + n_name].decode()
    blob = body[n_build + n_name : n_build + n_name + n_env]
    env = {}
    for item in blob.split(b"\0") if blob else []:
        key, _, value = item.decode("utf-8", "surrogateescape").partition("=")
        env[key] = value
    return build, name, env, body[n_build + n_name + n_env :]


def pack_reply(code: int, stdout: bytes, stderr: bytes) -> bytes:
    return _REP.pack(b"MHR1", PROTOCOL, code, len(stdout), len(stderr)) + stdout + stderr


REQUEST_HEAD = _REQ.size
REPLY_HEAD = _REP.size


def reply_sizes(head: bytes) -> tuple[int, int, int]:
    magic, proto, code, n_out, n_err = _REP.unpack(head)
    if magic != b"MHR1" or proto != PROTOCOL:
        raise ValueError("not a multihome reply of this protocol")
    return code, n_out, n_err
