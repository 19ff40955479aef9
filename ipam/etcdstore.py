"""The etcd lease store: leases shared by every node, one key per address, no global lock.

Keys, under ``<prefix>/<network>/``:

- ``ips/4/203.000.113.010`` or ``ips/6/2001:0db8:…`` (fixed width, so keys sort
  as addresses do and a window of a pool is one range read) holds the lease:
  ``{"id": containerID, "if": ifname, "node": ..., "since": ...}``.
- ``owners/<containerID>/<ifname>`` holds ``{"ips": [...], "node": ..., "since": ...}``:
  what an attachment holds, the node that allocated it and since when, so DEL,
  CHECK and a repeated ADD read one key and GC can tell nodes apart.
- ``cursor/<set>`` is the last address reserved in a range set, cluster-wide
  (host-local's ``last_reserved_ip``): a hint, written without a compare.

An ADD is one read (the owner key and the cursors) and one transaction that
creates the address keys and the owner key only if none exists yet (or, when
the owner already holds addresses of other range sets, only if its key is
unchanged). Dual stack is thus all or nothing in one commit. When the
transaction fails, its failure branch returns the owner key and, for each
range set, the next taken addresses from the candidate on, so the retry picks
free candidates without another read and the pool is never read whole.

A reply lost after a commit is harmless: the repeated transaction fails on the
owner key, whose value names the addresses already committed, and those are
returned. DEL compares the owner key's revision and each lease's holder, so a
stale DEL never frees an address somebody else holds now.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
import time
import zlib

from multihome.lib import crashpoint, jsonfast
from multihome.lib.errors import NOT_AVAILABLE, TRY_AGAIN_LATER, CNIError
from multihome.lib.models import IPAddress

from . import allocator
from .config import EtcdSettings, Pool, Range
from .etcdclient import TLS, Client, b64, prefix_end, unb64
from .store import Owner

Op = dict[str, object]  # one compare or request op of a transaction, as gateway JSON
WINDOW = 256  # taken addresses a conflict reports per range set
MAX_CONFLICTS = 10_000


def ip_key(ip: IPAddress) -> str:
    """``4/010.020.000.002`` or ``6/2001:0db8:0000:…``: sorts like the addresses."""
    if ip.version == 4:
        return "4/" + ".".join(f"{int(octet):03d}" for octet in str(ip).split("."))
    return "6/" + ip.exploded


def ip_from_key(suffix: str) -> IPAddress | None:
    family, _, text = suffix.partition("/")
    try:
        if family == "4":
            return ipaddress.IPv4Address(".".join(str(int(o)) for o in text.split(".")))
        if family == "6":
            return ipaddress.IPv6Address(text)
    except ValueError:
        pass
    return None


def stamp(seconds: float | None = None) -> str:
    """A lease's ``since``: UTC, to the second; now unless ``seconds`` is given."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _kvs(response: object) -> list[dict[str, str]]:
    """The kvs of one ``response_range`` of a transaction (empty lists are omitted)."""
    if not isinstance(response, dict):
        return []
    body = response.get("response_range", response)
    kvs = body.get("kvs", []) if isinstance(body, dict) else []
    return kvs if isinstance(kvs, list) else []


class OwnerRecord:
    """The value of an ``owners/`` key, with the revision it was read at."""

    def __init__(self, kv: dict[str, str]) -> None:
        try:
            doc = jsonfast.loads(unb64(kv.get("value", "")))
        except ValueError:
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        self.revision = int(kv.get("mod_revision", 0))
        raw = doc.get("ips", [])
        self.ips: list[IPAddress] = []
        for text in raw if isinstance(raw, list) else []:
            try:
                self.ips.append(ipaddress.ip_address(str(text)))
            except ValueError:
                continue
        self.node = str(doc.get("node", ""))
        self.since = str(doc.get("since", ""))

    @staticmethod
    def encode(ips: list[IPAddress], node: str, since: str) -> str:
        return jsonfast.dumps({"ips": [str(ip) for ip in ips], "node": node, "since": since})


class EtcdStore:
    """One network's leases in etcd, as seen from one node."""

    def __init__(self, settings: EtcdSettings, network: str) -> None:
        tls = settings.tls
        self.client = Client(
            settings.endpoints,
            settings.timeout,
            TLS(tls.ca, tls.cert, tls.key, tls.server_name) if tls else None,
        )
        self.node = settings.node
        self.timeout = settings.timeout
        self.base = f"{settings.prefix}/{network}/"

    # ---- keys ------------------------------------------------------------

    def ip_key(self, ip: IPAddress) -> str:
        return f"{self.base}ips/{ip_key(ip)}"

    def owner_key(self, owner: Owner) -> str:
        return f"{self.base}owners/{owner[0]}/{owner[1]}"

    def cursor_key(self, index: int) -> str:
        return f"{self.base}cursor/{index}"

    def _get(self, key: str) -> Op:
        return {"request_range": {"key": b64(key)}}

    def _window(self, ip: IPAddress, rng: Range) -> Op:
        """The taken addresses of ``rng`` from ``ip`` on, at most WINDOW of them."""
        end = self.ip_key(ipaddress.ip_address(rng.end)) + "\x00"
        return {
            "request_range": {
                "key": b64(self.ip_key(ip)),
                "range_end": b64(end),
                "keys_only": True,
                "limit": WINDOW,
            }
        }

    def _owner(self, response: object) -> OwnerRecord | None:
        kvs = _kvs(response)
        return OwnerRecord(kvs[0]) if kvs else None

    # ---- ADD -------------------------------------------------------------

    def allocate(self, pool: Pool, owner: Owner) -> list[tuple[IPAddress, Range]]:
        """One address per range set for ``owner``, all committed at once."""
        allocator.check_requested(pool)
        count = len(pool.range_sets)
        record, cursors = self._survey(owner, count)
        plans = [
            allocator.SetPlan(pool, i, functools.partial(cursors.__getitem__, i))
            for i in range(count)
        ]
        pickers = {plan.index: _Picker(plan, owner) for plan in plans}
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_CONFLICTS):
            held = {}
            for plan in plans:
                kept = plan.held(owner, record.ips if record else [])
                if kept is not None:
                    held[plan.index] = kept
            todo = [pickers[p.index] for p in plans if p.index not in held]
            if not todo:
                return [held[i] for i in range(count)]
            picks = {p.plan.index: p.current() for p in todo}
            reply = self._commit(owner, record, picks)
            if reply.get("succeeded"):
                crashpoint.here("etcd.committed")
                return [held.get(i) or picks[i] for i in range(count)]
            responses = _responses(reply)
            now_record = self._owner(responses[0])
            if (now_record and now_record.revision) != (record and record.revision):
                record = now_record  # it changed under us (or our lost reply committed)
                continue
            for picker, window in zip(todo, responses[1:], strict=True):
                picker.learn(
                    {int(ip) for kv in _kvs(window) if (ip := self._ip_of(kv)) is not None}
                )
            if time.monotonic() > deadline:
                break
        raise CNIError(
            TRY_AGAIN_LATER,
            f"could not reserve an address within {self.timeout:g}s: too many conflicts",
        )

    def _survey(
        self, owner: Owner, count: int
    ) -> tuple[OwnerRecord | None, list[IPAddress | None]]:
        """One read: what ``owner`` holds already, and each range set's cursor."""
        reads = [self._get(self.owner_key(owner))]
        reads += [self._get(self.cursor_key(i)) for i in range(count)]
        replies = _responses(self.client.txn([], reads))
        cursors = []
        for reply in replies[1:]:
            kvs = _kvs(reply)
            cursors.append(_ip_value(kvs[0]) if kvs else None)
        return self._owner(replies[0]), cursors

    def _ip_of(self, kv: dict[str, str]) -> IPAddress | None:
        key = unb64(kv.get("key", "")).decode("utf-8", "replace")
        prefix = self.base + "ips/"
        return ip_from_key(key[len(prefix) :]) if key.startswith(prefix) else None

    def _commit(
        self,
        owner: Owner,
        record: OwnerRecord | None,
        picks: dict[int, tuple[IPAddress, Range]],
    ) -> dict[str, object]:
        """Create the picked leases, and the owner key or its update, all or nothing."""
        owner_key = b64(self.owner_key(owner))
        if record is None:
            compare = [_never_created(owner_key)]
            since, node, held = stamp(), self.node, []
        else:
            compare = [_unchanged(owner_key, record.revision)]
            since, node, held = record.since, record.node, list(record.ips)
        ordered = sorted(picks.items())
        new, success = self._lease_ops(owner, [ip for _, (ip, _) in ordered], node, since, held)
        success += [_put(b64(self.cursor_key(i)), b64(str(ip))) for i, (ip, _) in ordered]
        failure = [self._get(self.owner_key(owner))]
        failure += [self._window(ip, rng) for _, (ip, rng) in ordered]
        return self.client.txn(compare + new, success, failure)

    def create(self, owner: Owner, ips: list[IPAddress], node: str, since: str) -> bool:
        """Write one attachment's keys if none exists yet (``multihome leases copy``)."""
        compare, success = self._lease_ops(owner, ips, node, since)
        compare.append(_never_created(b64(self.owner_key(owner))))
        return bool(self.client.txn(compare, success).get("succeeded"))

    def _lease_ops(
        self,
        owner: Owner,
        new: list[IPAddress],
        node: str,
        since: str,
        held: list[IPAddress] | None = None,
    ) -> tuple[list[Op], list[Op]]:
        """Compares that ``new``'s address keys do not exist yet, and the puts that make
        them and the owner key naming ``held`` and ``new``."""
        content = lease_value(owner, node, since)
        keys = [b64(self.ip_key(ip)) for ip in new]
        record = OwnerRecord.encode([*(held or []), *new], node, since)
        success = [_put(key, content) for key in keys]
        success.append(_put(b64(self.owner_key(owner)), b64(record)))
        return [_never_created(key) for key in keys], success

    # ---- DEL, CHECK, GC --------------------------------------------------

    def owner_record(self, owner: Owner) -> OwnerRecord | None:
        return self._owner(self.client.range(self.owner_key(owner)))

    def owned(self, owner: Owner) -> list[IPAddress]:
        """Addresses ``owner`` holds, each verified against its lease key (CHECK)."""
        record = self.owner_record(owner)
        if record is None or not record.ips:
            return []
        reply = self.client.txn([], [self._get(self.ip_key(ip)) for ip in record.ips])
        responses = _responses(reply)
        return [
            ip
            for ip, response in zip(record.ips, responses, strict=True)
            if _holder(response) == owner
        ]

    def release_owner(self, owner: Owner, record: OwnerRecord | None = None) -> list[IPAddress]:
        """Delete what ``owner`` holds (DEL); returns what was released. Idempotent."""
        record = record or self.owner_record(owner)
        owner_key = b64(self.owner_key(owner))
        expected = _expected(owner, record)
        for _ in range(8):
            if record is None:
                return []  # gone: never there, or a lost reply's DEL, or a concurrent one
            compare = [_unchanged(owner_key, record.revision)]
            compare += [_holds(b64(self.ip_key(ip)), value) for ip, value in expected.items()]
            success = [_delete(owner_key)] + [_delete(b64(self.ip_key(ip))) for ip in expected]
            failure = [self._get(self.owner_key(owner))]
            failure += [self._get(self.ip_key(ip)) for ip in expected]
            reply = self.client.txn(compare, success, failure)
            if reply.get("succeeded"):
                crashpoint.here("etcd.released")
                return list(expected)
            responses = _responses(reply)
            current = self._owner(responses[0])
            if current is None or current.revision != record.revision:
                record, expected = current, _expected(owner, current)
                continue
            # A lease key is not as expected: free those that still name this owner, as
            # they read now (a compare on the value they have), and leave the rest alone.
            expected = {
                ip: kvs[0].get("value", "")
                for ip, r in zip(expected, responses[1:], strict=True)
                if (kvs := _kvs(r)) and _holder(r) == owner
            }
        raise CNIError(TRY_AGAIN_LATER, f"{owner[0]}/{owner[1]}: its keys keep changing; try again")

    def records(self) -> list[tuple[Owner, OwnerRecord]]:
        """Every attachment holding addresses on this network, on any node."""
        prefix = self.base + "owners/"
        reply = self.client.range(prefix, range_end=prefix_end(prefix))
        out = []
        for kv in _kvs(reply):
            key = unb64(kv.get("key", "")).decode("utf-8", "replace")[len(prefix) :]
            cid, _, ifname = key.partition("/")
            out.append(((cid, ifname), OwnerRecord(kv)))
        return out

    def leases(self) -> list[tuple[IPAddress, dict[str, str]]]:
        """Every lease key of this network: (address, its value: id, if, node, since)."""
        prefix = self.base + "ips/"
        reply = self.client.range(prefix, range_end=prefix_end(prefix))
        out = []
        for kv in _kvs(reply):
            ip = self._ip_of(kv)
            doc = _lease_doc(kv)
            if ip is not None and doc is not None:
                out.append((ip, doc))
        return out

    def gc(self, valid: set[Owner]) -> list[tuple[Owner, list[IPAddress]]]:
        """Free this node's attachments that are not in ``valid``; never another node's."""
        freed = []
        for owner, record in self.records():
            if record.node != self.node or owner in valid:
                continue
            ips = self.release_owner(owner, record)
            if ips:
                freed.append((owner, ips))
        return freed

    def check_usable(self) -> None:
        """Raise code 50 unless the cluster serves a linearizable read now (STATUS)."""
        try:
            self.client.range(self.cursor_key(0), limit=1, count_only=True)
        except CNIError as exc:
            raise CNIError(
                NOT_AVAILABLE, f"etcd lease store is not available: {exc.msg}", exc.details
            ) from None


def _never_created(key: str) -> Op:
    return {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def _unchanged(key: str, revision: int) -> Op:
    return {"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": revision}


def _holds(key: str, value: str) -> Op:
    return {"key": key, "target": "VALUE", "result": "EQUAL", "value": value}


def _put(key: str, value: str) -> Op:
    return {"request_put": {"key": key, "value": value}}


def _delete(key: str) -> Op:
    return {"request_delete_range": {"key": key}}


def _responses(reply: dict[str, object]) -> list[object]:
    """A transaction's responses, one per request op (the gateway omits an empty list)."""
    responses = reply.get("responses", [])
    return responses if isinstance(responses, list) else []


def _ip_value(kv: dict[str, str]) -> IPAddress | None:
    try:
        return ipaddress.ip_address(unb64(kv.get("value", "")).decode("ascii", "replace"))
    except ValueError:
        return None


def lease_value(owner: Owner, node: str, since: str) -> str:
    """An address key's value (base64): who holds it, on which node, since when. The
    same bytes for every address of an attachment, so DEL can compare them."""
    doc = {"id": owner[0], "if": owner[1], "node": node, "since": since}
    return b64(jsonfast.dumps(doc))


def _lease_doc(kv: dict[str, str]) -> dict[str, str] | None:
    try:
        doc = jsonfast.loads(unb64(kv.get("value", "")))
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        return None
    return {k: str(doc.get(k, "")) for k in ("id", "if", "node", "since")}


def _holder(response: object) -> Owner | None:
    kvs = _kvs(response)
    doc = _lease_doc(kvs[0]) if kvs else None
    return (doc["id"], doc["if"]) if doc else None


def _expected(owner: Owner, record: OwnerRecord | None) -> dict[IPAddress, str]:
    """The value each of ``record``'s address keys should hold."""
    if record is None:
        return {}
    value = lease_value(owner, record.node, record.since)
    return dict.fromkeys(record.ips, value)


class _Picker:
    """A range set's candidate for one ADD, learning from each conflict what is taken."""

    SPREAD = 16  # at most this many free addresses apart, doubling per conflict

    def __init__(self, plan: allocator.SetPlan, owner: Owner) -> None:
        self.plan = plan
        self.owner = owner
        self.taken: set[int] = set()
        self.spare: collections.deque[tuple[IPAddress, Range]] = collections.deque()
        self.pick: tuple[IPAddress, Range] | None = None
        self.conflicts = 0

    def current(self) -> tuple[IPAddress, Range]:
        if self.pick is None:
            self.pick = self._next_free()
        return self.pick

    def learn(self, seen: set[int]) -> None:
        self.taken |= seen
        if self.pick is not None and int(self.pick[0]) in seen:
            self.pick = None
            self.conflicts += 1

    def _next_free(self) -> tuple[IPAddress, Range]:
        """The next free candidate; after a conflict, one of the next few, by a hash of
        the owner: the other losers of the race want the same next address. Skipped
        ones are kept, so a nearly full pool is still searched to the end."""
        skip = 0
        if self.conflicts:
            seed = f"{self.owner[0]}/{self.owner[1]}/{self.conflicts}".encode()
            skip = zlib.crc32(seed) % min(2**self.conflicts, self.SPREAD)
        free: list[tuple[IPAddress, Range]] = []
        while len(free) <= skip:
            candidate = self.spare.popleft() if self.spare else next(self.plan.candidates, None)
            if candidate is None:
                break
            if int(candidate[0]) not in self.taken:
                free.append(candidate)
        if not free:
            raise self.plan.taken()
        chosen = free.pop()
        self.spare.extendleft(reversed(free))
        return chosen
