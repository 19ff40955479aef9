"""Name checks from libcni's ``pkg/utils``, without importing ``re``."""

from .errors import INVALID_CONFIG, INVALID_ENV, UNKNOWN_CONTAINER, CNIError

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")
MAX_IFNAME = 15
# Network names and container IDs become file and directory names (the lease
# store, route state): well under NAME_MAX (255 bytes) leaves room for suffixes.
MAX_NAME = 200


def is_cni_name(value: str) -> bool:
    """True for ``^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$``."""
    return bool(value) and value[0] in _ALNUM and all(c in _NAME_CHARS for c in value)


def container_id(value: str) -> None:
    if not value:
        raise CNIError(UNKNOWN_CONTAINER, "missing containerID")
    if not is_cni_name(value):
        raise CNIError(INVALID_ENV, "invalid characters in CNI_CONTAINERID", value[:256])
    if len(value) > MAX_NAME:
        raise CNIError(INVALID_ENV, f"CNI_CONTAINERID is longer than {MAX_NAME} characters")


def network_name(value: object) -> None:
    if not value:
        raise CNIError(INVALID_CONFIG, "missing network name")
    if not isinstance(value, str) or not is_cni_name(value):
        raise CNIError(INVALID_CONFIG, "invalid characters found in network name", str(value)[:256])
    if len(value) > MAX_NAME:
        raise CNIError(INVALID_CONFIG, f"network name is longer than {MAX_NAME} characters")


def interface_name(value: str) -> None:
    if not value:
        raise CNIError(INVALID_ENV, "CNI_IFNAME: interface name is empty")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_IFNAME:
        raise CNIError(
            INVALID_ENV, "CNI_IFNAME: interface name is too long", f"at most {MAX_IFNAME} bytes"
        )
    if value in (".", ".."):
        raise CNIError(INVALID_ENV, "CNI_IFNAME: interface name is . or ..")
    if any(c in "/:" or c.isspace() or not c.isprintable() for c in value):
        raise CNIError(
            INVALID_ENV,
            "CNI_IFNAME: interface name contains /, :, whitespace or control characters",
        )


def store_path(key: str, value: str) -> str:
    """A directory a config names for our files (dataDir, stateDir): absolute and
    without '..', so a NAD cannot point it elsewhere by climbing; code 7 if not."""
    if not value.startswith("/") or ".." in value.split("/"):
        raise CNIError(INVALID_CONFIG, f"{key} {value!r} must be an absolute path without '..'")
    return value
