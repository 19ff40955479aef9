"""The keys every plugin config shares (SPEC.md section 1), as a pydantic model."""

from __future__ import annotations

from pydantic import Field

from .models import Model
from .result import DNS


class IPAMRef(Model):
    """The ``ipam`` object as the main plugin sees it: only its type matters here."""

    type: str = ""


class NetConf(Model):
    """Base of every plugin's config model. Unknown keys are ignored."""

    cni_version: str = Field("0.1.0", alias="cniVersion")
    name: str
    type: str
    ipam: IPAMRef | None = None
    dns: DNS = DNS()
    runtime_config: dict[str, object] = Field({}, alias="runtimeConfig")
    args: dict[str, object] = {}

    @property
    def ipam_type(self) -> str:
        return self.ipam.type if self.ipam else ""
