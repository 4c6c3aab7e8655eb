"""A local S3 endpoint (moto's server mode) that counts the bytes it serves.

Used by the test suite and by ``dask-phot demo``, which serves its simulated field from
it so that the whole pipeline (header-only indexing, ranged reads of sky regions) runs
against a real HTTP S3 API without any network access or cloud account.

Notes
-----
* The server binds to ``127.0.0.1`` only, on a free port chosen by the operating system
  (or the one asked for), and runs in a daemon thread of the current process.
* Every response body is counted per request path (``/bucket/key``), so tests can check
  how many bytes a reader actually pulled (:meth:`LocalS3Server.bytes_served`).
* Credentials: moto's server does not check signatures, so nothing is put in
  ``os.environ``. Clients of this class get explicit dummy credentials through
  :meth:`LocalS3Server.storage_options` (``key="testing", secret="testing"``) and the
  bucket administration calls (:meth:`create_bucket`, :meth:`upload`) pass the same
  dummies to their own boto3 client.
* Anonymous access: :meth:`create_bucket` with ``public=True`` attaches a bucket policy
  that grants ``s3:GetObject`` and ``s3:ListBucket`` to ``"*"``, as a public AWS bucket
  has, and :meth:`upload` gives objects in such a bucket the ``public-read`` ACL. moto
  (5.x) does check unsigned requests: a GET of an object in a bucket without a public
  policy or ACL is refused (403), as on AWS. Its one quirk: it authorizes an unsigned
  HEAD against the action ``s3:HeadObject`` (not an AWS action; AWS uses
  ``s3:GetObject``), so the policy alone lets anonymous clients GET but not HEAD an
  object; the ``public-read`` ACL covers both. Listing is not checked by moto.
* Ranged reads: moto answers a ``Range`` GET by reading the whole object and slicing it,
  so every range of a 200 MB mosaic costs 200 MB of copying. :class:`_RangeReads` answers
  plain single-range GETs of stored objects (no conditions, versions or encryption keys;
  anonymous only in public buckets, as moto would) from the object's buffer directly, with
  S3's headers (206, ``Content-Range``, ``ETag``); everything else goes to moto.
* moto keeps its buckets in process-wide state: two servers in one process see the same
  buckets, and ``moto.mock_aws`` (which resets that state and intercepts botocore calls
  in-process) must not be active while a client talks to this server over HTTP.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Self
from urllib.parse import unquote

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = ["LocalS3Server"]

log = logging.getLogger(__name__)

#: Dummy credentials handed to clients; moto does not verify them.
DUMMY_KEY = "testing"
DUMMY_SECRET = "testing"
REGION = "us-east-1"
LOOPBACK = "127.0.0.1"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _request_handler_base() -> type[WSGIRequestHandler]:
    """Moto's request handler (it keeps S3 metadata headers with underscores) if present."""
    try:
        from moto.moto_server.werkzeug_app import MotoRequestHandler
    except ImportError:  # older moto: plain werkzeug handler
        return WSGIRequestHandler
    return MotoRequestHandler


class _ByteCounter:
    """Thread-safe sums of response-body bytes and request counts per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: defaultdict[str, int] = defaultdict(int)
        self._requests: defaultdict[str, int] = defaultdict(int)

    def add(self, path: str, nbytes: int, *, new_request: bool = False) -> None:
        with self._lock:
            self._bytes[path] += nbytes
            if new_request:
                self._requests[path] += 1

    def total(self, key_substring: str | None, *, requests: bool = False) -> int:
        table = self._requests if requests else self._bytes
        with self._lock:
            return sum(
                n for path, n in table.items() if key_substring is None or key_substring in path
            )

    def reset(self) -> None:
        with self._lock:
            self._bytes.clear()
            self._requests.clear()


class _CountingMiddleware:
    """WSGI middleware that adds each response body's length to a :class:`_ByteCounter`."""

    def __init__(self, app: WSGIApp, counter: _ByteCounter) -> None:
        self.app = app
        self.counter = counter

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        self.counter.add(path, 0, new_request=True)
        return self._count(path, self.app(environ, start_response))

    def _count(self, path: str, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                self.counter.add(path, len(chunk))
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CONDITIONS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
               "HTTP_IF_UNMODIFIED_SINCE",
               "HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION_CUSTOMER_ALGORITHM")


class _RangeReads:
    """WSGI middleware: single-range GETs of stored objects read from moto's buffer."""

    def __init__(self, app: WSGIApp, public: set[str]) -> None:
        self.app = app
        self.public = public

    def _object(self, environ: dict[str, Any]) -> Any:
        """The moto key a plain ranged GET asks for, or None (then moto answers)."""
        if (environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING")
                or any(k in environ for k in _CONDITIONS)):
            return None
        host = environ.get("HTTP_HOST", "").split(":")[0]
        if host not in (LOOPBACK, "localhost"):  # virtual-hosted style: leave it to moto
            return None
        bucket, _, key = unquote(environ.get("PATH_INFO", "")).lstrip("/").partition("/")
        if not key or (bucket not in self.public and "HTTP_AUTHORIZATION" not in environ):
            return None
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        try:
            found = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_object(bucket, key)
        except Exception:  # no such bucket, or a moto without this API: moto answers
            return None
        ok = found is not None and hasattr(found, "_value_buffer") and hasattr(found, "lock")
        return found if ok else None

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _RANGE_RE.match(environ.get("HTTP_RANGE", "").strip())
        found = self._object(environ) if match else None
        size = int(getattr(found, "contentsize", 0) or 0)
        if found is None or match is None or int(match[1]) >= size:
            return self.app(environ, start_response)
        start = int(match[1])
        end = min(int(match[2]) if match[2] else size - 1, size - 1)
        with found.lock:
            found._value_buffer.seek(start)
            body = found._value_buffer.read(end - start + 1)
        start_response("206 Partial Content", [
            ("Content-Type", str(getattr(found, "content_type", None)
                                 or "binary/octet-stream")),
            ("Content-Length", str(len(body))), ("Accept-Ranges", "bytes"),
            ("Content-Range", f"bytes {start}-{end}/{size}"), ("ETag", str(found.etag)),
            ("Last-Modified", str(found.last_modified_RFC1123))])
        return [body]


def _quiet_handler() -> type[WSGIRequestHandler]:
    """A request handler that logs through this module's logger instead of stderr."""
    base = _request_handler_base()

    class _Handler(base):  # type: ignore[valid-type,misc]
        def log(self, type: str, message: str, *args: Any) -> None:
            level = logging.WARNING if type == "error" else logging.DEBUG
            log.log(level, "%s %s", self.address_string(), message % args)

    return _Handler


class LocalS3Server:
    """A moto S3 endpoint on ``127.0.0.1`` that counts the bytes it serves.

    Parameters
    ----------
    port : int
        Port to bind; 0 (default) lets the operating system pick a free one.

    Examples
    --------
    >>> with LocalS3Server() as server:
    ...     server.create_bucket("demo")
    ...     server.endpoint_url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, *, port: int = 0) -> None:
        if not 0 <= int(port) < 65536:
            raise ValueError(f"port must be in [0, 65535], got {port!r}")
        self._port = int(port)
        self._counter = _ByteCounter()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._public: set[str] = set()

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> Self:
        """Bind the port and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError(f"LocalS3Server already running at {self.endpoint_url}")
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )

        app = _CountingMiddleware(
            _RangeReads(DomainDispatcherApplication(create_backend_app), self._public),
            self._counter)
        self._server = make_server(
            LOOPBACK, self._port, app, threaded=True, request_handler=_quiet_handler()
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dask-phot-s3server", daemon=True
        )
        self._thread.start()
        log.info("local S3 endpoint serving at %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = self._client = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        log.info("local S3 endpoint at http://%s:%d stopped", LOOPBACK, server.server_port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("LocalS3Server is not running: call start() or use it in a with")
        return f"http://{LOOPBACK}:{self._server.server_port}"

    # -- clients ----------------------------------------------------------------------
    def storage_options(self, *, anon: bool = False) -> dict[str, Any]:
        """fsspec/s3fs ``storage_options`` for this endpoint.

        Parameters
        ----------
        anon : bool
            Unsigned (anonymous) requests; otherwise dummy credentials.

        Returns
        -------
        dict
            ``{"anon": ..., "key": ..., "secret": ..., "client_kwargs": {...}}``.
        """
        options: dict[str, Any] = {
            "anon": anon,
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        }
        if not anon:
            options.update(key=DUMMY_KEY, secret=DUMMY_SECRET)
        return options

    def boto3_client(self) -> Any:
        """A boto3 S3 client for this endpoint, with explicit dummy credentials."""
        if self._client is None:
            import boto3

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                aws_access_key_id=DUMMY_KEY,
                aws_secret_access_key=DUMMY_SECRET,
            )
        return self._client

    def create_bucket(self, name: str, *, public: bool = True) -> None:
        """Create a bucket (no error if this server already has it).

        Parameters
        ----------
        name : str
            Bucket name.
        public : bool
            Attach a policy letting anyone (``"*"``) get and list objects.
        """
        client = self.boto3_client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            log.debug("bucket %s already exists", name)
        if public:
            client.put_bucket_policy(Bucket=name, Policy=json.dumps(_public_policy(name)))
            self._public.add(name)
        elif name in self._public:
            client.delete_bucket_policy(Bucket=name)
            self._public.discard(name)

    def upload(self, local_path: str | os.PathLike[str], bucket: str, key: str) -> str:
        """Upload a local file; returns its ``s3://bucket/key`` URL.

        Objects in a bucket made public by :meth:`create_bucket` get the
        ``public-read`` ACL (see the module notes).

        Raises
        ------
        FileNotFoundError
            If ``local_path`` does not exist.
        """
        if not os.path.isfile(local_path):
            raise FileNotFoundError(f"cannot upload {os.fspath(local_path)!r}: no such file")
        extra = {"ACL": "public-read"} if bucket in self._public else None
        self.boto3_client().upload_file(os.fspath(local_path), bucket, key, ExtraArgs=extra)
        return f"s3://{bucket}/{key}"

    # -- accounting -------------------------------------------------------------------
    def bytes_served(self, key_substring: str | None = None) -> int:
        """Response-body bytes served since the last reset.

        Parameters
        ----------
        key_substring : str, optional
            Count only requests whose path (``/bucket/key``) contains this string.
        """
        return self._counter.total(key_substring)

    def requests_served(self, key_substring: str | None = None) -> int:
        """Number of requests since the last reset (filtered as :meth:`bytes_served`)."""
        return self._counter.total(key_substring, requests=True)

    def reset_counts(self) -> None:
        """Zero the byte and request counters."""
        self._counter.reset()


def _public_policy(bucket: str) -> dict[str, Any]:
    """A bucket policy granting anonymous read and list."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
            {
                "Sid": "PublicList",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
        ],
    }
