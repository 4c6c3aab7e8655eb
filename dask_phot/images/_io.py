"""How mosaic paths become filesystems, file lists, cached copies and byte ranges.

This is the one module of :mod:`dask_phot.images` that knows about URLs: local paths,
``s3://`` and ``http(s)://`` go through fsspec with explicit ``storage_options``. A
FITS name may end with an extension in brackets, as in CFITSIO and DS9:
``s3://bucket/jw01345-o001_t021_nircam_clear-f200w_i2d.fits[WHT]`` names the WHT
extension of that file (:func:`split_extension`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dask_phot import storage

__all__ = [
    "MAX_REQUEST",
    "access_error",
    "cache_directory",
    "cached_copy",
    "expand_urls",
    "fetch_files_ranges",
    "fetch_ranges",
    "is_gzip_name",
    "is_remote",
    "open_fs",
    "split_extension",
]

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
#: Largest single range request, bytes (the read plans split longer ranges).
MAX_REQUEST = 16 * 1024 * 1024
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
_GLOB_CHARS = frozenset("*?[")
_HTTP_PROTOCOLS = frozenset({"http", "https"})
_EXTENSION_RE = re.compile(r"^(?P<path>.+\.(fits|fit|fts)(\.gz)?)\[(?P<ext>[A-Za-z0-9_-]+"
                           r"(\s*,\s*\d+)?)\]$", re.IGNORECASE)


def split_extension(url: str) -> tuple[str, str | None]:
    """``(file, extension)`` of a URL that may end with ``[EXTNAME]``, ``[EXTNAME,VER]``
    or ``[index]`` after a FITS name; ``extension`` is None without one.

    Examples
    --------
    >>> split_extension("s3://stpubdata/jwst/x_i2d.fits[WHT]")
    ('s3://stpubdata/jwst/x_i2d.fits', 'WHT')
    >>> split_extension("mosaics/f[12]00w_sci.fits")
    ('mosaics/f[12]00w_sci.fits', None)
    """
    match = _EXTENSION_RE.match(url)
    if match is None:
        return url, None
    return match["path"], match["ext"].replace(" ", "")


def _protocol(url: str) -> str:
    return storage.protocol(url)


def open_fs(
    url: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` of a URL, with :func:`dask_phot.storage.resolve_options`
    (anonymous S3 unless credentials are given; bounded timeouts and retries)."""
    return storage.open_fs(url, storage_options)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def _full_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path returned by ``fs`` as a URL usable with :func:`open_fs`."""
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def is_remote(url: str) -> bool:
    """Whether a URL is read over the network (not a local path or ``file://``)."""
    return _protocol(url) not in ("file", "local")


def is_gzip_name(url: str) -> bool:
    """Whether a file name says gzip (``.gz``)."""
    return url.lower().endswith(".gz")


def _is_fits_name(path: str) -> bool:
    return path.lower().endswith(FITS_SUFFIXES)


def _expand_one(pattern: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """Files matched by one path, glob or directory/prefix, sorted."""
    fs, path = open_fs(pattern, storage_options)
    protocol = _protocol(pattern)
    if protocol in _HTTP_PROTOCOLS:
        if _GLOB_CHARS & set(pattern):
            raise ValueError(f"cannot glob an http(s) URL: {pattern!r}; list the files")
        return [pattern]
    if _GLOB_CHARS & set(path):
        matches = fs.glob(path, detail=True)
        found = sorted(p for p, info in matches.items() if info.get("type") != "directory")
        if not found:
            raise FileNotFoundError(f"no files match {pattern!r}")
        return [_full_url(fs, p) for p in found]
    if not _is_local(fs) and _is_fits_name(path):
        return [_full_url(fs, path)]  # existence is checked when its header is read
    if pattern.endswith("/") or fs.isdir(path):
        found = sorted(p for p in fs.find(path) if _is_fits_name(p))
        if not found:
            raise FileNotFoundError(f"no FITS files (*.fits, *.fits.gz, ...) under {pattern!r}")
        return [_full_url(fs, p) for p in found]
    if not fs.exists(path):
        raise FileNotFoundError(f"no such file: {pattern!r}")
    return [_full_url(fs, path)]


def expand_urls(
    patterns: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Expand paths, globs and prefixes into file URLs.

    Each entry is expanded on its own (globs and prefixes sorted); the results are
    concatenated in the order of the entries. An extension suffix (``[SCI]``) is
    kept on every file its entry expands to.

    Raises
    ------
    FileNotFoundError
        An entry that matches nothing, named.
    """
    if isinstance(patterns, str | os.PathLike):
        patterns = [patterns]
    urls: list[str] = []
    for pattern in patterns:
        path, ext = split_extension(os.fspath(pattern))
        suffix = f"[{ext}]" if ext else ""
        urls.extend(u + suffix for u in _expand_one(path, storage_options))
    return urls


def cache_directory(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$DASK_PHOT_CACHE``, else ``~/.cache/dask-phot``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DASK_PHOT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dask-phot"


def _cache_name(url: str, info: Mapping[str, Any]) -> str:
    """File name in the cache: a digest of the URL and its version, then its base name."""
    version = next(
        (
            str(info[k])
            for k in ("ETag", "etag", "mtime", "LastModified", "last_modified")
            if k in info
        ),
        "",
    )
    digest = hashlib.sha256(f"{url}\0{info.get('size')}\0{version}".encode()).hexdigest()
    base = url.rstrip("/").rsplit("/", 1)[-1]
    if base.lower().endswith(".gz"):
        base = base[:-3]
    return f"{digest[:16]}-{base}"


def cached_copy(
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    target: str | os.PathLike[str] | None = None,
) -> str:
    """Local, decompressed copy of a gzip-compressed FITS file, fetched once.

    Parameters
    ----------
    url : str
        The compressed file.
    storage_options : dict, optional
        For ``url``.
    cache_dir : path-like, optional
        See :func:`cache_directory`.
    target : path-like, optional
        Exact path of the copy (overrides the name derived from ``url``).

    Returns
    -------
    str
        Path of the decompressed copy.
    """
    fs, path = open_fs(url, storage_options)
    if target is None:
        try:
            info = fs.info(path)
        except (FileNotFoundError, PermissionError) as err:
            raise access_error(url, err) from err
        target = cache_directory(cache_dir) / _cache_name(url, info)
    target = Path(target)
    if target.is_file():
        log.debug("using cached decompressed copy %s of %s", target, url)
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info(
        "%s is gzip-compressed and cannot be read by section: fetching and decompressing "
        "it once into %s",
        url,
        target,
    )
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-", suffix=target.name)
    try:
        with os.fdopen(fd, "wb") as dst, fs.open(path, "rb") as src:
            with gzip.GzipFile(fileobj=src, mode="rb") as gz:
                shutil.copyfileobj(gz, dst, 1 << 20)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(target)


def _check_parts(
    url: str, parts: list[Any], starts: Sequence[int], ends: Sequence[int]
) -> list[bytes]:
    for part, start, end in zip(parts, starts, ends, strict=True):
        if isinstance(part, FileNotFoundError | PermissionError):
            raise access_error(url, part) from part
        if isinstance(part, BaseException):
            raise OSError(f"reading bytes {start}-{end} of {url!r} failed: {part!r}") from part
        if len(part) != end - start:
            raise OSError(
                f"{url!r}: got {len(part)} bytes for the range {start}-{end} "
                f"instead of {end - start} (file truncated, or a server without range requests?)"
            )
    return parts


def fetch_ranges(
    fs: fsspec.AbstractFileSystem, path: str, url: str, starts: Sequence[int], ends: Sequence[int]
) -> list[bytes]:
    """Byte ranges ``[start, end)`` of one file, fetched concurrently where possible.

    Local files are opened once and read with seeks; other filesystems get one
    ``cat_ranges`` call (concurrent requests for s3fs and http).

    Raises
    ------
    FileNotFoundError, PermissionError, OSError
        Naming ``url``; also when a range comes back short.
    """
    starts, ends = list(starts), list(ends)
    if _is_local(fs):
        try:
            with fs.open(path, "rb") as f:
                parts: list[Any] = []
                for start, end in zip(starts, ends, strict=True):
                    f.seek(start)
                    parts.append(f.read(end - start))
        except (FileNotFoundError, PermissionError) as err:
            raise access_error(url, err) from err
    else:
        parts = fs.cat_ranges([path] * len(starts), starts, ends, on_error="return")
    return _check_parts(url, parts, starts, ends)


def fetch_files_ranges(
    files: Sequence[tuple[str, Sequence[int], Sequence[int]]],
    storage_options: Mapping[str, Any] | None = None,
) -> list[list[bytes]]:
    """Byte ranges of several files: ``files`` holds ``(url, starts, ends)``.

    Files on one remote filesystem are fetched in a single concurrent
    ``cat_ranges`` call; local files one after another (:func:`fetch_ranges`).

    Returns
    -------
    list of list of bytes
        Per file, its ranges in order.
    """
    opened = [open_fs(url, storage_options) for url, _, _ in files]
    first = opened[0][0] if opened else None
    if first is None or _is_local(first) or any(fs is not first for fs, _ in opened):
        return [fetch_ranges(fs, path, url, starts, ends)
                for (fs, path), (url, starts, ends) in zip(opened, files, strict=True)]
    paths: list[str] = []
    all_starts: list[int] = []
    all_ends: list[int] = []
    for (_, path), (_, starts, ends) in zip(opened, files, strict=True):
        paths += [path] * len(starts)
        all_starts += list(starts)
        all_ends += list(ends)
    parts = first.cat_ranges(paths, all_starts, all_ends, on_error="return")
    out, at = [], 0
    for url, starts, ends in files:
        n = len(starts)
        out.append(_check_parts(url, parts[at:at + n], starts, ends))
        at += n
    return out


def access_error(url: str, err: Exception) -> Exception:
    """A FileNotFoundError or PermissionError from fsspec, re-worded to name ``url``."""
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(f"no such file: {url!r}")
    if isinstance(err, PermissionError):
        return PermissionError(
            f"access to {url!r} denied ({err}); for a private bucket pass credentials "
            "in storage_options (anonymous access is the default)"
        )
    return err
