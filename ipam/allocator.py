"""Allocation, as a pure function over a small Store protocol.

Round-robin like host-local: each range set continues after its
``last_reserved_ip``, wraps once around all its ranges, and skips the
gateway. Excluded CIDRs are jumped over as intervals, so a large exclusion
costs nothing. A repeated ADD for the same (container ID, ifname) gets the
addresses it already holds. Nothing here touches a file.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Callable, Iterator
from typing import Protocol

from multihome.lib.errors import CNIError
from multihome.lib.models import IPAddress, IPNetwork

from .config import Pool, Range
from .errors import IP_OUT_OF_RANGE, IP_UNAVAILABLE, POOL_EXHAUSTED

Owner = tuple[str, str]  # (container ID, ifname)


class Store(Protocol):
    """What the allocator needs from a lease store; called with its lock held."""

    def owned(self, owner: Owner) -> list[IPAddress]:
        """The addresses currently leased to ``owner`` (verified)."""
        ...

    def reserve(self, ip: IPAddress, owner: Owner, set_index: int) -> bool:
        """Lease ``ip`` to ``owner`` atomically; False if it is taken."""
        ...

    def release(self, ip: IPAddress, owner: Owner) -> None: ...

    def last_reserved(self, set_index: int) -> IPAddress | None: ...


class Excluded:
    """Merged excluded intervals of one IP family, for O(log n) skipping."""

    def __init__(self, nets: list[IPNetwork], version: int) -> None:
        spans = sorted(
            (int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version
        )
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.starts = [lo for lo, _ in merged]
        self.spans = merged

    def next_allowed(self, value: int) -> int:
        """``value`` itself, or the first address after the exclusion holding it."""
        i = bisect.bisect_right(self.starts, value) - 1
        if i >= 0 and value <= self.spans[i][1]:
            return self.spans[i][1] + 1
        return value

    def __contains__(self, value: int) -> bool:
        return self.next_allowed(value) != value


def _segments(rset: list[Range], last: IPAddress | None) -> list[tuple[Range, int, int]]:
    """(range, first, last) spans in round-robin order, each address once."""
    for i, r in enumerate(rset):
        if last is not None and r.contains(last):
            cur = int(last)
            rest = rset[i + 1 :] + rset[:i]
            return [(r, cur + 1, r.end), *((x, x.start, x.end) for x in rest), (r, r.start, cur)]
    return [(x, x.start, x.end) for x in rset]


def candidates(
    rset: list[Range], excluded: Excluded, last: IPAddress | None
) -> Iterator[tuple[IPAddress, Range]]:
    """Free-able addresses of a range set in the order host-local tries them."""
    for r, first, end in _segments(rset, last):
        gateway = int(r.gateway)
        value = first
        while value <= end:
            allowed = excluded.next_allowed(value)
            if allowed != value:
                value = allowed
                continue
            if value != gateway:
                yield ipaddress.ip_address(value), r
            value += 1


def _check_requested(pool: Pool, ip: IPAddress, index: int, excluded: Excluded) -> Range:
    rng = next(r for r in pool.range_sets[index] if r.contains(ip))
    if ip == rng.gateway:
        raise CNIError(IP_UNAVAILABLE, f"requested IP {ip} is the subnet's gateway")
    if int(ip) in excluded:
        raise CNIError(IP_UNAVAILABLE, f"requested IP {ip} is excluded")
    return rng


def exhausted(rset: list[Range]) -> CNIError:
    spans = ", ".join(str(r) for r in rset)
    return CNIError(POOL_EXHAUSTED, f"no IP addresses available in range set: {spans}")


def in_use(ip: IPAddress) -> CNIError:
    return CNIError(IP_UNAVAILABLE, f"requested IP {ip} is already in use")


class SetPlan:
    """What range set ``index`` offers an owner: its requested IP, or its candidates."""

    def __init__(self, pool: Pool, index: int, last: Callable[[], IPAddress | None]) -> None:
        self.index = index
        self.rset = pool.range_sets[index]
        excluded = Excluded(pool.exclude, self.rset[0].version)
        requested = [ip for ip in pool.requested if pool.set_for(ip) == index]
        if len(requested) > 1:
            raise CNIError(
                IP_UNAVAILABLE,
                f"more than one requested IP for range set {index}",
                ", ".join(map(str, requested)),
            )
        self.requested = requested[0] if requested else None
        if self.requested is not None:
            rng = _check_requested(pool, self.requested, index, excluded)
            self.candidates: Iterator[tuple[IPAddress, Range]] = iter([(self.requested, rng)])
        else:
            self.candidates = _after(self.rset, excluded, last)

    def held(self, owner: Owner, held: list[IPAddress]) -> tuple[IPAddress, Range] | None:
        """What ``owner`` already holds in this set (a repeated ADD keeps it)."""
        mine = [(ip, r) for ip in held for r in self.rset if r.contains(ip)]
        if not mine:
            return None
        if self.requested is not None and self.requested != mine[0][0]:
            raise CNIError(
                IP_UNAVAILABLE,
                f"{owner[0]}/{owner[1]} already holds "
                f"{mine[0][0]}, not the requested {self.requested}",
            )
        return mine[0]

    def taken(self) -> CNIError:
        """The error for a set none of whose candidates could be had."""
        return in_use(self.requested) if self.requested is not None else exhausted(self.rset)


def _after(
    rset: list[Range], excluded: Excluded, last: Callable[[], IPAddress | None]
) -> Iterator[tuple[IPAddress, Range]]:
    """``candidates``, reading ``last`` only when the first one is asked for (a held
    set, or a requested IP, never needs it)."""
    yield from candidates(rset, excluded, last())


def check_requested(pool: Pool) -> None:
    """Every requested IP must fall in some range set (code 111)."""
    unmatched = [ip for ip in pool.requested if pool.set_for(ip) is None]
    if unmatched:
        ranges = "; ".join(", ".join(map(str, s)) for s in pool.range_sets)
        raise CNIError(
            IP_OUT_OF_RANGE, f"requested IP {unmatched[0]} is not in any range", f"ranges: {ranges}"
        )


def allocate(pool: Pool, store: Store, owner: Owner) -> list[tuple[IPAddress, Range]]:
    """One address per range set for ``owner``; all or nothing."""
    check_requested(pool)
    held = store.owned(owner)
    made: list[IPAddress] = []
    out: list[tuple[IPAddress, Range]] = []
    try:
        for index in range(len(pool.range_sets)):
            plan = SetPlan(pool, index, functools.partial(store.last_reserved, index))
            kept = plan.held(owner, held)
            if kept is not None:
                out.append(kept)
                continue
            got = next(
                ((ip, r) for ip, r in plan.candidates if store.reserve(ip, owner, index)), None
            )
            if got is None:
                raise plan.taken()
            made.append(got[0])
            out.append(got)
    except BaseException:
        for ip in made:
            store.release(ip, owner)
        raise
    return out
