"""mh-macvlan: a macvlan on a host master, inside the pod (see plugins/link.py)."""

from .link import MACVLAN_PLUGIN as PLUGIN

__all__ = ["PLUGIN"]
