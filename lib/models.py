"""The pydantic base model and reusable field types shared by every wire model.

Unknown keys are ignored, never rejected: the spec requires runtimes and
plugins to pass through keys they do not know.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, TypeAlias, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, ValidationError

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
