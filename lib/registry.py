"""Every CNI type this project serves, listed explicitly.

The multicall entry point dispatches on ``basename(argv[0])`` through this
table. Modules are named by string so that VERSION and early errors never
import a plugin (or pydantic, pyroute2, netaddr behind it).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .plugin import Plugin

PLUGINS: dict[str, str] = {
    "mh-macvlan": "multihome.plugins.macvlan",
    "mh-ipvlan": "multihome.plugins.ipvlan",
    "mh-route": "multihome.plugins.route",
    "mh-sbr": "multihome.plugins.sbr",
    "mh-noop": "multihome.plugins.noop",
    "mh-ipam": "multihome.ipam.hostlocal",
    "mh-static": "multihome.ipam.static",
}

COMMAND = "multihome"
# The real path of the program serving this process (set by the entry point);
# a delegate on CNI_PATH that resolves to it runs in-process instead of exec'd.
OWN_PROGRAM = [""]


def load(name: str) -> Plugin:
    """Import the module of plugin ``name`` and return its ``PLUGIN`` object."""
    module = __import__(PLUGINS[name], fromlist=["PLUGIN"])
    plugin: Plugin = module.PLUGIN
    return plugin
