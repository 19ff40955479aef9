"""JSON load/dump on the C accelerator ``_json`` alone.

The stdlib ``json`` package imports ``re`` and compiles regexes at import
time (about 8 ms per process). Plugins run once per call, so the lean entry
path uses the C scanner and encoder directly; the behaviour matches
``json.loads``/``json.dumps`` with compact separators.
"""

import _json

_NAN = float("nan")
_INF = float("inf")


def _parse_constant(name: str) -> float:
    return {"NaN": _NAN, "Infinity": _INF, "-Infinity": -_INF}[name]


class _Context:
    """The attribute bag ``_json.make_scanner`` reads its settings from."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_parse_constant)
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # reads only the attributes
_WS = " \t\n\r"


def loads(data: bytes | str) -> object:
    """Parse one JSON document; raise ValueError on anything else."""
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    except SystemError:
        # On 3.11 the C scanner raises its error through json.decoder, which it
        # only finds if already imported; the error path can afford the import.
        import json

        json.loads(text)  # raises JSONDecodeError with the position
        raise ValueError("invalid JSON") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after JSON document at offset {end}")
    return value


def _reject(obj: object) -> object:
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_encode = _json.make_encoder(
    None, _reject, _json.encode_basestring_ascii, None, ":", ",", False, False, False
)


def dumps(obj: object) -> str:
    """Serialise to compact JSON text."""
    return "".join(_encode(obj, 0))
