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
    "background_mesh",
    "grow_segments",
    "label_range",
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
    light : ndarray
        Sum of the segment's positive pixels.
    cov : ndarray, shape (n, 3)
        Second central moments ``xx, xy, yy`` of its positive light (pixels^2).
    blocks : ndarray or None
        With ``block``: per ``block x block`` block of the image, the count and the
        sum of its finite unlabelled pixels, shape ``(2, ny / block, nx / block)``
        (rounded up).
    block : int
        Side of those blocks (0: not summed).
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
    light: np.ndarray
    cov: np.ndarray
    blocks: np.ndarray | None = None
    block: int = 0

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def to_pandas(self) -> pd.DataFrame:
        """The table as a DataFrame (the second moments as ``cxx, cxy, cyy``; without
        the blocks)."""
        cols = {k: v for k, v in self.__dict__.items() if k not in ("cov", "blocks",
                                                                     "block")}
        cols.update(cxx=self.cov[:, 0], cxy=self.cov[:, 1], cyy=self.cov[:, 2])
        return pd.DataFrame(cols)

    def concentration(self) -> np.ndarray:
        """``peak3 / flux`` (NaN where the flux is not positive)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.flux > 0, self.peak3 / self.flux, np.nan)


@numba.njit(cache=True)
def _row_blocks(img_row: np.ndarray, seg_row: np.ndarray, b: int, bn: np.ndarray,
                bt: np.ndarray, n_out: np.ndarray, t_out: np.ndarray) -> None:
    """Add one row's unlabelled finite pixels, counted and summed in blocks of ``b``, to
    ``n_out`` and ``t_out``: a pass without branches (``bn``, ``bt``: buffers of the row's
    length), then each block's sum in column order (so the sums are those of a loop
    over the pixels that skips the others)."""
    nx = img_row.shape[0]
    for c in range(nx):
        v = np.float64(img_row[c])
        ok = (seg_row[c] == 0) & np.isfinite(v)
        bn[c] = 1.0 if ok else 0.0
        bt[c] = v if ok else 0.0
    full = nx // b if b == 4 else 0
    for cb in range(full):  # (the common block side, unrolled)
        o = 4 * cb
        n_out[cb] += (((0.0 + bn[o]) + bn[o + 1]) + bn[o + 2]) + bn[o + 3]
        t_out[cb] += (((0.0 + bt[o]) + bt[o + 1]) + bt[o + 2]) + bt[o + 3]
    for cb in range(full, n_out.shape[0]):
        n, t = 0.0, 0.0
        for c in range(cb * b, min(cb * b + b, nx)):
            n += bn[c]
            t += bt[c]
        n_out[cb] += n
        t_out[cb] += t


@numba.njit(cache=True)
def _accumulate(img: np.ndarray, seg: np.ndarray, nl: int, b: int) -> tuple:
    ny, nx = img.shape
    cnt = np.zeros(nl + 1, dtype=np.int64)
    nbad = np.zeros(nl + 1, dtype=np.int64)
    tot = np.zeros(nl + 1)
    mom = np.zeros((nl + 1, 6))  # positive light, its first and second raw moments
    big = np.iinfo(np.int64).max
    x0 = np.full(nl + 1, big, dtype=np.int64)
    x1 = np.full(nl + 1, -1, dtype=np.int64)
    y0 = np.full(nl + 1, big, dtype=np.int64)
    y1 = np.full(nl + 1, -1, dtype=np.int64)
    peak = np.full(nl + 1, -np.inf)
    px = np.zeros(nl + 1, dtype=np.int64)
    py = np.zeros(nl + 1, dtype=np.int64)
    edge = np.zeros(nl + 1, dtype=np.bool_)
    nbx = (nx + b - 1) // b if b > 0 else 1
    blocks = np.zeros((2, (ny + b - 1) // b if b > 0 else 1, nbx))
    bn, bt = np.zeros(nx), np.zeros(nx)
    for r in range(ny):
        if b > 0:  # the unlabelled pixels' blocks
            _row_blocks(img[r], seg[r], b, bn, bt, blocks[0, r // b], blocks[1, r // b])
        for c in range(nx):  # the labelled pixels
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
                o = mom[lab]
                o[0] += v
                o[1] += v * c
                o[2] += v * r
                o[3] += v * c * c
                o[4] += v * c * r
                o[5] += v * r * r
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
    return cnt, nbad, tot, mom, x0, x1, y0, y1, p3, edge, blocks


@numba.njit(cache=True)
def _label_range(seg: np.ndarray) -> tuple[int, int]:
    lo, hi = 0, 0
    for r in range(seg.shape[0]):
        for c in range(seg.shape[1]):
            v = seg[r, c]
            lo, hi = min(lo, v), max(hi, v)
    return lo, hi


def label_range(segmap: np.ndarray) -> tuple[int, int]:
    """The smallest and largest label of an integer segmentation map, 0 included
    (one pass over it).

    Examples
    --------
    >>> label_range(np.array([[0, 3], [7, 0]], dtype=np.int32))
    (0, 7)
    """
    seg = np.asarray(segmap)
    if seg.ndim != 2 or seg.size == 0:
        return int(seg.min(initial=0)), int(seg.max(initial=0))
    lo, hi = _label_range(seg)
    return int(lo), int(hi)


def measure_segments(image: np.ndarray, segmap: np.ndarray, *,
                     max_label: int | None = None, block: int = 0) -> SegmentTable:
    """Measure every segment of ``segmap`` on ``image`` (see :class:`SegmentTable`);
    ``max_label``, its largest label when known (:func:`label_range`), saves a pass;
    ``block`` > 0 also sums the unlabelled pixels in blocks of that side (for
    :func:`.share.share_outskirts`, in the same pass).

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
    nl = int(seg.max(initial=0)) if max_label is None else int(max_label)
    out = _accumulate(img, seg, nl, int(block))
    cnt, nbad, tot, mom, x0, x1, y0, y1, p3, edge, blocks = out
    ids = np.flatnonzero(cnt[1:] > 0) + 1
    sp = mom[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.where(sp > 0, sp, 1.0)
        cx = np.where(sp > 0, mom[:, 1] / safe, 0.5 * (x0 + x1))
        cy = np.where(sp > 0, mom[:, 2] / safe, 0.5 * (y0 + y1))
        cov = np.stack([np.where(sp > 0, mom[:, 3] / safe - cx * cx, 0.0),
                        np.where(sp > 0, mom[:, 4] / safe - cx * cy, 0.0),
                        np.where(sp > 0, mom[:, 5] / safe - cy * cy, 0.0)], axis=1)
    return SegmentTable(ids.astype(np.int64), cx[ids], cy[ids], tot[ids], cnt[ids], x0[ids],
                        x1[ids], y0[ids], y1[ids], p3[ids], edge[ids], nbad[ids], sp[ids],
                        cov[ids], blocks if block else None, int(block))


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
def _kth(a: np.ndarray, k: int, lo: int, hi: int) -> float:
    """The ``k``-th smallest of ``a[lo:hi + 1]`` (quickselect, median-of-three pivots;
    ``a`` is reordered in place: ``a[:k]`` ends up at most it)."""
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        p = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < p:
                i += 1
            while a[j] > p:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@numba.njit(cache=True)
def _median(a: np.ndarray, n: int) -> float:
    """``np.median(a[:n])`` of finite values, in place (``a`` is reordered, not copied)."""
    h = n >> 1
    hi = _kth(a, h, 0, n - 1)
    if n & 1:
        return hi
    lo = a[0]
    for t in range(1, h):
        lo = max(lo, a[t])
    return (lo + hi) / 2


@numba.njit(cache=True)
def _mesh(img: np.ndarray, seg: np.ndarray, box: int, step: int) -> np.ndarray:
    """Medians of the unlabelled finite pixels (every ``step``-th row and column) of
    each ``box`` x ``box`` box with enough of them; NaN elsewhere. One row of boxes
    at a time, each sampled image row read once."""
    ny, nx = img.shape
    mby, mbx = (ny + box - 1) // box, (nx + box - 1) // box
    out = np.full((mby, mbx), np.nan)
    side = (box + step - 1) // step
    buf = np.empty((mbx, side * side))
    cnt = np.zeros(mbx, dtype=np.int64)
    for by in range(mby):
        cnt[:] = 0
        for r in range(by * box, min((by + 1) * box, ny), step):
            for bx in range(mbx):
                k = cnt[bx]
                for c in range(bx * box, min((bx + 1) * box, nx), step):
                    v = img[r, c]
                    if seg[r, c] == 0 and np.isfinite(v):
                        buf[bx, k] = v
                        k += 1
                cnt[bx] = k
        for bx in range(mbx):
            if cnt[bx] >= max(16, side * side // 4):
                out[by, bx] = _median(buf[bx], cnt[bx])
    return out


def background_mesh(image: np.ndarray, segmap: np.ndarray, table: SegmentTable, *,
                    box: int, step: int = 4) -> np.ndarray:
    """The sharp image's residual background under each segment, from one map.

    The image is cut in ``box x box`` pixel boxes; each box's background is the
    median of its unlabelled finite pixels (every ``step``-th row and column),
    when they are at least a quarter of those; other boxes take the nearest
    measured box's. The map is interpolated (bilinearly, between box centres) at
    each segment's centroid. One pass over the image, whatever the number of
    segments (SExtractor's background mesh, without its filtering).

    Examples
    --------
    >>> img = np.full((64, 64), 2.0); img[:, 32:] = 4.0; img[10:14, 10:14] += 10.0
    >>> seg = np.zeros((64, 64), dtype=np.int32); seg[10:14, 10:14] = 1
    >>> background_mesh(img, seg, measure_segments(img, seg), box=16, step=2).tolist()
    [2.0]
    """
    from scipy import ndimage

    if not len(table):
        return np.zeros(0)
    box = max(int(box), 1)
    mesh = _mesh(np.ascontiguousarray(image), np.ascontiguousarray(segmap), box,
                 max(int(step), 1))
    bad = ~np.isfinite(mesh)
    if bad.all():
        return np.zeros(len(table))
    if bad.any():
        idx = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
        mesh = mesh[tuple(idx)]
    coords = np.array([table.y / box - 0.5 + 0.5 / box, table.x / box - 0.5 + 0.5 / box])
    return ndimage.map_coordinates(mesh, coords, order=1, mode="nearest")
