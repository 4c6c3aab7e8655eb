"""Read a box of pixels (and its noise) from a mosaic, fetching only that box's bytes."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from astropy.wcs import WCS

from dask_phot.images import _io
from dask_phot.images._fits import pixel_dtype
from dask_phot.images._tiled import TiledImage, TilePlan, assemble_boxes, plan_tiles
from dask_phot.images.frames import icrs_to_pixel
from dask_phot.images.index import Mosaic
from dask_phot.images.rows import read_rows, row_cache

__all__ = ["ReadCosts", "Region", "box_wcs", "noise_to_weight", "plan_requests", "read_boxes",
           "read_region", "sky_to_box"]

log = logging.getLogger(__name__)



@dataclass(frozen=True, eq=False)
class Region:
    """A box of a mosaic.

    Attributes
    ----------
    data : numpy.ndarray
        float64 ``(ny, nx)`` pixels; NaN where BLANK, not finite or off the mosaic.
    weight : numpy.ndarray or None
        Inverse variance, 0 where masked; None when the mosaic has no noise map.
    x0, y0 : int
        Mosaic pixel of ``data[0, 0]`` (negative when the box starts off the mosaic).
    wcs : astropy.wcs.WCS
        WCS of the box (pixel ``(0, 0)`` is mosaic pixel ``(x0, y0)``).
    bytes_read : int
        Bytes fetched to build it.
    box_bytes : int
        Bytes of the box's in-bounds pixels as stored (image and noise map): what an
        ideal reader would fetch; ``bytes_read / box_bytes`` is the read's overhead.
    requests : int
        Ranged requests made.
    """

    data: np.ndarray = field(repr=False)
    weight: np.ndarray | None = field(repr=False)
    x0: int
    y0: int
    wcs: WCS = field(repr=False)
    bytes_read: int
    box_bytes: int = 0
    requests: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the box."""
        return self.data.shape  # type: ignore[return-value]

    @property
    def x_range(self) -> tuple[int, int]:
        """Half-open mosaic column range."""
        return self.x0, self.x0 + self.data.shape[1]

    @property
    def y_range(self) -> tuple[int, int]:
        """Half-open mosaic row range."""
        return self.y0, self.y0 + self.data.shape[0]


def _int_range(value: Sequence[int], name: str) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair of integers (start, stop), got {value!r}"
        ) from None
    if (lo, hi) != tuple(value) or hi <= lo:
        raise ValueError(f"{name} must be integers with start < stop, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class ReadCosts:
    """What a ranged read costs: how :func:`plan_requests` trades requests against bytes.

    A plan's time is ``n * request_cpu + ceil(n / concurrency) * latency +
    bytes / bandwidth`` for ``n`` requests; the plan chosen is the quickest whose bytes
    are at most ``max_overread`` times the box's.

    Attributes
    ----------
    latency : float
        Seconds to a request's first byte (S3: 0.02-0.05).
    request_cpu : float
        Client CPU seconds per request (s3fs over aiobotocore: ~2 ms).
    bandwidth : float
        Bytes per second of one reader.
    concurrency : int
        Requests in flight at once.
    max_overread : float
        Largest ratio of bytes read to the box's bytes a plan may have (>= 1).
    """

    latency: float = 0.03
    request_cpu: float = 0.002
    bandwidth: float = 100e6
    concurrency: int = 32
    max_overread: float = 1.5

    def __post_init__(self) -> None:
        if not self.max_overread >= 1.0:
            raise ValueError(f"max_overread must be >= 1, got {self.max_overread!r}")
        if not (self.latency >= 0 and self.request_cpu >= 0 and self.bandwidth > 0
                and self.concurrency >= 1):
            raise ValueError(f"read costs must be >= 0 (bandwidth, concurrency > 0): {self}")

    def seconds(self, n_requests: int, nbytes: int) -> float:
        """Estimated time of ``n_requests`` requests fetching ``nbytes`` in all."""
        return (n_requests * self.request_cpu
                + math.ceil(n_requests / self.concurrency) * self.latency
                + nbytes / self.bandwidth)


def _grouped(offset: int, nx: int, box: tuple[int, int, int, int], itemsize: int,
             per_request: int) -> list[tuple[int, int]]:
    x0, _, y0, y1 = box
    return [(offset + (r * nx + x0) * itemsize, min(per_request, y1 - r))
            for r in range(y0, y1, per_request)]


def _request_bytes(requests: list[tuple[int, int]], nx: int, width: int, itemsize: int) -> int:
    return sum(((n - 1) * nx + width) * itemsize for _, n in requests)


def plan_requests(
    offset: int, nx: int, box: tuple[int, int, int, int], itemsize: int, *,
    max_gap: int | None = None, costs: ReadCosts | None = None,
) -> list[tuple[int, int]]:
    """``(start byte, n rows)`` requests covering a box of a row-major image.

    Consecutive rows fetched in one request bring the bytes between them (the rest of
    each mosaic row). With ``max_gap``, rows are merged when that gap is at most
    ``max_gap`` bytes. Otherwise the rows are grouped ``k`` to a request for the ``k``
    (1, 2, 4, ... or all) whose estimated time under ``costs`` is least among those
    reading at most ``costs.max_overread`` times the box's bytes; a request holds at
    most 16 MiB.
    """
    x0, x1, y0, y1 = box
    width, nrows = x1 - x0, y1 - y0
    most = max(1, _io.MAX_REQUEST // (nx * itemsize))
    if max_gap is not None:
        gap = (nx - width) * itemsize
        return _grouped(offset, nx, box, itemsize, 1 if gap > max_gap else most)
    costs = costs or ReadCosts()
    box_bytes = width * nrows * itemsize
    best: tuple[float, list[tuple[int, int]]] | None = None
    k = 1
    while True:
        requests = _grouped(offset, nx, box, itemsize, min(k, most))
        nbytes = _request_bytes(requests, nx, width, itemsize)
        if k == 1 or nbytes <= costs.max_overread * box_bytes:
            t = costs.seconds(len(requests), nbytes)
            if best is None or t < best[0]:
                best = (t, requests)
        if k >= min(nrows, most):
            break
        k = min(2 * k, nrows, most)
    assert best is not None
    return best[1]


def _assemble(
    parts: list[bytes], requests: list[tuple[int, int]], nx: int, width: int, dtype: np.dtype
) -> np.ndarray:
    """The box's raw pixels from the fetched byte ranges."""
    rows = []
    for part, (_, nrows) in zip(parts, requests, strict=True):
        flat = np.frombuffer(part, dtype=dtype)
        if nrows == 1:
            rows.append(flat[None, :])
        else:
            index = np.arange(nrows)[:, None] * nx + np.arange(width)[None, :]
            rows.append(flat[index])
    return np.concatenate(rows, axis=0)


def _to_physical(raw: np.ndarray, bscale: float, bzero: float, blank: int | None) -> np.ndarray:
    """float64 values with BSCALE/BZERO applied; NaN for BLANK and non-finite."""
    values = raw.astype(np.float64)
    if bscale != 1.0 or bzero != 0.0:
        values = values * bscale + bzero
    if blank is not None:
        values[raw == blank] = np.nan
    values[~np.isfinite(values)] = np.nan
    return values


class _Pixels(NamedTuple):
    """Storage of the science image or noise map of a mosaic."""

    url: str
    source_url: str
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None
    data_offset: int
    tiles: TiledImage | None
    version: str = ""


def _pixels(mosaic: Mosaic, noise: bool) -> _Pixels:
    if not noise:
        return _Pixels(
            mosaic.url,
            mosaic.source_url,
            mosaic.bitpix,
            mosaic.bscale,
            mosaic.bzero,
            mosaic.blank,
            mosaic.data_offset,
            mosaic.tiles,
            mosaic.version,
        )
    if mosaic.noise_url is None or mosaic.noise_bitpix is None:
        raise ValueError(f"mosaic {mosaic.url!r} has no noise map")
    return _Pixels(
        mosaic.noise_url,
        mosaic.noise_source_url or mosaic.noise_url,
        mosaic.noise_bitpix,
        1.0 if mosaic.noise_bscale is None else mosaic.noise_bscale,
        0.0 if mosaic.noise_bzero is None else mosaic.noise_bzero,
        mosaic.noise_blank,
        int(mosaic.noise_data_offset or 0),
        mosaic.noise_tiles,
        mosaic.noise_version,
    )


def _local_copy(url: str, source: str, storage_options: Mapping[str, Any] | None) -> None:
    """Re-create a cached gzip copy missing on this machine (e.g. a Dask worker)."""
    source = _io.split_extension(source)[0]
    if url != source and not os.path.exists(url):
        _io.cached_copy(source, storage_options=storage_options, target=url)


class _BoxRead(NamedTuple):
    """The requests of one box of the science image or noise map (rows of a plain
    image, or the tiles of a tile-compressed one)."""

    pix: _Pixels
    dtype: np.dtype
    requests: list[tuple[int, int]]
    starts: list[int]
    ends: list[int]
    tiles: TilePlan | None = None


def _box_read(mosaic: Mosaic, noise: bool, box: tuple[int, int, int, int],
              storage_options: Mapping[str, Any] | None, max_gap: int | None,
              costs: ReadCosts | None) -> _BoxRead:
    pix = _pixels(mosaic, noise)
    _local_copy(pix.url, pix.source_url, storage_options)
    dtype = pixel_dtype(pix.bitpix)
    if pix.tiles is not None:
        plan = plan_tiles(pix.tiles, [box], pix.url, costs=costs or ReadCosts(), max_gap=max_gap)
        return _BoxRead(pix, dtype, [], plan.starts, plan.ends, plan)
    nx, width = mosaic.shape[1], box[1] - box[0]
    requests = plan_requests(pix.data_offset, nx, box, dtype.itemsize, max_gap=max_gap,
                             costs=costs)
    starts = [start for start, _ in requests]
    ends = [start + ((n - 1) * nx + width) * dtype.itemsize for start, n in requests]
    return _BoxRead(pix, dtype, requests, starts, ends)


def _read_boxes(mosaic: Mosaic, box: tuple[int, int, int, int], noise: bool,
                storage_options: Mapping[str, Any] | None, max_gap: int | None,
                costs: ReadCosts | None, cache_bytes: int
                ) -> tuple[list[np.ndarray], int, int]:
    """Physical values of an in-bounds box of the image (and noise map), fetched in one
    concurrent call (or through the process's row cache); bytes read and requests made."""
    reads = [_box_read(mosaic, k, box, storage_options, max_gap, costs)
             for k in ((False, True) if noise else (False,))]
    nx, width = mosaic.shape[1], box[1] - box[0]
    whole = sum((box[3] - box[2]) * nx * r.dtype.itemsize for r in reads)
    overread = (costs or ReadCosts()).max_overread
    if (max_gap is None and 0 < 2 * whole <= cache_bytes and width * overread < nx
            and all(_io.is_remote(r.pix.url) and r.tiles is None for r in reads)):
        files = [(r.pix.url, r.pix.data_offset, r.dtype, r.pix.version) for r in reads]
        raws, nbytes, n_requests = read_rows(files, nx, box, row_cache(cache_bytes),
                                             storage_options)
    else:
        parts = _io.fetch_files_ranges([(r.pix.url, r.starts, r.ends) for r in reads],
                                       storage_options)
        raws = [_assemble(p, r.requests, nx, width, r.dtype) if r.tiles is None
                else assemble_boxes(r.pix.tiles, r.tiles, p, [box], r.pix.url)[0]
                for p, r in zip(parts, reads, strict=True)]
        nbytes = sum(len(x) for p in parts for x in p)
        n_requests = sum(len(r.starts) for r in reads)
    values = [_to_physical(raw, r.pix.bscale, r.pix.bzero, r.pix.blank)
              for raw, r in zip(raws, reads, strict=True)]
    return values, nbytes, n_requests


def noise_to_weight(noise: np.ndarray, kind: str) -> np.ndarray:
    """Inverse-variance weight of a noise map; 0 where non-finite or <= 0.

    Parameters
    ----------
    noise : numpy.ndarray
        The noise map values.
    kind : {"weight", "uncertainty", "variance"}
        Inverse variance, standard deviation or variance.

    Returns
    -------
    numpy.ndarray
        float64 weights.
    """
    noise = np.asarray(noise, dtype=np.float64)
    good = np.isfinite(noise) & (noise > 0)
    weight = np.zeros_like(noise)
    if kind == "weight":
        weight[good] = noise[good]
    elif kind == "uncertainty":
        weight[good] = 1.0 / noise[good] ** 2
    elif kind == "variance":
        weight[good] = 1.0 / noise[good]
    else:
        raise ValueError(f"noise kind must be 'weight', 'uncertainty' or 'variance', got {kind!r}")
    weight[~np.isfinite(weight)] = 0.0
    return weight


def _shifted_wcs(wcs: WCS, x0: int, y0: int, width: int, height: int) -> WCS:
    """The WCS of a box whose pixel (0, 0) is ``(x0, y0)`` of ``wcs``."""
    if x0 >= 0 and y0 >= 0:
        out = wcs.slice((slice(y0, None), slice(x0, None)))
    else:
        out = wcs.deepcopy()
        out.wcs.crpix = out.wcs.crpix - np.array([x0, y0], dtype=float)
        if out.sip is not None:
            from astropy.wcs import Sip

            sip = out.sip
            out.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, np.asarray(sip.crpix) - [x0, y0])
        for table in (out.cpdis1, out.cpdis2, out.det2im1, out.det2im2):
            if table is not None:
                table.crval = (table.crval[0] - x0, table.crval[1] - y0)
    out.pixel_shape = (width, height)
    return out


def box_wcs(wcs: WCS, x0: int, y0: int, width: int, height: int) -> WCS:
    """The WCS of a box of ``width`` x ``height`` pixels whose pixel (0, 0) is pixel
    ``(x0, y0)`` of ``wcs`` (negative where the box starts off the image)."""
    return _shifted_wcs(wcs, x0, y0, width, height)


def read_region(
    mosaic: Mosaic,
    x_range: Sequence[int],
    y_range: Sequence[int],
    *,
    storage_options: Mapping[str, Any] | None = None,
    max_gap: int | None = None,
    costs: ReadCosts | None = None,
    row_cache_bytes: int = 0,
) -> Region:
    """Read a box of a mosaic and its weight, fetching only the box's bytes.

    Each row of the box is one byte range of the FITS data; all ranges of the image
    and its noise map are fetched in one concurrent call. Rows are merged into one
    request when that is quicker and reads at most ``costs.max_overread`` times the
    box (:func:`plan_requests`); a full-width box is one contiguous read.

    Parameters
    ----------
    mosaic : Mosaic
        From :func:`~dask_phot.images.build_index`.
    x_range, y_range : (int, int)
        Half-open pixel ranges (0-based); parts off the mosaic come back NaN.
    storage_options : dict, optional
        fsspec options (S3 anonymous unless ``anon`` or credentials are set).
    max_gap : int, optional
        Largest gap in bytes to read through when merging rows; by default the rows
        are merged as :func:`plan_requests` decides from ``costs``.
    costs : ReadCosts, optional
        What a request and a byte cost (default :class:`ReadCosts`: at most 1.5 times
        the box's bytes).
    row_cache_bytes : int
        With ``max_gap`` None and a remote mosaic much wider than the box (a strip of
        the box would read over ``costs.max_overread`` times its bytes), whole rows are
        fetched and kept in this process's :class:`~dask_phot.images.rows.RowCache` of
        this many bytes, for the next boxes that need them (0: no cache).

    Returns
    -------
    Region
        Pixels, weight and WCS of the box.
    """
    x0, x1 = _int_range(x_range, "x_range")
    y0, y1 = _int_range(y_range, "y_range")
    ny, nx = mosaic.shape
    data = np.full((y1 - y0, x1 - x0), np.nan)
    has_noise = mosaic.noise_kind != "none" and mosaic.noise_url is not None
    weight = np.zeros_like(data) if has_noise else None
    box = (max(x0, 0), min(x1, nx), max(y0, 0), min(y1, ny))
    nbytes = box_bytes = n_requests = 0
    if box[0] < box[1] and box[2] < box[3]:
        inner = (slice(box[2] - y0, box[3] - y0), slice(box[0] - x0, box[1] - x0))
        values, nbytes, n_requests = _read_boxes(mosaic, box, weight is not None,
                                                 storage_options, max_gap, costs,
                                                 row_cache_bytes)
        data[inner] = values[0]
        if weight is not None:
            weight[inner] = noise_to_weight(values[1], mosaic.noise_kind)
        area = (box[1] - box[0]) * (box[3] - box[2])
        box_bytes = area * pixel_dtype(mosaic.bitpix).itemsize
        if weight is not None and mosaic.noise_bitpix is not None:
            box_bytes += area * pixel_dtype(mosaic.noise_bitpix).itemsize
    if weight is not None:
        weight[np.isnan(data)] = 0.0
    log.debug("read %s [%d:%d, %d:%d]: %d bytes", mosaic.url, y0, y1, x0, x1, nbytes)
    return Region(
        data=data,
        weight=weight,
        x0=x0,
        y0=y0,
        wcs=_shifted_wcs(mosaic.wcs, x0, y0, x1 - x0, y1 - y0),
        bytes_read=nbytes,
        box_bytes=box_bytes,
        requests=n_requests,
    )


def sky_to_box(
    mosaic: Mosaic, ra: Any, dec: Any, margin_pix: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Pixel box holding sky positions plus a margin, clipped to the mosaic.

    Parameters
    ----------
    mosaic : Mosaic
        The mosaic.
    ra, dec : float or array-like
        ICRS positions, degrees (the mosaic's frame may be another).
    margin_pix : float
        Margin around the positions, pixels.

    Returns
    -------
    x_range, y_range : (int, int)
        Half-open ranges; empty (``start == stop``) when no position is on the mosaic.
    """
    if margin_pix < 0:
        raise ValueError(f"margin_pix must be >= 0, got {margin_pix!r}")
    x, y = icrs_to_pixel(mosaic.wcs, ra, dec)
    ok = np.isfinite(x) & np.isfinite(y)
    ny, nx = mosaic.shape
    if not ok.any():
        return (0, 0), (0, 0)
    # pixel i spans [i - 0.5, i + 0.5)
    lo_x = int(np.floor(x[ok].min() - margin_pix + 0.5))
    hi_x = int(np.floor(x[ok].max() + margin_pix + 0.5)) + 1
    lo_y = int(np.floor(y[ok].min() - margin_pix + 0.5))
    hi_y = int(np.floor(y[ok].max() + margin_pix + 0.5)) + 1
    x_range = (min(max(lo_x, 0), nx), max(min(hi_x, nx), 0))
    y_range = (min(max(lo_y, 0), ny), max(min(hi_y, ny), 0))
    if x_range[0] >= x_range[1] or y_range[0] >= y_range[1]:
        return (0, 0), (0, 0)
    return x_range, y_range


def _box_rows(boxes: np.ndarray, nx: int, offset: int, itemsize: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(box index, start byte, end byte)`` of every row of every (clipped) box."""
    heights = boxes[:, 3] - boxes[:, 2]
    which = np.repeat(np.arange(len(boxes)), heights)
    first = np.repeat(np.cumsum(heights) - heights, heights)
    rows = boxes[which, 2] + (np.arange(which.size) - first)
    starts = offset + (rows * nx + boxes[which, 0]) * itemsize
    ends = offset + (rows * nx + boxes[which, 1]) * itemsize
    return which, starts, ends


def _merge_ranges(starts: np.ndarray, ends: np.ndarray, max_gap: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ranges merged where they overlap or the gap is at most ``max_gap`` bytes;
    returns the merged starts and ends, and the merged range of each input range."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new = np.ones(s.size, bool)
    new[1:] = s[1:] > reach[:-1] + max_gap
    group = np.cumsum(new) - 1
    merged_starts = s[new]
    merged_ends = np.maximum.reduceat(e, np.flatnonzero(new))
    of = np.empty(starts.size, np.int64)
    of[order] = group
    return merged_starts, merged_ends, of


def _read_row_boxes(pix: _Pixels, boxes: np.ndarray, nx: int, fs: Any, path: str,
                    max_gap: int) -> tuple[list[np.ndarray], list[bytes]]:
    """The raw pixels of in-bounds boxes of a plain image, and the byte ranges fetched."""
    dtype = pixel_dtype(pix.bitpix)
    which, starts, ends = _box_rows(boxes, nx, pix.data_offset, dtype.itemsize)
    m_starts, m_ends, of = _merge_ranges(starts, ends, max(int(max_gap), 0))
    parts = _io.fetch_ranges(fs, path, pix.url, m_starts.tolist(), m_ends.tolist())
    rows_of: dict[int, list[np.ndarray]] = {}
    for k, (b, s, e) in enumerate(zip(which, starts, ends, strict=True)):
        lo = int(s - m_starts[of[k]])
        rows_of.setdefault(int(b), []).append(
            np.frombuffer(parts[of[k]], dtype=dtype, count=int(e - s) // dtype.itemsize,
                          offset=lo))
    return [np.vstack(rows_of[j]) for j in range(len(boxes))], parts


def read_boxes(
    mosaic: Mosaic,
    boxes: Sequence[Sequence[int]],
    *,
    noise: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    max_gap: int = 16384,
) -> tuple[list[np.ndarray], int]:
    """Read many boxes of a mosaic in one concurrent fetch (cutouts of many sources).

    Every row of every box is a byte range of the FITS data; ranges that overlap
    or lie at most ``max_gap`` bytes apart are merged into one request, and all
    requests go out in one concurrent call (one ``cat_ranges`` for S3 and HTTP).
    Overlapping boxes share the bytes they have in common.

    Parameters
    ----------
    mosaic : Mosaic
    boxes : sequence of (x0, x1, y0, y1)
        Half-open pixel ranges (0-based); parts off the mosaic come back NaN.
    noise : bool
        Read the noise map (as stored: weight, uncertainty or variance) instead
        of the science image.
    storage_options : mapping, optional
        fsspec options (S3 anonymous unless ``anon`` or credentials are set).
    max_gap : int
        Largest gap, bytes, read through to save a request (0: only the boxes'
        own bytes, each row its own request unless rows touch).

    Returns
    -------
    arrays : list of ndarray
        float64 pixels of each box (BSCALE/BZERO applied; NaN for BLANK, not
        finite or off the mosaic).
    nbytes : int
        Bytes fetched.
    """
    arr = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if np.any(arr[:, 1] <= arr[:, 0]) or np.any(arr[:, 3] <= arr[:, 2]):
        raise ValueError("every box must be (x0, x1, y0, y1) with x0 < x1 and y0 < y1")
    ny, nx = mosaic.shape
    clipped = np.c_[np.clip(arr[:, 0], 0, nx), np.clip(arr[:, 1], 0, nx),
                    np.clip(arr[:, 2], 0, ny), np.clip(arr[:, 3], 0, ny)]
    inside = (clipped[:, 0] < clipped[:, 1]) & (clipped[:, 2] < clipped[:, 3])
    out = [np.full((b[3] - b[2], b[1] - b[0]), np.nan) for b in arr]
    if not inside.any():
        return out, 0
    pix = _pixels(mosaic, noise)
    _local_copy(pix.url, pix.source_url, storage_options)
    fs, path = _io.open_fs(pix.url, storage_options)
    if pix.tiles is not None:
        within = [tuple(int(v) for v in b) for b in clipped[inside]]
        plan = plan_tiles(pix.tiles, within, pix.url, costs=ReadCosts(), max_gap=max(max_gap, 0))
        parts = _io.fetch_ranges(fs, path, pix.url, plan.starts, plan.ends)
        raws = assemble_boxes(pix.tiles, plan, parts, within, pix.url)
    else:
        raws, parts = _read_row_boxes(pix, clipped[inside], nx, fs, path, max_gap)
    for b, box, raw in zip(np.flatnonzero(inside), clipped[inside], raws, strict=True):
        x0, _, y0, _ = arr[b]
        out[b][box[2] - y0:box[3] - y0, box[0] - x0:box[1] - x0] = _to_physical(
            raw, pix.bscale, pix.bzero, pix.blank)
    return out, int(sum(len(p) for p in parts))
