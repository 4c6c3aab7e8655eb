"""An index of a band's mosaics, built from their headers alone, and mosaic selection."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import fsspec
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from dask_phot import storage
from dask_phot.images import _io
from dask_phot.images._fits import (
    BLOCK,
    ExtensionSpec,
    FitsImageLayout,
    MosaicError,
    celestial_wcs,
    scan_image_hdu,
)
from dask_phot.images._tiled import TiledImage
from dask_phot.images.frames import icrs_to_pixel, pixel_to_icrs

__all__ = ["Mosaic", "NoiseKind", "assign_mosaics", "build_index", "companion", "covering",
           "select_mosaic"]

log = logging.getLogger(__name__)

NoiseKind = Literal["weight", "uncertainty", "variance", "none"]
NOISE_KINDS: tuple[str, ...] = ("weight", "uncertainty", "variance", "none")
_FIRST_READ = 4 * BLOCK

PathList = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True, eq=False)
class Mosaic:
    """One mosaic (science image and optional noise map) of a band, from its headers.

    Attributes
    ----------
    url : str
        File the pixels are read from (for a gzip-compressed source: the local
        decompressed copy).
    noise_url : str or None
        Same for the noise map.
    noise_kind : {"weight", "uncertainty", "variance", "none"}
        What the noise map holds.
    band : str
        Band name.
    shape : tuple of int
        ``(ny, nx)``.
    wcs : astropy.wcs.WCS
        Celestial WCS of the image (0-based pixels in the astropy API).
    bitpix, bscale, bzero, blank, data_offset
        Pixel storage of the science image (:class:`~dask_phot.images._fits.FitsImageLayout`).
    noise_bitpix, noise_bscale, noise_bzero, noise_blank, noise_data_offset
        Same for the noise map (None without one).
    center : tuple of float
        ICRS ``(ra, dec)`` of the central pixel, degrees (whatever the WCS's frame).
    footprint : tuple of (ra, dec)
        ICRS positions of the four outer pixel corners, degrees.
    source_url, noise_source_url : str or None
        The URLs given (differ from ``url``/``noise_url`` for cached gzip files).
    version, noise_version : str
        Size and ETag or modification time of the files read, when indexed
        (:func:`dask_phot.storage.file_identity`: one metadata request per remote
        file): the row cache's entries are keyed by them, so that an object replaced
        at the same URL is read afresh.
    header : astropy.io.fits.Header
        The science image header (calibration keywords, etc.).
    tiles, noise_tiles : TiledImage or None
        The tiles of a tile-compressed (fpack) image or noise map
        (:mod:`dask_phot.images._tiled`), None for a plain one.
    """

    url: str
    noise_url: str | None
    noise_kind: NoiseKind
    band: str
    shape: tuple[int, int]
    wcs: WCS = field(repr=False)
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None
    data_offset: int
    noise_bitpix: int | None
    noise_bscale: float | None
    noise_bzero: float | None
    noise_blank: int | None
    noise_data_offset: int | None
    center: tuple[float, float]
    footprint: tuple[tuple[float, float], ...]
    source_url: str
    noise_source_url: str | None = None
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    tiles: TiledImage | None = field(default=None, repr=False)
    noise_tiles: TiledImage | None = field(default=None, repr=False)
    version: str = ""
    noise_version: str = ""

    @property
    def pixel_scale_arcsec(self) -> float:
        """Mean pixel scale, arcsec/pixel."""
        return float(np.mean(proj_plane_pixel_scales(self.wcs)) * 3600.0)

    @property
    def radius_deg(self) -> float:
        """Largest angular distance from the centre to a footprint corner, degrees."""
        ra, dec = np.asarray(self.footprint).T
        return float(np.max(_separation_deg(self.center[0], self.center[1], ra, dec)))


def _separation_deg(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Great-circle distance (haversine), degrees."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


class _RangeReader:
    """``read(start, end)`` on one file; empty past its end (size learned lazily)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
        self.fs, self.path, self.url = fs, path, url
        self.size: int | None = None

    def __call__(self, start: int, end: int) -> bytes:
        if self.size is not None:
            end = min(end, self.size)
            if start >= end:
                return b""
        try:
            data = self.fs.cat_file(self.path, start=start, end=end)
        except (FileNotFoundError, PermissionError) as err:
            raise _io.access_error(self.url, err) from err
        except Exception:
            # a range past the end of the file is an error for S3 and HTTP (416)
            if start == 0 or start < (size := int(self.fs.size(self.path))):
                raise
            self.size = size
            return b""
        if len(data) > end - start:
            raise OSError(
                f"{self.url!r}: asked for {end - start} bytes, got {len(data)}: the server "
                "ignores range requests, so mosaics cannot be read by section from it"
            )
        if len(data) < end - start:
            self.size = start + len(data)
        return data


def _read_layout(
    url: str, storage_options: Mapping[str, Any] | None, cache_dir: str | os.PathLike[str] | None
) -> tuple[str, FitsImageLayout, str]:
    """``(file read from, layout, its version)`` of a URL (``[EXT]`` suffix allowed); gzip
    files are indexed via a local copy."""
    given, ext = _io.split_extension(url)
    extension = ExtensionSpec.parse(ext) if ext else None
    path_url = given
    first = b""
    if not _io.is_gzip_name(path_url):
        fs, path = _io.open_fs(path_url, storage_options)
        reader = _RangeReader(fs, path, path_url)
        first = reader(0, _FIRST_READ)
    if _io.is_gzip_name(path_url) or first[:2] == _io.GZIP_MAGIC:
        path_url = _io.cached_copy(given, storage_options=storage_options, cache_dir=cache_dir)
        fs, path = _io.open_fs(path_url, storage_options)
        reader, first = _RangeReader(fs, path, path_url), b""
    try:
        layout, nbytes = scan_image_hdu(reader, path_url, first=first, extension=extension)
    except MosaicError as err:
        if path_url == given:
            raise
        raise MosaicError(f"{err} (decompressed copy of {given})") from err
    log.debug("indexed %s from %d header bytes (HDU %d)", url, nbytes, layout.hdu_index)
    return path_url, layout, storage.file_identity(path_url, storage_options)


def _corners(wcs: WCS, shape: tuple[int, int]) -> tuple[tuple[float, float], ...]:
    ny, nx = shape
    x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = pixel_to_icrs(wcs, x, y)
    return tuple((float(r) % 360.0, float(d)) for r, d in zip(ra, dec, strict=True))


def _make_mosaic(
    urls: tuple[str, str | None],
    read: tuple[str, str | None],
    layouts: tuple[FitsImageLayout, FitsImageLayout | None],
    versions: tuple[str, str],
    noise_kind: NoiseKind,
    band: str,
) -> Mosaic:
    sci, noise = layouts
    wcs = celestial_wcs(sci.header, urls[0])
    if noise is not None and noise.shape != sci.shape:
        raise MosaicError(
            f"noise map {urls[1]!r} has shape {noise.shape}, "
            f"but its image {urls[0]!r} has shape {sci.shape}"
        )
    ny, nx = sci.shape
    ra, dec = (float(v[0]) for v in pixel_to_icrs(wcs, (nx - 1) / 2.0, (ny - 1) / 2.0))
    return Mosaic(
        url=read[0],
        noise_url=read[1],
        noise_kind=noise_kind,
        band=band,
        shape=sci.shape,
        wcs=wcs,
        bitpix=sci.bitpix,
        bscale=sci.bscale,
        bzero=sci.bzero,
        blank=sci.blank,
        data_offset=sci.data_offset,
        noise_bitpix=None if noise is None else noise.bitpix,
        noise_bscale=None if noise is None else noise.bscale,
        noise_bzero=None if noise is None else noise.bzero,
        noise_blank=None if noise is None else noise.blank,
        noise_data_offset=None if noise is None else noise.data_offset,
        center=(float(ra) % 360.0, float(dec)),
        footprint=_corners(wcs, sci.shape),
        source_url=urls[0],
        noise_source_url=urls[1],
        header=sci.header,
        tiles=sci.tiles,
        noise_tiles=None if noise is None else noise.tiles,
        version=versions[0],
        noise_version=versions[1],
    )


def _pair_noise(
    images: list[str], noise: list[str] | None, noise_kind: str
) -> tuple[list[str | None], NoiseKind]:
    if noise_kind not in NOISE_KINDS:
        raise ValueError(f"noise_kind must be one of {NOISE_KINDS}, got {noise_kind!r}")
    if noise is None:
        return [None] * len(images), "none"
    if noise_kind == "none":
        raise ValueError("noise maps were given with noise_kind='none'; say what they hold")
    if len(noise) != len(images):
        raise ValueError(
            f"{len(images)} image(s) {images} but {len(noise)} noise map(s) {noise}: "
            "the lists must pair one to one (globs pair in sorted order)"
        )
    return list(noise), noise_kind  # type: ignore[return-value]


_T = TypeVar("_T")
_R = TypeVar("_R")

#: Headers read at once: a remote header costs a request's latency, not CPU.
INDEX_THREADS = 16


def in_threads(func: Callable[[_T], _R], items: Iterable[_T],
               threads: int = INDEX_THREADS) -> list[_R]:
    """``[func(x) for x in items]``, run in up to ``threads`` threads.

    For latency-bound work (the headers of remote files). The results, and the error
    raised if any call fails, follow the order of ``items``, as the loop's would.
    """
    items = list(items)
    if len(items) < 2 or threads < 2:
        return [func(x) for x in items]
    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="dask-phot-index") as pool:
        return list(pool.map(func, items))


def _named(url: str, func: Any, *args: Any) -> Any:
    """``func(*args)``, its errors about the file's content re-raised naming ``url``."""
    try:
        return func(*args)
    except MosaicError:  # names the file and its HDUs already
        raise
    except (ValueError, KeyError, TypeError, IndexError) as err:
        if url in str(err):
            raise
        raise ValueError(f"{url}: {type(err).__name__}: {err}") from err


def build_index(
    images: PathList,
    noise: PathList | None = None,
    *,
    noise_kind: NoiseKind = "weight",
    band: str,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Mosaic]:
    """Index a band's mosaics from their FITS headers, without reading pixel data.

    Parameters
    ----------
    images : path, URL, glob, prefix or list of them
        Local paths or globs, ``s3://bucket/prefix/`` prefixes or globs,
        ``http(s)://`` URLs. Globs and prefixes expand in sorted order. A FITS
        name may end with the extension to read, ``x_i2d.fits[SCI]`` (EXTNAME,
        ``[SCI,2]`` with EXTVER, or ``[1]`` an HDU index); without one the first
        2-D image HDU is read.
    noise : same as ``images``, optional
        Noise maps, paired one to one with the expanded ``images``: other files,
        or extensions of the same ones (``x_i2d.fits[WHT]``, ``x_i2d.fits[ERR]``).
    noise_kind : {"weight", "uncertainty", "variance", "none"}
        What the noise maps hold: inverse variance, standard deviation or variance.
        Without ``noise`` it is taken as "none".
    band : str
        Band name stored on each mosaic.
    storage_options : dict, optional
        fsspec options for remote URLs; S3 reads are anonymous unless this sets
        ``anon`` or passes credentials.
    cache_dir : path-like, optional
        Where gzip-compressed files are decompressed once (default
        ``$DASK_PHOT_CACHE`` or ``~/.cache/dask-phot``).

    Returns
    -------
    list of Mosaic
        In the order of the expanded ``images``.

    Raises
    ------
    FileNotFoundError
        A path or pattern that matches nothing.
    MosaicError
        A file that is not a FITS image, without the extension asked for, an
        image without a celestial WCS, or a noise map whose shape differs from
        its image (a ``ValueError``, as are mismatched lists).
    """
    if not band:
        raise ValueError("band must be a non-empty string")
    image_urls = _io.expand_urls(images, storage_options)
    noise_urls = None if noise is None else _io.expand_urls(noise, storage_options)
    paired, kind = _pair_noise(image_urls, noise_urls, noise_kind)
    files = [u for pair in zip(image_urls, paired, strict=True) for u in pair if u is not None]
    read = dict(zip(files, in_threads(
        lambda u: _named(u, _read_layout, u, storage_options, cache_dir), files), strict=True))
    index = []
    for url, noise_url in zip(image_urls, paired, strict=True):
        read_url, layout, version = read[url]
        noise_read, noise_layout, noise_version = (None, None, "") if noise_url is None \
            else read[noise_url]
        index.append(_named(url, _make_mosaic, (url, noise_url), (read_url, noise_read),
                            (layout, noise_layout), (version, noise_version), kind, band))
    log.info("indexed %d mosaic(s) of band %s", len(index), band)
    return index


def companion(
    mosaic: Mosaic,
    url: str,
    *,
    band: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Mosaic:
    """A map on ``mosaic``'s pixel grid (a coverage or context extension, which has no
    WCS of its own in JWST and HST products) as a Mosaic with ``mosaic``'s WCS.

    Parameters
    ----------
    mosaic : Mosaic
        The science mosaic whose grid the map shares.
    url : str
        The map, e.g. ``x_i2d.fits[CON]`` or ``x_drz.fits[CTX]``.
    band : str, optional
        Band name of the result (default ``mosaic.band``).
    storage_options, cache_dir
        As for :func:`build_index`.

    Raises
    ------
    MosaicError
        The map cannot be read, or its shape differs from the mosaic's.
    """
    read_url, layout, version = _read_layout(url, storage_options, cache_dir)
    if layout.shape != mosaic.shape:
        raise MosaicError(f"{url} has shape {layout.shape}, but the mosaic "
                          f"{mosaic.source_url} whose grid it should share has {mosaic.shape}")
    return dataclasses.replace(
        mosaic, url=read_url, noise_url=None, noise_kind="none", band=band or mosaic.band,
        bitpix=layout.bitpix, bscale=layout.bscale, bzero=layout.bzero, blank=layout.blank,
        data_offset=layout.data_offset, noise_bitpix=None, noise_bscale=None, noise_bzero=None,
        noise_blank=None, noise_data_offset=None, source_url=url, noise_source_url=None,
        header=layout.header, tiles=layout.tiles, noise_tiles=None, version=version,
        noise_version="")


def _pixel_placement(
    mosaic: Mosaic, ra: Any, dec: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel positions and centrality of positions on a mosaic (vectorised).

    Centrality is the distance from the mosaic's central pixel in units of its size,
    ``hypot(dx / nx, dy / ny)``, as in the COSMOS notebook; it is infinite for
    positions beyond the mosaic's radius (where a TAN projection can fold back onto
    the pixel grid; their pixel positions are NaN) or without finite pixel
    coordinates. Positions are ICRS whatever the mosaic's frame.
    """
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    near = _separation_deg(mosaic.center[0], mosaic.center[1], ra, dec) <= (
        mosaic.radius_deg * 1.01)
    x, y = np.full(ra.shape, np.nan), np.full(ra.shape, np.nan)
    x[near], y[near] = icrs_to_pixel(mosaic.wcs, ra[near], dec[near])
    ny, nx = mosaic.shape
    centrality = np.hypot((x - (nx - 1) / 2) / nx, (y - (ny - 1) / 2) / ny)
    centrality[~(near & np.isfinite(x) & np.isfinite(y))] = np.inf
    return x, y, centrality


def _placement(
    mosaic: Mosaic, ra: float, dec: float, radius_deg: float
) -> tuple[bool, bool, float]:
    """``(contains point, contains circle, centrality)`` of a position on a mosaic."""
    xs, ys, cen = _pixel_placement(mosaic, ra, dec)
    x, y, centrality = float(xs[0]), float(ys[0]), float(cen[0])
    if not np.isfinite(centrality):
        return False, False, np.inf
    ny, nx = mosaic.shape
    r = radius_deg * 3600.0 / mosaic.pixel_scale_arcsec

    def inside(pad: float) -> bool:
        return -0.5 + pad <= x <= nx - 0.5 - pad and -0.5 + pad <= y <= ny - 0.5 - pad

    return inside(0.0), inside(r), centrality


def assign_mosaics(index: Sequence[Mosaic], ra: Any, dec: Any) -> np.ndarray:
    """Index of the mosaic in which each position is most central (-1: none covers it).

    The vectorised form of :func:`select_mosaic` for many positions (with no
    circle): overlapping tiles such as GALEX's each measure the sources they
    hold most centrally.

    Examples
    --------
    >>> assign_mosaics([], [150.0], [2.0])
    array([-1])
    """
    n = np.atleast_1d(ra).shape[0]
    best = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.inf)
    for k, mosaic in enumerate(index):
        x, y, cen = _pixel_placement(mosaic, ra, dec)
        ny, nx = mosaic.shape
        inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
        better = inside & (cen < score)
        best[better], score[better] = k, cen[better]
    return best


def assign_group(index: Sequence[Mosaic], ra: Any, dec: Any, pad_arcsec: float) -> np.ndarray:
    """Mosaic of each position of a group (a sky cell's primaries): one for all where one can.

    Where some mosaics hold every position at least ``pad_arcsec`` inside their edges (a
    cell's whole pixel box, its margin included), the group is measured in one of them:
    the one whose least central position is most central. Otherwise each position goes
    to the mosaic where it is most central (:func:`assign_mosaics`). Overlapping tiles
    such as GALEX's then split a cell between tiles only where no tile holds it whole;
    a cell split between ``k`` tiles fits ``k`` boxes, each with its own margin sources,
    so a cell near the line where two tiles are equally central is fitted once instead
    of twice (or four times where four tiles meet).

    Examples
    --------
    >>> assign_group([], [150.0], [2.0], 10.0)
    array([-1])
    """
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    best, worst_best = -1, np.inf
    for k, mosaic in enumerate(index):
        if not ra.size:
            break
        x, y, cen = _pixel_placement(mosaic, ra, dec)
        ny, nx = mosaic.shape
        pad = pad_arcsec / mosaic.pixel_scale_arcsec
        inside = (x >= pad - 0.5) & (x <= nx - 0.5 - pad) & (y >= pad - 0.5) \
            & (y <= ny - 0.5 - pad)
        worst = float(cen.max())
        if inside.all() and worst < worst_best:
            best, worst_best = k, worst
    if best < 0:
        return assign_mosaics(index, ra, dec)
    return np.full(ra.size, best, dtype=np.int64)


def covering(
    index: Sequence[Mosaic], ra: float, dec: float, *, radius_deg: float = 0.0
) -> list[Mosaic]:
    """Mosaics whose footprint contains a position, most central first.

    Parameters
    ----------
    index : sequence of Mosaic
        From :func:`build_index`.
    ra, dec : float
        Position, degrees.
    radius_deg : float
        Keep only mosaics that contain the whole circle of this radius.

    Returns
    -------
    list of Mosaic
        Possibly empty.
    """
    if radius_deg < 0:
        raise ValueError(f"radius_deg must be >= 0, got {radius_deg!r}")
    scored = []
    for i, mosaic in enumerate(index):
        _, circle, centrality = _placement(mosaic, ra, dec, radius_deg)
        if circle:
            scored.append((centrality, i, mosaic))
    return [m for _, _, m in sorted(scored, key=lambda t: t[:2])]


def select_mosaic(
    index: Sequence[Mosaic], ra: float, dec: float, *, radius_deg: float = 0.0
) -> Mosaic | None:
    """The mosaic in which a position is most central.

    Centrality is the distance of the position from the mosaic's central pixel in
    units of the mosaic's size (``hypot(dx / nx, dy / ny)``), as in the COSMOS
    notebook. Mosaics containing the whole circle of ``radius_deg`` are preferred;
    if none does, the most central of those containing the position is returned.

    Parameters
    ----------
    index : sequence of Mosaic
        From :func:`build_index`.
    ra, dec : float
        Position, degrees.
    radius_deg : float
        Radius of the region that should fit inside the mosaic.

    Returns
    -------
    Mosaic or None
        None when no mosaic contains the position.
    """
    if radius_deg < 0:
        raise ValueError(f"radius_deg must be >= 0, got {radius_deg!r}")
    best_circle: tuple[float, Mosaic | None] = (np.inf, None)
    best_point: tuple[float, Mosaic | None] = (np.inf, None)
    for mosaic in index:
        point, circle, centrality = _placement(mosaic, ra, dec, radius_deg)
        if circle and centrality < best_circle[0]:
            best_circle = (centrality, mosaic)
        if point and centrality < best_point[0]:
            best_point = (centrality, mosaic)
    if best_circle[1] is None and best_point[1] is not None:
        log.debug(
            "no %s mosaic holds the %g deg circle at (%g, %g)",
            best_point[1].band,
            radius_deg,
            ra,
            dec,
        )
    return best_circle[1] if best_circle[1] is not None else best_point[1]
