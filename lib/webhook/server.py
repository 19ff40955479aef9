"""The HTTPS edge of ``multihome webhook``: a threaded stdlib server.

- ``POST /validate``: an AdmissionReview, answered with the request's uid; a body
  that is not one gets 400, one over the limit 413, and neither crashes anything.
- ``GET /healthz`` and ``/readyz``: 200 while the server runs; after SIGTERM,
  /readyz answers 503 while reviews are still answered for a few seconds.
- The TLS context is rebuilt when the certificate or key file changes (checked at
  each new connection; a pair that does not load yet, half-written, keeps the old).
- Each review runs in a bounded pool with a deadline: one past it is allowed with
  a warning (as ``failurePolicy: Ignore`` would) instead of holding the API server.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .. import log
from . import review

DEFAULT_PORT = 8443


@dataclass(frozen=True)
class Limits:
    max_body: int = 4 * 1024 * 1024  # an object is at most ~1.5 MiB; a review holds two
    review_seconds: float = 3.0  # below the configuration's timeoutSeconds (5)
    io_seconds: float = 10.0  # handshake, headers, body, and idle keep-alive
    workers: int = 8
    connections: int = 512


def _stamp(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)  # follows the ..data symlink a mounted Secret swaps
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class Certificates:
    """The server's TLS context, rebuilt when the cert or key file changes."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._stamps = (_stamp(cert), _stamp(key))
        self._context = self._load()  # the first pair must load: fail at start

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(["http/1.1"])
        return context

    def context(self) -> ssl.SSLContext:
        with self._lock:
            try:
                stamps = (_stamp(self.cert), _stamp(self.key))
            except OSError:
                return self._context  # mid-swap: keep serving the old pair
            if stamps != self._stamps:
                try:
                    self._context = self._load()
                    self._stamps = stamps
                    log.log(f"reloaded {self.cert} and {self.key}")
                except (OSError, ssl.SSLError) as exc:
                    log.log(f"keeping the previous certificate: {self.cert}: {exc}")
            return self._context


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: WebhookServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per denial instead (below); probes and reviews would flood

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, code: int, why: str) -> None:
        self.close_connection = True
        self._send(code, f"{why}\n".encode(), "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        if self.path == "/readyz" and self.server.draining.is_set():
            self._send(503, b"stopping\n", "text/plain; charset=utf-8")
        elif self.path in ("/healthz", "/readyz"):
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        else:
            self._refuse(404, "not found: GET /healthz, /readyz; POST /validate")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/validate":
            return self._refuse(404, "not found: POST /validate")
        if self.headers.get("Transfer-Encoding"):
            return self._refuse(411, "a Content-Length is required")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._refuse(411, "a Content-Length is required")
        if length < 0 or length > self.server.limits.max_body:
            return self._refuse(413, f"the body is over {self.server.limits.max_body} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None
        code, answer = self.server.decide(body)
        return self._send(code, answer)


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], certificates: Certificates, limits: Limits
    ) -> None:
        self.certificates = certificates
        self.limits = limits
        self.pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="review")
        self.draining = threading.Event()
        self._slots = threading.BoundedSemaphore(limits.connections)
        host = address[0]
        self._dual = not host and socket.has_dualstack_ipv6()
        self.address_family = socket.AF_INET6 if ":" in host or self._dual else socket.AF_INET
        super().__init__(("::" if self._dual else host, address[1]), Handler)

    def server_bind(self) -> None:
        if self._dual:  # no host given: every address of both families
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the connection cap: refuse at once
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(self.limits.io_seconds)  # the TLS socket inherits it
            context = self.certificates.context()
            tls = context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            self.shutdown_request(request)
            self._slots.release()
            return
        try:
            super().process_request_thread(tls, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer; the handler caught the rest

    def decide(self, body: bytes) -> tuple[int, bytes]:
        """HTTP status and body for one POSTed review."""
        try:
            request = review.parse(body)
        except review.BadReview as exc:
            return 400, json.dumps({"error": str(exc)}).encode()
        uid = request["uid"]
        future = self.pool.submit(review.review, request)
        try:
            answer = future.result(timeout=self.limits.review_seconds)
        except FutureTimeout:
            log.log(f"review {uid}: not done in {self.limits.review_seconds} s; allowed")
            answer = review.allowed_with_warning(
                uid, "multihome webhook: not checked in time; run multihome lint on it"
            )
        except Exception as exc:  # a fault of ours must not block the object
            log.log(f"review {uid}: failed: {exc!r}; allowed")
            answer = review.allowed_with_warning(
                uid, f"multihome webhook: not checked ({type(exc).__name__})"
            )
        response = answer["response"]
        if not response["allowed"]:
            log.log(f"review {uid}: denied {response['status']['message']}")
        return 200, json.dumps(answer).encode()


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every address) or ``[::1]:PORT``."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    return host or "", int(port or DEFAULT_PORT)


def _drain_then_stop(server: WebhookServer, drain: float) -> None:
    """On SIGTERM: /readyz fails at once, so the Service stops sending; reviews already
    on their way are answered for ``drain`` seconds, then the server stops."""
    import signal

    def stop() -> None:
        time.sleep(drain)
        server.shutdown()

    def on_term(*_: object) -> None:
        if not server.draining.is_set():
            server.draining.set()
            log.log(f"SIGTERM: not ready; answering for {drain} s more")
            threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)


def serve(
    listen: str, cert: str, key: str, limits: Limits | None = None, drain: float = 3.0
) -> None:
    server = WebhookServer(parse_listen(listen), Certificates(cert, key), limits or Limits())
    host, port = server.socket.getsockname()[:2]
    _drain_then_stop(server, drain)
    log.log(f"serving AdmissionReviews on [{host}]:{port} (POST /validate)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.pool.shutdown(wait=False, cancel_futures=True)
