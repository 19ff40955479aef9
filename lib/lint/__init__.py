"""``multihome lint``: find the faults in a NetworkAttachmentDefinition or a conflist.

Each finding names its place (``file:line``) and says what is wrong:

- ``spec.config`` that is not JSON (``#`` comments, placeholders); Multus rejects it.
  A commented config is analysed further with the comments taken out.
- keys the plugin does not know, or would ignore (``mac`` on ipvlan);
- route sets that send private or link-local ranges through the secondary
  gateway, or that look like "all public space" but leave some of it out;
- overlapping IPAM ranges, gateways outside their subnet, a missing master;
- a per-node IPAM store in a pool that every node shares.

Reference types (``macvlan``, ``host-local``, ``sbr`` ...) are checked against
their multihome drop-ins, whose keys are a superset.
"""

from __future__ import annotations

from .checks import check_config, known_keys
from .files import format_findings, lint_config, lint_file
from .findings import Finding
from .pods import networks_findings
from .source import Source, strip_comments

__all__ = [
    "Finding",
    "Source",
    "check_config",
    "format_findings",
    "known_keys",
    "lint_config",
    "lint_file",
    "networks_findings",
    "strip_comments",
]
