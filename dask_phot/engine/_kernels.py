"""Compiled kernels of the engine: normal equations from stamp overlaps, solves.

All functions here are pure numba functions of arrays. A *stamp* ``i`` is the
``k x k`` array ``stamps[i]`` whose first pixel sits at image column ``x0[i]``
and row ``y0[i]``. A *region* is a half-open pixel box ``(rx0, rx1, ry0, ry1)``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

# status codes written by the solvers (mapped to Flag bits by the callers)
ST_OK = 0
ST_DEGENERATE = 1
ST_FAILED = 2


@numba.njit(cache=True, inline="always")
def _overlap(a0: int, b0: int, k: int, lo: int, hi: int) -> tuple[int, int]:
    """Intersection of [a0, a0+k), [b0, b0+k) and [lo, hi) as (start, stop)."""
    s = max(a0, b0, lo)
    e = min(a0 + k, b0 + k, hi)
    return s, e


@numba.njit(cache=True)
def build_normal(
    members: np.ndarray,
    stamps: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    data: np.ndarray,
    weight: np.ndarray,
    region: np.ndarray,
    nsky: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted normal equations ``N f = b`` over the pixels of ``region``.

    Columns are the stamps of ``members`` followed by ``nsky`` sky terms
    (1, then (x - xc)/L and (y - yc)/L for a plane).
    """
    m = members.shape[0]
    k = stamps.shape[1]
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    p = m + nsky
    nmat = np.zeros((p, p))
    rhs = np.zeros(p)
    xc = 0.5 * (rx0 + rx1 - 1)
    yc = 0.5 * (ry0 + ry1 - 1)
    half = max(0.5 * (rx1 - rx0), 0.5 * (ry1 - ry0), 1.0)
    for a in range(m):
        i = members[a]
        xs, xe = _overlap(x0[i], x0[i], k, rx0, rx1)
        ys, ye = _overlap(y0[i], y0[i], k, ry0, ry1)
        for yy in range(ys, ye):
            for xx in range(xs, xe):
                wv = weight[yy, xx]
                if wv <= 0.0:
                    continue
                s = stamps[i, yy - y0[i], xx - x0[i]] * wv
                rhs[a] += s * data[yy, xx]
                if nsky > 0:
                    nmat[a, m] += s
                if nsky > 1:
                    nmat[a, m + 1] += s * (xx - xc) / half
                    nmat[a, m + 2] += s * (yy - yc) / half
        for bb in range(a, m):
            j = members[bb]
            xs, xe = _overlap(x0[i], x0[j], k, rx0, rx1)
            ys, ye = _overlap(y0[i], y0[j], k, ry0, ry1)
            if xs >= xe or ys >= ye:
                continue
            acc = 0.0
            for yy in range(ys, ye):
                for xx in range(xs, xe):
                    wv = weight[yy, xx]
                    if wv > 0.0:
                        acc += (stamps[i, yy - y0[i], xx - x0[i]]
                                * stamps[j, yy - y0[j], xx - x0[j]] * wv)
            nmat[a, bb] = acc
            nmat[bb, a] = acc
    if nsky > 0:
        for yy in range(ry0, ry1):
            for xx in range(rx0, rx1):
                wv = weight[yy, xx]
                if wv <= 0.0:
                    continue
                t1 = (xx - xc) / half
                t2 = (yy - yc) / half
                nmat[m, m] += wv
                rhs[m] += wv * data[yy, xx]
                if nsky > 1:
                    nmat[m, m + 1] += wv * t1
                    nmat[m, m + 2] += wv * t2
                    nmat[m + 1, m + 1] += wv * t1 * t1
                    nmat[m + 1, m + 2] += wv * t1 * t2
                    nmat[m + 2, m + 2] += wv * t2 * t2
                    rhs[m + 1] += wv * t1 * data[yy, xx]
                    rhs[m + 2] += wv * t2 * data[yy, xx]
        for a in range(m, p):
            for bb in range(a + 1, p):
                nmat[bb, a] = nmat[a, bb]
            for bb in range(m):
                nmat[a, bb] = nmat[bb, a]
    return nmat, rhs


# Flags for kernels whose only floating-point liberty is the order of sums
# (vectorised reductions, fused multiply-adds); NaN and infinity semantics are kept.
_REASSOC = {"reassoc", "contract", "nsz"}


# ---------------------------------------------------------------------------
# Scene normal matrices from block partial sums
#
# The region edges of all tiles cut the image into a grid of *blocks*, and each
# tile region is a union of whole blocks. Every normal-matrix entry (the
# weighted product of two overlapping stamps, or one stamp's own sums) is summed
# once over the image, split into its parts on each block (a ``cell``); a tile's
# entry is then the sum of the cells inside its region. No pixel is visited
# more than once per entry, however many tiles model the pair.


@numba.njit(cache=True)
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


@numba.njit(cache=True, fastmath=_REASSOC)
def _cell_dots(stamps: np.ndarray, i: int, j: int, xi: int, yi: int, xj: int, yj: int,
               weight: np.ndarray, xs: int, xe: int, ys: int, ye: int, xlines: np.ndarray,
               bx0: int, nbx: int, yb: np.ndarray, by0: int, out: np.ndarray) -> None:
    """Add ``sum(w s_i s_j)`` over ``[xs, xe) x [ys, ye)``, split by block, to
    ``out[(by - by0) * nbx + (bx - bx0)]``."""
    for yy in range(ys, ye):
        cell = (yb[yy] - by0) * nbx
        for sb in range(nbx):
            sx0 = max(xs, xlines[bx0 + sb])
            sx1 = min(xe, xlines[bx0 + sb + 1])
            wrow = weight[yy, sx0:sx1]
            si = stamps[i, yy - yi, sx0 - xi : sx1 - xi]
            sj = stamps[j, yy - yj, sx0 - xj : sx1 - xj]
            acc = 0.0
            for c in range(sx1 - sx0):
                acc += wrow[c] * si[c] * sj[c]
            out[cell + sb] += acc


@numba.njit(cache=True, fastmath=_REASSOC)
def _cell_self(stamps: np.ndarray, i: int, xi: int, yi: int, weight: np.ndarray,
               data: np.ndarray, xs: int, xe: int, ys: int, ye: int, xlines: np.ndarray,
               bx0: int, nbx: int, yb: np.ndarray, by0: int, out: np.ndarray) -> None:
    """Add ``sum(w s^2), sum(w s d), sum(w s)`` of stamp ``i`` over a box, split
    by block, to ``out[3 * cell + (0, 1, 2)]``."""
    for yy in range(ys, ye):
        cell = (yb[yy] - by0) * nbx
        for sb in range(nbx):
            sx0 = max(xs, xlines[bx0 + sb])
            sx1 = min(xe, xlines[bx0 + sb + 1])
            wrow = weight[yy, sx0:sx1]
            drow = data[yy, sx0:sx1]
            si = stamps[i, yy - yi, sx0 - xi : sx1 - xi]
            dd = 0.0
            db = 0.0
            ds = 0.0
            for c in range(sx1 - sx0):
                ws = wrow[c] * si[c]
                dd += ws * si[c]
                db += ws * drow[c]
                ds += ws
            out[3 * (cell + sb)] += dd
            out[3 * (cell + sb) + 1] += db
            out[3 * (cell + sb) + 2] += ds


@numba.njit(cache=True)
def pair_table(
    stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray, data: np.ndarray,
    weight: np.ndarray, use: np.ndarray, xlines: np.ndarray, xb: np.ndarray, yb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Block partial sums of the normal-matrix entries of the sources marked ``use``.

    Returns ``ptr, nbr, pcell, pvals, scell, svals``. ``nbr[ptr[i]:ptr[i+1]]``
    are the sources ``j > i`` whose stamps overlap stamp ``i`` within the image;
    pair ``q`` has ``pcell[q] = (bx0, nbx, by0, nby, offset)`` and the partial
    sums ``sum(w s_i s_j)`` of its blocks at ``pvals[offset + (by - by0) * nbx
    + (bx - bx0)]``. ``scell[i]`` and ``svals`` (three values per block) hold
    ``sum(w s_i^2), sum(w s_i d), sum(w s_i)`` of each stamp alike.
    """
    n = stamps.shape[0]
    k = stamps.shape[1]
    ny, nx = weight.shape
    # bucket the used sources into cells of k x k pixels: stamps that overlap
    # lie in neighbouring buckets
    gx0, gy0, gx1, gy1 = 0, 0, 0, 0
    first = True
    for i in range(n):
        if use[i]:
            if first:
                gx0, gy0, gx1, gy1 = x0[i], y0[i], x0[i], y0[i]
                first = False
            gx0, gx1 = min(gx0, x0[i]), max(gx1, x0[i])
            gy0, gy1 = min(gy0, y0[i]), max(gy1, y0[i])
    ngx = (gx1 - gx0) // k + 1
    ngy = (gy1 - gy0) // k + 1
    bucket = np.full(n, -1, dtype=np.int64)
    bstart = np.zeros(ngx * ngy + 1, dtype=np.int64)
    for i in range(n):
        if use[i]:
            bucket[i] = ((y0[i] - gy0) // k) * ngx + (x0[i] - gx0) // k
            bstart[bucket[i] + 1] += 1
    for c in range(ngx * ngy):
        bstart[c + 1] += bstart[c]
    fill = bstart[:-1].copy()
    bsrc = np.empty(bstart[-1], dtype=np.int64)
    for i in range(n):
        if use[i]:
            bsrc[fill[bucket[i]]] = i
            fill[bucket[i]] += 1
    # pairs: count, then list them with their blocks
    ptr = np.zeros(n + 1, dtype=np.int64)
    for sweep in range(2):
        if sweep == 1:
            for i in range(n):
                ptr[i + 1] += ptr[i]
            nbr = np.empty(ptr[n], dtype=np.int64)
            pcell = np.empty((ptr[n], 5), dtype=np.int64)
        for i in range(n):
            if not use[i]:
                continue
            xi, yi = x0[i], y0[i]
            gx, gy = (xi - gx0) // k, (yi - gy0) // k
            pos = ptr[i]
            for cy in range(max(gy - 1, 0), min(gy + 2, ngy)):
                for cx in range(max(gx - 1, 0), min(gx + 2, ngx)):
                    c = cy * ngx + cx
                    for q in range(bstart[c], bstart[c + 1]):
                        j = bsrc[q]
                        if j <= i:
                            continue
                        xj, yj = x0[j], y0[j]
                        xs, xe = max(xi, xj, 0), min(xi + k, xj + k, nx)
                        ys, ye = max(yi, yj, 0), min(yi + k, yj + k, ny)
                        if xs >= xe or ys >= ye:
                            continue
                        if sweep == 0:
                            ptr[i + 1] += 1
                            continue
                        nbr[pos] = j
                        pcell[pos, 0] = xb[xs]
                        pcell[pos, 1] = xb[xe - 1] + 1 - xb[xs]
                        pcell[pos, 2] = yb[ys]
                        pcell[pos, 3] = yb[ye - 1] + 1 - yb[ys]
                        pos += 1
    npair = ptr[n]
    total = 0
    for q in range(npair):
        pcell[q, 4] = total
        total += pcell[q, 1] * pcell[q, 3]
    with numba.objmode(pvals="float64[::1]"):
        pvals = np.zeros(total)
    for i in range(n):
        xi, yi = x0[i], y0[i]
        for q in range(ptr[i], ptr[i + 1]):
            j = nbr[q]
            xj, yj = x0[j], y0[j]
            xs, xe = max(xi, xj, 0), min(xi + k, xj + k, nx)
            ys, ye = max(yi, yj, 0), min(yi + k, yj + k, ny)
            _cell_dots(stamps, i, j, xi, yi, xj, yj, weight, xs, xe, ys, ye, xlines,
                       pcell[q, 0], pcell[q, 1], yb, pcell[q, 2], pvals[pcell[q, 4]:])
    # each stamp's own sums
    scell = np.zeros((n, 5), dtype=np.int64)
    total = 0
    for i in range(n):
        xs, xe = max(x0[i], 0), min(x0[i] + k, nx)
        ys, ye = max(y0[i], 0), min(y0[i] + k, ny)
        if not use[i] or xs >= xe or ys >= ye:
            continue
        scell[i, 0] = xb[xs]
        scell[i, 1] = xb[xe - 1] + 1 - xb[xs]
        scell[i, 2] = yb[ys]
        scell[i, 3] = yb[ye - 1] + 1 - yb[ys]
        scell[i, 4] = total
        total += 3 * scell[i, 1] * scell[i, 3]
    with numba.objmode(svals="float64[::1]"):
        svals = np.zeros(total)
    for i in range(n):
        if scell[i, 1] == 0:
            continue
        xs, xe = max(x0[i], 0), min(x0[i] + k, nx)
        ys, ye = max(y0[i], 0), min(y0[i] + k, ny)
        _cell_self(stamps, i, x0[i], y0[i], weight, data, xs, xe, ys, ye, xlines,
                   scell[i, 0], scell[i, 1], yb, scell[i, 2], svals[scell[i, 4]:])
    return ptr, nbr, pcell, pvals, scell, svals


@numba.njit(cache=True, inline="always")
def _cells_in(cell: np.ndarray, vals: np.ndarray, stride: int, comp: int,
              rbx0: int, rbx1: int, rby0: int, rby1: int) -> float:
    """Sum of the block partial sums of one entry over the blocks of a region."""
    bx0, nbx, by0, nby, off = cell[0], cell[1], cell[2], cell[3], cell[4]
    acc = 0.0
    for by in range(max(by0, rby0), min(by0 + nby, rby1)):
        row = off + stride * (by - by0) * nbx
        for bx in range(max(bx0, rbx0), min(bx0 + nbx, rbx1)):
            acc += vals[row + stride * (bx - bx0) + comp]
    return acc


@numba.njit(cache=True)
def build_normal_tile(
    members: np.ndarray,
    stamps: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    data: np.ndarray,
    weight: np.ndarray,
    region: np.ndarray,
    nsky: int,
    table: tuple,
    xb: np.ndarray,
    yb: np.ndarray,
    loc: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`build_normal` from the block partial sums of a :func:`pair_table`.

    ``region`` must be a union of the blocks (its edges among the block lines);
    ``loc`` is a work array of ``-1`` (one per source), returned as it came.
    """
    ptr, nbr, pcell, pvals, scell, svals = table
    m = members.shape[0]
    k = stamps.shape[1]
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    p = m + nsky
    nmat = np.zeros((p, p))
    rhs = np.zeros(p)
    xc = 0.5 * (rx0 + rx1 - 1)
    yc = 0.5 * (ry0 + ry1 - 1)
    half = max(0.5 * (rx1 - rx0), 0.5 * (ry1 - ry0), 1.0)
    if rx0 >= rx1 or ry0 >= ry1:
        return nmat, rhs
    rbx0, rbx1 = xb[rx0], xb[rx1 - 1] + 1
    rby0, rby1 = yb[ry0], yb[ry1 - 1] + 1
    for a in range(m):
        loc[members[a]] = a
    for a in range(m):
        i = members[a]
        if scell[i, 1] > 0:
            sc = scell[i]
            nmat[a, a] = _cells_in(sc, svals, 3, 0, rbx0, rbx1, rby0, rby1)
            rhs[a] = _cells_in(sc, svals, 3, 1, rbx0, rbx1, rby0, rby1)
            if nsky > 0:
                nmat[a, m] = _cells_in(sc, svals, 3, 2, rbx0, rbx1, rby0, rby1)
        if nsky > 1:
            xi, yi = x0[i], y0[i]
            s1 = 0.0
            s2 = 0.0
            for yy in range(max(yi, ry0), min(yi + k, ry1)):
                for xx in range(max(xi, rx0), min(xi + k, rx1)):
                    s = stamps[i, yy - yi, xx - xi] * weight[yy, xx]
                    s1 += s * (xx - xc) / half
                    s2 += s * (yy - yc) / half
            nmat[a, m + 1] = s1
            nmat[a, m + 2] = s2
        for q in range(ptr[i], ptr[i + 1]):
            bb = loc[nbr[q]]
            if bb < 0:
                continue
            g = _cells_in(pcell[q], pvals, 1, 0, rbx0, rbx1, rby0, rby1)
            nmat[a, bb] = g
            nmat[bb, a] = g
    for a in range(m):
        loc[members[a]] = -1
    if nsky > 0:
        _sky_block(nmat, rhs, data, weight, region, m, nsky, xc, yc, half)
    return nmat, rhs


@numba.njit(cache=True)
def _sky_block(
    nmat: np.ndarray, rhs: np.ndarray, data: np.ndarray, weight: np.ndarray,
    region: np.ndarray, m: int, nsky: int, xc: float, yc: float, half: float,
) -> None:
    """Sky-sky entries and sky right-hand sides; mirror the sky rows/columns."""
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    p = m + nsky
    for yy in range(ry0, ry1):
        for xx in range(rx0, rx1):
            wv = weight[yy, xx]
            if wv <= 0.0:
                continue
            t1 = (xx - xc) / half
            t2 = (yy - yc) / half
            nmat[m, m] += wv
            rhs[m] += wv * data[yy, xx]
            if nsky > 1:
                nmat[m, m + 1] += wv * t1
                nmat[m, m + 2] += wv * t2
                nmat[m + 1, m + 1] += wv * t1 * t1
                nmat[m + 1, m + 2] += wv * t1 * t2
                nmat[m + 2, m + 2] += wv * t2 * t2
                rhs[m + 1] += wv * t1 * data[yy, xx]
                rhs[m + 2] += wv * t2 * data[yy, xx]
    for a in range(m, p):
        for bb in range(a + 1, p):
            nmat[bb, a] = nmat[a, bb]
        for bb in range(m):
            nmat[a, bb] = nmat[bb, a]


@numba.njit(cache=True)
def solve_normal(
    nmat: np.ndarray, rhs: np.ndarray, want_var: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve ``N f = b`` by Jacobi-scaled Cholesky with degeneracy detection.

    A column whose Cholesky pivot (after unit-diagonal scaling) falls below
    ``tol`` is linearly dependent on earlier columns: it is removed from the
    solve and reported ``ST_DEGENERATE`` (so the first of two identical
    sources is kept). A zero diagonal is degenerate too.

    Returns
    -------
    sol : ndarray
        Parameters (0 for removed columns).
    var : ndarray
        Marginal variances ``(N^-1)_ii`` for the columns with ``want_var``.
    status : ndarray of int
        Per-column status code.
    """
    p = rhs.shape[0]
    status = np.zeros(p, dtype=np.int64)
    scale = np.zeros(p)
    for a in range(p):
        if nmat[a, a] > 0.0:
            scale[a] = 1.0 / math.sqrt(nmat[a, a])
        else:
            status[a] = ST_DEGENERATE
    low = np.zeros((p, p))
    for a in range(p):
        if status[a] != ST_OK:
            continue
        for bb in range(a + 1):
            if status[bb] != ST_OK:
                continue
            acc = nmat[a, bb] * scale[a] * scale[bb]
            for c in range(bb):
                acc -= low[a, c] * low[bb, c]
            if a == bb:
                if acc <= tol:
                    status[a] = ST_DEGENERATE
                    for c in range(a):
                        low[a, c] = 0.0
                else:
                    low[a, a] = math.sqrt(acc)
            else:
                low[a, bb] = acc / low[bb, bb]
    # forward / back substitution on the scaled system
    z = np.zeros(p)
    for a in range(p):
        if status[a] != ST_OK:
            continue
        acc = rhs[a] * scale[a]
        for c in range(a):
            acc -= low[a, c] * z[c]
        z[a] = acc / low[a, a]
    sol = np.zeros(p)
    for a in range(p - 1, -1, -1):
        if status[a] != ST_OK:
            continue
        acc = z[a]
        for c in range(a + 1, p):
            acc -= low[c, a] * sol[c]
        sol[a] = acc / low[a, a]
    var = np.full(p, np.nan)
    u = np.zeros(p)
    for a in range(p):
        sol[a] *= scale[a]
        if not want_var[a] or status[a] != ST_OK:
            continue
        # (N'^-1)_aa = || L^-1 e_a ||^2, forward substitution from row a on
        for c in range(p):
            u[c] = 0.0
        u[a] = 1.0 / low[a, a]
        acc = u[a] * u[a]
        for r in range(a + 1, p):
            if status[r] != ST_OK:
                continue
            t = 0.0
            for c in range(a, r):
                t -= low[r, c] * u[c]
            u[r] = t / low[r, r]
            acc += u[r] * u[r]
        var[a] = acc * scale[a] * scale[a]
    return sol, var, status


@numba.njit(cache=True)
def solve_normal_rl(
    nmat: np.ndarray, rhs: np.ndarray, want_var: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`solve_normal`, computed right-looking on the upper factor ``U = L^T``.

    The same operations in the same order as :func:`solve_normal` (each entry
    of the factor subtracts the products of the earlier kept columns in
    increasing order), arranged as updates of contiguous rows that vectorise
    and that skip the zero entries of sparse normal matrices; the results are
    identical.
    """
    p = rhs.shape[0]
    status = np.zeros(p, dtype=np.int64)
    scale = np.zeros(p)
    for a in range(p):
        if nmat[a, a] > 0.0:
            scale[a] = 1.0 / math.sqrt(nmat[a, a])
        else:
            status[a] = ST_DEGENERATE
    # up[c, r] (r >= c): scaled N, then the factor U (up[c, r] = L[r, c])
    up = np.zeros((p, p))
    for c in range(p):
        if status[c] != ST_OK:
            continue
        for r in range(c, p):
            if status[r] == ST_OK:
                up[c, r] = nmat[r, c] * scale[r] * scale[c]
    for c in range(p):
        if status[c] != ST_OK:
            continue
        piv = up[c, c]
        if piv <= tol:
            status[c] = ST_DEGENERATE
            continue
        d = math.sqrt(piv)
        up[c, c] = d
        # (loops over slices from 0 so that the indices are known non-negative
        # and the compiler vectorises them)
        row = up[c, c + 1 :]
        for q in range(p - c - 1):
            row[q] = row[q] / d
        for r in range(c + 1, p):
            f = up[c, r]
            if f == 0.0 or status[r] != ST_OK:
                continue
            src = up[c, r:]
            dst = up[r, r:]
            for q in range(p - r):
                dst[q] -= f * src[q]
    # forward substitution (column-oriented), then back substitution
    b = np.zeros(p)
    for a in range(p):
        if status[a] == ST_OK:
            b[a] = rhs[a] * scale[a]
    z = np.zeros(p)
    for c in range(p):
        if status[c] != ST_OK:
            continue
        zc = b[c] / up[c, c]
        z[c] = zc
        if zc == 0.0:
            continue
        row = up[c, c + 1 :]
        dst = b[c + 1 :]
        for q in range(p - c - 1):
            dst[q] -= row[q] * zc
    sol = np.zeros(p)
    for a in range(p - 1, -1, -1):
        if status[a] != ST_OK:
            continue
        acc = z[a]
        row = up[a, a + 1 :]
        src = sol[a + 1 :]
        for q in range(p - a - 1):
            acc -= row[q] * src[q]
        sol[a] = acc / up[a, a]
    var = np.full(p, np.nan)
    t = np.zeros(p)
    for a in range(p):
        sol[a] *= scale[a]
        if not want_var[a] or status[a] != ST_OK:
            continue
        # (N'^-1)_aa = || L^-1 e_a ||^2, forward substitution from row a on
        for c in range(a, p):
            t[c] = 0.0
        acc = 0.0
        for c in range(a, p):
            if status[c] != ST_OK:
                continue
            uc = (1.0 if c == a else t[c]) / up[c, c]
            acc += uc * uc
            if uc == 0.0:
                continue
            row = up[c, c + 1 :]
            dst = t[c + 1 :]
            for q in range(p - c - 1):
                dst[q] -= row[q] * uc
        var[a] = acc * scale[a] * scale[a]
    return sol, var, status


@numba.njit(cache=True)
def solve_tiles(
    tile_ptr: np.ndarray,
    tile_members: np.ndarray,
    tile_primary: np.ndarray,
    regions: np.ndarray,
    stamps: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    data: np.ndarray,
    weight: np.ndarray,
    nsky: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve every tile's sub-problem; keep the results of its primary sources.

    ``tile_members[tile_ptr[t]:tile_ptr[t+1]]`` are the sources modelled in tile
    ``t`` (sorted by input index) and ``tile_primary`` marks those whose result
    tile ``t`` reports. Returns ``flux, var, status, has_degenerate`` per source
    and the sky parameters ``(ntiles, 3)`` of each tile.
    """
    n = stamps.shape[0]
    ntiles = tile_ptr.shape[0] - 1
    flux = np.full(n, np.nan)
    var = np.full(n, np.nan)
    status = np.full(n, ST_FAILED, dtype=np.int64)
    hasdeg = np.zeros(n, dtype=np.bool_)
    sky = np.zeros((ntiles, 3))
    use = np.zeros(n, dtype=np.bool_)
    for q in range(tile_members.shape[0]):
        use[tile_members[q]] = True
    ny, nx = weight.shape
    k = stamps.shape[1]
    xlines, xb = block_lines(regions, nx, 0)
    ylines, yb = block_lines(regions, ny, 1)
    # block partial sums, unless the blocks are narrower than a quarter stamp on
    # average (tiles of a few pixels), where entries would be split into many cells
    blocks = (4 * nx >= (xlines.shape[0] - 1) * k) and (4 * ny >= (ylines.shape[0] - 1) * k)
    if blocks:
        table = pair_table(stamps, x0, y0, data, weight, use, xlines, xb, yb)
    else:
        table = pair_table(stamps[:0], x0[:0], y0[:0], data, weight, use[:0], xlines, xb, yb)
    loc = np.full(n, -1, dtype=np.int64)
    for t in range(ntiles):
        lo, hi = tile_ptr[t], tile_ptr[t + 1]
        members = tile_members[lo:hi]
        m = hi - lo
        if blocks:
            nmat, rhs = build_normal_tile(members, stamps, x0, y0, data, weight, regions[t],
                                          nsky, table, xb, yb, loc)
        else:
            nmat, rhs = build_normal(members, stamps, x0, y0, data, weight, regions[t], nsky)
        want = np.zeros(m + nsky, dtype=np.bool_)
        for a in range(m):
            want[a] = tile_primary[lo + a]
        sol, v, st = solve_normal_rl(nmat, rhs, want, tol)
        for s in range(nsky):
            sky[t, s] = sol[m + s]
        for a in range(m):
            if not tile_primary[lo + a]:
                continue
            i = members[a]
            status[i] = st[a]
            if st[a] == ST_OK:
                flux[i] = sol[a]
                var[i] = v[a]
                # an earlier-listed degenerate partner merged into this source?
                for bb in range(a + 1, m):
                    if st[bb] == ST_DEGENERATE and nmat[bb, bb] > 0.0:
                        c = nmat[a, bb] / math.sqrt(nmat[a, a] * nmat[bb, bb])
                        if c > 0.999:
                            hasdeg[i] = True
    return flux, var, status, hasdeg, sky


@numba.njit(cache=True)
def _zeros_image(ny: int, nx: int) -> np.ndarray:
    # numpy's allocation (huge pages for large arrays) faults in faster than numba's
    with numba.objmode(out="float64[:, ::1]"):
        out = np.zeros((ny, nx))
    return out


@numba.njit(cache=True)
def scatter_model(
    stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray, flux: np.ndarray, shape: tuple
) -> np.ndarray:
    """Sum ``flux[i] * stamps[i]`` into an image of ``shape`` (NaN fluxes skipped)."""
    ny, nx = shape
    out = _zeros_image(ny, nx)
    k = stamps.shape[1]
    for i in range(stamps.shape[0]):
        f = flux[i]
        if not math.isfinite(f):
            continue
        cs, ce = max(0, -x0[i]), min(k, nx - x0[i])
        if cs >= ce:
            continue
        for r in range(k):
            yy = y0[i] + r
            if yy < 0 or yy >= ny:
                continue
            orow = out[yy, x0[i] + cs : x0[i] + ce]
            srow = stamps[i, r, cs:ce]
            for c in range(ce - cs):
                orow[c] += f * srow[c]
    return out


@numba.njit(cache=True)
def footprint_counts(
    x0: np.ndarray, y0: np.ndarray, k: int, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counts of :func:`footprint_stats`, ``(n_usable, n_masked, n_outside)``.

    Exact box counts of the ``k x k`` footprints from a summed-area table of
    the usable (weight > 0) pixels.
    """
    n = x0.shape[0]
    ny, nx = weight.shape
    sat = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    for yy in range(ny):
        run = 0
        wrow = weight[yy]
        above = sat[yy]
        row = sat[yy + 1]
        for xx in range(nx):
            if wrow[xx] > 0.0:
                run += 1
            row[xx + 1] = above[xx + 1] + run
    nuse = np.zeros(n, dtype=np.int64)
    nmask = np.zeros(n, dtype=np.int64)
    nout = np.zeros(n, dtype=np.int64)
    for i in range(n):
        xs, xe = min(max(x0[i], 0), nx), max(min(x0[i] + k, nx), 0)
        ys, ye = min(max(y0[i], 0), ny), max(min(y0[i] + k, ny), 0)
        inside = max(xe - xs, 0) * max(ye - ys, 0)
        nout[i] = k * k - inside
        if inside > 0:
            nuse[i] = sat[ye, xe] - sat[ys, xe] - sat[ye, xs] + sat[ys, xs]
        nmask[i] = inside - nuse[i]
    return nuse, nmask, nout


@numba.njit(cache=True)
def footprint_chi2(
    x0: np.ndarray, y0: np.ndarray, k: int, weight: np.ndarray, resid: np.ndarray
) -> np.ndarray:
    """The ``chi2sum`` of :func:`footprint_stats`: ``sum(weight * resid**2)`` over
    each footprint's usable pixels, summed in the same order.

    Footprints are visited in row order of the image (the sums do not depend
    on the order of the sources), which keeps the image rows in cache.
    """
    n = x0.shape[0]
    ny, nx = weight.shape
    chi = np.zeros(n)
    order = np.argsort(y0, kind="mergesort")
    for t in range(n):
        i = order[t]
        cs, ce = max(0, -x0[i]), min(k, nx - x0[i])
        if cs >= ce:
            continue
        acc = 0.0
        for r in range(k):
            yy = y0[i] + r
            if yy < 0 or yy >= ny:
                continue
            wrow = weight[yy, x0[i] + cs : x0[i] + ce]
            rrow = resid[yy, x0[i] + cs : x0[i] + ce]
            for c in range(ce - cs):
                wv = wrow[c]
                if wv > 0.0:
                    acc += wv * rrow[c] * rrow[c]
        chi[i] = acc
    return chi


@numba.njit(cache=True)
def footprint_stats(
    stamps: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    weight: np.ndarray,
    resid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-source footprint statistics over the image.

    Returns ``(n_usable, n_masked, n_outside, chi2sum)``: usable pixels
    (weight > 0), masked pixels inside the image, stamp pixels outside the
    image, and ``sum(weight * resid**2)`` over usable pixels.
    """
    n = stamps.shape[0]
    k = stamps.shape[1]
    ny, nx = weight.shape
    nuse = np.zeros(n, dtype=np.int64)
    nmask = np.zeros(n, dtype=np.int64)
    nout = np.zeros(n, dtype=np.int64)
    chi = np.zeros(n)
    for i in range(n):
        for r in range(k):
            yy = y0[i] + r
            for c in range(k):
                xx = x0[i] + c
                if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    nout[i] += 1
                    continue
                wv = weight[yy, xx]
                if wv > 0.0:
                    nuse[i] += 1
                    chi[i] += wv * resid[yy, xx] * resid[yy, xx]
                else:
                    nmask[i] += 1
    return nuse, nmask, nout, chi
