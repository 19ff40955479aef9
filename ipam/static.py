"""mh-static: static IPAM, as the reference ``static`` plugin, with gateways that work.

Addresses come from, in priority order: ``runtimeConfig.ips`` (the ``ips``
capability), ``args.cni.ips``, else the config's ``addresses`` plus CNI_ARGS
``IP=``. CNI_ARGS ``GATEWAY=`` sets the gateway of every address whose subnet
holds it. Unlike the reference, it also applies to ``runtimeConfig.ips``, and
a ``gateways`` config key fills in gateways for addresses that have none, so
a chained sbr gets its default route (reference issues #406 and #654).
"""

from __future__ import annotations

import ipaddress

from pydantic import Field

from multihome.lib import cniargs, versions
from multihome.lib.errors import INVALID_CONFIG, CNIError
from multihome.lib.models import Address, Interface, IPAddress, IPInterface, Model, parse
from multihome.lib.request import Request
from multihome.lib.result import DNS, IPConfig, Result

from .errors import CHECK_FAILED
from .routes import IPAMRoute, expand


class StaticAddress(Model):
    address: Interface
    gateway: Address | None = None


class StaticIPAM(Model):
    type: str = ""
    addresses: list[StaticAddress] = []
    routes: list[IPAMRoute] = []
    dns: DNS = DNS()
    gateways: list[Address] = []


class StaticNetConf(Model):
    cni_version: str = Field("0.1.0", alias="cniVersion")
    name: str
    ipam: StaticIPAM


def _cidr(value: object, source: str) -> IPInterface:
    text = str(value).strip()
    try:
        if "/" not in text:
            raise ValueError
        return ipaddress.ip_interface(text)
    except ValueError:
        raise CNIError(
            INVALID_CONFIG, f"{source}: {value!r} is not an address in CIDR notation"
        ) from None


def _gateway_list(value: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(item) for item in cniargs.split_list(value)]
    except ValueError as exc:
        raise CNIError(INVALID_CONFIG, f"CNI_ARGS GATEWAY: {exc}") from None


def addresses(req: Request) -> list[IPConfig]:
    """The addresses this request gets, with their gateways resolved."""
    conf = parse(StaticNetConf, req.conf)
    rt_ips = req.runtime_config.get("ips")
    arg_ips = req.cni_conf_args.get("ips")
    if isinstance(rt_ips, list) and rt_ips:
        entries = [StaticAddress(address=_cidr(ip, "runtimeConfig.ips")) for ip in rt_ips]
    elif isinstance(arg_ips, list) and arg_ips:
        entries = [StaticAddress(address=_cidr(ip, "args.cni.ips")) for ip in arg_ips]
    else:
        entries = list(conf.ipam.addresses) + [
            StaticAddress(address=_cidr(ip, "CNI_ARGS IP"))
            for ip in cniargs.split_list(req.args.get("IP", ""))
        ]
    if not entries:
        raise CNIError(
            INVALID_CONFIG,
            "mh-static has no addresses",
            "set ipam.addresses, args.cni.ips, runtimeConfig.ips or CNI_ARGS IP",
        )
    overrides = _gateway_list(req.args.get("GATEWAY", ""))
    out = []
    for entry in entries:
        gateway = entry.gateway
        for gw in overrides:  # CNI_ARGS GATEWAY wins, as in the reference
            if gw in entry.address.network:
                gateway = gw
        if gateway is None:
            gateway = next((gw for gw in conf.ipam.gateways if gw in entry.address.network), None)
        if gateway is not None and gateway not in entry.address.network:
            raise CNIError(
                INVALID_CONFIG, f"gateway {gateway} is not in the subnet of {entry.address}"
            )
        out.append(IPConfig(address=entry.address, gateway=gateway))
    if not versions.at_least(req.cni_version, "0.3.0"):
        for family in (4, 6):
            if sum(1 for ip in out if ip.address.version == family) > 1:
                raise CNIError(
                    INVALID_CONFIG,
                    f"CNI version {req.cni_version} does not support "
                    f"more than one IPv{family} address",
                )
    return out


class Static:
    def add(self, req: Request) -> Result:
        conf = parse(StaticNetConf, req.conf)
        ips = addresses(req)
        return Result(ips=ips, routes=expand(conf.ipam.routes, ips), dns=conf.ipam.dns)

    def delete(self, req: Request) -> None:
        """Nothing to release: static addresses are not leased."""

    def check(self, req: Request) -> None:
        prev = req.prev_result
        if prev is None:
            raise CNIError(INVALID_CONFIG, "CHECK needs a prevResult")
        reported = {ip.address: ip.gateway for ip in prev.ips}
        for ip in addresses(req):
            if ip.address not in reported:
                raise CNIError(CHECK_FAILED, f"address {ip.address} is not in prevResult")
            # a later chained plugin may clear gateways (mh-route's flushgateway): only a
            # different gateway is a mismatch
            if reported[ip.address] is not None and reported[ip.address] != ip.gateway:
                raise CNIError(
                    CHECK_FAILED,
                    f"address {ip.address} has gateway "
                    f"{reported[ip.address]} in prevResult, expected {ip.gateway}",
                )

    def status(self, req: Request) -> None:
        parse(StaticNetConf, req.conf)  # a usable config is all it needs

    def gc(self, req: Request) -> None:
        """Nothing is stored, so nothing can go stale."""


PLUGIN = Static()
