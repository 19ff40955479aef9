"""What a plugin is: five handlers, one per CNI command that carries a config."""

from __future__ import annotations

from typing import Protocol

from .request import Request
from .result import Result


class Plugin(Protocol):
    """A CNI plugin. ``skel.run`` validates the request before calling a handler.

    ``add`` returns the canonical Result; ``skel`` converts it to the version the
    config asks for. The other handlers return nothing and raise ``CNIError``
    on failure.
    """

    def add(self, req: Request) -> Result: ...
    def delete(self, req: Request) -> None: ...
    def check(self, req: Request) -> None: ...
    def status(self, req: Request) -> None: ...
    def gc(self, req: Request) -> None: ...
