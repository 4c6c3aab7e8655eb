"""Blocked solvers for large scene tiles: the factor and marginal variances of
:mod:`dask_phot.engine._solve`, with the bulk of the work in matrix products (BLAS).

A GALEX tile models ~400-900 sources whose normal matrix, listed by column, is a
*profile* (variable band) matrix about a quarter full. :func:`factor_blocked` computes
exactly what :func:`~dask_phot.engine._solve.factor_rl` computes (the Jacobi-scaled
upper Cholesky factor, with the same degeneracy rule: a column whose pivot, after the
updates of the kept columns before it, is at most ``tol`` is left out) a block of
``nb`` rows at a time: the block's rows are factored by the scalar kernel among
themselves, and the rest of the profile they reach (their *envelope*) and the dense
sky columns are updated by one matrix product. :func:`variances_blocked` solves for
the marginal variances of many columns at once in the same way. Only the order of the
floating-point sums differs from the scalar kernels (results agree to rounding).
"""

from __future__ import annotations

import numba
import numpy as np

from dask_phot.engine._solve import ST_OK, jacobi_scale, pivot, scaled_rows

__all__ = ["BLOCK", "BLOCKED_MIN", "factor_blocked", "variances_blocked"]

#: Rows per block.
BLOCK = 32
#: Tiles with at least this many profile columns use the blocked kernels; below it the
#: scalar kernels are as quick.
BLOCKED_MIN = 96


@numba.njit(cache=True, nogil=True)
def _panel(up: np.ndarray, k: int, k1: int, env: int, m: int, p: int, tol: float,
           status: np.ndarray, end: np.ndarray) -> None:
    """Factor rows ``k`` to ``k1 - 1`` among themselves (updates of rows outside the
    block are left to :func:`_trailing`); columns reach ``env`` and the sky ``m:p``."""
    u = np.uint64  # unsigned indices: no wrap-around tests (see engine._pairs)
    for c in range(k, k1):
        d = pivot(up, c, tol, status)
        if d == 0.0:
            continue
        urow = up[c]
        for q in range(u(c + 1), u(env)):
            urow[q] = urow[q] / d
        for q in range(u(max(m, env)), u(p)):
            urow[q] = urow[q] / d
        ec = max(end[c], c + 1) if c < m else p  # the sky rows are dense
        for r in range(c + 1, min(k1, ec)):
            f = urow[u(r)]
            if f == 0.0 or status[r] != ST_OK:
                continue
            drow = up[r]
            for q in range(u(r), u(ec)):
                drow[q] -= f * urow[q]
            for q in range(u(max(m, ec)), u(p)):
                drow[q] -= f * urow[q]
            if end[r] < ec:
                end[r] = ec


@numba.njit(cache=True, nogil=True)
def _columns(k1: int, env: int, m: int, p: int) -> np.ndarray:
    """The columns a block's rows update beyond it: ``k1:env`` and the sky ``m:p``."""
    lo = max(m, env)
    cols = np.empty(max(env - k1, 0) + p - lo, dtype=np.int64)
    n = 0
    for q in range(k1, env):
        cols[n] = q
        n += 1
    for q in range(lo, p):
        cols[n] = q
        n += 1
    return cols


@numba.njit(cache=True, nogil=True)
def _trailing(up: np.ndarray, k: int, k1: int, env: int, m: int, p: int,
              status: np.ndarray, end: np.ndarray, work: np.ndarray) -> None:
    """Subtract the block's rows' outer products from the rows after it:
    ``U[k1:, k1:] -= P^T P`` over the envelope and the sky columns (degenerate rows of
    the block contribute nothing). The upper triangle of ``P^T P`` is computed in
    strips of ``nb`` rows; ``work`` holds at least ``(nb + p) * p`` values."""
    cols = _columns(k1, env, m, p)
    r = cols.shape[0]
    if r == 0:
        return
    nb = k1 - k
    pt = work[: r * nb].reshape((r, nb))  # P^T, C order: its row strips are contiguous
    u = np.uint64  # unsigned indices: no wrap-around tests (see engine._pairs)
    for j in range(r):
        ptj = pt[j]
        cj = u(cols[j])
        for i in range(nb):
            ptj[i] = up[u(k + i), cj] if status[u(k + i)] == ST_OK else 0.0
    for i0 in range(0, r, nb):
        i1 = min(i0 + nb, r)
        g = work[r * nb : r * nb + (i1 - i0) * (r - i0)].reshape((i1 - i0, r - i0))
        np.dot(pt[i0:i1], pt[i0:].T, g)
        for i in range(i0, i1):
            row = up[u(cols[i])]
            gi = g[i - i0]
            for j in range(u(i), u(r)):
                row[u(cols[j])] -= gi[j - u(i0)]
    for q in range(k1, min(env, m)):
        if end[q] < env:
            end[q] = env


@numba.njit(cache=True, nogil=True)
def factor_blocked(nmat: np.ndarray, tol: float, m: int = -1, nb: int = BLOCK,
                   work: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~dask_phot.engine._solve.factor_rl` (``in_place``) in blocks of ``nb``
    rows: returns ``up, scale, status`` with ``up`` the upper triangle of ``nmat`` (its
    strict lower triangle is left as it was), the same factor to rounding. ``work``:
    a buffer of at least ``(nb + p) * p`` values (allocated when not given)."""
    p = nmat.shape[0]
    if m < 0 or m > p:
        m = p
    scale, status = jacobi_scale(nmat)
    end = scaled_rows(nmat, nmat, m, scale, status)
    up = nmat
    if work is None:
        work = np.empty((nb + p) * p)
    k = 0
    while k < p:
        k1 = min(k + nb, m) if k < m else p
        env = k1
        for c in range(k, k1):
            env = max(env, end[c])
        _panel(up, k, k1, env, m, p, tol, status, end)
        _trailing(up, k, k1, env, m, p, status, end, work)
        k = k1
    return up, scale, status


@numba.njit(cache=True, nogil=True)
def _row_ends(up: np.ndarray, m: int) -> np.ndarray:
    """One past the last non-zero entry of each factor row among the first ``m``
    columns (at least the diagonal's successor); ``p`` for the sky rows."""
    p = up.shape[0]
    end = np.empty(p, dtype=np.int64)
    for c in range(p):
        e = p
        if c < m:
            e = m
            row = up[c]
            while e > c + 1 and row[e - 1] == 0.0:
                e -= 1
        end[c] = e
    return end


@numba.njit(cache=True, nogil=True)
def variances_blocked(up: np.ndarray, m: int, scale: np.ndarray, status: np.ndarray,
                      want: np.ndarray, nb: int = BLOCK) -> np.ndarray:
    """Marginal variances ``(N^-1)_aa`` of the kept columns with ``want`` (NaN elsewhere)
    from a factor ``up`` (:func:`factor_blocked` or ``factor_rl``): ``|U^-T e_a|^2``
    for all of them at once, a block of rows at a time."""
    p = up.shape[0]
    if m < 0 or m > p:
        m = p
    var = np.full(p, np.nan)
    cols = np.flatnonzero(want & (status == ST_OK))
    nw = cols.shape[0]
    if nw == 0:
        return var
    end = _row_ends(up, m)
    u = np.uint64  # unsigned indices: no wrap-around tests (see engine._pairs)
    k0 = cols[0]
    t = np.zeros((p, nw))
    for j in range(nw):
        t[cols[j], j] = 1.0
    ssq = np.zeros(nw)
    k = k0
    while k < p:
        k1 = min(k + nb, m) if k < m else p
        env = k1
        for c in range(k, k1):
            env = max(env, end[c])
        x = np.zeros((k1 - k, nw))
        for c in range(k, k1):
            if status[c] != ST_OK:
                continue
            xr = x[c - k]
            tr = t[c]
            urow = up[c]
            dinv = 1.0 / urow[u(c)]
            for j in range(nw):
                xr[j] = tr[j] * dinv
                ssq[j] += xr[j] * xr[j]
            for r in range(u(c + 1), u(min(k1, end[c]))):
                f = urow[r]
                if f == 0.0:
                    continue
                dst = t[r]
                for j in range(nw):
                    dst[j] -= f * xr[j]
        bcols = _columns(k1, env, m, p) if k < m else np.empty(0, dtype=np.int64)
        nr = bcols.shape[0]
        if nr > 0 and k < m:
            pan = np.zeros((k1 - k, nr))
            for i in range(k1 - k):
                if status[k + i] != ST_OK:
                    continue
                prow = pan[i]
                urow = up[u(k + i)]
                for j in range(nr):
                    prow[j] = urow[u(bcols[j])]
            g = np.dot(pan.T, x)
            for i in range(nr):
                dst = t[u(bcols[i])]
                gi = g[i]
                for j in range(nw):
                    dst[j] -= gi[j]
        k = k1
    for j in range(nw):
        a = cols[j]
        var[a] = ssq[j] * scale[a] * scale[a]
    return var
