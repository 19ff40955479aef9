"""IPAM ``routes`` entries that name a computed set instead of one destination.

``{"presets": ["public-ipv4", "default-ipv6"], "exclude": ["100.64.0.0/10"]}`` in
mh-ipam's or mh-static's ``routes`` stands for every prefix of the set (as mh-route
computes it, plugins/routesets.py), each via ``gw`` of its family if the entry gives
one, else via the gateway of the allocated address of that family. So a NAD that
pastes 31 to 47 prefixes into its IPAM routes needs one entry, in the same plugin,
with no chained mh-route and no extra process.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Discriminator, Field, Tag, field_validator

from multihome.lib.models import Address, IPAddress, Model, Network
from multihome.lib.result import IPConfig, Route


def _listed(value: object) -> object:
    return [value] if isinstance(value, str) else value


class RouteSetConf(Model):
    presets: list[str] = Field(min_length=1)
    exclude: list[Network] = []
    gw: Annotated[list[Address], BeforeValidator(_listed)] = []

    @field_validator("presets")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from multihome.plugins import routesets

        unknown = [p for p in value if p not in routesets.PRESETS]
        if unknown:
            raise ValueError(
                f"unknown preset {unknown[0]!r}; known: {', '.join(routesets.preset_names())}"
            )
        return value

    @field_validator("gw")
    @classmethod
    def _one_per_family(cls, value: list[IPAddress]) -> list[IPAddress]:
        if len({ip.version for ip in value}) != len(value):
            raise ValueError("at most one gateway per IP family (ECMP sets need mh-route)")
        return value


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "set" if any(str(k).lower() == "presets" for k in value) else "route"
    return "set" if isinstance(value, RouteSetConf) else "route"


IPAMRoute = Annotated[
    Annotated[Route, Tag("route")] | Annotated[RouteSetConf, Tag("set")],
    Discriminator(_kind),
]


def expand(routes: list[Route | RouteSetConf], ips: list[IPConfig]) -> list[Route]:
    """The routes of a result: each set's prefixes in its place, via a gateway."""
    if all(isinstance(r, Route) for r in routes):
        return routes  # type: ignore[return-value]  # (the usual case: nothing computed)
    from multihome.plugins import routesets

    gateways: dict[int, IPAddress] = {}
    for ip in ips:
        if ip.gateway is not None:
            gateways.setdefault(ip.gateway.version, ip.gateway)
    out: list[Route] = []
    for entry in routes:
        if isinstance(entry, Route):
            out.append(entry)
            continue
        via: dict[int, IPAddress] = {**gateways, **{gw.version: gw for gw in entry.gw}}
        for dst in routesets.compute(entry.presets, entry.exclude):
            out.append(Route(dst=dst, gw=via.get(dst.version)))
    return out
