"""Compiled solvers of the engine's normal equations ``N f = b``.

:func:`solve_normal` is the reference (left-looking Jacobi-scaled Cholesky with
degeneracy detection); :func:`solve_normal_rl` computes the same thing right-looking,
in three parts that can be used apart: :func:`factor_rl` (the scaled upper factor,
stored packed by :func:`pack_factor`), :func:`substitute_packed` (the solution for
any right-hand side) and :func:`variances_packed` (marginal variances). A scene's
second fit of new data with the same matrices (after the PSF wings are subtracted)
only substitutes its new right-hand sides into the first fit's factors.

A packed factor (:func:`pack_factor`) holds the rows of the upper factor one after
the other, each from its diagonal to its last non-zero entry (a scene tile's profile)
and its dense sky columns: every row the substitutions read is contiguous.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "MISFIT",
    "ST_DEGENERATE",
    "ST_FAILED",
    "ST_OK",
    "factor_rl",
    "jacobi_scale",
    "misfit_column",
    "pack_factor",
    "packed_size",
    "pivot",
    "scaled_rows",
    "solve_normal",
    "solve_normal_rl",
    "substitute_packed",
    "variances_packed",
]

# status codes written by the solvers (mapped to Flag bits by the callers)
ST_OK = 0
ST_DEGENERATE = 1
ST_FAILED = 2

#: A solution that misses its normal equations by more than ``MISFIT`` (in units of each
#: equation's noise, ``sqrt(N_aa)``) is not a solution (:func:`misfit_column`).
MISFIT = 1e-2


@numba.njit(cache=True, nogil=True)
def jacobi_scale(nmat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Jacobi scales ``1 / sqrt(N_aa)`` and the initial status (a zero diagonal is
    degenerate)."""
    p = nmat.shape[0]
    status = np.zeros(p, dtype=np.int64)
    scale = np.zeros(p)
    for a in range(p):
        if nmat[a, a] > 0.0:
            scale[a] = 1.0 / math.sqrt(nmat[a, a])
        else:
            status[a] = ST_DEGENERATE
    return scale, status


@numba.njit(cache=True, nogil=True)
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
    scale, status = jacobi_scale(nmat)
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


@numba.njit(cache=True, nogil=True)
def scaled_rows(nmat: np.ndarray, up: np.ndarray, m: int, scale: np.ndarray,
                status: np.ndarray) -> np.ndarray:
    """The upper triangle of the scaled matrix ``diag(scale) N diag(scale)`` into ``up``
    (zero in the rows and columns not kept; ``up`` may be ``nmat``), and each row's
    profile end: one past its last non-zero entry among the first ``m`` columns (at
    least the diagonal's successor); ``c + 1`` for the dense rows."""
    p = nmat.shape[0]
    end = np.empty(p, dtype=np.int64)
    for c in range(p):
        e = c + 1
        # row c of N (N is symmetric: its rows are read, not its columns)
        src = nmat[c]
        dst = up[c]
        sc = scale[c]
        for r in range(c, p):
            v = 0.0
            if status[c] == ST_OK and status[r] == ST_OK:
                v = src[r] * scale[r] * sc
                if v != 0.0 and r < m:
                    e = r + 1
            dst[r] = v
        end[c] = min(e, m) if c < m else c + 1
    return end


@numba.njit(cache=True, nogil=True, inline="always")
def pivot(up: np.ndarray, c: int, tol: float, status: np.ndarray) -> float:
    """Row ``c``'s Cholesky pivot: its square root into ``up[c, c]`` and returned, or 0
    for a column not kept (a pivot at most ``tol`` makes it ``ST_DEGENERATE``)."""
    if status[c] != ST_OK:
        return 0.0
    piv = up[c, c]
    if piv <= tol:
        status[c] = ST_DEGENERATE
        return 0.0
    d = math.sqrt(piv)
    up[c, c] = d
    return d


@numba.njit(cache=True, nogil=True)
def factor_rl(nmat: np.ndarray, tol: float, m: int = -1, in_place: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Jacobi-scaled upper Cholesky factor of ``N``, computed right-looking.

    Returns ``up, scale, status``: ``up[c, r]`` (``r >= c``) is ``U = L^T`` of the
    scaled matrix ``diag(scale) N diag(scale)`` over the kept columns, ``status``
    the per-column codes of :func:`solve_normal`. The operations are those of
    :func:`solve_normal`, in the same order, arranged as updates of contiguous rows
    that vectorise and that skip the zero entries of sparse normal matrices.

    The first ``m`` columns (default all) are treated as a *profile* matrix: row ``c``
    of the factor is zero from ``end[c]`` (one past its last non-zero entry among
    them, which the elimination of earlier rows carries forward) to ``m``, and those
    zeros are neither read nor updated (the result is the same, bit for bit); the
    other columns (a scene tile's sky terms, coupled to every source) are dense.
    Sources listed in the order of their positions along one axis make the profile
    narrow. With ``in_place``, ``up`` is ``nmat`` itself: its upper triangle becomes the
    factor, its lower triangle (strictly below the diagonal) is left as it was.
    """
    p = nmat.shape[0]
    if m < 0 or m > p:
        m = p
    scale, status = jacobi_scale(nmat)
    up = nmat if in_place else np.zeros((p, p))
    end = scaled_rows(nmat, up, m, scale, status)
    for c in range(p):
        d = pivot(up, c, tol, status)
        if d == 0.0:
            continue
        # (loops over slices from 0 so that the indices are known non-negative
        # and the compiler vectorises them)
        row = up[c, c + 1 :]
        for q in range(p - c - 1):
            row[q] = row[q] / d
        ec = max(end[c], c + 1)
        tail = max(m, c + 1)
        urow = up[c]
        for r in range(c + 1, ec):  # rows within the profile: its part, then the tail
            f = urow[r]
            if f == 0.0 or status[r] != ST_OK:
                continue
            drow = up[r]
            # in fours (vector operations), as far as the profile's zeros reach: beyond
            # ec, row c is zero up to m, and x - f * 0 is x
            q = r
            while q + 4 <= min(ec + 3, tail):
                d0 = drow[q] - f * urow[q]
                d1 = drow[q + 1] - f * urow[q + 1]
                d2 = drow[q + 2] - f * urow[q + 2]
                d3 = drow[q + 3] - f * urow[q + 3]
                drow[q] = d0
                drow[q + 1] = d1
                drow[q + 2] = d2
                drow[q + 3] = d3
                q += 4
            for q2 in range(q, ec):
                drow[q2] -= f * urow[q2]
            for q2 in range(tail, p):
                drow[q2] -= f * urow[q2]
            if end[r] < ec:
                end[r] = ec
        for r in range(tail, p):  # the dense rows
            f = up[c, r]
            if f == 0.0 or status[r] != ST_OK:
                continue
            src = up[c, r:]
            dst = up[r, r:]
            for q in range(p - r):
                dst[q] -= f * src[q]
    return up, scale, status


@numba.njit(cache=True, nogil=True)
def packed_size(p: int) -> int:
    """Length of a packed factor of ``p`` columns."""
    return p * (p + 1) // 2


@numba.njit(cache=True, nogil=True)
def pack_factor(up: np.ndarray, m: int, out: np.ndarray, plen: np.ndarray) -> int:
    """Store the upper triangle of ``up`` (``p x p``) packed by rows into ``out``; returns
    the number of values written.

    Row ``c`` of the first ``m`` (a profile: see :func:`factor_rl`) is stored from its
    diagonal to its last non-zero entry before column ``m`` (``plen[c]`` values), then
    its columns ``m`` to ``p - 1``; the other rows from their diagonal on. With
    ``m = p`` every row is stored whole to its last non-zero entry.
    """
    p = up.shape[0]
    if m < 0 or m > p:
        m = p
    o = 0
    u = np.uint64  # unsigned indices: no wrap-around tests
    for c in range(p):
        row = up[c]
        e = p
        if c < m:
            e = m
            while e > c + 1 and row[e - 1] == 0.0:
                e -= 1
        plen[c] = e - c
        for q in range(u(c), u(e)):
            out[u(o)] = row[q]
            o += 1
        if c < m:
            for q in range(u(m), u(p)):
                out[u(o)] = row[q]
                o += 1
    return o


@numba.njit(cache=True, nogil=True)
def _row_offsets(plen: np.ndarray, m: int, p: int) -> np.ndarray:
    """Offset of each row of a :func:`pack_factor` store."""
    ro = np.empty(p + 1, dtype=np.int64)
    ro[0] = 0
    for c in range(p):
        ro[c + 1] = ro[c] + plen[c] + (p - m if c < m else 0)
    return ro


@numba.njit(cache=True, nogil=True, inline="always")
def _axpy_row(packed: np.ndarray, o: int, c: int, plen: int, m: int, p: int, f: float,
              dst: np.ndarray) -> None:
    """``dst[q] -= U[c, q] f`` for the stored entries of row ``c`` beyond its diagonal
    (``o``: where the row starts)."""
    u = np.uint64  # unsigned indices: no wrap-around tests
    for q in range(u(1), u(plen)):
        dst[u(c) + q] -= packed[u(o) + q] * f
    if c < m:
        t = u(o + plen - m)
        for q in range(u(m), u(p)):
            dst[q] -= packed[t + q] * f


@numba.njit(cache=True, nogil=True)
def substitute_packed(packed: np.ndarray, plen: np.ndarray, m: int, scale: np.ndarray,
                      status: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The solution of ``N f = rhs`` from the :func:`pack_factor` store of a
    :func:`factor_rl` factor (0 for the columns not kept). Only the stored entries are
    read: the others are zeros, whose terms would change nothing."""
    p = rhs.shape[0]
    if m < 0 or m > p:
        m = p
    ro = _row_offsets(plen, m, p)
    u = np.uint64  # unsigned indices: no wrap-around tests
    b = np.zeros(p)
    for a in range(p):
        if status[a] == ST_OK:
            b[a] = rhs[a] * scale[a]
    # forward substitution (column-oriented), then back substitution
    z = np.zeros(p)
    for c in range(p):
        if status[c] != ST_OK:
            continue
        o = ro[c]
        zc = b[c] / packed[o]
        z[c] = zc
        if zc == 0.0:
            continue
        _axpy_row(packed, o, c, plen[c], m, p, zc, b)
    sol = np.zeros(p)
    for a in range(p - 1, -1, -1):
        if status[a] != ST_OK:
            continue
        o = u(ro[a])
        acc = z[a]
        for q in range(u(1), u(plen[a])):
            acc -= packed[o + q] * sol[u(a) + q]
        if a < m:
            t = u(ro[a] + plen[a] - m)
            for q in range(u(m), u(p)):
                acc -= packed[t + q] * sol[q]
        sol[a] = acc / packed[o]
    for a in range(p):
        sol[a] *= scale[a]
    return sol


@numba.njit(cache=True, nogil=True)
def variances_packed(packed: np.ndarray, plen: np.ndarray, m: int, scale: np.ndarray,
                     status: np.ndarray, want_var: np.ndarray) -> np.ndarray:
    """Marginal variances ``(N^-1)_aa`` of the kept columns with ``want_var`` (NaN
    elsewhere), from the :func:`pack_factor` store of a :func:`factor_rl` factor."""
    p = scale.shape[0]
    if m < 0 or m > p:
        m = p
    ro = _row_offsets(plen, m, p)
    var = np.full(p, np.nan)
    t = np.zeros(p)
    for a in range(p):
        if not want_var[a] or status[a] != ST_OK:
            continue
        # (N'^-1)_aa = || L^-1 e_a ||^2, forward substitution from row a on
        for c in range(a, p):
            t[c] = 0.0
        acc = 0.0
        for c in range(a, p):
            if status[c] != ST_OK:
                continue
            o = ro[c]
            uc = (1.0 if c == a else t[c]) / packed[o]
            acc += uc * uc
            if uc == 0.0:
                continue
            _axpy_row(packed, o, c, plen[c], m, p, uc, t)
        var[a] = acc * scale[a] * scale[a]
    return var


@numba.njit(cache=True, nogil=True)
def misfit_column(nmat: np.ndarray, diag: np.ndarray, rhs: np.ndarray, sol: np.ndarray,
                  status: np.ndarray, m: int) -> int:
    """A source column to leave out when ``sol`` does not solve ``N sol = rhs``, or -1.

    Unpivoted Cholesky sees a dependence only when one pivot falls below the tolerance.
    When the kept columns are already ill-conditioned (a chain of sources that are each
    partly dependent: flat PSF wings over the same few weighted pixels), a column that
    depends on them exactly gets a pivot of rounding noise, ~1e-7 or more: the matrix is
    then singular to rounding, and the solution along its null direction is rounding
    noise divided by ~1e-15 (fluxes of 1e17 with error bars 4e4 times smaller). Such a
    solution misses its equations: ``|N sol - rhs|_a / sqrt(N_aa)`` (noise units) is
    then far above :data:`MISFIT` (rounding leaves ~1e-11 in sound tiles). The column
    returned carries the largest part of the solution (``|sol_a| sqrt(N_aa)``).

    ``nmat``'s strict lower triangle and ``diag`` are those of ``N`` (the factor kernels
    leave them); ``m``: the source columns (the others, sky terms, are never returned).
    Costs one product with the lower triangle.
    """
    p = rhs.shape[0]
    res = np.zeros(p)
    for a in range(p):
        if status[a] != ST_OK:
            continue
        row = nmat[a]
        xa = sol[a]
        acc = diag[a] * xa
        for bb in range(a):
            v = row[bb]
            if v != 0.0 and status[bb] == ST_OK:
                acc += v * sol[bb]
                res[bb] += v * xa
        res[a] += acc
    worst = -1
    miss = False
    big = 0.0
    for a in range(p):
        if status[a] != ST_OK:
            continue
        noise = math.sqrt(diag[a])
        if not abs(res[a] - rhs[a]) <= MISFIT * noise:  # (NaN too)
            miss = True
        if a < m and abs(sol[a]) * noise > big:
            big, worst = abs(sol[a]) * noise, a
    return worst if miss else -1


@numba.njit(cache=True, nogil=True)
def solve_normal_rl(
    nmat: np.ndarray, rhs: np.ndarray, want_var: np.ndarray, tol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`solve_normal` computed right-looking (:func:`factor_rl`,
    :func:`substitute_packed`, :func:`variances_packed`); the results are identical."""
    p = rhs.shape[0]
    up, scale, status = factor_rl(nmat, tol)
    packed = np.empty(packed_size(p))
    plen = np.empty(p, dtype=np.int64)
    pack_factor(up, p, packed, plen)
    sol = substitute_packed(packed, plen, p, scale, status, rhs)
    return sol, variances_packed(packed, plen, p, scale, status, want_var), status
