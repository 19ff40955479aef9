"""A small etcd v3 client over etcd's HTTP/JSON gateway, standard library only.

A CNI plugin runs once per call, so the client is built for that: a raw
HTTP/1.1 exchange over ``socket`` (``http.client`` would import ``email``
and ``ssl`` for every call), ``ssl`` only for ``https://`` endpoints, and
keys and values base64-encoded with ``binascii``. A warm daemon keeps idle
connections and reuses them across calls.

Every call has one deadline (the store's ``timeout``). An endpoint that
refuses, resets, times out or answers "unavailable" is skipped for the next
one, round after round, until the deadline passes; then the call fails with
CNI code 11, never later. Only conditional transactions and reads are sent,
so repeating a request whose reply was lost is always safe.
"""

from __future__ import annotations

import binascii
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

# gRPC status codes that mean "this member cannot serve now, another may".
_RETRYABLE_GRPC = frozenset({1, 4, 8, 10, 13, 14})  # CANCELLED ... UNAVAILABLE
_MAX_BODY = 64 << 20
_THREAD_NS = "/proc/thread-self/ns/net"
_IDLE: dict[tuple[object, ...], list[socket.socket]] = {}
_IDLE_LOCK = threading.Lock()
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
                reply = self._exchange(endpoint, path, payload, budget)
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
        self, endpoint: Endpoint, budget: float
    ) -> tuple[socket.socket, bool, tuple[object, ...]]:
        """An idle connection to ``endpoint`` (True), or a new one (False), and its pool key.

        A socket stays in the namespace it was made in, and the daemon serves callers
        from several (and configs with other certificates): so idle connections are
        kept per namespace, endpoint and TLS identity."""
        key = (os.stat(_THREAD_NS).st_ino, *endpoint.key, *self.tls.identity)
        with _IDLE_LOCK:
            idle = _IDLE.get(key)
            if idle:
                return idle.pop(), True, key
        return self._open(endpoint, budget), False, key

    def _open(self, endpoint: Endpoint, budget: float) -> socket.socket:
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=budget)
        except OSError as exc:
            raise Unavailable(f"connect: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.scheme != "https":
            return sock
        import ssl

        try:
            return self.tls.context().wrap_socket(
                sock, server_hostname=self.tls.server_name or endpoint.host
            )
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise CNIError(
                INVALID_CONFIG,
                f"etcd {endpoint.url}: TLS verification failed: {exc.verify_message}",
                "check ipam.store.tls.ca (and serverName)",
            ) from None
        except OSError as exc:
            sock.close()
            _refused_tls(exc, endpoint)
            raise Unavailable(f"TLS handshake: {exc}") from None

    def _exchange(
        self, endpoint: Endpoint, path: str, payload: bytes, budget: float
    ) -> dict[str, object]:
        request = (
            f"POST /v3/{path} HTTP/1.1\r\nHost: {endpoint.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        sock, reused, key = self._take(endpoint, budget)
        while True:
            try:
                sock.settimeout(budget)
                sock.sendall(request)
                status, keep, body = _read_response(sock)
                break
            except (OSError, ValueError) as exc:
                sock.close()
                _refused_tls(exc, endpoint)
                if not reused or isinstance(exc, TimeoutError):
                    raise Unavailable(f"{type(exc).__name__}: {exc}") from None
                # An idle connection the server has closed since: once more, on a new one.
                sock, reused = self._open(endpoint, budget), False
        if keep:
            with _IDLE_LOCK:
                _IDLE.setdefault(key, []).append(sock)
        else:
            sock.close()
        return _decode(status, body, endpoint)


def _refused_tls(exc: Exception, endpoint: Endpoint) -> None:
    """A TLS alert about our certificate is a configuration fault, not an outage:
    code 7 at once rather than code 11 after the whole timeout."""
    reason = str(getattr(exc, "reason", "") or "")
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        raise CNIError(
            INVALID_CONFIG,
            f"etcd {endpoint.url} refused our TLS client: {reason.lower()}",
            "check ipam.store.tls (ca, cert, key)",
        ) from None


def _read_response(sock: socket.socket) -> tuple[int, bool, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the reply")
        buf += chunk
        if len(buf) > 65536 and b"\r\n\r\n" not in buf:
            raise ValueError("reply headers too long")
    head, _, body = buf.partition(b"\r\n\r\n")
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
        return int(parts[1]), keep, _read_chunked(sock, body)
    length = int(headers.get("content-length", "-1"))
    if length < 0:
        keep = False
        while chunk := sock.recv(65536):
            body += chunk
    if length > _MAX_BODY:
        raise ValueError("reply too large")
    while len(body) < length:
        chunk = sock.recv(min(length - len(body), 1 << 20))
        if not chunk:
            raise ConnectionError("closed in the middle of the reply")
        body += chunk
    return int(parts[1]), keep, body


def _read_chunked(sock: socket.socket, buf: bytes) -> bytes:
    out = b""
    while True:
        while b"\r\n" not in buf:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("closed in a chunked reply")
            buf += more
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(buf) < size + 2:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("closed in a chunked reply")
            buf += more
        if size == 0:
            return out
        out += buf[:size]
        buf = buf[size + 2 :]
        if len(out) > _MAX_BODY:
            raise ValueError("reply too large")


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
