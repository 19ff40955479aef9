"""The lease store on disk: host-local's format, plus an index host-local never sees.

``<dataDir>/<network>/`` is exactly host-local's: a file per leased IP holding
``containerID\\r\\nifname`` (legacy files hold the ID alone),
``last_reserved_ip.<n>`` and an empty ``lock`` for flock. Either program can
take over a node from the other.

What we add lives in ``<dataDir>/.multihome/<network>/`` (no network name can
start with a dot, so it never collides): ``by-id/<hash>`` lists the addresses
an owner (container ID, ifname) holds, which makes a repeated ADD and a DEL
O(1) instead of reading every lease file. The index is a hint: every address
it names is verified against its lease file, and an owner it does not know is
looked up by scanning the network directory, as host-local always does.
Leases written behind the index's back (host-local on the same dataDir) are
noticed by the network directory's mtime, recorded after each of our writes:
the next locked section rescans once before it trusts the index.

Crash safety: the index entry naming a candidate is written before the lease,
and a lease appears atomically (written to a temporary file, then ``link``ed
to its name, which fails if the name exists). A crash leaves a complete lease
or none, and a repeated ADD finds what the crashed one leased. Files are
opened relative to directory descriptors with ``O_NOFOLLOW``, so symlinks
planted in the store are never followed out of it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import os
import time
from collections.abc import Iterator

from multihome.lib import crashpoint
from multihome.lib.errors import IO_FAILURE, NOT_AVAILABLE, TRY_AGAIN_LATER, CNIError
from multihome.lib.models import IPAddress

Owner = tuple[str, str]
LOCK = "lock"
LAST_RESERVED = "last_reserved_ip."
PRIVATE = ".multihome"
INDEX_MAGIC = "mh-index 1"
STATUS_PROBE = b"status"  # what a STATUS writes to prove the store writable
SEEN = "seen"  # in by-id/: the network directory as our last write left it
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_MAX_FILE = 4096


def lease_content(owner: Owner) -> bytes:
    return f"{owner[0]}\r\n{owner[1]}".encode()


def parse_lease(data: bytes) -> Owner:
    """``id\\r\\nifname`` -> (id, ifname); a legacy file gives (id, "")."""
    text = data.decode("utf-8", "replace").strip()
    cid, _, ifname = text.partition("\r\n")
    return cid.strip(), ifname.strip()


def ip_from_name(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


_DISK_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO})


def _mkdir(path: str, mode: int) -> None:
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except OSError as exc:
        # A full or read-only disk is an I/O failure; anything else (a file in the
        # way, no permission) means the store is not usable as configured.
        code = IO_FAILURE if exc.errno in _DISK_ERRNOS else NOT_AVAILABLE
        raise CNIError(code, f"cannot create {path}: {exc.strerror}") from None


class FileStore:
    """One network's leases. Use ``with store.locked():`` around every change."""

    def __init__(self, data_dir: str, network: str, lock_timeout: float = 30.0) -> None:
        self.path = os.path.join(data_dir, network)
        self.private = os.path.join(data_dir, PRIVATE, network)
        self.lock_timeout = lock_timeout
        _mkdir(self.path, 0o750)
        _mkdir(os.path.join(self.private, "by-id"), 0o700)
        _mkdir(os.path.join(self.private, "tmp"), 0o700)
        self.dfd = self._open_dir(self.path)
        self.index_fd = self._open_dir(os.path.join(self.private, "by-id"))
        self.tmp_fd = self._open_dir(os.path.join(self.private, "tmp"))
        self._stale = False  # (locked) a write we did not make may be missing from the index
        self._since = -1  # (locked) the recorded mtime: later leases are not ours
        self._rebuilt = False

    @staticmethod
    def _open_dir(path: str) -> int:
        try:
            return os.open(path, _DIR_FLAGS)
        except OSError as exc:
            raise CNIError(
                NOT_AVAILABLE,
                f"cannot open store directory {path}: {exc.strerror}",
                "it must be a real directory, not a symlink",
            ) from None

    def close(self) -> None:
        for fd in (self.dfd, self.index_fd, self.tmp_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- locking ---------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """flock the network's ``lock`` file, waiting at most ``lock_timeout`` seconds."""
        fd = os.open(
            LOCK, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.dfd
        )
        try:
            deadline = time.monotonic() + self.lock_timeout
            pause = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CNIError(
                            TRY_AGAIN_LATER,
                            f"lease store {self.path} is locked",
                            f"waited {self.lock_timeout:g}s for {self.path}/lock",
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.02)
            entered = os.fstat(self.dfd)
            seen = self._read(SEEN, self.index_fd) or b""
            self._stale = seen != _stamp(entered)
            ino, _, mtime = seen.decode("ascii", "replace").partition(" ")
            same_dir = ino == str(entered.st_ino) and mtime.isdigit()
            self._since = int(mtime) if same_dir else -1
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    self._note_own_writes(entered)
        finally:
            os.close(fd)  # closing releases the flock

    # ---- writes that did not come through us -------------------------------
    #
    # host-local (or anything else) may lease on the same dataDir, taking the same
    # lock; the index would not know those leases. After each locked section that
    # wrote, we set the network directory's mtime one nanosecond back and record
    # it (by-id/seen). Any later entry made or removed there sets the mtime to
    # the current time, never to the recorded value, even within one clock tick;
    # the next locked section sees the difference and rescans before it trusts
    # the index.

    def _note_own_writes(self, entered: os.stat_result) -> None:
        if self._stale:
            return  # a write not ours is not in the index yet: keep the record old
        now = os.fstat(self.dfd)
        if not self._rebuilt and _stamp(now) == _stamp(entered):
            return
        with contextlib.suppress(OSError):  # not the directory's owner: a tick stays racy
            os.utime(self.dfd, ns=(now.st_atime_ns, now.st_mtime_ns - 1))
            now = os.fstat(self.dfd)
        self._replace(SEEN, _stamp(now), self.index_fd)
        self._rebuilt = False

    def _rebuild(self) -> None:
        """Add the leases made since our last recorded write to their owners' index
        entries: one lstat per lease, and a read of those changed since (their ctime,
        which nothing can set back, is later than the recorded mtime). Without a
        record, every lease is read. (ID-only legacy leases name no interface;
        DEL's scan finds them.)"""
        with os.scandir(self.dfd) as entries:
            changed = [
                e.name
                for e in entries
                if self._since < 0 or e.stat(follow_symlinks=False).st_ctime_ns > self._since
            ]
        found: dict[Owner, list[IPAddress]] = {}
        for name in changed:
            ip = ip_from_name(name)
            owner = self.holder(ip) if ip is not None else None
            if ip is not None and owner is not None and owner[1]:
                found.setdefault(owner, []).append(ip)
        for owner, ips in found.items():
            known = self._index_get(owner) or []
            missing = [ip for ip in ips if ip not in known]
            if missing:
                self._index_put(owner, [*known, *missing])
        self._stale, self._rebuilt = False, True

    # ---- small file helpers ---------------------------------------------

    def _read(self, name: str, dir_fd: int) -> bytes | None:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None  # missing, or a symlink (ELOOP): not ours to follow
        try:
            if not _is_regular(fd):
                return None
            return os.read(fd, _MAX_FILE)
        finally:
            os.close(fd)

    def _write_tmp(self, data: bytes) -> str:
        name = f"{os.getpid()}.{time.monotonic_ns()}.tmp"
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=self.tmp_fd,
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.tmp_fd)  # a full disk leaves no half-written file
            raise
        os.close(fd)
        return name

    def _replace(self, name: str, data: bytes, dir_fd: int) -> None:
        tmp = self._write_tmp(data)
        os.rename(tmp, name, src_dir_fd=self.tmp_fd, dst_dir_fd=dir_fd)

    # ---- the owner index -------------------------------------------------

    @staticmethod
    def _key(owner: Owner) -> str:
        return hashlib.sha256(lease_content(owner)).hexdigest()[:40]

    def _index_get(self, owner: Owner) -> list[IPAddress] | None:
        data = self._read(self._key(owner), self.index_fd)
        if data is None:
            return None
        lines = data.decode("utf-8", "replace").splitlines()
        if not lines or lines[0] != INDEX_MAGIC:
            return None
        return [ip for ip in map(ip_from_name, lines[1:]) if ip is not None]

    def _index_put(self, owner: Owner, ips: list[IPAddress]) -> None:
        key = self._key(owner)
        if not ips:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(key, dir_fd=self.index_fd)
            return
        body = "\n".join([INDEX_MAGIC, *map(str, ips)]) + "\n"
        self._replace(key, body.encode(), self.index_fd)

    # ---- leases ----------------------------------------------------------

    def holder(self, ip: IPAddress) -> Owner | None:
        data = self._read(str(ip), self.dfd)
        return None if data is None else parse_lease(data)

    def _is_mine(self, ip: IPAddress, owner: Owner) -> bool:
        held = self.holder(ip)
        return held is not None and _matches(held, owner)

    def scan(self) -> Iterator[tuple[IPAddress, Owner]]:
        """Every lease in the network directory (O(n): host-local's lookup)."""
        with os.scandir(self.dfd) as entries:
            names = [e.name for e in entries]
        for name in names:
            ip = ip_from_name(name)
            if ip is None:
                continue
            owner = self.holder(ip)
            if owner is not None:
                yield ip, owner

    def owned(self, owner: Owner, scan: bool = False) -> list[IPAddress]:
        """Addresses ``owner`` holds, verified against their lease files.

        The index answers in O(1) and is authoritative for leases we made, which
        is what ADD needs. With ``scan`` an owner the index does not know is also
        looked for in every lease file, as host-local does (for DEL and CHECK,
        which must see leases host-local or a legacy store made). A locked store
        that another writer changed since our last write rescans first.
        """
        if self._stale:
            self._rebuild()
        hinted = self._index_get(owner)
        if hinted is not None:
            mine = [ip for ip in hinted if self._is_mine(ip, owner)]
            if mine != hinted:
                self._index_put(owner, mine)
            if mine or not scan:
                return mine
        if not scan:
            return []
        return [ip for ip, held in self.scan() if _matches(held, owner)]

    def reserve(self, ip: IPAddress, owner: Owner, set_index: int) -> bool:
        try:  # taken already: say so before writing anything (the link below stays the guard)
            os.stat(str(ip), dir_fd=self.dfd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            return False
        known = [x for x in (self._index_get(owner) or []) if x != ip]
        self._index_put(owner, [*known, ip])  # intent first: a crash after the link is found
        crashpoint.here("store.index-put")
        tmp = self._write_tmp(lease_content(owner))
        crashpoint.here("store.lease-tmp")
        try:
            os.link(
                tmp, str(ip), src_dir_fd=self.tmp_fd, dst_dir_fd=self.dfd, follow_symlinks=False
            )
        except FileExistsError:
            self._index_put(owner, known)
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.tmp_fd)
        crashpoint.here("store.lease-linked")
        self._replace(f"{LAST_RESERVED}{set_index}", str(ip).encode(), self.dfd)
        crashpoint.here("store.last-reserved")
        return True

    def release(self, ip: IPAddress, owner: Owner) -> None:
        if self._is_mine(ip, owner):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(ip), dir_fd=self.dfd)
        known = self._index_get(owner)
        if known is not None and ip in known:
            self._index_put(owner, [x for x in known if x != ip])

    def release_owner(self, owner: Owner) -> list[IPAddress]:
        """Release everything ``owner`` holds (DEL); returns what was released."""
        ips = self.owned(owner, scan=True)
        for ip in ips:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(ip), dir_fd=self.dfd)
            crashpoint.here("store.lease-released")
        self._index_put(owner, [])
        self.sweep_dead_writes()
        return ips

    def sweep_dead_writes(self) -> None:
        """Temporary files of writers killed between their write and their rename.

        Call with the lock held: every writer but a STATUS probe holds it, so any
        other temporary file is a dead writer's (pids are no guide: the daemon and
        an exec'd plugin may not share a pid namespace). Usually the directory is
        empty, and this is one scandir.
        """
        with os.scandir(self.tmp_fd) as entries:
            names = [e.name for e in entries]
        for name in names:
            if self._read(name, self.tmp_fd) != STATUS_PROBE:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=self.tmp_fd)

    def last_reserved(self, set_index: int) -> IPAddress | None:
        data = self._read(f"{LAST_RESERVED}{set_index}", self.dfd)
        return None if data is None else ip_from_name(data.decode("ascii", "replace").strip())

    def sweep_private(self, live_owners: set[Owner]) -> None:
        """Drop temporary files, and index entries of owners not in ``live_owners``
        (GC: the caller has just scanned the leases, and knows who still holds one)."""
        with os.scandir(self.tmp_fd) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=self.tmp_fd)
        live = {self._key(o) for o in live_owners}
        with os.scandir(self.index_fd) as entries:
            stale = [e.name for e in entries if e.name not in live and e.name != SEEN]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.index_fd)

    def check_usable(self) -> None:
        """Raise code 50 unless a lease could be written now."""
        try:
            name = self._write_tmp(STATUS_PROBE)
            os.unlink(name, dir_fd=self.tmp_fd)
            fd = os.open(
                LOCK,
                os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self.dfd,
            )
            os.close(fd)
            if not os.access(self.path, os.W_OK):
                raise OSError(errno.EACCES, "not writable")
        except OSError as exc:
            raise CNIError(
                NOT_AVAILABLE, f"lease store {self.path} is not usable: {exc.strerror}"
            ) from None


def _stamp(st: os.stat_result) -> bytes:
    return f"{st.st_ino} {st.st_mtime_ns}".encode()


def _is_regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def _matches(held: Owner, owner: Owner) -> bool:
    """host-local's rule: ``id\\r\\nifname``, or a legacy file holding just the ID."""
    return held == owner or (held[1] == "" and held[0] == owner[0])
