"""Storage: how a path or URL becomes a filesystem, and what never leaves this process.

Every file dask-phot reads or writes (priors, mosaics, the output catalog) goes
through fsspec with explicit ``storage_options`` (the run configuration's
``[storage]`` table, see :func:`dask_phot.config.storage_options`). This module
adds what all of them share:

* :func:`resolve_options`: the options for one URL. Local paths take none; S3
  is anonymous unless credentials are given, and gets bounded timeouts and
  retries (:data:`S3_CLIENT_DEFAULTS`: transient errors, 5xx replies and
  timeouts are retried with exponential backoff, a fixed number of times) that
  the user's own ``config_kwargs`` override key by key;
* :func:`check_endpoint`: an S3 endpoint that cannot be reached fails at once, in
  one line naming ``storage.endpoint_url``, instead of after minutes of retries;
* :func:`redact` and :func:`is_credential`: credentials (keys, secrets, tokens,
  profiles, passwords) are dropped from anything written out: catalogs, reports,
  logs, job specifications, the resume key;
* :func:`file_identity`: what a file is (its size, and its ETag or modification
  time) for the resume key, without reading it.

Examples
--------
>>> redact({"anon": False, "key": "AKIA...", "secret": "s3cr3t",
...         "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000",
...                           "aws_session_token": "t"}})
{'anon': False, 'client_kwargs': {'endpoint_url': 'http://127.0.0.1:9000'}}
>>> resolve_options("/data/x.fits", {"anon": False})
{}
>>> resolve_options("s3://b/x.fits", {})["config_kwargs"]["retries"]
{'max_attempts': 5, 'mode': 'standard'}
"""

from __future__ import annotations

import copy
import importlib
import re
import socket
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "S3_CLIENT_DEFAULTS",
    "StorageError",
    "check_endpoint",
    "file_identity",
    "is_credential",
    "is_remote",
    "network_errors",
    "open_fs",
    "protocol",
    "redact",
    "resolve_options",
]

#: botocore client settings of every S3 filesystem (``config_kwargs`` of s3fs):
#: connections that do not open in 5 s or stall for 20 s fail and are retried;
#: "standard" retries (throttling, 5xx, dropped connections, timeouts) back off
#: exponentially with jitter, at most 20 s, for at most ``max_attempts`` tries.
S3_CLIENT_DEFAULTS: Mapping[str, Any] = {
    "connect_timeout": 5,
    "read_timeout": 20,
    "retries": {"max_attempts": 5, "mode": "standard"},
}
_S3_PROTOCOLS = frozenset({"s3", "s3a"})
_CREDENTIAL_RE = re.compile(r"(key|secret|token|passw|profile|session|credential|signature)",
                            re.IGNORECASE)
#: Storage option names that match the credential pattern but are not credentials.
_NOT_CREDENTIALS = frozenset({"anon", "endpoint_url", "region_name", "use_ssl",
                              "requester_pays", "sse_kms_key_id_is_public"})
_PROBE_TIMEOUT = 3.0


class StorageError(OSError):
    """Storage that cannot be used (an endpoint that cannot be reached, a bad URL).

    The message names the configuration key (``storage.endpoint_url``) or the path.
    """

    __module__ = "dask_phot.storage"


def network_errors() -> tuple[type[BaseException], ...]:
    """Errors of the S3 and HTTP client stack that are not :class:`OSError` (botocore's
    and aiohttp's, when installed): what a failing network raises after the retries."""
    errors: list[type[BaseException]] = []
    for module, name in (("botocore.exceptions", "BotoCoreError"), ("aiohttp", "ClientError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except ImportError:
            continue
    return tuple(errors)


def protocol(url: str) -> str:
    """``"s3"``, ``"https"``...; ``"file"`` for local paths.

    Examples
    --------
    >>> protocol("s3://bucket/key"), protocol("/data/x.fits"), protocol("C:/x")
    ('s3', 'file', 'file')
    """
    head, sep, _ = str(url).partition("://")
    return head.lower() if sep and len(head) > 1 else "file"


def is_remote(url: str) -> bool:
    """True for URLs other than local paths and ``file://``."""
    return protocol(url) not in ("file", "local")


def is_credential(name: str) -> bool:
    """Whether a storage option's name says it holds a credential.

    Examples
    --------
    >>> [is_credential(k) for k in ("secret", "aws_access_key_id", "anon", "endpoint_url")]
    [True, True, False, False]
    """
    return name not in _NOT_CREDENTIALS and bool(_CREDENTIAL_RE.search(name))


def redact(options: Any) -> Any:
    """A copy of ``options`` (nested dicts and lists) without credential entries.

    Entries whose name :func:`is_credential` are dropped at any depth; a
    ``storage.*`` value that is a URL keeps its host but loses a user and
    password (``https://user:pw@host/`` -> ``https://host/``).
    """
    if isinstance(options, Mapping):
        return {k: redact(v) for k, v in options.items() if not is_credential(str(k))}
    if isinstance(options, list | tuple):
        return type(options)(redact(v) for v in options)
    if isinstance(options, str) and "@" in options and "://" in options:
        parts = urllib.parse.urlsplit(options)
        if parts.username or parts.password:
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return options


def _s3_config(user: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = copy.deepcopy(dict(S3_CLIENT_DEFAULTS))
    for key, value in (user or {}).items():
        if key == "retries" and isinstance(value, Mapping):
            merged["retries"] = {**merged["retries"], **value}
        else:
            merged[key] = value
    return merged


def resolve_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options for one URL.

    Local paths take none. For ``s3://`` URLs ``anon`` defaults to True unless
    credentials are given (``key``, ``secret``, ``token``, ``profile``...), and
    ``config_kwargs`` gets :data:`S3_CLIENT_DEFAULTS` under the user's own
    values; other protocols get ``storage_options`` as they are.
    """
    proto = protocol(url)
    if proto == "file":
        return {}
    options = copy.deepcopy(dict(storage_options or {}))
    if proto in _S3_PROTOCOLS:
        if "anon" not in options:
            options["anon"] = not any(is_credential(k) for k in options)
        options["config_kwargs"] = _s3_config(options.get("config_kwargs"))
    return options


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(filesystem, path)`` of a URL or local path, with :func:`resolve_options`."""
    import fsspec

    return fsspec.core.url_to_fs(str(url), **resolve_options(str(url), storage_options))


def _endpoint(storage_options: Mapping[str, Any] | None) -> str | None:
    opts = storage_options or {}
    client = opts.get("client_kwargs") or {}
    return client.get("endpoint_url") or opts.get("endpoint_url")


def check_endpoint(storage_options: Mapping[str, Any] | None, urls: Iterable[str],
                   *, timeout: float = _PROBE_TIMEOUT) -> None:
    """Fail at once when the S3 endpoint that ``urls`` need cannot be reached.

    Only a TCP connection is attempted (no request, no credentials sent), and only
    when an ``s3://`` URL is among ``urls`` and an ``endpoint_url`` is set.

    Raises
    ------
    StorageError
        ``storage.endpoint_url: cannot reach <url> (<reason>)``.
    """
    endpoint = _endpoint(storage_options)
    if not endpoint or not any(protocol(u) in _S3_PROTOCOLS for u in urls):
        return
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageError(f"storage.endpoint_url: {endpoint!r} is not an http(s):// URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StorageError(f"storage.endpoint_url: cannot reach {endpoint} ({reason}); "
                           "is the S3 server running, and the URL right?") from None


def file_identity(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """What a file is, without reading it: ``"<size>:<ETag or mtime>"``.

    A rewritten, truncated or replaced file gets another identity; a copy of a
    folder elsewhere keeps the sizes (and, with ``cp -p``, the times).

    Raises
    ------
    FileNotFoundError
        No such file.
    """
    fs, path = open_fs(url, storage_options)
    info = fs.info(path)
    version = next((str(info[k]) for k in ("ETag", "etag", "VersionId", "mtime",
                                           "LastModified", "last_modified", "created")
                    if info.get(k) not in (None, "")), "")
    return f"{info.get('size')}:{version.strip(chr(34))}"
