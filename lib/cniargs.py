"""CNI_ARGS parsing, as libcni's ``types.LoadArgs`` does it, and a bit kinder.

``K1=V1;K2=V2``: a key the plugin does not know is an error unless
``IgnoreUnknown`` is true. ``IP=`` may carry a comma-separated list, which is
what Multus sends for dual stack (multus-cni #647).
"""

from .errors import INVALID_ENV, CNIError

# Keys every plugin accepts: what Multus, CRI-O, containerd and podman send.
COMMON_KEYS = frozenset(
    {
        "IgnoreUnknown",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    }
)
# Keys some multihome plugin reads. A runtime sends one CNI_ARGS to the whole
# chain (and the main plugin passes it to its IPAM), so each plugin accepts
# them all; only keys no plugin knows need IgnoreUnknown.
SUITE_KEYS = COMMON_KEYS | frozenset({"IP", "MAC", "GATEWAY"})
_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})


def _bool(key: str, value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise CNIError(INVALID_ENV, f"CNI_ARGS: {key}={value!r} is not a boolean")


def parse(raw: str, known: frozenset[str] = SUITE_KEYS) -> dict[str, str]:
    """Return the pairs of ``raw`` as a dict; raise CNIError code 4 on bad input."""
    pairs: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            continue  # tolerate a trailing or doubled ';'
        key, sep, value = item.partition("=")
        if not sep or not key or "=" in value:
            raise CNIError(INVALID_ENV, f"CNI_ARGS: invalid pair {item!r}", "expected KEY=VALUE")
        pairs[key] = value
    ignore_unknown = _bool("IgnoreUnknown", pairs.get("IgnoreUnknown", "false"))
    if not ignore_unknown:
        unknown = sorted(set(pairs) - COMMON_KEYS - known)
        if unknown:
            raise CNIError(
                INVALID_ENV,
                f"CNI_ARGS: unknown key(s) {', '.join(unknown)}",
                "set IgnoreUnknown=true to ignore keys the plugin does not use",
            )
    return pairs


def split_list(value: str) -> list[str]:
    """'10.1.1.5/24, 2001:db8::5/64' -> ['10.1.1.5/24', '2001:db8::5/64']."""
    return [part.strip() for part in value.split(",") if part.strip()]
