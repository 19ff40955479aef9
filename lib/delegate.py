"""Running another CNI plugin: IPAM delegation as libcni's ``invoke`` does it.

The delegate gets the same environment (with CNI_COMMAND set to the command
at hand) and the original stdin bytes, so keys we do not know reach it
verbatim. Its stdout is parsed as a result or as a CNI error, which is then
raised unchanged.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

from . import jsonfast, registry
from .errors import DELEGATE_FAILED, INVALID_CONFIG, NOT_AVAILABLE, PLUGIN_NOT_FOUND, CNIError
from .log import log
from .validate import is_cni_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .request import Request
    from .result import Result

# What a PyInstaller bundle sets for itself and must not leak into other programs.
_BUNDLE_VARS = ("LD_LIBRARY_PATH", "LD_LIBRARY_PATH_ORIG")
_EXEC_RETRIES = 5  # libcni retries "text file busy" five times


def find(plugin_type: str, path: list[str]) -> str:
    """The first executable named ``plugin_type`` on CNI_PATH."""
    if not plugin_type or "/" in plugin_type or not is_cni_name(plugin_type):
        raise CNIError(INVALID_CONFIG, f"invalid plugin type {plugin_type!r}")
    for directory in path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(PLUGIN_NOT_FOUND, f'failed to find plugin "{plugin_type}" in path {path}')


def child_env(env: Mapping[str, str], command: str, frozen: bool | None = None) -> dict[str, str]:
    """``env`` with CNI_COMMAND replaced and PyInstaller's variables scrubbed.

    A frozen bundle's bootloader prepends its own library directory to
    LD_LIBRARY_PATH and keeps the caller's value in LD_LIBRARY_PATH_ORIG: the
    child gets the caller's value back (or none). Unfrozen, it stays as given.
    """
    if frozen is None:
        frozen = bool(getattr(sys, "frozen", False))
    out = {k: v for k, v in env.items() if not k.startswith("_PYI_")}
    if frozen:
        for key in _BUNDLE_VARS:
            out.pop(key, None)
        original = env.get("LD_LIBRARY_PATH_ORIG")
        if original:
            out["LD_LIBRARY_PATH"] = original
    out["CNI_COMMAND"] = command
    return out


def _run(binary: str, env: dict[str, str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    for attempt in range(_EXEC_RETRIES):
        try:
            return subprocess.run([binary], input=stdin, env=env, capture_output=True, check=False)
        except OSError as exc:
            if exc.errno != errno.ETXTBSY or attempt == _EXEC_RETRIES - 1:
                raise CNIError(DELEGATE_FAILED, f"cannot run {binary}: {exc.strerror}") from None
            time.sleep(0.001 * (attempt + 1))
    raise AssertionError("unreachable")


def _error_from(proc: subprocess.CompletedProcess[bytes], binary: str) -> CNIError:
    try:
        doc = jsonfast.loads(proc.stdout)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("code"), int):
        return CNIError(int(doc["code"]), str(doc.get("msg", "")), str(doc.get("details", "")))
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    return CNIError(
        DELEGATE_FAILED, f"netplugin failed: {binary}: exit {proc.returncode}", stderr[-2000:]
    )


def _is_ours(plugin_type: str, binary: str) -> bool:
    own = registry.OWN_PROGRAM[0]
    if plugin_type not in registry.PLUGINS or not own:
        return False
    real = os.path.realpath(binary)
    return real == own or _same_build(real, own)


def _same_build(binary: str, own: str) -> bool:
    """Two frozen bundles of one build: the daemon's image and the node's install.

    The daemon runs from its image's /opt/multihome; the runtime's CNI_PATH
    holds the copy its init container installed. Exec'ing that copy from the
    container would fail (the pod's netns path is the host's), and is not
    needed: both bundles' MANIFEST (version, tree hash) say they are one build.
    """
    manifests = [os.path.join(os.path.dirname(path), "MANIFEST") for path in (own, binary)]
    try:
        with open(manifests[0], "rb") as mine, open(manifests[1], "rb") as theirs:
            return mine.read() == theirs.read()
    except OSError:
        return False


def _in_process(plugin_type: str, command: str, req: Request) -> bytes:
    """One of our own plugins: call the dispatcher directly, no exec, no new interpreter."""
    from . import skel

    out, code, _ = skel.run(plugin_type, child_env(req.env, command, frozen=False), req.stdin)
    if code != 0:
        proc = subprocess.CompletedProcess([plugin_type], code, out, b"")
        raise _error_from(proc, plugin_type)
    return out


def invoke(plugin_type: str, command: str, req: Request) -> bytes:
    """Run ``plugin_type`` for ``command``; return its stdout or raise its error."""
    binary = find(plugin_type, req.path)
    if _is_ours(plugin_type, binary):
        return _in_process(plugin_type, command, req)
    proc = _run(binary, child_env(req.env, command), req.stdin)
    if proc.stderr:
        log(f"{plugin_type} {command}: {proc.stderr.decode('utf-8', 'replace').strip()[-2000:]}")
    if proc.returncode != 0:
        raise _error_from(proc, binary)
    return proc.stdout


def add(plugin_type: str, req: Request) -> Result:
    from .result import from_wire

    out = invoke(plugin_type, "ADD", req)
    try:
        doc = jsonfast.loads(out)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(DELEGATE_FAILED, f"{plugin_type} returned invalid JSON", str(exc)) from None
    return from_wire(doc, req.cni_version)


def delete(plugin_type: str, req: Request) -> None:
    invoke(plugin_type, "DEL", req)


def check(plugin_type: str, req: Request) -> None:
    invoke(plugin_type, "CHECK", req)


def gc(plugin_type: str, req: Request) -> None:
    invoke(plugin_type, "GC", req)


def status(plugin_type: str, req: Request) -> None:
    """STATUS on the delegate; any failure means we cannot serve ADD (code 50)."""
    try:
        invoke(plugin_type, "STATUS", req)
    except CNIError as exc:
        if exc.code in (50, 51):
            raise
        raise CNIError(
            NOT_AVAILABLE, f"IPAM plugin {plugin_type} is not available: {exc.msg}", exc.details
        ) from None
