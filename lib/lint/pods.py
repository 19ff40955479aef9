"""A Pod's ``k8s.v1.cni.cncf.io/networks`` annotation: what Multus would ignore or refuse."""

from __future__ import annotations

import json
import re
from typing import Any

from .findings import Finding

NETWORKS = "k8s.v1.cni.cncf.io/networks"
# Multus's NetworkSelectionElement (pkg/types/types.go)
SELECTION_KEYS = {
    "name",
    "namespace",
    "ips",
    "mac",
    "infiniband-guid",
    "interface",
    "portMappings",
    "bandwidth",
    "cni-args",
    "default-route",
    "ipam-claim-reference",
    "deviceID",
}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
HINTS = {"gateway": "the pod's default gateway is set with default-route"}


def _element_findings(element: dict[str, Any], line: int) -> list[Finding]:
    out = []
    for key in element:
        if key not in SELECTION_KEYS:
            hint = f" ({HINTS[key]})" if key in HINTS else ""
            out.append(
                Finding("warning", line, f"{NETWORKS}: {key!r} is not a Multus key, ignored{hint}")
            )
    ips = element.get("ips")
    if ips is not None and not isinstance(ips, list):
        out.append(
            Finding(
                "error",
                line,
                f'{NETWORKS}: "ips" must be a list (["10.5.11.14/24"]); Multus refuses a string',
            )
        )
    mac = element.get("mac")
    if isinstance(mac, str):
        try:
            multicast = int(mac.split(":")[0], 16) & 1
        except ValueError:
            multicast = 0
        if multicast:
            out.append(
                Finding(
                    "error",
                    line,
                    f"{NETWORKS}: mac {mac} has the multicast bit set: the kernel refuses it "
                    "(cannot assign requested address)",
                )
            )
    return out


def _short_form_fault(item: str) -> str:
    """Why one item of the short form is not ``[namespace/]name[@interface]`` ('' if it is)."""
    if item.count("/") > 1 or item.count("@") > 1:
        return "more than one '/' or '@'"
    namespace, _, rest = item.rpartition("/")
    name, _, interface = rest.partition("@")
    if not name.strip():
        return "it names no network"
    for part in (namespace.strip(), name.strip(), interface.strip()):
        if part and not DNS_LABEL.fullmatch(part):
            return f"{part!r} is not a DNS-1123 label"
    return ""


def _short_form_findings(value: str, line: int) -> list[Finding]:
    """The comma-separated short form, as Multus parses it."""
    for item in value.split(","):
        fault = _short_form_fault(item.strip())
        if fault:
            return [
                Finding(
                    "error",
                    line,
                    f"{NETWORKS}: {item.strip()!r} is neither JSON nor the short form "
                    f"[namespace/]name[@interface] ({fault}); Multus refuses the pod",
                )
            ]
    return []


def networks_findings(value: str, line: int = 1) -> list[Finding]:
    """Findings for the annotation's value: Multus reads it as JSON when it holds any of
    ``[{"``, as the comma-separated short form otherwise."""
    if not value.strip():
        return []  # no secondary networks
    if not any(ch in value for ch in '[{"'):
        return _short_form_findings(value, line)
    try:
        elements = json.loads(value)
    except (ValueError, RecursionError) as exc:
        return [Finding("error", line, f"{NETWORKS} is not JSON: {exc}")]
    if not isinstance(elements, list) or not all(isinstance(e, dict) for e in elements):
        return [
            Finding(
                "error",
                line,
                f"{NETWORKS} must be a JSON list of objects "
                '([{"name": "..."}]); Multus refuses the pod',
            )
        ]
    out = []
    for element in elements:
        out += _element_findings(element, line)
    return out


def annotation_findings(annotations: dict[str, Any]) -> list[Finding]:
    """Findings for a Pod's annotations (YAML nodes by key)."""
    node = annotations.get(NETWORKS)
    value = getattr(node, "value", None)
    if node is None or not isinstance(value, str):
        return []
    return networks_findings(value, node.start_mark.line + 1)
