"""The on-disk cache of archive replies, offline mode, and the one error archives raise.

Every reply is stored as a Parquet file named by a digest of its :class:`Query` (the
service's name, its URL and the query's parameters), with a JSON file beside it that
records the query in plain text. :class:`ArchiveCache` answers a query from the disk
when it can; in offline mode it never calls the service and a miss is an
:class:`ArchiveError`.

Library calls run inside :func:`calling`, which turns whatever the library raises
(connection refused, an HTTP error, an error document from the service, an
unreadable reply, a truncated result) into one :class:`ArchiveError` naming the
service and the query, and keeps the libraries' warnings out of the caller's way
(they are logged at DEBUG level).

Examples
--------
>>> import tempfile
>>> import pandas as pd
>>> q = Query("IRSA TAP", "https://irsa.ipac.caltech.edu/TAP", {"QUERY": "SELECT 1"})
>>> with tempfile.TemporaryDirectory() as tmp:
...     cache = ArchiveCache(tmp)
...     first = cache.get(q, lambda: pd.DataFrame({"x": [1, 2]}))
...     again = ArchiveCache(tmp, offline=True).get(q, lambda: pd.DataFrame())
...     again["x"].tolist()
[1, 2]
>>> with tempfile.TemporaryDirectory() as tmp:
...     ArchiveCache(tmp, offline=True).get(q, lambda: pd.DataFrame())
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dask_phot.archive._cache.ArchiveError: IRSA TAP (https://irsa.ipac.caltech.edu/TAP), query QUERY=SELECT 1: offline, and no cached reply...
"""  # noqa: E501

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ArchiveCache", "ArchiveError", "Query", "calling", "default_cache_dir",
           "table_to_frame"]

logger = logging.getLogger(__name__)

_MAX_TEXT = 400
_INSTALL_HINT = "pip install 'dask-phot[archive]'"


class ArchiveError(RuntimeError):
    """An archive query that failed; the message names the service and the query."""


def default_cache_dir() -> Path:
    """``$DASK_PHOT_CACHE/archive``, else ``~/.cache/dask-phot/archive``."""
    env = os.environ.get("DASK_PHOT_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "dask-phot"
    return base / "archive"


def _short(text: str, limit: int = _MAX_TEXT) -> str:
    """Whitespace collapsed; a long text keeps its start and its end (an ADQL ``WHERE``)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    head = limit // 3
    return f"{text[:head]} ... {text[-(limit - head - 5):]}"


@dataclass(frozen=True)
class Query:
    """One request to one service: what the cache is keyed by and errors name.

    Parameters
    ----------
    service : str
        Human-readable service name, e.g. ``"IRSA TAP"``.
    url : str
        The service's base URL.
    params : mapping
        The query's parameters (JSON-serialisable), e.g. ``{"QUERY": adql}``.
    """

    service: str
    url: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """Hex digest of the URL and parameters (the cache file name; not the label)."""
        blob = json.dumps({"url": self.url.rstrip("/"), "params": self.params},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def describe(self) -> str:
        """``service (url), query k=v; ...`` for messages.

        Examples
        --------
        >>> Query("MAST", "https://mast.stsci.edu", {"obs_collection": "GALEX"}).describe()
        'MAST (https://mast.stsci.edu), query obs_collection=GALEX'
        """
        text = "; ".join(f"{k}={v}" for k, v in self.params.items() if v is not None)
        return f"{self.service} ({self.url}), query {_short(text)}"


class ArchiveCache:
    """Replies on disk, keyed by their :class:`Query` (service URL and parameters).

    Parameters
    ----------
    directory : path-like, optional
        Where replies are kept; default :func:`default_cache_dir`.
    offline : bool
        Answer from the cache only; a query not in it raises :class:`ArchiveError`.
    refresh : bool
        Ask the services again even when a reply is cached (and replace it).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *,
                 offline: bool = False, refresh: bool = False) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.offline = bool(offline)
        self.refresh = bool(refresh)
        if self.offline and self.refresh:
            raise ValueError("ArchiveCache: offline and refresh exclude each other")

    def __repr__(self) -> str:
        return (f"ArchiveCache({str(self.directory)!r}, offline={self.offline}, "
                f"refresh={self.refresh})")

    def path(self, query: Query) -> Path:
        """The Parquet file of a query's reply (it may not exist)."""
        return self.directory / f"{query.key()}.parquet"

    def load(self, query: Query) -> pd.DataFrame | None:
        """The cached reply, or None (an unreadable file is logged and ignored)."""
        path = self.path(query)
        if not path.exists():
            return None
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # a torn or foreign file: fetch again
            logger.warning("%s: unreadable cache file %s (%s); ignored", query.service, path,
                           _short(str(exc)))
            return None

    def store(self, query: Query, frame: pd.DataFrame) -> Path:
        """Write a reply (atomically) and its query's description; returns the file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(query)
        meta = {"service": query.service, "url": query.url, "params": query.params,
                "rows": len(frame), "columns": [str(c) for c in frame.columns],
                "fetched": datetime.now(UTC).isoformat(timespec="seconds")}
        for target, write in ((path, lambda p: frame.to_parquet(p, index=False)),
                              (path.with_suffix(".json"), lambda p: p.write_text(
                                  json.dumps(meta, indent=1, default=str)))):
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=target.suffix)
            os.close(fd)
            try:
                write(Path(tmp))
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return path

    def get(self, query: Query, fetch: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """The reply to ``query``: from the cache, else from ``fetch()`` (then cached).

        Raises
        ------
        ArchiveError
            Offline and not cached (or whatever ``fetch`` raises).
        """
        if not self.refresh:
            hit = self.load(query)
            if hit is not None:
                logger.debug("%s: cached reply %s", query.describe(), self.path(query).name)
                return hit
        if self.offline:
            raise ArchiveError(f"{query.describe()}: offline, and no cached reply in "
                               f"{self.directory}; run once without offline mode to fill "
                               "the cache")
        frame = fetch()
        self.store(query, frame)
        return frame


# ---------------------------------------------------------------------- library calls
def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        cause = getattr(e, "cause", None)
        todo += [e.__cause__, e.__context__, cause if isinstance(cause, BaseException) else None]


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, without the library's traceback."""
    try:
        import requests
        unreachable: tuple[type[BaseException], ...] = (requests.ConnectionError,
                                                        requests.Timeout)
    except ImportError:  # pragma: no cover - requests comes with pyvo and astroquery
        unreachable = ()
    unreachable += (ConnectionError, TimeoutError)
    for e in _causes(exc):
        if isinstance(e, unreachable):
            return f"the service cannot be reached ({type(e).__name__}: {_short(str(e))})"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None and isinstance(getattr(exc, "code", None), int):
        status = exc.code  # pyvo's DALServiceError
    text = _short(str(exc)) or repr(exc)
    kind = type(exc).__name__
    if kind == "DALQueryError":
        return f"the service rejected the query: {text}"
    if status is not None and str(status) not in text:
        return f"HTTP {status}: {text}"
    return f"{kind}: {text}"


@contextlib.contextmanager
def calling(query: Query) -> Iterator[list[warnings.WarningMessage]]:
    """Run library code for ``query``; any failure becomes one :class:`ArchiveError`.

    Warnings are recorded (and logged at DEBUG level) rather than shown; a
    truncated result (pyvo's overflow warning) is an error, since a silently
    shortened catalog is worse than none.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield caught
        except ArchiveError:
            raise
        except ImportError as exc:
            raise ArchiveError(f"{query.describe()}: needs the optional packages pyvo and "
                               f"astroquery ({_INSTALL_HINT}): {exc}") from None
        except Exception as exc:
            logger.debug("%s failed", query.describe(), exc_info=True)
            raise ArchiveError(f"{query.describe()}: {_reason(exc)}") from None
    for w in caught:
        if type(w.message).__name__ == "DALOverflowWarning":
            raise ArchiveError(f"{query.describe()}: the reply was truncated by the service's "
                               f"row limit ({_short(str(w.message))}); ask for smaller pieces "
                               "or a larger maxrec")
        logger.debug("%s: %s: %s", query.service, w.category.__name__, _short(str(w.message)))


# ---------------------------------------------------------------------- tables
def _column(col: Any) -> Any:
    """An astropy column as a pandas-ready array; masked values are NaN/NA/None."""
    arr = np.asarray(col)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    mask = np.asarray(getattr(col, "mask", np.zeros(len(arr), bool)), dtype=bool)
    if mask.ndim != 1:
        mask = np.zeros(len(arr), bool)
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8", "replace")
    if arr.dtype.kind in "iub":
        dtype = "boolean" if arr.dtype.kind == "b" else "Int64"
        values = pd.array(np.where(mask, arr.dtype.type(0), arr), dtype=dtype)
        values[mask] = pd.NA
        return values
    if arr.dtype.kind == "f":
        return np.where(mask, np.nan, arr.astype(np.float64))
    out = arr.astype(object)
    out[mask] = None
    return np.array([x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in out],
                    dtype=object)


def table_to_frame(table: Any, *, lowercase: bool = True) -> pd.DataFrame:
    """An astropy Table as a DataFrame that Parquet stores faithfully.

    Integer columns become nullable ``Int64``, masked floats NaN, masked strings
    None; columns with more than one value per row are dropped (logged).

    Examples
    --------
    >>> from astropy.table import MaskedColumn, Table
    >>> t = Table({"ID": [1, 2], "Flux": MaskedColumn([1.5, 0.0], mask=[False, True])})
    >>> table_to_frame(t).to_dict("list")
    {'id': [1, 2], 'flux': [1.5, nan]}
    """
    data: dict[str, Any] = {}
    for name in table.colnames:
        col = table[name]
        if getattr(col, "ndim", 1) > 1:
            logger.info("column %r has shape %s per row; dropped", name, col.shape[1:])
            continue
        key = str(name).lower() if lowercase else str(name)
        data[key] = _column(col)
    return pd.DataFrame(data, index=pd.RangeIndex(len(table)))
