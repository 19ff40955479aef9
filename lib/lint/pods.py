"""A Pod's ``k8s.v1.cni.cncf.io/networks`` annotation: what Multus would ignore or refuse."""

from __future__ import annotations

import json
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


def annotation_findings(annotations: dict[str, Any]) -> list[Finding]:
    """Findings for a Pod's annotations (YAML nodes by key)."""
    node = annotations.get(NETWORKS)
    value = getattr(node, "value", None)
    if node is None or not isinstance(value, str) or not value.lstrip().startswith("["):
        return []  # the comma-separated short form: names only
    line = node.start_mark.line + 1
    try:
        elements = json.loads(value)
    except (ValueError, RecursionError) as exc:
        return [Finding("error", line, f"{NETWORKS} is not JSON: {exc}")]
    out = []
    for element in elements if isinstance(elements, list) else []:
        if isinstance(element, dict):
            out += _element_findings(element, line)
    return out
