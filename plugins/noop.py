"""mh-noop: a test plugin that passes results through.

ADD returns prevResult when chained, else the result of the configured IPAM
(delegated), else an empty result. DEL, CHECK, STATUS and GC forward to the
IPAM when one is configured. It exists so the protocol core, delegation and
chaining can be tested end to end on their own.
"""

from __future__ import annotations

from multihome.lib import delegate
from multihome.lib.errors import INVALID_CONFIG, CNIError
from multihome.lib.models import parse
from multihome.lib.netconf import NetConf
from multihome.lib.request import Request
from multihome.lib.result import Result


class NoopConf(NetConf):
    pass


class Noop:
    def add(self, req: Request) -> Result:
        conf = parse(NoopConf, req.conf)
        prev = req.prev_result
        if prev is not None:
            return prev
        if conf.ipam_type:
            return delegate.add(conf.ipam_type, req)
        return Result()

    def delete(self, req: Request) -> None:
        conf = parse(NoopConf, req.conf)
        if conf.ipam_type:
            delegate.delete(conf.ipam_type, req)

    def check(self, req: Request) -> None:
        conf = parse(NoopConf, req.conf)
        if req.prev_result is None:
            raise CNIError(INVALID_CONFIG, "CHECK needs a prevResult")
        if conf.ipam_type:
            delegate.check(conf.ipam_type, req)

    def status(self, req: Request) -> None:
        conf = parse(NoopConf, req.conf)
        if conf.ipam_type:
            delegate.status(conf.ipam_type, req)

    def gc(self, req: Request) -> None:
        conf = parse(NoopConf, req.conf)
        if conf.ipam_type:
            delegate.gc(conf.ipam_type, req)


PLUGIN = Noop()
