"""Per-segment measurements on the sharp image, in one pass over it.

A segmentation map (:func:`dask_phot.detect.detect_sources` makes one) labels
each sharp pixel with the source that owns it (0: none). A source's template
is its segment's light; :func:`measure_segments` gives, for every label, what
building and choosing templates needs: the segment's bounding box, its summed
light, its light-weighted centroid, its concentration (the brightest 3 x 3
pixels' share of the light, against the PSF's for an unresolved source) and
whether it touches the image's edge or holds non-finite pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

__all__ = [
    "SegmentTable",
    "grow_segments",
    "local_background",
    "measure_segments",
    "psf_concentration",
]


@dataclass(frozen=True)
class SegmentTable:
    """Measurements of every segment (one row per label present, sorted by label).

    Attributes
    ----------
    id : ndarray of int64
        Segment labels.
    x, y : ndarray
        Light-weighted centroid (0-based sharp-image pixels; positive pixels only).
    flux : ndarray
        Sum of the segment's finite pixels.
    npix : ndarray of int64
        Pixels in the segment.
    xmin, xmax, ymin, ymax : ndarray of int64
        Bounding box (inclusive).
    peak3 : ndarray
        3 x 3 sum of the sharp image around the segment's brightest pixel.
    edge : ndarray of bool
        The segment touches the image's edge (its light may be cut).
    nbad : ndarray of int64
        Non-finite pixels in the segment (skipped).
    """

    id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    npix: np.ndarray
    xmin: np.ndarray
    xmax: np.ndarray
    ymin: np.ndarray
    ymax: np.ndarray
    peak3: np.ndarray
    edge: np.ndarray
    nbad: np.ndarray

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def to_pandas(self) -> pd.DataFrame:
        """The table as a DataFrame."""
        return pd.DataFrame(self.__dict__)

    def concentration(self) -> np.ndarray:
        """``peak3 / flux`` (NaN where the flux is not positive)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.flux > 0, self.peak3 / self.flux, np.nan)


@numba.njit(cache=True)
def _accumulate(img: np.ndarray, seg: np.ndarray, nl: int) -> tuple:
    ny, nx = img.shape
    cnt = np.zeros(nl + 1, dtype=np.int64)
    nbad = np.zeros(nl + 1, dtype=np.int64)
    tot = np.zeros(nl + 1)
    sp = np.zeros(nl + 1)
    sx = np.zeros(nl + 1)
    sy = np.zeros(nl + 1)
    big = np.iinfo(np.int64).max
    x0 = np.full(nl + 1, big, dtype=np.int64)
    x1 = np.full(nl + 1, -1, dtype=np.int64)
    y0 = np.full(nl + 1, big, dtype=np.int64)
    y1 = np.full(nl + 1, -1, dtype=np.int64)
    peak = np.full(nl + 1, -np.inf)
    px = np.zeros(nl + 1, dtype=np.int64)
    py = np.zeros(nl + 1, dtype=np.int64)
    edge = np.zeros(nl + 1, dtype=np.bool_)
    for r in range(ny):
        for c in range(nx):
            lab = seg[r, c]
            if lab <= 0:
                continue
            cnt[lab] += 1
            x0[lab] = min(x0[lab], c)
            x1[lab] = max(x1[lab], c)
            y0[lab] = min(y0[lab], r)
            y1[lab] = max(y1[lab], r)
            if r == 0 or c == 0 or r == ny - 1 or c == nx - 1:
                edge[lab] = True
            v = img[r, c]
            if not np.isfinite(v):
                nbad[lab] += 1
                continue
            tot[lab] += v
            if v > 0:
                sp[lab] += v
                sx[lab] += v * c
                sy[lab] += v * r
            if v > peak[lab]:
                peak[lab], px[lab], py[lab] = v, c, r
    p3 = np.zeros(nl + 1)  # the 3 x 3 sum around the brightest pixel
    for lab in range(1, nl + 1):
        if cnt[lab] == 0:
            continue
        for rr in range(max(py[lab] - 1, 0), min(py[lab] + 2, ny)):
            for cc in range(max(px[lab] - 1, 0), min(px[lab] + 2, nx)):
                if np.isfinite(img[rr, cc]):
                    p3[lab] += img[rr, cc]
    return cnt, nbad, tot, sp, sx, sy, x0, x1, y0, y1, p3, edge


def measure_segments(image: np.ndarray, segmap: np.ndarray) -> SegmentTable:
    """Measure every segment of ``segmap`` on ``image`` (see :class:`SegmentTable`).

    Examples
    --------
    >>> img = np.zeros((8, 8)); img[2:4, 2:4] = 1.0; img[6, 6] = 5.0
    >>> seg = np.zeros((8, 8), dtype=np.int32); seg[1:5, 1:5] = 3; seg[6:, 6:] = 7
    >>> t = measure_segments(img, seg)
    >>> t.id.tolist(), t.flux.tolist(), t.x.tolist(), t.edge.tolist()
    ([3, 7], [4.0, 5.0], [2.5, 6.0], [False, True])
    """
    img = np.asarray(image)
    img = img if img.dtype.kind == "f" else img.astype(np.float64)
    seg = np.asarray(segmap)
    if seg.dtype.kind not in "iu":
        raise TypeError(f"segmap: must hold integer labels, got dtype {seg.dtype}")
    img, seg = (a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))
                for a in (img, seg))
    nl = int(seg.max(initial=0))
    out = _accumulate(img, seg, nl)
    cnt, nbad, tot, sp, sx, sy, x0, x1, y0, y1, p3, edge = out
    ids = np.flatnonzero(cnt[1:] > 0) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        cx = np.where(sp > 0, sx / sp, 0.5 * (x0 + x1))
        cy = np.where(sp > 0, sy / sp, 0.5 * (y0 + y1))
    return SegmentTable(ids.astype(np.int64), cx[ids], cy[ids], tot[ids], cnt[ids], x0[ids],
                        x1[ids], y0[ids], y1[ids], p3[ids], edge[ids], nbad[ids])


def psf_concentration(psf: np.ndarray, npix: np.ndarray) -> np.ndarray:
    """The concentration an unresolved source of ``npix`` segment pixels would have:
    the PSF's central 3 x 3 sum over its light within a disc of ``npix`` pixels."""
    n = psf.shape[0]
    c = n // 2
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(xx - c, yy - c).ravel()
    order = np.argsort(r)
    cum = np.cumsum(psf.ravel()[order])
    core = psf[c - 1:c + 2, c - 1:c + 2].sum()
    k = np.clip(np.asarray(npix, dtype=np.int64), 1, cum.size) - 1
    return core / cum[k]


@numba.njit(cache=True)
def _grow_once(src: np.ndarray, dst: np.ndarray) -> int:
    """Give every unlabelled pixel of ``src`` with labelled 4-neighbours the label
    of the first of them (left, right, up, down) in ``dst``; count them."""
    ny, nx = src.shape
    changed = 0
    for r in range(ny):
        for c in range(nx):
            if src[r, c] != 0:
                continue
            lab = 0
            if c > 0 and src[r, c - 1] > 0:
                lab = src[r, c - 1]
            elif c < nx - 1 and src[r, c + 1] > 0:
                lab = src[r, c + 1]
            elif r > 0 and src[r - 1, c] > 0:
                lab = src[r - 1, c]
            elif r < ny - 1 and src[r + 1, c] > 0:
                lab = src[r + 1, c]
            if lab:
                dst[r, c] = lab
                changed += 1
    return changed


def grow_segments(segmap: np.ndarray, pixels: int) -> np.ndarray:
    """Segments grown by ``pixels`` into unlabelled pixels (never into another segment).

    Detection thresholds leave a galaxy's faint outskirts outside its segment;
    T-PHOT and golfir dilate segments so templates hold that light. Each step
    gives an unlabelled pixel the label of a labelled neighbour (4-connected),
    so segments grow by about ``pixels`` and meet half way between sources.

    Examples
    --------
    >>> seg = np.zeros((1, 7), dtype=np.int32); seg[0, 1] = 1; seg[0, 5] = 2
    >>> grow_segments(seg, 2).tolist()
    [[1, 1, 1, 1, 2, 2, 2]]
    """
    out = np.array(segmap, copy=True)
    if not (isinstance(pixels, int | np.integer) and pixels >= 0):
        raise ValueError(f"grow: must be an integer >= 0 (pixels), got {pixels!r}")
    for _ in range(int(pixels)):
        src = out.copy()
        if _grow_once(src, out) == 0:
            break
    return out


@numba.njit(cache=True)
def _local_background(img: np.ndarray, seg: np.ndarray, bx0: np.ndarray, bx1: np.ndarray,
                      by0: np.ndarray, by1: np.ndarray, gap: int, width: int) -> np.ndarray:
    ny, nx = img.shape
    out = np.zeros(bx0.shape[0])
    for i in range(bx0.shape[0]):
        r0, r1 = max(by0[i] - gap - width, 0), min(by1[i] + gap + width, ny - 1)
        c0, c1 = max(bx0[i] - gap - width, 0), min(bx1[i] + gap + width, nx - 1)
        step = 3 if (r1 - r0 + 1) * (c1 - c0 + 1) > 1600 else 1  # a median needs few
        vals = np.empty((r1 - r0 + 1) * (c1 - c0 + 1))
        k = 0
        for r in range(r0, r1 + 1, step):
            inner_r = by0[i] - gap <= r <= by1[i] + gap
            for c in range(c0, c1 + 1, step):
                if inner_r and bx0[i] - gap <= c <= bx1[i] + gap:
                    continue
                v = img[r, c]
                if seg[r, c] == 0 and np.isfinite(v):
                    vals[k] = v
                    k += 1
        out[i] = np.median(vals[:k]) if k >= 16 else 0.0
    return out


def local_background(image: np.ndarray, segmap: np.ndarray, table: SegmentTable, *,
                     gap: int, width: int) -> np.ndarray:
    """Median of the unlabelled sharp pixels in a frame around each segment.

    The frame lies between ``gap`` and ``gap + width`` pixels outside the
    segment's bounding box; fewer than 16 usable pixels give 0. Subtracted
    from the segment's pixels, it removes a sharp image's residual background
    (a constant under a template adds a pedestal the size of its segment).

    Examples
    --------
    >>> img = np.full((40, 40), 2.0); img[18:22, 18:22] += 10.0
    >>> seg = np.zeros((40, 40), dtype=np.int32); seg[18:22, 18:22] = 1
    >>> local_background(img, seg, measure_segments(img, seg), gap=2, width=4).tolist()
    [2.0]
    """
    return _local_background(image, segmap, table.xmin, table.xmax, table.ymin, table.ymax,
                             int(gap), int(width))
