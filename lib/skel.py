"""The CNI dispatcher: (plugin name, environment, stdin bytes) -> (stdout, exit code).

Every caller goes through ``run``: the multicall binary, the daemon and the
tests. It validates the way libcni's ``pkg/skel`` does (required variables per
command, container ID, interface name, network name, version support) before
any plugin code is imported, so VERSION and malformed requests stay cheap.
Nothing below this function reads ``os.environ`` or writes to stdout.
"""

from __future__ import annotations

import os

from . import cniargs, jsonfast, nsfd, registry, validate, versions
from .buildinfo import VERSION
from .errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_ENV,
    INVALID_NETNS,
    PLUGIN_NOT_FOUND,
    UNKNOWN_CONTAINER,
    CNIError,
)
from .log import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .plugin import Plugin
    from .request import Request


# Variables each command requires (libcni skel's table, plus GC and STATUS from spec 1.1).
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
# The oldest config version that may carry each command.
MIN_CONFIG_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
NETNS_COMMANDS = ("ADD", "CHECK")

Reply = tuple[bytes, int, str]  # stdout bytes, exit code, text for stderr


def about(plugin_name: str) -> str:
    return (
        f"CNI plugin {plugin_name} (multihome {VERSION})\n"
        f"CNI protocol versions supported: {', '.join(versions.ALL)}\n"
    )


def version_document() -> dict[str, object]:
    return {"cniVersion": versions.CURRENT, "supportedVersions": list(versions.ALL)}


def _encode(doc: object) -> bytes:
    return (jsonfast.dumps(doc) + "\n").encode("utf-8")


def _check_env(command: str, env: Mapping[str, str]) -> None:
    if command not in REQUIRED_ENV:
        raise CNIError(INVALID_ENV, f"unknown CNI_COMMAND: {command[:64]!r}")
    missing = [name for name in REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise CNIError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing")


def _decode_config(stdin: bytes) -> dict[str, object]:
    try:
        conf = jsonfast.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CNIError(
            DECODING_FAILURE, "error decoding network config from stdin", str(exc)
        ) from None
    if not isinstance(conf, dict):
        raise CNIError(DECODING_FAILURE, "network config must be a JSON object")
    return conf


def _config_version(conf: dict[str, object]) -> str:
    version = conf.get("cniVersion", "") or versions.DEFAULT_CONFIG_VERSION
    if not isinstance(version, str):
        raise CNIError(DECODING_FAILURE, "cniVersion must be a string")
    if version not in versions.ALL:
        raise CNIError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f'config is "{version[:32]}", plugin supports [{", ".join(versions.ALL)}]',
        )
    return version


def _check_command_allowed(command: str, version: str) -> None:
    floor = MIN_CONFIG_VERSION.get(command)
    if floor and not versions.at_least(version, floor):
        raise CNIError(
            INCOMPATIBLE_VERSION,
            f"config version {version} does not allow {command}",
            f"{command} needs cniVersion {floor} or later",
        )


def _check_netns(path: str, env: Mapping[str, str]) -> None:
    """CNI_NETNS must name an existing network namespace other than our own."""
    given = nsfd.lookup(path)
    try:
        target = os.fstat(given) if given is not None else os.stat(path)
        own = os.stat("/proc/thread-self/ns/net")
    except FileNotFoundError:
        raise CNIError(UNKNOWN_CONTAINER, f"CNI_NETNS {path!r} does not exist") from None
    except OSError as exc:
        raise CNIError(
            INVALID_NETNS, f"CNI_NETNS {path!r} cannot be read: {exc.strerror}"
        ) from None
    if target.st_dev != own.st_dev:
        raise CNIError(INVALID_NETNS, f"CNI_NETNS {path!r} is not a network namespace")
    override = env.get("CNI_NETNS_OVERRIDE", "").lower() in ("1", "true")
    if target.st_ino == own.st_ino and not override:
        raise CNIError(
            INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
            "set CNI_NETNS_OVERRIDE=1 to allow it",
        )


def _call(plugin: Plugin, req: Request) -> bytes:
    command = req.command
    if command == "ADD":
        from .result import to_wire

        return _encode(to_wire(plugin.add(req), req.cni_version))
    if command == "DEL":
        plugin.delete(req)
    elif command == "CHECK":
        plugin.check(req)
    elif command == "STATUS":
        plugin.status(req)
    else:
        plugin.gc(req)
    return b""


def _dispatch(plugin_name: str, env: Mapping[str, str], stdin: bytes, state: list[str]) -> bytes:
    command = env.get("CNI_COMMAND", "")
    _check_env(command, env)
    if plugin_name not in registry.PLUGINS:
        raise CNIError(
            PLUGIN_NOT_FOUND,
            f"multihome has no plugin named {plugin_name!r}",
            f"known: {', '.join(sorted(registry.PLUGINS))}",
        )
    if command == "VERSION":
        return _encode(version_document())
    conf = _decode_config(stdin)
    version = state[0] = _config_version(conf)
    _check_command_allowed(command, version)
    validate.network_name(conf.get("name"))
    if command in ("ADD", "CHECK", "DEL"):
        validate.container_id(env.get("CNI_CONTAINERID", ""))
        validate.interface_name(env.get("CNI_IFNAME", ""))
    if command in NETNS_COMMANDS:
        _check_netns(env["CNI_NETNS"], env)
    args = cniargs.parse(env.get("CNI_ARGS", ""))
    plugin = registry.load(plugin_name)
    from .request import Request

    return _call(
        plugin, Request(plugin_name, env, stdin, conf=conf, cni_version=version, args=args)
    )


def run(plugin_name: str, env: Mapping[str, str], stdin: bytes) -> Reply:
    """Serve one CNI call. Never raises; errors become the spec's error JSON."""
    if not env.get("CNI_COMMAND"):
        return b"", 0, about(plugin_name)
    state = [versions.CURRENT]  # the version errors are reported in, once known
    try:
        return _dispatch(plugin_name, env, stdin, state), 0, ""
    except CNIError as exc:
        return _encode(exc.to_dict(state[0])), 1, ""
    except Exception as exc:  # the one place an unexpected error is caught
        import traceback

        log(
            f"internal error in {plugin_name} {env.get('CNI_COMMAND')}: "
            + "".join(traceback.format_exception(exc))
        )
        error = CNIError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        return _encode(error.to_dict(state[0])), 1, ""
