"""One CNI invocation: the validated environment, the config and its raw bytes."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .result import Result


class Request:
    """What a plugin handler gets. Built by ``skel.run`` after validation.

    ``stdin`` keeps the exact bytes the runtime sent, so delegation forwards
    unknown keys untouched. ``env`` is the whole environment the plugin was
    given; a delegated plugin gets the same.
    """

    __slots__ = (
        "_prev",
        "args",
        "cni_version",
        "command",
        "conf",
        "container_id",
        "env",
        "ifname",
        "netns",
        "path",
        "plugin_name",
        "stdin",
    )

    def __init__(
        self,
        plugin_name: str,
        env: Mapping[str, str],
        stdin: bytes,
        *,
        conf: dict[str, object],
        cni_version: str,
        args: dict[str, str],
    ) -> None:
        self.plugin_name = plugin_name
        self.env = env
        self.stdin = stdin
        self.conf = conf
        self.cni_version = cni_version
        self.args = args
        self.command = env.get("CNI_COMMAND", "")
        self.container_id = env.get("CNI_CONTAINERID", "")
        self.netns = env.get("CNI_NETNS", "")
        self.ifname = env.get("CNI_IFNAME", "")
        self.path = [p for p in env.get("CNI_PATH", "").split(":") if p]
        self._prev: Result | None = None

    @property
    def network(self) -> str:
        name = self.conf.get("name")
        return name if isinstance(name, str) else ""

    @property
    def runtime_config(self) -> dict[str, object]:
        value = self.conf.get("runtimeConfig")
        return value if isinstance(value, dict) else {}

    @property
    def cni_conf_args(self) -> dict[str, object]:
        """The conventional ``args.cni`` object (labels, ips, ...)."""
        args = self.conf.get("args")
        cni = args.get("cni") if isinstance(args, dict) else None
        return cni if isinstance(cni, dict) else {}

    @property
    def has_prev_result(self) -> bool:
        return isinstance(self.conf.get("prevResult"), dict)

    @property
    def prev_result(self) -> Result | None:
        """The chained prevResult, parsed once; None when the runtime sent none."""
        if self._prev is None and self.has_prev_result:
            from .result import from_wire

            self._prev = from_wire(self.conf["prevResult"], self.cni_version)
        return self._prev

    def chained_prev_result(self) -> Result:
        """The prevResult a chained plugin needs; code 7 when there is none."""
        prev = self.prev_result
        if prev is None:
            from .errors import INVALID_CONFIG, CNIError

            raise CNIError(
                INVALID_CONFIG,
                f"{self.plugin_name} must be chained after a main plugin",
                "it needs a prevResult: list it after e.g. mh-macvlan in a conflist",
            )
        return prev

    def valid_attachments(self) -> list[tuple[str, str]] | None:
        """GC's (containerID, ifname) pairs; None when the runtime sent no list.

        Spec 1.1 names the key ``cni.dev/valid-attachments``; libcni v1.2.0-2
        sent only that, v1.2.3+ also the older ``cni.dev/attachments``. The
        list says what to keep, so a malformed one is refused (code 7), never
        read as shorter: an entry dropped here would be freed.
        """
        found = None
        for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
            if key in self.conf:
                pairs = _attachments(key, self.conf[key])
                found = pairs if found is None else found
        return found


def _attachments(key: str, items: object) -> list[tuple[str, str]]:
    """The pairs of one attachment list; code 7 naming the first bad entry."""
    from .errors import INVALID_CONFIG, CNIError

    shape = 'a list of {"containerID": ..., "ifname": ...} objects'
    if not isinstance(items, list):
        raise CNIError(
            INVALID_CONFIG, f"{key} must be {shape}", f"got {_show(items)}: nothing released"
        )
    pairs = []
    for i, item in enumerate(items):
        cid = item.get("containerID") if isinstance(item, dict) else None
        ifname = item.get("ifname") if isinstance(item, dict) else None
        if not (isinstance(cid, str) and cid and isinstance(ifname, str) and ifname):
            raise CNIError(
                INVALID_CONFIG,
                f"{key}[{i}] is not a valid attachment: {_show(item)}",
                "each entry must be an object with non-empty string keys containerID "
                "and ifname (exact case); nothing released",
            )
        pairs.append((cid, ifname))
    return pairs


def _show(value: object) -> str:
    from . import jsonfast

    text = jsonfast.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."
