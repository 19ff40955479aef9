"""mh-ipvlan: an ipvlan on a host master, inside the pod (see plugins/link.py)."""

from .link import IPVLAN_PLUGIN as PLUGIN

__all__ = ["PLUGIN"]
