"""The pydantic base model and reusable field types shared by every wire model.

Unknown keys are ignored, never rejected: the spec requires runtimes and
plugins to pass through keys they do not know.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Annotated, TypeAlias, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from .errors import INVALID_CONFIG, CNIError

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(value: object) -> object:
    return ipaddress.ip_address(value) if isinstance(value, str) else value


def _interface(value: object) -> object:
    if isinstance(value, str):
        if "/" not in value:
            raise ValueError(f"{value!r} is not in CIDR notation")
        return ipaddress.ip_interface(value)
    return value


def _network(value: object) -> object:
    # Like Go's net.ParseCIDR: host bits are masked off, not rejected.
    if isinstance(value, str):
        if "/" not in value:
            raise ValueError(f"{value!r} is not in CIDR notation")
        return ipaddress.ip_network(value, strict=False)
    return value


def _strict_network(value: object) -> object:
    if isinstance(value, str):
        if "/" not in value:
            raise ValueError(f"{value!r} is not in CIDR notation")
        return ipaddress.ip_network(value, strict=True)
    return value


_as_str = PlainSerializer(str, return_type=str)
Address = Annotated[IPAddress, BeforeValidator(_address), _as_str]
Interface = Annotated[IPInterface, BeforeValidator(_interface), _as_str]
Network = Annotated[IPNetwork, BeforeValidator(_network), _as_str]
StrictNetwork = Annotated[IPNetwork, BeforeValidator(_strict_network), _as_str]


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _go_keys(cls, data: object) -> object:
        """Keys as Go's encoding/json matches them (the reference plugins' parser): a
        key that equals a known one but for case is taken for it (``datadir`` is
        ``dataDir``), and of two keys naming one field the last wins."""
        if not isinstance(data, dict):
            return data
        exact, folded = _keys_of(cls)
        renamed = {
            key: folded[key.lower()]
            for key in data
            if key not in exact and isinstance(key, str) and key.lower() in folded
        }
        if not renamed:
            return data  # the usual case: nothing to rename, nothing copied
        out: dict[object, object] = {}
        for key, value in data.items():
            name = renamed.get(key, key)
            out.pop(name, None)  # (re-inserted: the last one wins)
            out[name] = value
        return out


@functools.cache
def _keys_of(model: type[Model]) -> tuple[frozenset[str], dict[str, str]]:
    """A model's keys as written (aliases and names), and its aliases by lower case."""
    exact: set[str] = set()
    folded: dict[str, str] = {}
    for name, field in model.model_fields.items():
        exact.add(name)
        key = field.alias or name
        exact.add(key)
        folded.setdefault(key.lower(), key)
    return frozenset(exact), folded


def describe(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: 'ipam.ranges.0.0.subnet: <message>'."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"])
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        lines.append(f"{loc or '(config)'}: {err['msg']}")
    return "; ".join(lines)


M = TypeVar("M", bound="Model")


def parse(model: type[M], data: object, what: str = "network config") -> M:
    """Validate ``data`` into ``model``; a failure becomes CNI code 7 naming the keys."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CNIError(INVALID_CONFIG, f"invalid {what}", describe(exc)) from None
