"""Read a box of pixels (and its noise) from a mosaic, fetching only that box's bytes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from astropy.wcs import WCS

from dask_phot.images import _io
from dask_phot.images._fits import pixel_dtype
from dask_phot.images.frames import icrs_to_pixel
from dask_phot.images.index import Mosaic

__all__ = ["Region", "box_wcs", "noise_to_weight", "read_boxes", "read_region", "sky_to_box"]

log = logging.getLogger(__name__)

_MAX_REQUEST = 16 * 1024 * 1024


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
    """

    data: np.ndarray = field(repr=False)
    weight: np.ndarray | None = field(repr=False)
    x0: int
    y0: int
    wcs: WCS = field(repr=False)
    bytes_read: int

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


def _row_requests(
    offset: int, nx: int, box: tuple[int, int, int, int], itemsize: int, max_gap: int
) -> list[tuple[int, int]]:
    """``(start byte, n rows)`` requests covering a box; rows merged when the gap allows."""
    x0, x1, y0, y1 = box
    gap = (nx - (x1 - x0)) * itemsize
    per_request = 1 if gap > max_gap else max(1, _MAX_REQUEST // (nx * itemsize))
    return [
        (offset + (r * nx + x0) * itemsize, min(per_request, y1 - r))
        for r in range(y0, y1, per_request)
    ]


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
    )


def _local_copy(url: str, source: str, storage_options: Mapping[str, Any] | None) -> None:
    """Re-create a cached gzip copy missing on this machine (e.g. a Dask worker)."""
    source = _io.split_extension(source)[0]
    if url != source and not os.path.exists(url):
        _io.cached_copy(source, storage_options=storage_options, target=url)


def _read_box(
    mosaic: Mosaic,
    noise: bool,
    box: tuple[int, int, int, int],
    storage_options: Mapping[str, Any] | None,
    max_gap: int | None,
) -> tuple[np.ndarray, int]:
    """Physical values of an in-bounds box of the science image or noise map, bytes read."""
    pix = _pixels(mosaic, noise)
    _local_copy(pix.url, pix.source_url, storage_options)
    dtype = pixel_dtype(pix.bitpix)
    nx, width = mosaic.shape[1], box[1] - box[0]
    if max_gap is None:
        max_gap = width * dtype.itemsize // 4
    requests = _row_requests(pix.data_offset, nx, box, dtype.itemsize, max_gap)
    starts = [start for start, _ in requests]
    ends = [start + ((n - 1) * nx + width) * dtype.itemsize for start, n in requests]
    fs, path = _io.open_fs(pix.url, storage_options)
    parts = _io.fetch_ranges(fs, path, pix.url, starts, ends)
    raw = _assemble(parts, requests, nx, width, dtype)
    nbytes = sum(len(part) for part in parts)
    return _to_physical(raw, pix.bscale, pix.bzero, pix.blank), nbytes


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
) -> Region:
    """Read a box of a mosaic and its weight, fetching only the box's bytes.

    Each row of the box is one byte range of the FITS data; all ranges are fetched
    in one concurrent call. Rows are merged into one request when the bytes between
    them are at most ``max_gap`` (default: a quarter of a box row, so that at most
    25% more than the box is read; a full-width box is one contiguous read).

    Parameters
    ----------
    mosaic : Mosaic
        From :func:`~dask_phot.images.build_index`.
    x_range, y_range : (int, int)
        Half-open pixel ranges (0-based); parts off the mosaic come back NaN.
    storage_options : dict, optional
        fsspec options (S3 anonymous unless ``anon`` or credentials are set).
    max_gap : int, optional
        Largest gap in bytes to read through when merging rows.

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
    nbytes = 0
    if box[0] < box[1] and box[2] < box[3]:
        inner = (slice(box[2] - y0, box[3] - y0), slice(box[0] - x0, box[1] - x0))
        data[inner], nbytes = _read_box(mosaic, False, box, storage_options, max_gap)
        if weight is not None:
            noise, n = _read_box(mosaic, True, box, storage_options, max_gap)
            weight[inner] = noise_to_weight(noise, mosaic.noise_kind)
            nbytes += n
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
    dtype = pixel_dtype(pix.bitpix)
    which, starts, ends = _box_rows(clipped[inside], nx, pix.data_offset, dtype.itemsize)
    m_starts, m_ends, of = _merge_ranges(starts, ends, max(int(max_gap), 0))
    fs, path = _io.open_fs(pix.url, storage_options)
    parts = _io.fetch_ranges(fs, path, pix.url, m_starts.tolist(), m_ends.tolist())
    rows_of: dict[int, list[np.ndarray]] = {}
    for k, (b, s, e) in enumerate(zip(which, starts, ends, strict=True)):
        lo = int(s - m_starts[of[k]])
        rows_of.setdefault(int(b), []).append(
            np.frombuffer(parts[of[k]], dtype=dtype, count=int(e - s) // dtype.itemsize,
                          offset=lo))
    for j, (b, box) in enumerate(zip(np.flatnonzero(inside), clipped[inside], strict=True)):
        raw = np.vstack(rows_of[j])
        x0, _, y0, _ = arr[b]
        out[b][box[2] - y0:box[3] - y0, box[0] - x0:box[1] - x0] = _to_physical(
            raw, pix.bscale, pix.bzero, pix.blank)
    return out, int(sum(len(p) for p in parts))
