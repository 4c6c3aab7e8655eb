"""A fault-injecting HTTP proxy on 127.0.0.1, to put in front of an S3 endpoint.

:class:`FaultyProxy` relays every request to an upstream server (such as
:class:`dask_phot.s3server.LocalS3Server`) and, for a seeded random fraction of
them, misbehaves the way networks and object stores do:

``"drop"``
    the connection is closed without a reply;
``"503"``
    ``503 Slow Down`` with S3's XML error body (the request is not relayed);
``"slow"``
    the reply comes after ``stall_seconds`` (longer than a client's read timeout:
    the client gives up and retries);
``"cut"``
    the reply's headers announce the whole body, then the connection closes
    half way through it.

It counts requests, faults by kind and body bytes relayed, so tests can check
that a run survives the faults with nothing lost, and what the retries cost.

Examples
--------
>>> from dask_phot.s3server import LocalS3Server
>>> with LocalS3Server() as s3, FaultyProxy(s3.endpoint_url, rate=0.0) as proxy:
...     proxy.endpoint_url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import http.client
import http.server
import logging
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from typing import Any, Self

__all__ = ["FAULT_KINDS", "FaultyProxy"]

log = logging.getLogger(__name__)

FAULT_KINDS: tuple[str, ...] = ("drop", "503", "slow", "cut")
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection",
                          "te", "trailer", "upgrade"})
_SLOW_DOWN = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
              b"<Message>Please reduce your request rate.</Message></Error>")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultyProxy

    def do_GET(self) -> None:
        self._relay()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("proxy: " + format, *args)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        up = self.proxy.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes,
              *, cut: bool = False) -> None:
        self.send_response(status, reason)
        for key, value in headers:
            if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                self.send_header(key, value)
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length", len(data))) \
            if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data[: len(data) // 2] if cut else data)
            self.proxy._count_bytes(len(data) // 2 if cut else len(data))
        if cut:
            self.wfile.flush()
            self._abort()

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _relay(self) -> None:
        try:
            self._relay_once()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: as networks do
            self.close_connection = True

    def _relay_once(self) -> None:
        body = self._body()
        fault = self.proxy._draw()
        if fault == "drop":
            self._abort()
            return
        if fault == "503":
            self._send(503, "Slow Down", [("Content-Type", "application/xml")], _SLOW_DOWN)
            return
        status, reason, headers, data = self._forward(body)
        if fault == "slow":
            time.sleep(self.proxy.stall_seconds)
        self._send(status, reason, headers, data, cut=fault == "cut" and len(data) > 1)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("proxy: connection from %s ended with an error", client_address,
                  exc_info=True)


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 that injects faults into a fraction of the requests.

    Parameters
    ----------
    upstream : str
        The server's base URL (``http://127.0.0.1:<port>``).
    rate : float
        Fraction of requests that get a fault, 0..1.
    kinds : sequence of str
        Faults drawn from (equally likely): see :data:`FAULT_KINDS`.
    stall_seconds : float
        Delay of a ``"slow"`` reply.
    seed : int
        Seed of the draws.
    """

    def __init__(self, upstream: str, *, rate: float = 0.1,
                 kinds: Sequence[str] = FAULT_KINDS, stall_seconds: float = 3.0,
                 seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate!r}")
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds must be among {FAULT_KINDS}, got {list(kinds)}")
        self.upstream = urllib.parse.urlsplit(upstream)
        self.rate = float(rate)
        self.kinds = tuple(kinds)
        self.stall_seconds = float(stall_seconds)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.bytes_relayed = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _draw(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            self.faults[kind] += 1
            return kind

    def _count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_relayed += n

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="dask-phot-faulty-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the proxy."""
        if self._server is None:
            raise RuntimeError("FaultyProxy is not running")
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def fault_count(self) -> int:
        """Faults injected so far."""
        return sum(self.faults.values())
