"""CNI error codes and the one exception type that carries them.

Everything a plugin raises on purpose is a ``CNIError``; the dispatcher in
``skel`` turns it into the spec's error document. Any other exception is an
internal error (code 999) whose traceback goes to the log, never to stdout.
"""

INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODING_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999
# Codes from 100 up are ours (the spec reserves 0-99).
PLUGIN_NOT_FOUND = 100
DELEGATE_FAILED = 101
KERNEL_REFUSED = 102
INTERFACE_EXISTS = 103
CHECK_FAILED = 120


class CNIError(Exception):
    """An error with a CNI code, a message and optional details."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str) -> dict[str, object]:
        doc: dict[str, object] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            doc["details"] = self.details
        return doc

    def __repr__(self) -> str:
        return f"CNIError({self.code}, {self.msg!r}, {self.details!r})"
