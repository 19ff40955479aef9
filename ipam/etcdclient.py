"""A small etcd v3 client over etcd's HTTP/JSON gateway, standard library only.

A CNI plugin runs once per call, so the client is built for that: a raw
HTTP/1.1 exchange over ``socket`` (``http.client`` would import ``email``
and ``ssl`` for every call), ``ssl`` only for ``https://`` endpoints, and
keys and values base64-encoded with ``binascii``. A warm daemon keeps a few
idle connections, for a short while, and reuses them across calls.

Every call has one deadline (the store's ``timeout``): name resolution,
connecting, the TLS handshake, sending and every read get only the time left,
and no reply (headers, a chunk-size line, the body) is read past its cap, so
an endpoint that drips or floods costs neither time nor memory beyond them.
An endpoint that refuses, resets, times out or answers "unavailable" is
skipped for the next one, round after round, until the deadline passes; then
the call fails with CNI code 11, never later. Only conditional transactions and reads are sent,
so repeating a request whose reply was lost is always safe.
"""

from __future__ import annotations

import binascii
import itertools
import os
import socket
import threading
import time

from multihome.lib import jsonfast
from multihome.lib.errors import INVALID_CONFIG, IO_FAILURE, TRY_AGAIN_LATER, CNIError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence
    from typing import Any

    AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]

# gRPC status codes that mean "this member cannot serve now, another may".
_RETRYABLE_GRPC = frozenset({1, 4, 8, 10, 13, 14})  # CANCELLED ... UNAVAILABLE
_MAX_BODY = 64 << 20
_THREAD_NS = "/proc/thread-self/ns/net"
_PREFERRED: dict[tuple[str, ...], int] = {}  # endpoint that answered last, per endpoint list


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def unb64(text: str) -> bytes:
    return binascii.a2b_base64(text)


def prefix_end(prefix: str) -> str:
    """The range_end that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


class Unavailable(Exception):
    """One endpoint could not serve the request (the next one may)."""


class Endpoint:
    def __init__(self, url: str) -> None:
        scheme, sep, rest = url.partition("://")
        host, _, port = rest.rstrip("/").rpartition(":")
        if not sep or scheme not in ("http", "https") or not host or not port.isdigit():
            raise ValueError(f"etcd endpoint {url!r} is not http(s)://HOST:PORT")
        self.url = url
        self.scheme = scheme
        self.netloc = rest.rstrip("/")  # for the Host header (an IPv6 address keeps its [])
        self.host = host.strip("[]")
        self.port = int(port)
        self.key = (scheme, self.host, self.port)


class TLS:
    """Client TLS settings: a CA bundle, a client certificate and key, a server name."""

    def __init__(self, ca: str = "", cert: str = "", key: str = "", server_name: str = "") -> None:
        self.ca, self.cert, self.key, self.server_name = ca, cert, key, server_name
        self.identity = (ca, cert, key, server_name)  # connections made with it are its own
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            import ssl

            ctx = ssl.create_default_context(cafile=self.ca or None)
            if self.cert:
                try:
                    ctx.load_cert_chain(self.cert, self.key or None)
                except OSError as exc:
                    raise CNIError(
                        INVALID_CONFIG, f"cannot load etcd client certificate {self.cert}: {exc}"
                    ) from None
            self._context = ctx
        return self._context


class Client:
    """etcd v3 over the JSON gateway, failing over across ``endpoints``."""

    def __init__(self, endpoints: Sequence[str], timeout: float, tls: TLS | None = None) -> None:
        self.endpoints = [Endpoint(url) for url in endpoints]
        self.timeout = timeout
        self.tls = tls or TLS()
        self._order_key = tuple(e.url for e in self.endpoints)

    # ---- the kv API ------------------------------------------------------

    def txn(
        self,
        compare: list[dict[str, object]],
        success: list[dict[str, object]],
        failure: list[dict[str, object]] | None = None,
    ) -> dict[str, object]:
        body: dict[str, object] = {"compare": compare, "success": success}
        if failure:
            body["failure"] = failure
        return self.call("kv/txn", body)

    def range(self, key: str, **options: object) -> dict[str, object]:
        return self.call("kv/range", {"key": b64(key), **options})

    def call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        """POST ``/v3/<path>``; the decoded reply, failing over until the deadline."""
        payload = jsonfast.dumps(body).encode()
        deadline = time.monotonic() + self.timeout
        errors: dict[str, str] = {}
        start = _PREFERRED.get(self._order_key, 0)
        count = len(self.endpoints)
        attempt = 0
        while True:
            endpoint = self.endpoints[(start + attempt) % count]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # One endpoint may not take the whole deadline when others could answer.
            budget = remaining if count == 1 else min(remaining, max(1.0, self.timeout / count))
            try:
                until = min(deadline, time.monotonic() + budget)
                reply = self._exchange(endpoint, path, payload, until)
            except Unavailable as exc:
                errors[endpoint.url] = str(exc)
                attempt += 1
                if attempt % count == 0:  # a whole round failed: pause before the next
                    time.sleep(min(0.05 * (attempt // count), 0.25, max(0.0, remaining - 0.01)))
                continue
            _PREFERRED[self._order_key] = (start + attempt) % count
            return reply
        tried = "; ".join(f"{url}: {why}" for url, why in errors.items()) or "no attempt"
        raise CNIError(
            TRY_AGAIN_LATER,
            f"etcd did not answer within {self.timeout:g}s; try again later",
            tried,
        )

    # ---- one HTTP exchange ----------------------------------------------

    def _take(
        self, endpoint: Endpoint, until: float
    ) -> tuple[socket.socket, bool, tuple[object, ...]]:
        """An idle connection to ``endpoint`` (True), or a new one (False), and its pool key.

        A socket stays in the namespace it was made in, and the daemon serves callers
        from several: so idle connections are kept per namespace, endpoint and TLS
        identity."""
        key = (os.stat(_THREAD_NS).st_ino, *endpoint.key, *self.tls.identity)
        sock = _POOL.take(key)
        if sock is not None:
            return sock, True, key
        return self._open(endpoint, until), False, key

    def _open(self, endpoint: Endpoint, until: float) -> socket.socket:
        sock = None
        try:
            for family, kind, proto, _, address in _resolve(endpoint, until):
                sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
                try:
                    sock.settimeout(_left(until))
                    sock.connect(address)
                    break
                except OSError:
                    sock.close()
                    sock = None
                    if time.monotonic() >= until:
                        raise
            if sock is None:
                raise ConnectionRefusedError("no address of the endpoint answered")
        except OSError as exc:
            raise Unavailable(f"connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.scheme != "https":
            return sock
        import ssl

        try:
            sock.settimeout(_left(until))  # the whole handshake (ssl counts one deadline)
            return self.tls.context().wrap_socket(
                sock, server_hostname=self.tls.server_name or endpoint.host
            )
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise CNIError(
                INVALID_CONFIG,
                f"etcd {endpoint.url}: TLS verification failed: {exc.verify_message}",
                "check the profile's tls.ca (and serverName)",
            ) from None
        except OSError as exc:
            sock.close()
            _refused_tls(exc, endpoint)
            raise Unavailable(f"TLS handshake: {exc}") from None

    def _exchange(
        self, endpoint: Endpoint, path: str, payload: bytes, until: float
    ) -> dict[str, object]:
        """One request and its reply, all of it by ``until`` (a monotonic time)."""
        request = (
            f"POST /v3/{path} HTTP/1.1\r\nHost: {endpoint.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        sock, reused, key = self._take(endpoint, until)
        while True:
            try:
                sock.settimeout(_left(until))  # sendall counts one deadline for the whole
                sock.sendall(request)
                status, keep, body = _read_response(sock, until)
                break
            except (OSError, ValueError) as exc:
                sock.close()
                _refused_tls(exc, endpoint)
                if not reused or isinstance(exc, (TimeoutError, TooLarge)):
                    raise Unavailable(f"{type(exc).__name__}: {exc}") from None
                # An idle connection the server has closed since: once more, on a new one.
                sock, reused = self._open(endpoint, until), False
        if keep:
            _POOL.give(key, sock)
        else:
            sock.close()
        return _decode(status, body, endpoint)


class TooLarge(ValueError):
    """A reply (or a part of one) beyond its cap: never read further."""


def _left(until: float) -> float:
    """The time left before ``until``; a timeout once there is none."""
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class _Pool:
    """Idle connections: at most ``per_key`` per key and ``total`` in all, each for at
    most ``idle`` seconds. The oldest goes first when the pool is full."""

    def __init__(self, per_key: int = 4, total: int = 16, idle: float = 30.0) -> None:
        self.per_key, self.total, self.idle = per_key, total, idle
        self._lock = threading.Lock()
        self._order = itertools.count()
        # key -> [(when it went idle, its place in the order, the socket)], oldest first
        self._socks: dict[tuple[object, ...], list[tuple[float, int, socket.socket]]] = {}

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._socks.values())

    def take(self, key: tuple[object, ...]) -> socket.socket | None:
        with self._lock:
            stale = self._expire(time.monotonic())
            idle = self._socks.get(key)
            sock = idle.pop()[2] if idle else None
            if idle == []:
                del self._socks[key]
        for old in stale:
            old.close()
        return sock

    def give(self, key: tuple[object, ...], sock: socket.socket) -> None:
        now = time.monotonic()
        with self._lock:
            drop = self._expire(now)
            mine = self._socks.setdefault(key, [])
            mine.append((now, next(self._order), sock))
            if len(mine) > self.per_key:
                drop.append(mine.pop(0)[2])
            while sum(len(v) for v in self._socks.values()) > self.total:
                oldest = min(self._socks, key=lambda k: self._socks[k][0][1])
                drop.append(self._socks[oldest].pop(0)[2])
                if not self._socks[oldest]:
                    del self._socks[oldest]
        for old in drop:
            old.close()

    def clear(self) -> None:
        with self._lock:
            socks = [entry[2] for v in self._socks.values() for entry in v]
            self._socks.clear()
        for sock in socks:
            sock.close()

    def _expire(self, now: float) -> list[socket.socket]:
        gone = []
        for key in list(self._socks):
            entries = self._socks[key]
            gone += [s for t, _, s in entries if now - t >= self.idle]
            keep = [e for e in entries if now - e[0] < self.idle]
            if keep:
                self._socks[key] = keep
            else:
                del self._socks[key]
        return gone


_POOL = _Pool()

_RESOLVING: dict[tuple[int, str, int], tuple[threading.Event, list[object]]] = {}
_RESOLVING_LOCK = threading.Lock()


def _resolve(endpoint: Endpoint, until: float) -> list[AddrInfo]:
    """The addresses to try for ``endpoint``, within the deadline.

    An address literal needs no lookup. A name is looked up in a helper thread
    (getaddrinfo has no timeout of its own) that the caller waits for only until
    ``until``; callers asking for the same name in the same namespace share one
    lookup, so a hanging resolver costs one thread, not one per call."""
    family = _literal_family(endpoint.host)
    if family is not None:
        return [
            (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (endpoint.host, endpoint.port))
        ]
    key = (os.stat(_THREAD_NS).st_ino, endpoint.host, endpoint.port)
    with _RESOLVING_LOCK:
        pending = _RESOLVING.get(key)
        if pending is None:
            pending = (threading.Event(), [])
            _RESOLVING[key] = pending
            threading.Thread(
                target=_lookup, args=(key, endpoint, *pending), daemon=True, name="etcd-resolve"
            ).start()  # a new thread starts in this thread's network namespace
    done, out = pending
    if not done.wait(max(0.0, until - time.monotonic())):
        raise TimeoutError(f"resolving {endpoint.host}: deadline passed")
    if isinstance(out[0], OSError):
        raise out[0]
    return out[0]  # type: ignore[return-value]


def _lookup(
    key: tuple[int, str, int], endpoint: Endpoint, done: threading.Event, out: list[object]
) -> None:
    try:
        out.append(socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM))
    except OSError as exc:
        out.append(OSError(f"resolving {endpoint.host}: {exc.strerror or exc}"))
    finally:
        with _RESOLVING_LOCK:
            _RESOLVING.pop(key, None)
        done.set()


def _literal_family(host: str) -> int | None:
    """AF_INET or AF_INET6 for an address literal; None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def _refused_tls(exc: Exception, endpoint: Endpoint) -> None:
    """A TLS alert about our certificate is a configuration fault, not an outage:
    code 7 at once rather than code 11 after the whole timeout."""
    reason = str(getattr(exc, "reason", "") or "")
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        raise CNIError(
            INVALID_CONFIG,
            f"etcd {endpoint.url} refused our TLS client: {reason.lower()}",
            "check the profile's tls (ca, cert, key)",
        ) from None


_HEAD_CAP = 64 << 10
_LINE_CAP = 1 << 10  # a chunk-size line (hex size and extensions)


class _Reader:
    """Reads a reply from ``sock`` by ``until``, never holding more than the caps allow."""

    def __init__(self, sock: socket.socket, until: float) -> None:
        self.sock, self.until = sock, until
        self.buf = bytearray()

    def fill(self, want: int) -> bool:
        """Read once (at most ``want`` bytes) into the buffer; False at the end of stream."""
        self.sock.settimeout(_left(self.until))
        data = self.sock.recv(min(max(want, 1), 1 << 20))
        if not data:
            return False
        self.buf += data
        return True

    def line(self, cap: int, what: str) -> bytes:
        """Up to the next CRLF (dropped), at most ``cap`` bytes long."""
        start = 0
        while True:
            at = self.buf.find(b"\r\n", start)
            if at >= 0:
                out = bytes(self.buf[:at])
                del self.buf[: at + 2]
                return out
            if len(self.buf) > cap:
                raise TooLarge(f"{what} longer than {cap} bytes")
            start = max(0, len(self.buf) - 1)
            if not self.fill(cap + 2 - len(self.buf)):
                raise ConnectionError(f"closed in the {what}")

    def exactly(self, size: int, what: str) -> bytes:
        while len(self.buf) < size:
            if not self.fill(size - len(self.buf)):
                raise ConnectionError(f"closed in the {what}")
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out


def _read_response(sock: socket.socket, until: float) -> tuple[int, bool, bytes]:
    reader = _Reader(sock, until)
    start = 0
    while True:
        at = reader.buf.find(b"\r\n\r\n", start)
        if at >= 0:
            break
        if len(reader.buf) > _HEAD_CAP:
            raise TooLarge("reply headers too long")
        start = max(0, len(reader.buf) - 3)
        if not reader.fill(_HEAD_CAP + 4 - len(reader.buf)):
            raise ConnectionError("closed before the reply")
    head = bytes(reader.buf[:at])
    del reader.buf[: at + 4]
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP reply: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return int(parts[1]), keep, _read_chunked(reader)
    text = headers.get("content-length", "")
    if not text:  # until the server closes, but never past the cap
        while reader.fill(_MAX_BODY + 1 - len(reader.buf)):
            if len(reader.buf) > _MAX_BODY:
                raise TooLarge("reply too large")
        return int(parts[1]), False, bytes(reader.buf)
    if not text.isdigit():
        raise ValueError(f"bad Content-Length {text[:40]!r}")
    length = int(text)
    if length > _MAX_BODY:
        raise TooLarge("reply too large")
    return int(parts[1]), keep, reader.exactly(length, "reply")


def _read_chunked(reader: _Reader) -> bytes:
    out = bytearray()
    while True:
        size_line = reader.line(_LINE_CAP, "chunk-size line")
        digits = size_line.split(b";")[0].strip()
        if not digits or len(digits) > 16:
            raise ValueError(f"bad chunk size {digits[:40]!r}")
        size = int(digits, 16)
        if len(out) + size > _MAX_BODY:
            raise TooLarge("reply too large")
        if size == 0:
            trailers = 0
            while line := reader.line(_HEAD_CAP, "trailer"):  # up to the empty line
                trailers += len(line) + 2
                if trailers > _HEAD_CAP:
                    raise TooLarge("reply trailers too long")
            return bytes(out)
        out += reader.exactly(size, "chunked reply")
        if reader.exactly(2, "chunked reply") != b"\r\n":
            raise ValueError("a chunk does not end with CRLF")


def _decode(status: int, body: bytes, endpoint: Endpoint) -> dict[str, object]:
    try:
        doc = jsonfast.loads(body) if body.strip() else {}
    except ValueError:
        raise Unavailable(f"HTTP {status}: not JSON: {body[:120]!r}") from None
    if not isinstance(doc, dict):
        raise Unavailable(f"HTTP {status}: not a JSON object")
    if status == 200 and "error" not in doc:
        return doc
    message = str(doc.get("message") or doc.get("error") or f"HTTP {status}")
    grpc = doc.get("code")
    if status >= 500 or grpc in _RETRYABLE_GRPC:
        raise Unavailable(message)
    raise CNIError(IO_FAILURE, f"etcd {endpoint.url} refused the request: {message}")
