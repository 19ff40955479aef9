"""mh-ipam: host-local-compatible IPAM with a file store, and better.

Leases live in host-local's file store on the node by default, or, with
``ipam.store`` of type ``etcd``, in etcd, shared by every node (etcdstore).

Beyond host-local: ``exclude``; a repeated ADD returns the same addresses;
O(1) allocation in large pools; CHECK compares the leases with prevResult;
STATUS and GC (spec 1.1); bounded lock waits (code 11).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterator

from multihome.lib import crashpoint
from multihome.lib.errors import INVALID_CONFIG, IO_FAILURE, CNIError
from multihome.lib.log import log
from multihome.lib.request import Request
from multihome.lib.result import IPConfig, Result

from . import allocator, config, routes
from .errors import CHECK_FAILED
from .store import FileStore, Owner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .etcdstore import EtcdStore


def _owner(req: Request) -> Owner:
    return req.container_id, req.ifname


def _etcd(settings: config.EtcdSettings, network: str) -> EtcdStore:
    from .etcdstore import EtcdStore

    return EtcdStore(settings, network)


@contextlib.contextmanager
def _io_errors(what: str) -> Iterator[None]:
    """A full or read-only disk is an I/O failure (code 5), not an internal error."""
    try:
        yield
    except OSError as exc:
        raise CNIError(IO_FAILURE, f"lease store {what}: {exc.strerror or exc}") from None


class HostLocal:
    def add(self, req: Request) -> Result:
        pool = config.load(req)
        if pool.etcd is not None:
            leased = _etcd(pool.etcd, pool.network).allocate(pool, _owner(req))
        else:
            with _io_errors(pool.data_dir):
                store = FileStore(pool.data_dir, pool.network, pool.lock_timeout)
                with store, store.locked():
                    leased = allocator.allocate(pool, store, _owner(req))
        ips = [
            IPConfig(
                address=ipaddress.ip_interface(f"{ip}/{rng.subnet.prefixlen}"), gateway=rng.gateway
            )
            for ip, rng in leased
        ]
        return Result(ips=ips, routes=routes.expand(pool.routes, ips), dns=pool.dns)

    def delete(self, req: Request) -> None:
        where = config.store_settings(req)
        if where.etcd is not None:
            released = _etcd(where.etcd, req.network).release_owner(_owner(req))
        elif not os.path.isdir(os.path.join(where.data_dir, req.network)):
            return  # nothing was ever leased on this network here
        else:
            with _io_errors(where.data_dir):
                store = FileStore(where.data_dir, req.network, where.lock_timeout)
                with store, store.locked():
                    released = store.release_owner(_owner(req))
        if released:
            log(f"released {', '.join(map(str, released))} of {req.container_id}/{req.ifname}")

    def check(self, req: Request) -> None:
        prev = req.prev_result
        if prev is None:
            raise CNIError(INVALID_CONFIG, "CHECK needs a prevResult")
        pool = config.load(req)
        if pool.etcd is not None:
            held = set(_etcd(pool.etcd, pool.network).owned(_owner(req)))
        else:
            store = FileStore(pool.data_dir, pool.network, pool.lock_timeout)
            with store, store.locked():
                held = set(store.owned(_owner(req), scan=True))
        reported = {ip.address.ip for ip in prev.ips}
        for index, rset in enumerate(pool.range_sets):
            mine = [ip for ip in held if any(r.contains(ip) for r in rset)]
            if not mine:
                raise CNIError(
                    CHECK_FAILED,
                    f"no lease in range set {index} for {req.container_id}/{req.ifname}",
                )
            if not reported & set(mine):
                raise CNIError(
                    CHECK_FAILED,
                    f"lease {mine[0]} is not in prevResult",
                    f"prevResult has {', '.join(map(str, sorted(reported, key=str)))}",
                )
        ours = {ip for ip in reported if pool.set_for(ip) is not None}
        missing = ours - held
        if missing:
            raise CNIError(
                CHECK_FAILED,
                f"prevResult address {min(missing, key=str)} is not "
                f"leased to {req.container_id}/{req.ifname}",
            )

    def status(self, req: Request) -> None:
        pool = config.load(req)
        if pool.etcd is not None:
            _etcd(pool.etcd, pool.network).check_usable()
            return
        with FileStore(pool.data_dir, pool.network, pool.lock_timeout) as store:
            store.check_usable()

    def gc(self, req: Request) -> None:
        valid = req.valid_attachments()
        if valid is None:
            log("GC without cni.dev/valid-attachments: nothing released (an empty list frees all)")
            return
        keep = set(valid)
        keep_ids = {cid for cid, _ in valid}
        where = config.store_settings(req)
        if where.etcd is not None:
            for (cid, ifname), ips in _etcd(where.etcd, req.network).gc(keep):
                log(f"GC released {', '.join(map(str, ips))} of {cid}/{ifname}")
            return
        if not os.path.isdir(os.path.join(where.data_dir, req.network)):
            return
        with (
            FileStore(where.data_dir, req.network, where.lock_timeout) as store,
            store.locked(),
        ):
            holders = set(keep)  # (the index keeps entries of valid attachments, too)
            for ip, owner in list(store.scan()):
                legacy = owner[1] == ""
                if (legacy and owner[0] in keep_ids) or owner in keep:
                    holders.add(owner)
                    continue
                store.release(ip, owner)
                crashpoint.here("ipam.gc-released")
                log(f"GC released {ip} of {owner[0]}/{owner[1]}")
            store.sweep_private(holders)


PLUGIN = HostLocal()
