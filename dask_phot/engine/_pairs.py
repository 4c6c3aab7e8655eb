"""Compiled kernels of the engine: the table of overlapping stamp pairs and
their block partial sums, from which :mod:`dask_phot.engine._normal` assembles
each tile's normal matrix.

All functions here are pure numba functions of arrays. Stamps are ragged
(:class:`dask_phot.models.stamps.Stamps`): stamp ``i`` is the ``h[i] x w[i]``
array ``data[ptr[i]:ptr[i+1]]`` whose first pixel sits at image column ``x0[i]``
and row ``y0[i]``. A *region* is a half-open pixel box ``(rx0, rx1, ry0, ry1)``.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["block_lines", "cells_in", "pair_table", "pair_totals", "reused_pair_table"]

# Flags for kernels whose only floating-point liberty is the order of sums
# (vectorised reductions, fused multiply-adds); NaN and infinity semantics are kept.
_REASSOC = {"reassoc", "contract", "nsz"}
# The sums' kernels index with unsigned integers (``np.uint64``): numba then adds no
# wrap-around test for negative indices, which the short rows paid at every pixel (the
# indices are never negative: the boxes are clipped to the image and to the stamps).


# ---------------------------------------------------------------------------
# Scene normal matrices from block partial sums
#
# The region edges of all tiles cut the image into a grid of *blocks*, and each
# tile region is a union of whole blocks. Every normal-matrix entry (the
# weighted product of two overlapping stamps, or one stamp's own sums) is summed
# once over the image, split into its parts on each block (a ``cell``); a tile's
# entry is then the sum of the cells inside its region. No pixel is visited
# more than once per entry, however many tiles model the pair.


@numba.njit(cache=True, nogil=True)
def block_lines(regions: np.ndarray, n: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted block edges along one axis (``axis`` 0: x, 1: y) of an image ``n``
    pixels wide, from the region edges, and the block index of every pixel."""
    edges = np.empty(2 * regions.shape[0] + 2, dtype=np.int64)
    for t in range(regions.shape[0]):
        edges[2 * t] = regions[t, 2 * axis]
        edges[2 * t + 1] = regions[t, 2 * axis + 1]
    edges[-2] = 0
    edges[-1] = n
    lines = np.unique(edges)
    index = np.empty(n, dtype=np.int64)
    for b in range(lines.shape[0] - 1):
        for x in range(lines[b], lines[b + 1]):
            index[x] = b
    return lines, index


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _cell_self(data: np.ndarray, oi: int, wi: int, xi: int, yi: int, weight: np.ndarray,
               image: np.ndarray, xs: int, xe: int, ys: int, ye: int, xlines: np.ndarray,
               bx0: int, nbx: int, yb: np.ndarray, by0: int, out: np.ndarray) -> None:
    """Add ``sum(w s^2), sum(w s d), sum(w s)`` of stamp ``i`` over a box, split
    by block, to ``out[3 * cell + (0, 1, 2)]``."""
    u = np.uint64
    for yy in range(ys, ye):
        cell = (yb[yy] - by0) * nbx
        ri = oi + (yy - yi) * wi - xi
        wr = weight[yy]
        dr = image[yy]
        for sb in range(nbx):
            sx0 = max(xs, xlines[bx0 + sb])
            sx1 = min(xe, xlines[bx0 + sb + 1])
            dd = 0.0
            db = 0.0
            ds = 0.0
            for c in range(sx0, sx1):
                ws = wr[u(c)] * data[u(ri + c)]
                dd += ws * data[u(ri + c)]
                db += ws * dr[u(c)]
                ds += ws
            q = u(3 * (cell + sb))
            out[q] += dd
            out[q + u(1)] += db
            out[q + u(2)] += ds


@numba.njit(cache=True, nogil=True)
def _buckets(x0: np.ndarray, y0: np.ndarray, w: np.ndarray, h: np.ndarray, use: np.ndarray,
             nx: int, ny: int, c: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Register every used stamp (clipped to the image) in each ``c x c`` bucket it covers.

    Returns the CSR ``(start, members)`` of the buckets and the grid's ``(ngx, ngy)``.
    """
    n = x0.shape[0]
    ngx = (nx - 1) // c + 1
    ngy = (ny - 1) // c + 1
    start = np.zeros(ngx * ngy + 1, dtype=np.int64)
    for sweep in range(2):
        if sweep == 1:
            for b in range(ngx * ngy):
                start[b + 1] += start[b]
            fill = start[:-1].copy()
            members = np.empty(start[-1], dtype=np.int64)
        for i in range(n):
            xs, xe = max(x0[i], 0), min(x0[i] + w[i], nx)
            ys, ye = max(y0[i], 0), min(y0[i] + h[i], ny)
            if not use[i] or xs >= xe or ys >= ye:
                continue
            for gy in range(ys // c, (ye - 1) // c + 1):
                for gx in range(xs // c, (xe - 1) // c + 1):
                    b = gy * ngx + gx
                    if sweep == 0:
                        start[b + 1] += 1
                    else:
                        members[fill[b]] = i
                        fill[b] += 1
    return start, members, ngx, ngy


def pair_table(
    data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray, x0: np.ndarray,
    y0: np.ndarray, image: np.ndarray, weight: np.ndarray, use: np.ndarray,
    xlines: np.ndarray, xb: np.ndarray, yb: np.ndarray,
) -> tuple:
    """Block partial sums of the normal-matrix entries of the sources marked ``use``.

    Returns ``ptr, nbr, pcell, pvals, scell, svals, sums``. ``nbr[ptr[i]:ptr[i+1]]``
    are the sources ``j > i`` whose stamps overlap stamp ``i`` within the image;
    pair ``q`` has ``pcell[q] = (bx0, nbx, by0, nby, offset)`` and the partial
    sums ``sum(w s_i s_j)`` of its blocks at ``pvals[offset + (by - by0) * nbx
    + (bx - bx0)]``. ``scell[i]`` and ``svals`` (three values per block) hold
    ``sum(w s_i^2), sum(w s_i d), sum(w s_i)`` of each stamp alike. A seventh
    item, :func:`sky_sums` of the image, gives a region's ``sum(w)`` and
    ``sum(w d)`` (a tile's constant sky term) in four look-ups.

    The compiled parts run without the GIL; the sums' buffers are allocated by
    numpy between them (its large arrays get huge pages: fewer page faults).
    """
    pp, nbr, pcell, scell, ptotal, stotal = _pair_cells(w, h, x0, y0, weight.shape, use,
                                                         xb, yb)
    pvals = np.zeros(ptotal)
    svals = np.zeros(stotal)
    _pair_sums(data, ptr, w, h, x0, y0, image, weight, xlines, yb, pp, nbr, pcell, pvals,
               scell, svals)
    sums = np.empty((2, weight.shape[0] + 1, weight.shape[1] + 1))
    sky_sums(image, weight, sums)
    return pp, nbr, pcell, pvals, scell, svals, sums


def reused_pair_table(
    prior: tuple, prior_weight: np.ndarray, data: np.ndarray, ptr: np.ndarray, w: np.ndarray,
    h: np.ndarray, x0: np.ndarray, y0: np.ndarray, image: np.ndarray, weight: np.ndarray,
    use: np.ndarray, xlines: np.ndarray, xb: np.ndarray, yb: np.ndarray,
) -> tuple | None:
    """:func:`pair_table` for new weights and data, from the table ``prior`` of the same
    stamps and block lines made with ``prior_weight`` (a first fit's).

    A pair's sums are copied where its overlap has no pixel whose weight changed,
    and the pair is left out where its overlap has no pixel of non-zero weight (its
    sums are 0, as those of a pair missing from the table); only the other pairs,
    and the stamps' own sums (which hold the data), are summed again, so the result
    equals :func:`pair_table`'s value for value. None when ``use`` marks a stamp that
    has no pairs in ``prior`` (not used there).
    """
    scell, stotal = _self_cells(w, h, x0, y0, weight.shape, use, xb, yb)
    if ((scell[:, 1] > 0) & (prior[4][:, 1] == 0)).any():
        return None
    ny, nx = weight.shape
    counts = np.empty((ny + 1, nx + 1, 2), dtype=np.int64)
    _change_counts(prior_weight, weight, counts)
    opp, onbr, opcell = prior[0], prior[1], prior[2]
    pp = np.zeros(w.shape[0] + 1, dtype=np.int64)
    fate = np.empty(onbr.shape[0], dtype=np.int8)
    m = _pair_fates(opp, onbr, w, h, x0, y0, use, counts, pp, fate)
    # (buffers made by numpy: huge pages)
    nbr = np.empty(m, dtype=np.int64)
    pcell = np.empty((m, 5), dtype=np.int64)
    src = np.empty(m, dtype=np.int64)
    ptotal = _kept_pairs(onbr, opcell, fate, nbr, pcell, src)
    pvals = np.zeros(ptotal)
    svals = np.zeros(stotal)
    _reused_sums(data, ptr, w, h, x0, y0, weight, xlines, yb, pp, nbr, pcell, src,
                 prior[3], pvals)
    _self_sums(data, ptr, w, h, x0, y0, image, weight, xlines, yb, scell, svals)
    sums = np.empty((2, ny + 1, nx + 1))
    sky_sums(image, weight, sums)
    return pp, nbr, pcell, pvals, scell, svals, sums


@numba.njit(cache=True, nogil=True)
def _change_counts(before: np.ndarray, after: np.ndarray, counts: np.ndarray) -> None:
    """Summed-area tables ``(ny + 1, nx + 1, 2)`` (as :func:`sky_sums`'s, the two side by
    side) of the pixels whose weight changed (``[..., 0]``) and of those whose new
    weight is not 0 (``[..., 1]``)."""
    ny, nx = after.shape
    counts[0, :, :] = 0
    for yy in range(ny):
        a0 = 0
        a1 = 0
        counts[yy + 1, 0, :] = 0
        for xx in range(nx):
            a0 += before[yy, xx] != after[yy, xx]
            a1 += after[yy, xx] != 0.0
            counts[yy + 1, xx + 1, 0] = counts[yy, xx + 1, 0] + a0
            counts[yy + 1, xx + 1, 1] = counts[yy, xx + 1, 1] + a1


@numba.njit(cache=True, nogil=True)
def _pair_fates(opp: np.ndarray, onbr: np.ndarray, w: np.ndarray, h: np.ndarray,
                x0: np.ndarray, y0: np.ndarray, use: np.ndarray, counts: np.ndarray,
                pp: np.ndarray, fate: np.ndarray) -> int:
    """What becomes of each pair of a prior table (``opp, onbr``; ``fate``): 0, left out
    (a stamp not used, or no pixel of non-zero weight: :func:`_change_counts`); 1, its
    sums copied (no weight changed); 2, summed again. Sets the kept pairs' ``pp`` (as
    :func:`pair_table`'s) and returns their number."""
    nx, ny = counts.shape[1] - 1, counts.shape[0] - 1
    m = 0
    for i in range(w.shape[0]):
        pp[i] = m
        for q in range(opp[i], opp[i + 1]):
            fate[q] = 0
            j = onbr[q]
            if not (use[i] and use[j]):
                continue
            xs, xe = max(x0[i], x0[j], 0), min(x0[i] + w[i], x0[j] + w[j], nx)
            ys, ye = max(y0[i], y0[j], 0), min(y0[i] + h[i], y0[j] + h[j], ny)
            a, b, c, d = counts[ye, xe], counts[ys, xe], counts[ye, xs], counts[ys, xs]
            if (a[1] - b[1]) - (c[1] - d[1]) == 0:
                continue
            fate[q] = 1 if (a[0] - b[0]) - (c[0] - d[0]) == 0 else 2
            m += 1
    pp[w.shape[0]] = m
    return m


@numba.njit(cache=True, nogil=True)
def _kept_pairs(onbr: np.ndarray, opcell: np.ndarray, fate: np.ndarray, nbr: np.ndarray,
                pcell: np.ndarray, src: np.ndarray) -> int:
    """The kept pairs' ``nbr, pcell`` (as :func:`pair_table`'s) and ``src`` (the offset of
    the prior sums to copy, or -1: summed again), from their :func:`_pair_fates`;
    returns the length of their sums' buffer."""
    k = 0
    ptotal = 0
    for q in range(onbr.shape[0]):
        if fate[q] == 0:
            continue
        nbr[k] = onbr[q]
        pcell[k, :4] = opcell[q, :4]
        pcell[k, 4] = ptotal
        ptotal += pcell[k, 1] * pcell[k, 3]
        src[k] = opcell[q, 4] if fate[q] == 1 else -1
        k += 1
    return ptotal


@numba.njit(cache=True, nogil=True)
def _reused_sums(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
                 x0: np.ndarray, y0: np.ndarray, weight: np.ndarray, xlines: np.ndarray,
                 yb: np.ndarray, pp: np.ndarray, nbr: np.ndarray, pcell: np.ndarray,
                 src: np.ndarray, opvals: np.ndarray, pvals: np.ndarray) -> None:
    """:func:`reused_pair_table`'s pair sums, into the zeroed ``pvals``: copied from the
    prior table's ``opvals`` (the same blocks, from offset ``src``), or summed again
    as :func:`_pair_sums` does (stamp ``i`` weighted once, when it has a pair to sum)."""
    ny, nx = weight.shape
    u = np.uint64
    most = 0
    for i in range(w.shape[0]):
        most = max(most, w[i] * h[i])
    ws = np.empty(most)
    for i in range(w.shape[0]):
        xi, yi = x0[i], y0[i]
        ixs, ixe = max(xi, 0), min(xi + w[i], nx)
        iys, iye = max(yi, 0), min(yi + h[i], ny)
        made = False
        for k in range(pp[i], pp[i + 1]):
            off = u(pcell[k, 4])
            if src[k] >= 0:
                at = u(src[k])
                for c in range(u(pcell[k, 1] * pcell[k, 3])):
                    pvals[off + c] = opvals[at + c]
                continue
            if not made:
                _weighted(data, ptr[i], w[i], xi, yi, weight, ixs, ixe, iys, iye, ws)
                made = True
            j = nbr[k]
            xj, yj = x0[j], y0[j]
            xs, xe = max(ixs, xj), min(ixe, xj + w[j])
            ys, ye = max(iys, yj), min(iye, yj + h[j])
            _cell_products(ws, ixe - ixs, ixs, iys, data, ptr[j], w[j], xj, yj, xs, xe, ys,
                           ye, xlines, pcell[k, 0], pcell[k, 1], yb, pcell[k, 2],
                           pvals[pcell[k, 4]:])


@numba.njit(cache=True, nogil=True)
def sky_sums(image: np.ndarray, weight: np.ndarray, sums: np.ndarray,
             with_weights: bool = True) -> None:
    """Summed-area tables of ``w`` and ``w d`` over the pixels with ``w > 0``, into
    ``sums`` ``(2, ny + 1, nx + 1)``: ``sums[k, y, x]`` sums the pixels below ``y``
    and left of ``x`` (see :func:`region_sum`). Without ``with_weights`` only the
    ``w d`` table is made (new data, same weights)."""
    ny, nx = weight.shape
    sums[:, 0, :] = 0.0
    for yy in range(ny):
        a0 = 0.0
        a1 = 0.0
        sums[0, yy + 1, 0] = 0.0
        sums[1, yy + 1, 0] = 0.0
        wrow = weight[yy]
        drow = image[yy]
        above = sums[1, yy]
        row = sums[1, yy + 1]
        for xx in range(nx):
            wv = wrow[xx]
            if wv > 0.0:
                a1 += wv * drow[xx]
            row[xx + 1] = above[xx + 1] + a1
        if not with_weights:
            continue
        above = sums[0, yy]
        row = sums[0, yy + 1]
        for xx in range(nx):
            wv = wrow[xx]
            if wv > 0.0:
                a0 += wv
            row[xx + 1] = above[xx + 1] + a0


@numba.njit(cache=True, nogil=True, inline="always")
def region_sum(sums: np.ndarray, k: int, rx0: int, rx1: int, ry0: int, ry1: int) -> float:
    """Sum of table ``k`` of :func:`sky_sums` over ``rx0 <= x < rx1, ry0 <= y < ry1``."""
    return (sums[k, ry1, rx1] - sums[k, ry0, rx1]) - (sums[k, ry1, rx0] - sums[k, ry0, rx0])


def _pair_cells(w: np.ndarray, h: np.ndarray, x0: np.ndarray, y0: np.ndarray, shape: tuple,
                use: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> tuple:
    """The index part of :func:`pair_table`: ``pp, nbr, pcell, scell`` and the lengths of
    the pair and self sums' buffers.

    The pairs are found twice, counted then written: into buffers of their size made
    by numpy (huge pages), where growing buffers made in numba cost more in page
    faults and copies than the search itself.
    """
    grid = _pair_grid(w, h, x0, y0, shape, use)
    pp = np.zeros(w.shape[0] + 1, dtype=np.int64)
    count, _ = _pair_scan(w, h, x0, y0, shape, use, xb, yb, grid, pp,
                          np.empty(0, dtype=np.int64), np.empty((0, 5), dtype=np.int64), False)
    nbr = np.empty(count, dtype=np.int64)
    pcell = np.empty((count, 5), dtype=np.int64)
    _, ptotal = _pair_scan(w, h, x0, y0, shape, use, xb, yb, grid, pp, nbr, pcell, True)
    scell, stotal = _self_cells(w, h, x0, y0, shape, use, xb, yb)
    return pp, nbr, pcell, scell, ptotal, stotal


@numba.njit(cache=True, nogil=True)
def _pair_grid(w: np.ndarray, h: np.ndarray, x0: np.ndarray, y0: np.ndarray, shape: tuple,
               use: np.ndarray) -> tuple:
    """Buckets about the median stamp side (:func:`_buckets`) for :func:`_pair_scan`:
    ``(c, start, members, boxes, ngx)``, each member's box ``(x0, x1, y0, y1)`` beside it
    (read in sequence)."""
    ny, nx = shape
    c = 16
    if w.shape[0] > 0:
        c = max(int(np.median(w)), 8)
    bstart, bsrc, ngx, _ = _buckets(x0, y0, w, h, use, nx, ny, c)
    box = np.empty((bsrc.shape[0], 4), dtype=np.int64)
    for q in range(bsrc.shape[0]):
        j = bsrc[q]
        box[q, 0], box[q, 1] = x0[j], x0[j] + w[j]
        box[q, 2], box[q, 3] = y0[j], y0[j] + h[j]
    return c, bstart, bsrc, box, ngx


@numba.njit(cache=True, nogil=True)
def _pair_scan(w: np.ndarray, h: np.ndarray, x0: np.ndarray, y0: np.ndarray, shape: tuple,
               use: np.ndarray, xb: np.ndarray, yb: np.ndarray, grid: tuple, pp: np.ndarray,
               nbr: np.ndarray, pcell: np.ndarray, fill: bool) -> tuple[int, int]:
    """Find the pairs (``pp``), and with ``fill`` write ``nbr`` and ``pcell``; return their
    number and the length of their sums' buffer.

    Each pair is found in the bucket that holds the top-left corner of its overlap,
    exactly once. Buckets list their members in index order, so the first member
    after stamp ``i`` in each bucket only moves on as ``i`` does.
    """
    c, bstart, bsrc, box, ngx = grid
    ny, nx = shape
    after = bstart[:-1].copy()
    pos = 0
    ptotal = 0
    for i in range(w.shape[0]):
        pp[i] = pos
        ixs, ixe = max(x0[i], 0), min(x0[i] + w[i], nx)
        iys, iye = max(y0[i], 0), min(y0[i] + h[i], ny)
        if not use[i] or ixs >= ixe or iys >= iye:
            continue
        for gy in range(iys // c, (iye - 1) // c + 1):
            for gx in range(ixs // c, (ixe - 1) // c + 1):
                b = gy * ngx + gx
                first, end = after[b], bstart[b + 1]
                while first < end and bsrc[first] <= i:
                    first += 1
                after[b] = first
                for q in range(first, end):
                    xs, xe = max(ixs, box[q, 0]), min(ixe, box[q, 1])
                    ys, ye = max(iys, box[q, 2]), min(iye, box[q, 3])
                    if xs >= xe or ys >= ye or xs // c != gx or ys // c != gy:
                        continue
                    if fill:
                        nbr[pos] = bsrc[q]
                        pcell[pos, 0] = xb[xs]
                        pcell[pos, 1] = xb[xe - 1] + 1 - xb[xs]
                        pcell[pos, 2] = yb[ys]
                        pcell[pos, 3] = yb[ye - 1] + 1 - yb[ys]
                        pcell[pos, 4] = ptotal
                        ptotal += pcell[pos, 1] * pcell[pos, 3]
                    pos += 1
    pp[w.shape[0]] = pos
    return pos, ptotal


@numba.njit(cache=True, nogil=True)
def _self_cells(w: np.ndarray, h: np.ndarray, x0: np.ndarray, y0: np.ndarray, shape: tuple,
                use: np.ndarray, xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, int]:
    """Each used stamp's blocks ``scell`` (as :func:`pair_table`'s) and the length of the
    self sums' buffer."""
    ny, nx = shape
    n = w.shape[0]
    scell = np.zeros((n, 5), dtype=np.int64)
    stotal = 0
    for i in range(n):
        xs, xe = max(x0[i], 0), min(x0[i] + w[i], nx)
        ys, ye = max(y0[i], 0), min(y0[i] + h[i], ny)
        if not use[i] or xs >= xe or ys >= ye:
            continue
        scell[i, 0] = xb[xs]
        scell[i, 1] = xb[xe - 1] + 1 - xb[xs]
        scell[i, 2] = yb[ys]
        scell[i, 3] = yb[ye - 1] + 1 - yb[ys]
        scell[i, 4] = stotal
        stotal += 3 * scell[i, 1] * scell[i, 3]
    return scell, stotal


@numba.njit(cache=True, nogil=True)
def _pair_sums(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
               x0: np.ndarray, y0: np.ndarray, image: np.ndarray, weight: np.ndarray,
               xlines: np.ndarray, yb: np.ndarray, pp: np.ndarray, nbr: np.ndarray,
               pcell: np.ndarray, pvals: np.ndarray, scell: np.ndarray,
               svals: np.ndarray) -> None:
    """The sums part of :func:`pair_table`, into the zeroed ``pvals`` and ``svals``.

    Stamp ``i``'s weighted pixels ``w s_i`` are made once (:func:`_weighted`) for all its
    pairs: the products ``(w s_i) s_j`` are those of ``w s_i s_j`` summed left to right.
    """
    n = w.shape[0]
    ny, nx = weight.shape
    most = 0
    for i in range(n):
        most = max(most, w[i] * h[i])
    ws = np.empty(most)
    for i in range(n):
        if pp[i + 1] == pp[i]:
            continue
        xi, yi = x0[i], y0[i]
        ixs, ixe = max(xi, 0), min(xi + w[i], nx)
        iys, iye = max(yi, 0), min(yi + h[i], ny)
        _weighted(data, ptr[i], w[i], xi, yi, weight, ixs, ixe, iys, iye, ws)
        for q in range(pp[i], pp[i + 1]):
            j = nbr[q]
            xj, yj = x0[j], y0[j]
            xs, xe = max(ixs, xj), min(ixe, xj + w[j])
            ys, ye = max(iys, yj), min(iye, yj + h[j])
            _cell_products(ws, ixe - ixs, ixs, iys, data, ptr[j], w[j], xj, yj, xs, xe, ys,
                           ye, xlines, pcell[q, 0], pcell[q, 1], yb, pcell[q, 2],
                           pvals[pcell[q, 4]:])
    _self_sums(data, ptr, w, h, x0, y0, image, weight, xlines, yb, scell, svals)


@numba.njit(cache=True, nogil=True, inline="always")
def _weighted(data: np.ndarray, oi: int, wi: int, xi: int, yi: int, weight: np.ndarray,
              xs: int, xe: int, ys: int, ye: int, out: np.ndarray) -> None:
    """``w s_i`` over the box ``[xs, xe) x [ys, ye)`` of the image, into ``out`` (rows of
    ``xe - xs``)."""
    u = np.uint64
    k = u(0)
    for yy in range(ys, ye):
        ri = u(oi + (yy - yi) * wi - xi)
        wr = weight[yy]
        for c in range(u(xs), u(xe)):
            out[k] = wr[c] * data[ri + c]
            k += u(1)


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _cell_products(ws: np.ndarray, wi: int, xi: int, yi: int, data: np.ndarray, oj: int,
                   wj: int, xj: int, yj: int, xs: int, xe: int, ys: int, ye: int,
                   xlines: np.ndarray, bx0: int, nbx: int, yb: np.ndarray, by0: int,
                   out: np.ndarray) -> None:
    """Add ``sum(w s_i s_j)`` over ``[xs, xe) x [ys, ye)``, split by block, to
    ``out[(by - by0) * nbx + (bx - bx0)]``, with stamp ``i`` already weighted (``ws``
    from :func:`_weighted`: rows of ``wi`` pixels from image column ``xi`` and row
    ``yi``); stamp ``j`` starts at ``data[oj]`` with rows of ``wj`` pixels."""
    u = np.uint64
    for yy in range(ys, ye):
        cell = (yb[yy] - by0) * nbx
        ri = (yy - yi) * wi - xi
        rj = oj + (yy - yj) * wj - xj
        for sb in range(nbx):
            sx0 = max(xs, xlines[bx0 + sb])
            sx1 = min(xe, xlines[bx0 + sb + 1])
            acc = 0.0
            for c in range(sx0, sx1):
                acc += ws[u(ri + c)] * data[u(rj + c)]
            out[u(cell + sb)] += acc


@numba.njit(cache=True, nogil=True)
def _self_sums(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
               x0: np.ndarray, y0: np.ndarray, image: np.ndarray, weight: np.ndarray,
               xlines: np.ndarray, yb: np.ndarray, scell: np.ndarray, svals: np.ndarray
               ) -> None:
    """The stamps' own block sums of :func:`pair_table`, into the zeroed ``svals``."""
    ny, nx = weight.shape
    for i in range(w.shape[0]):
        if scell[i, 1] == 0:
            continue
        xs, xe = max(x0[i], 0), min(x0[i] + w[i], nx)
        ys, ye = max(y0[i], 0), min(y0[i] + h[i], ny)
        _cell_self(data, ptr[i], w[i], x0[i], y0[i], weight, image, xs, xe, ys, ye, xlines,
                   scell[i, 0], scell[i, 1], yb, scell[i, 2], svals[scell[i, 4]:])


@numba.njit(cache=True, nogil=True, inline="always")
def cells_in(cell: np.ndarray, vals: np.ndarray, stride: int, comp: int,
              rbx0: int, rbx1: int, rby0: int, rby1: int) -> float:
    """Sum of the block partial sums of one entry over the blocks of a region."""
    bx0, nbx, by0, nby, off = cell[0], cell[1], cell[2], cell[3], cell[4]
    u = np.uint64  # unsigned indices: no wrap-around tests
    acc = 0.0
    for by in range(max(by0, rby0), min(by0 + nby, rby1)):
        row = u(off + stride * (by - by0) * nbx + comp)
        for bx in range(max(bx0, rbx0), min(bx0 + nbx, rbx1)):
            acc += vals[row + u(stride * (bx - bx0))]
    return acc


@numba.njit(cache=True, nogil=True)
def pair_totals(pp: np.ndarray, nbr: np.ndarray, pcell: np.ndarray, pvals: np.ndarray,
                scell: np.ndarray, svals: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The whole-image products of a :func:`pair_table`: each pair's ``sum(w s_i s_j)``
    (as ``a, b, values``, stamp rows ``a < b`` in the table's order) and every stamp's
    ``sum(w s_i^2)`` (0 for the stamps the table does not hold): its blocks' partial
    sums added up."""
    m = nbr.shape[0]
    a = np.empty(m, dtype=np.int64)
    vals = np.zeros(m)
    for i in range(pp.shape[0] - 1):
        for q in range(pp[i], pp[i + 1]):
            a[q] = i
            off = pcell[q, 4]
            acc = 0.0
            for c in range(pcell[q, 1] * pcell[q, 3]):
                acc += pvals[off + c]
            vals[q] = acc
    diag = np.zeros(scell.shape[0])
    for i in range(scell.shape[0]):
        off = scell[i, 4]
        acc = 0.0
        for c in range(scell[i, 1] * scell[i, 3]):
            acc += svals[off + 3 * c]
        diag[i] = acc
    return a, nbr.copy(), vals, diag
