"""Compiled kernels of the engine: normal equations from stamp overlaps, and solves.

:func:`solve_tiles` builds each tile's weighted normal equations (directly with
:func:`build_normal`, or from the block partial sums of
:func:`dask_phot.engine._pairs.pair_table` with :func:`build_normal_tile`) and
solves them right-looking (:mod:`dask_phot.engine._solve`), keeping the factors
when asked; :func:`resolve_tiles` solves the same tiles for new data from them.

All functions here are pure numba functions of arrays. Stamps are ragged
(:class:`dask_phot.models.stamps.Stamps`): stamp ``i`` is the ``h[i] x w[i]``
array ``data[ptr[i]:ptr[i+1]]`` whose first pixel sits at image column ``x0[i]``
and row ``y0[i]``. A *region* is a half-open pixel box ``(rx0, rx1, ry0, ry1)``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from dask_phot.engine._blocked import BLOCK, BLOCKED_MIN, factor_blocked, variances_blocked
from dask_phot.engine._pairs import (
    block_lines,
    cells_in,
    pair_table,
    region_sum,
    reused_pair_table,
    sky_sums,
)
from dask_phot.engine._solve import (
    ST_DEGENERATE,
    ST_FAILED,
    ST_OK,
    factor_rl,
    misfit_column,
    pack_factor,
    packed_size,
    solve_normal,
    solve_normal_rl,
    substitute_packed,
    variances_packed,
)

# the order of sums may change (vectorised reductions); NaN and infinity semantics are kept
_REASSOC = {"reassoc", "contract", "nsz"}

__all__ = [
    "ST_DEGENERATE",
    "ST_FAILED",
    "ST_OK",
    "build_normal",
    "build_normal_tile",
    "refresh_data_sums",
    "resolve_tiles",
    "solve_normal",
    "solve_normal_rl",
    "solve_tiles",
    "tile_table",
]

@numba.njit(cache=True, nogil=True)
def build_normal(
    members: np.ndarray,
    data: np.ndarray,
    ptr: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    image: np.ndarray,
    weight: np.ndarray,
    region: np.ndarray,
    nsky: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted normal equations ``N f = b`` over the pixels of ``region``.

    Columns are the stamps of ``members`` followed by ``nsky`` sky terms
    (1, then (x - xc)/L and (y - yc)/L for a plane).
    """
    m = members.shape[0]
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    p = m + nsky
    nmat = np.zeros((p, p))
    rhs = np.zeros(p)
    xc = 0.5 * (rx0 + rx1 - 1)
    yc = 0.5 * (ry0 + ry1 - 1)
    half = max(0.5 * (rx1 - rx0), 0.5 * (ry1 - ry0), 1.0)
    for a in range(m):
        i = members[a]
        xs, xe = max(x0[i], rx0), min(x0[i] + w[i], rx1)
        ys, ye = max(y0[i], ry0), min(y0[i] + h[i], ry1)
        for yy in range(ys, ye):
            ri = ptr[i] + (yy - y0[i]) * w[i] - x0[i]
            for xx in range(xs, xe):
                wv = weight[yy, xx]
                if wv <= 0.0:
                    continue
                sv = data[ri + xx] * wv
                rhs[a] += sv * image[yy, xx]
                if nsky > 0:
                    nmat[a, m] += sv
                if nsky > 1:
                    nmat[a, m + 1] += sv * (xx - xc) / half
                    nmat[a, m + 2] += sv * (yy - yc) / half
        for bb in range(a, m):
            j = members[bb]
            xs, xe = max(x0[i], x0[j], rx0), min(x0[i] + w[i], x0[j] + w[j], rx1)
            ys, ye = max(y0[i], y0[j], ry0), min(y0[i] + h[i], y0[j] + h[j], ry1)
            if xs >= xe or ys >= ye:
                continue
            acc = 0.0
            for yy in range(ys, ye):
                ri = ptr[i] + (yy - y0[i]) * w[i] - x0[i]
                rj = ptr[j] + (yy - y0[j]) * w[j] - x0[j]
                for xx in range(xs, xe):
                    wv = weight[yy, xx]
                    if wv > 0.0:
                        acc += data[ri + xx] * data[rj + xx] * wv
            nmat[a, bb] = acc
            nmat[bb, a] = acc
    if nsky > 0:
        _sky_block(nmat, rhs, image, weight, region, m, nsky, xc, yc, half)
    return nmat, rhs


@numba.njit(cache=True, nogil=True)
def build_normal_tile(
    members: np.ndarray,
    data: np.ndarray,
    ptr: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    image: np.ndarray,
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
    p = members.shape[0] + nsky
    nmat = np.zeros((p, p))
    rhs = np.zeros(p)
    _build_tile_into(nmat, rhs, members, data, ptr, w, h, x0, y0, image, weight, region,
                     nsky, table, xb, yb, loc)
    return nmat, rhs


@numba.njit(cache=True, nogil=True)
def _build_tile_into(
    nmat: np.ndarray, rhs: np.ndarray, members: np.ndarray, data: np.ndarray,
    ptr: np.ndarray, w: np.ndarray, h: np.ndarray, x0: np.ndarray, y0: np.ndarray,
    image: np.ndarray, weight: np.ndarray, region: np.ndarray, nsky: int, table: tuple,
    xb: np.ndarray, yb: np.ndarray, loc: np.ndarray,
) -> None:
    """:func:`build_normal_tile` into given zeroed arrays (``p x p`` and ``p``)."""
    pptr, nbr, pcell, pvals, scell, svals, sums = table
    m = members.shape[0]
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    xc = 0.5 * (rx0 + rx1 - 1)
    yc = 0.5 * (ry0 + ry1 - 1)
    half = max(0.5 * (rx1 - rx0), 0.5 * (ry1 - ry0), 1.0)
    if rx0 >= rx1 or ry0 >= ry1:
        return
    rbx0, rbx1 = xb[rx0], xb[rx1 - 1] + 1
    rby0, rby1 = yb[ry0], yb[ry1 - 1] + 1
    u = np.uint64  # unsigned indices: no wrap-around tests (see engine._pairs)
    for a in range(m):
        loc[u(members[a])] = a
    for a in range(m):
        i = members[a]
        if scell[i, 1] > 0:
            sc = scell[i]
            nmat[a, a] = cells_in(sc, svals, 3, 0, rbx0, rbx1, rby0, rby1)
            rhs[a] = cells_in(sc, svals, 3, 1, rbx0, rbx1, rby0, rby1)
            if nsky > 0:
                nmat[a, m] = cells_in(sc, svals, 3, 2, rbx0, rbx1, rby0, rby1)
        if nsky > 1:
            s1 = 0.0
            s2 = 0.0
            for yy in range(max(y0[i], ry0), min(y0[i] + h[i], ry1)):
                ri = ptr[i] + (yy - y0[i]) * w[i] - x0[i]
                for xx in range(max(x0[i], rx0), min(x0[i] + w[i], rx1)):
                    sv = data[ri + xx] * weight[yy, xx]
                    s1 += sv * (xx - xc) / half
                    s2 += sv * (yy - yc) / half
            nmat[a, m + 1] = s1
            nmat[a, m + 2] = s2
        ua = u(a)
        for q in range(u(pptr[i]), u(pptr[i + 1])):
            bb = loc[u(nbr[q])]
            if bb < 0:
                continue
            g = cells_in(pcell[q], pvals, 1, 0, rbx0, rbx1, rby0, rby1)
            nmat[ua, u(bb)] = g
            nmat[u(bb), ua] = g
    for a in range(m):
        loc[members[a]] = -1
    if nsky == 1:
        nmat[m, m] = region_sum(sums, 0, rx0, rx1, ry0, ry1)
        rhs[m] = region_sum(sums, 1, rx0, rx1, ry0, ry1)
        _mirror_sky(nmat, m, m + 1)
    elif nsky > 1:
        _sky_block(nmat, rhs, image, weight, region, m, nsky, xc, yc, half)


@numba.njit(cache=True, nogil=True)
def _sky_x(rx0: int, rx1: int, xc: float, half: float) -> np.ndarray:
    """The sky's x term ``(xx - xc) / half`` of the columns ``rx0 <= xx < rx1``."""
    tx = np.empty(max(rx1 - rx0, 0))
    for xx in range(rx0, rx1):
        tx[xx - rx0] = (xx - xc) / half
    return tx


@numba.njit(cache=True, nogil=True)
def _sky_block(
    nmat: np.ndarray, rhs: np.ndarray, image: np.ndarray, weight: np.ndarray,
    region: np.ndarray, m: int, nsky: int, xc: float, yc: float, half: float,
) -> None:
    """Sky-sky entries and sky right-hand sides; mirror the sky rows/columns.

    The sums are kept in locals (the order of the terms is that of a pixel loop
    adding into ``nmat``; the compiler cannot keep array entries in registers)."""
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    p = m + nsky
    s0 = s1 = s2 = s11 = s12 = s22 = 0.0
    d0 = d1 = d2 = 0.0
    tx = _sky_x(rx0, rx1, xc, half)
    for yy in range(ry0, ry1):
        t2 = (yy - yc) / half
        for xx in range(rx0, rx1):
            wv = weight[yy, xx]
            if wv <= 0.0:
                continue
            s0 += wv
            d0 += wv * image[yy, xx]
            if nsky > 1:
                t1 = tx[xx - rx0]
                s1 += wv * t1
                s2 += wv * t2
                s11 += wv * t1 * t1
                s12 += wv * t1 * t2
                s22 += wv * t2 * t2
                d1 += wv * t1 * image[yy, xx]
                d2 += wv * t2 * image[yy, xx]
    nmat[m, m] += s0
    rhs[m] += d0
    if nsky > 1:
        nmat[m, m + 1] += s1
        nmat[m, m + 2] += s2
        nmat[m + 1, m + 1] += s11
        nmat[m + 1, m + 2] += s12
        nmat[m + 2, m + 2] += s22
        rhs[m + 1] += d1
        rhs[m + 2] += d2
    _mirror_sky(nmat, m, p)


@numba.njit(cache=True, nogil=True, inline="always")
def _mirror_sky(nmat: np.ndarray, m: int, p: int) -> None:
    """Copy the upper sky entries (rows ``m`` to ``p - 1``) to their mirror places."""
    for a in range(m, p):
        for bb in range(a + 1, p):
            nmat[bb, a] = nmat[a, bb]
        for bb in range(m):
            nmat[a, bb] = nmat[bb, a]


def tile_table(
    tile_members: np.ndarray, regions: np.ndarray, data: np.ndarray, ptr: np.ndarray,
    w: np.ndarray, h: np.ndarray, x0: np.ndarray, y0: np.ndarray, image: np.ndarray,
    weight: np.ndarray, prior: tuple | None = None,
) -> tuple:
    """The block lines of the tiles' regions and the pair table of their members.

    Returns ``(table, xlines, xb, yb, blocks)``; ``blocks`` is False where the
    blocks are narrower than a quarter stamp on average (tiles of a few pixels):
    entries would be split into many cells, and the tiles are built directly.
    ``prior = (prepared, weight)``, the result for the same stamps with other
    weights (a first fit's), lends its pair sums where they are the same
    (:func:`~dask_phot.engine._pairs.reused_pair_table`) when its block lines include
    these (its tiles include these tiles): the table is then made on its lines. With
    the same lines (a fitted sky keeps every tile) it is the table made without
    ``prior``, value for value; with more, only the order of sums differs.
    """
    n = w.shape[0]
    use = np.zeros(n, dtype=np.bool_)
    use[tile_members] = True
    ny, nx = weight.shape
    # typical stamp side (a few large galaxy stamps do not change the choice)
    k = max(1, int(np.median(w))) if n > 0 else 1
    xlines, xb = block_lines(regions, nx, 0)
    ylines, yb = block_lines(regions, ny, 1)
    blocks = bool((4 * nx >= (xlines.shape[0] - 1) * k)
                  and (4 * ny >= (ylines.shape[0] - 1) * k))
    if blocks and prior is not None and _finer_blocks(prior[0], xlines, ylines, ny):
        _, pxlines, pxb, pyb, _ = prior[0]
        table = reused_pair_table(prior[0][0], prior[1], data, ptr, w, h, x0, y0, image,
                                  weight, use, pxlines, pxb, pyb)
        if table is not None:
            return table, pxlines, pxb, pyb, True
    if blocks:
        table = pair_table(data, ptr, w, h, x0, y0, image, weight, use, xlines, xb, yb)
    else:
        table = pair_table(data, ptr[:1], w[:0], h[:0], x0[:0], y0[:0], image, weight,
                           use[:0], xlines, xb, yb)
    return table, xlines, xb, yb, blocks


def _finer_blocks(prepared: tuple, xlines: np.ndarray, ylines: np.ndarray, ny: int) -> bool:
    """Whether a :func:`tile_table` result has pair sums on blocks whose lines include
    these (every region of these lines is a union of its blocks)."""
    _, pxlines, _, pyb, blocks = prepared
    pylines = np.concatenate([[0], np.flatnonzero(np.diff(pyb)) + 1, [ny]])
    return bool(blocks) and bool(np.isin(xlines, pxlines).all()) \
        and bool(np.isin(ylines, pylines).all())


def solve_tiles(
    tile_ptr: np.ndarray,
    tile_members: np.ndarray,
    tile_primary: np.ndarray,
    regions: np.ndarray,
    data: np.ndarray,
    ptr: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    image: np.ndarray,
    weight: np.ndarray,
    nsky: int,
    tol: float,
    prepared: tuple,
    variances: bool = True,
    keep: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple]:
    """Solve every tile's sub-problem; keep the results of its primary sources.

    ``tile_members[tile_ptr[t]:tile_ptr[t+1]]`` are the sources modelled in tile
    ``t`` (listed by column, then input index: see
    :func:`~dask_phot.engine.scene.make_tiling`) and ``tile_primary`` marks those whose
    result tile ``t`` reports; ``prepared`` is :func:`tile_table`'s result for these
    tiles and this ``image``. Returns ``flux, var, status, has_degenerate`` per
    source, the sky parameters ``(ntiles, 3)`` of each tile (without
    ``variances``, ``var`` is NaN: a quicker first pass) and, with ``keep``, every
    tile's factorisation ``(packed, packed_offsets, scale, status, column_offsets,
    row_lengths)``
    for :func:`resolve_tiles` (empty arrays without). The compiled part runs without
    the GIL.
    """
    return _solve_tiles(tile_ptr, tile_members, tile_primary, regions, data, ptr, w, h, x0,
                        y0, image, weight, nsky, tol, prepared, variances, keep,
                        _factor_store(tile_ptr, nsky, keep))


@numba.njit(cache=True, nogil=True)
def _solve_tiles(
    tile_ptr: np.ndarray, tile_members: np.ndarray, tile_primary: np.ndarray,
    regions: np.ndarray, data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
    x0: np.ndarray, y0: np.ndarray, image: np.ndarray, weight: np.ndarray, nsky: int,
    tol: float, prepared: tuple, variances: bool, keep: bool, factors: tuple,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple]:
    """:func:`solve_tiles` with its factor store allocated (:func:`_factor_store`)."""
    n = w.shape[0]
    ntiles = tile_ptr.shape[0] - 1
    flux = np.full(n, np.nan)
    var = np.full(n, np.nan)
    status = np.full(n, ST_FAILED, dtype=np.int64)
    hasdeg = np.zeros(n, dtype=np.bool_)
    sky = np.zeros((ntiles, 3))
    loc = np.full(n, -1, dtype=np.int64)
    widest = 0
    for t in range(ntiles):
        widest = max(widest, tile_ptr[t + 1] - tile_ptr[t])
    scratch = np.empty(0 if keep else packed_size(widest + nsky))
    # one matrix buffer for every tile (fresh large arrays cost page faults)
    nbuf = np.empty((widest + nsky) ** 2)
    work = np.empty((BLOCK + widest + nsky) * (widest + nsky))
    for t in range(ntiles):
        lo, hi = tile_ptr[t], tile_ptr[t + 1]
        members = tile_members[lo:hi]
        m = hi - lo
        nmat, rhs = _tile_system(nbuf, members, data, ptr, w, h, x0, y0, image, weight,
                                 regions[t], nsky, prepared, loc)
        want = np.zeros(m + nsky, dtype=np.bool_)
        for a in range(m):
            want[a] = tile_primary[lo + a] and variances
        diag = np.diag(nmat).copy()
        big = m >= BLOCKED_MIN
        if keep:  # into the store, after the previous tile's
            packed = factors[0][factors[1][t]:]
            plen = factors[5][factors[4][t]:factors[4][t + 1]]
        else:
            packed = scratch
            plen = np.empty(m + nsky, dtype=np.int64)
        up, scale, st, size, sol = _factor_tile(nmat, diag, rhs, tol, m, big, work, packed,
                                                plen)
        if keep:
            factors[1][t + 1] = factors[1][t] + size
            factors[2][factors[4][t]:factors[4][t + 1]] = scale
            factors[3][factors[4][t]:factors[4][t + 1]] = st
        v = (variances_blocked(up, m, scale, st, want, BLOCK) if big
             else variances_packed(packed, plen, m, scale, st, want))
        sky[t, :nsky] = sol[m:]
        for a in range(m):
            if tile_primary[lo + a]:
                i = members[a]
                status[i] = st[a]
                if st[a] == ST_OK:
                    flux[i], var[i] = sol[a], v[a]
                    hasdeg[i] = _merged_partner(nmat, diag, st, a, m)
    return flux, var, status, hasdeg, sky, factors


@numba.njit(cache=True, nogil=True)
def _factor_tile(nmat: np.ndarray, diag: np.ndarray, rhs: np.ndarray, tol: float, m: int,
                 big: bool, work: np.ndarray, packed: np.ndarray, plen: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Factor a tile's matrix in place (blocked when ``big``), pack the factor into
    ``packed, plen`` and solve; returns ``up, scale, status``, the packed size and the
    solution.

    While the solution misses its equations (the kept matrix is singular to rounding:
    :func:`~dask_phot.engine._solve.misfit_column`), that column is left out
    (``ST_DEGENERATE``: its diagonal set to 0) and the matrix, restored from its lower
    triangle (kept by the factorisations) and ``diag``, factored again.
    """
    p = nmat.shape[0]
    while True:
        if big:  # N's lower triangle is kept
            up, scale, st = factor_blocked(nmat, tol, m, BLOCK, work)
        else:
            up, scale, st = factor_rl(nmat, tol, m, True)
        size = pack_factor(up, m, packed, plen)
        sol = substitute_packed(packed, plen, m, scale, st, rhs)
        bad = misfit_column(nmat, diag, rhs, sol, st, m)
        if bad < 0:
            return up, scale, st, size, sol
        for c in range(p):
            nmat[c, c] = diag[c] if st[c] == ST_OK or c >= m else 0.0
            for r in range(c + 1, p):
                nmat[c, r] = nmat[r, c]
        nmat[bad, bad] = 0.0


@numba.njit(cache=True, nogil=True)
def _tile_system(nbuf: np.ndarray, members: np.ndarray, data: np.ndarray, ptr: np.ndarray,
                 w: np.ndarray, h: np.ndarray, x0: np.ndarray, y0: np.ndarray,
                 image: np.ndarray, weight: np.ndarray, region: np.ndarray, nsky: int,
                 prepared: tuple, loc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tile's normal equations, the matrix in the front of ``nbuf`` (from the pair
    table's blocks; built directly when the tiles have none)."""
    table, _, xb, yb, blocks = prepared
    p = members.shape[0] + nsky
    if not blocks:
        return build_normal(members, data, ptr, w, h, x0, y0, image, weight, region, nsky)
    nmat = nbuf[: p * p].reshape((p, p))
    nmat[:] = 0.0
    rhs = np.zeros(p)
    _build_tile_into(nmat, rhs, members, data, ptr, w, h, x0, y0, image, weight, region,
                     nsky, table, xb, yb, loc)
    return nmat, rhs


@numba.njit(cache=True, nogil=True)
def _merged_partner(nmat: np.ndarray, diag: np.ndarray, st: np.ndarray, a: int, m: int
                    ) -> bool:
    """Whether a later-listed source (of the ``m``), found degenerate, is (almost) the
    same column as source ``a``: its flux merged into ``a``'s (``nmat``'s lower triangle
    and ``diag`` are those of ``N``)."""
    for bb in range(a + 1, m):
        if st[bb] == ST_DEGENERATE and diag[bb] > 0.0:
            if nmat[bb, a] / math.sqrt(diag[a] * diag[bb]) > 0.999:
                return True
    return False


def _factor_store(tile_ptr: np.ndarray, nsky: int, keep: bool) -> tuple:
    """Empty buffers for every tile's packed factor (``packed, packed_offsets``, the
    offsets filled as the tiles are packed), scales, column status, column offsets and
    packed row lengths (:func:`~dask_phot.engine._solve.pack_factor`). Allocated by
    numpy: its large arrays get huge pages, and the factors' buffer, sized for dense
    factors, is only touched as far as the packed profiles reach."""
    ntiles = tile_ptr.shape[0] - 1
    poff = np.zeros(ntiles + 1 if keep else 1, dtype=np.int64)
    coff = np.zeros(ntiles + 1 if keep else 1, dtype=np.int64)
    size = 0
    if keep:
        p = np.diff(tile_ptr).astype(np.int64) + nsky
        size = int((p * (p + 1) // 2).sum())
        np.cumsum(p, out=coff[1:])
    ncol = int(coff[-1])
    return (np.empty(size), poff, np.empty(ncol), np.empty(ncol, dtype=np.int64), coff,
            np.empty(ncol, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def resolve_tiles(
    tile_ptr: np.ndarray, tile_members: np.ndarray, tile_primary: np.ndarray,
    regions: np.ndarray, data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
    x0: np.ndarray, y0: np.ndarray, image: np.ndarray, weight: np.ndarray, nsky: int,
    prepared: tuple, factors: tuple,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`solve_tiles`'s fluxes and sky for new ``image`` data, from the kept
    factorisations of a fit with the same stamps, weights and tiles (``prepared`` with
    its data sums refreshed for ``image``: :func:`refresh_data_sums`). The variances,
    status and degeneracies are those of that fit. Returns ``flux, sky``."""
    table, _, xb, yb, blocks = prepared
    packed, poff, scale, colstat, coff, plen = factors
    n = w.shape[0]
    ntiles = tile_ptr.shape[0] - 1
    flux = np.full(n, np.nan)
    sky = np.zeros((ntiles, 3))
    for t in range(ntiles):
        lo, hi = tile_ptr[t], tile_ptr[t + 1]
        members = tile_members[lo:hi]
        m = hi - lo
        rhs = _tile_rhs(members, data, ptr, w, h, x0, y0, image, weight, regions[t], nsky,
                        table, xb, yb, blocks)
        st = colstat[coff[t]:coff[t + 1]]
        sol = substitute_packed(packed[poff[t]:poff[t + 1]], plen[coff[t]:coff[t + 1]], m,
                                scale[coff[t]:coff[t + 1]], st, rhs)
        for s in range(nsky):
            sky[t, s] = sol[m + s]
        for a in range(m):
            if tile_primary[lo + a] and st[a] == ST_OK:
                flux[members[a]] = sol[a]
    return flux, sky


@numba.njit(cache=True, nogil=True)
def _tile_rhs(members: np.ndarray, data: np.ndarray, ptr: np.ndarray, w: np.ndarray,
              h: np.ndarray, x0: np.ndarray, y0: np.ndarray, image: np.ndarray,
              weight: np.ndarray, region: np.ndarray, nsky: int, table: tuple,
              xb: np.ndarray, yb: np.ndarray, blocks: bool) -> np.ndarray:
    """The right-hand side of a tile's normal equations, computed as
    :func:`build_normal_tile` computes it (tiles without blocks, rare: by
    :func:`build_normal` itself)."""
    if not blocks:
        return build_normal(members, data, ptr, w, h, x0, y0, image, weight, region, nsky)[1]
    scell, svals = table[4], table[5]
    m = members.shape[0]
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    rhs = np.zeros(m + nsky)
    if rx0 >= rx1 or ry0 >= ry1:
        return rhs
    rbx0, rbx1 = xb[rx0], xb[rx1 - 1] + 1
    rby0, rby1 = yb[ry0], yb[ry1 - 1] + 1
    for a in range(m):
        i = members[a]
        if scell[i, 1] > 0:
            rhs[a] = cells_in(scell[i], svals, 3, 1, rbx0, rbx1, rby0, rby1)
    if nsky == 1:
        rhs[m] = region_sum(table[6], 1, rx0, rx1, ry0, ry1)
    elif nsky > 1:
        xc = 0.5 * (rx0 + rx1 - 1)
        yc = 0.5 * (ry0 + ry1 - 1)
        half = max(0.5 * (rx1 - rx0), 0.5 * (ry1 - ry0), 1.0)
        d0 = d1 = d2 = 0.0  # locals, as in _sky_block
        tx = _sky_x(rx0, rx1, xc, half)
        for yy in range(ry0, ry1):
            t2 = (yy - yc) / half
            for xx in range(rx0, rx1):
                wv = weight[yy, xx]
                if wv <= 0.0:
                    continue
                d0 += wv * image[yy, xx]
                if nsky > 1:
                    d1 += wv * tx[xx - rx0] * image[yy, xx]
                    d2 += wv * t2 * image[yy, xx]
        rhs[m] += d0
        if nsky > 1:
            rhs[m + 1] += d1
            rhs[m + 2] += d2
    return rhs


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def refresh_data_sums(prepared: tuple, data: np.ndarray, ptr: np.ndarray, w: np.ndarray,
                      h: np.ndarray, x0: np.ndarray, y0: np.ndarray, image: np.ndarray,
                      weight: np.ndarray) -> None:
    """Recompute the stamps' ``sum(w s d)`` block sums and the sky's summed-area tables
    of a :func:`tile_table` for a new ``image`` (the other sums depend on the stamps
    and weights only), in place."""
    table, xlines, _, yb, blocks = prepared
    sky_sums(image, weight, table[6], False)
    if not blocks:
        return
    scell, svals = table[4], table[5]
    ny, nx = weight.shape
    u = np.uint64  # unsigned indices, whole rows: no wrap-around tests, no slices
    for i in range(w.shape[0]):
        if scell[i, 1] == 0:
            continue
        bx0, nbx, by0, off = scell[i, 0], scell[i, 1], scell[i, 2], scell[i, 4]
        xs, xe = max(x0[i], 0), min(x0[i] + w[i], nx)
        ys, ye = max(y0[i], 0), min(y0[i] + h[i], ny)
        for q in range(scell[i, 3] * nbx):
            svals[off + 3 * q + 1] = 0.0
        for yy in range(ys, ye):
            cell = (yb[yy] - by0) * nbx
            ri = u(ptr[i] + (yy - y0[i]) * w[i] - x0[i])
            wrow = weight[yy]
            drow = image[yy]
            for sb in range(nbx):
                sx0 = u(max(xs, xlines[bx0 + sb]))
                sx1 = u(min(xe, xlines[bx0 + sb + 1]))
                acc = 0.0
                for c in range(sx0, sx1):
                    acc += wrow[c] * data[ri + c] * drow[c]
                svals[u(off + 3 * (cell + sb) + 1)] += acc
