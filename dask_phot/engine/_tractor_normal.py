"""Normal equations of The Tractor backend, built from the Tractor's own models.

The Tractor renders every source's unit-flux model patch (its derivative with
respect to the flux); :func:`normal_matrix` turns those patches into the
weighted normal matrix ``N = A^T W A`` (sparse) and the sky terms, and
:func:`marginal_variances` inverts it group by group, so that a flux error is the
marginal one (``(N^-1)_ii``, including the covariance with blended neighbours
and with the fitted sky) as in :func:`dask_phot.forced_photometry`, not the
Tractor's Fisher diagonal (``1 / N_ii``).

Groups are the connected components of the overlap graph. A group of at most
``max_block`` sources is inverted exactly (dense Cholesky); a larger one (a
crowded field percolates into one group) is cut into the scene tiles of
:mod:`dask_phot.engine.scene` with a margin, as the engine does. A fitted sky
(one constant over the image, the Tractor's ``ConstantSky``) couples every
source: its contribution is added exactly through the Schur complement,
``var_i = (A^-1)_ii + u_i^2 / s`` with ``u = A^-1 b`` and ``s = c - b^T u``.

:func:`box_sums` gives per-source sums over rectangular footprints (usable
pixel counts, chi-square sums) from summed-area tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from dask_phot.engine import _kernels as K
from dask_phot.engine.scene import make_tiling

__all__ = ["Normal", "box_sums", "marginal_variances", "newton_step", "normal_matrix"]

#: columns closer than this (cosine of their angle) to a degenerate later one merged it
_MERGED = 0.999


@dataclass
class Normal:
    """Weighted normal equations of the fitted sources (columns in input order).

    Attributes
    ----------
    nmat : scipy.sparse.csr_matrix
        ``N_ij = sum_p w_p P_i(p) P_j(p)`` over usable pixels.
    sky_col : ndarray
        ``b_i = sum_p w_p P_i(p)``: the source-sky entries of a constant sky.
    sky_diag : float
        ``c = sum_p w_p`` over every usable pixel of the image.
    """

    nmat: sp.csr_matrix
    sky_col: np.ndarray
    sky_diag: float


def normal_matrix(patches: list[tuple[int, int, np.ndarray] | None],
                  weight: np.ndarray) -> Normal:
    """Normal matrix from unit-flux patches ``(x0, y0, array)`` (None: no pixels).

    Patch pixels outside the image or with zero weight do not enter.
    """
    ny, nx = weight.shape
    rows, cols, vals = [], [], []
    for j, patch in enumerate(patches):
        if patch is None:
            continue
        px0, py0, arr = patch
        h, w = arr.shape
        xs, xe = max(px0, 0), min(px0 + w, nx)
        ys, ye = max(py0, 0), min(py0 + h, ny)
        if xs >= xe or ys >= ye:
            continue
        sub = np.asarray(arr[ys - py0 : ye - py0, xs - px0 : xe - px0], dtype=np.float64)
        wsub = weight[ys:ye, xs:xe]
        use = wsub > 0
        yy, xx = np.nonzero(use)
        rows.append((yy + ys) * nx + (xx + xs))
        cols.append(np.full(yy.size, j, dtype=np.int64))
        vals.append(sub[use] * np.sqrt(wsub[use]))
    n = len(patches)
    if rows:
        a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(ny * nx, n))
    else:
        a = sp.csc_matrix((ny * nx, n))
    sqrt_w = np.sqrt(np.where(weight > 0, weight, 0.0)).ravel()
    nmat = (a.T @ a).tocsr()
    return Normal(nmat, np.asarray(a.T @ sqrt_w).ravel(), float(weight[weight > 0].sum()))


def marginal_variances(
    normal: Normal, cx: np.ndarray, cy: np.ndarray, halo: int, shape: tuple[int, int], *,
    fit_sky: bool, tol: float, max_block: int, tile_size: int, margin: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Marginal flux variances, solver status and merged-partner flags per column.

    Parameters
    ----------
    normal : Normal
        From :func:`normal_matrix`.
    cx, cy : ndarray of int
        Centre pixel of each column's source (for tiling large groups).
    halo : int
        Largest footprint half-width, pixels (sources whose footprint can reach
        a tile's region are modelled in it).
    shape : (int, int)
        Image shape.
    fit_sky : bool
        Include one constant sky parameter.
    tol : float
        Pivot threshold for degenerate columns (see :func:`dask_phot.forced_photometry`).
    max_block : int
        Largest group inverted exactly; larger groups are tiled.
    tile_size, margin : int
        Tiling of large groups (pixels).

    Returns
    -------
    var, status, has_degenerate : ndarray
        Per column; ``status`` holds the engine's ``ST_*`` codes.
    info : dict
        Number of groups, of tiled groups and the sky's own marginal variance.
    """
    n = normal.nmat.shape[0]
    var = np.full(n, np.nan)
    status = np.full(n, K.ST_FAILED, dtype=np.int64)
    hasdeg = np.zeros(n, dtype=bool)
    u = np.zeros(n)
    ngroups, labels = connected_components(normal.nmat, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    ntiled = 0
    for idx in np.split(order, bounds) if n else []:
        if idx.size <= max_block:
            _solve_block(normal, idx, idx, fit_sky, tol, var, status, hasdeg, u)
        else:
            ntiled += 1
            _solve_tiled(normal, idx, cx, cy, halo, shape, fit_sky, tol, tile_size, margin,
                         var, status, hasdeg, u)
    info = {"groups": int(ngroups), "tiled_groups": ntiled}
    if fit_sky:
        _add_sky(normal, u, var, status, info)
    return var, status, hasdeg, info


def _solve_block(normal: Normal, members: np.ndarray, primary: np.ndarray, fit_sky: bool,
                 tol: float, var: np.ndarray, status: np.ndarray, hasdeg: np.ndarray,
                 u: np.ndarray) -> None:
    """Dense solve of the columns ``members`` (ascending); store results of ``primary``."""
    nmat = normal.nmat[members][:, members].toarray()
    rhs = normal.sky_col[members] if fit_sky else np.zeros(members.size)
    want = np.isin(members, primary)
    sol, v, st = K.solve_normal_rl(np.ascontiguousarray(nmat), np.ascontiguousarray(rhs),
                                   want, tol)
    diag = np.diag(nmat)
    for a in np.flatnonzero(want):
        i = members[a]
        status[i] = st[a]
        if st[a] != K.ST_OK:
            continue
        var[i] = v[a]
        u[i] = sol[a]
        later = np.flatnonzero((st[a + 1 :] == K.ST_DEGENERATE) & (diag[a + 1 :] > 0)) + a + 1
        if later.size:
            cos = nmat[a, later] / np.sqrt(diag[a] * diag[later])
            hasdeg[i] = bool(np.any(cos > _MERGED))


def _solve_tiled(normal: Normal, idx: np.ndarray, cx: np.ndarray, cy: np.ndarray, halo: int,
                 shape: tuple[int, int], fit_sky: bool, tol: float, tile_size: int, margin: int,
                 var: np.ndarray, status: np.ndarray, hasdeg: np.ndarray,
                 u: np.ndarray) -> None:
    """A large group: each tile's core sources from the tile's sources (core + margin + halo).

    The sky's ``u = A^-1 b`` is then recomputed exactly over the whole group.
    """
    fit = np.zeros(cx.size, dtype=bool)
    fit[idx] = True
    side = np.full(cx.size, 2 * int(halo) + 1, dtype=np.int64)
    tiling = make_tiling(cx, cy, (cx - halo, cy - halo, side, side), fit, shape, tile_size,
                         margin)
    for t in range(tiling.ptr.size - 1):
        lo, hi = tiling.ptr[t], tiling.ptr[t + 1]
        members = tiling.members[lo:hi]
        _solve_block(normal, members, members[tiling.primary[lo:hi]], fit_sky, tol,
                     var, status, hasdeg, u)
    if fit_sky:
        kept = idx[status[idx] == K.ST_OK]
        if kept.size:
            sub = normal.nmat[kept][:, kept].tocsc()
            u[kept] = spsolve(sub, normal.sky_col[kept])


def _add_sky(normal: Normal, u: np.ndarray, var: np.ndarray, status: np.ndarray,
             info: dict) -> None:
    """Schur complement of the constant sky: ``var_i += u_i^2 / s``."""
    ok = status == K.ST_OK
    s = normal.sky_diag - float(normal.sky_col[ok] @ u[ok])
    if not (math.isfinite(s) and s > 1e-12 * max(normal.sky_diag, 1e-300)):
        # the sky is (nearly) a combination of the sources: no fit of this group
        status[ok] = K.ST_FAILED
        var[ok] = np.nan
        info["sky_var"] = float("nan")
        return
    var[ok] += u[ok] ** 2 / s
    info["sky_var"] = 1.0 / s


def newton_step(normal: Normal, cols: np.ndarray, grad: np.ndarray,
                sky_grad: float | None = None) -> np.ndarray:
    """The step ``N^-1 g`` from the current parameters to the least-squares solution.

    ``cols`` are the columns that are fitted (non-degenerate), ``grad`` their
    chi2 gradients ``g_i = sum_p w_p P_i(p) r_p`` (``r`` the residual image);
    with ``sky_grad`` (``sum_p w_p r_p``) the constant sky is a last parameter,
    whose step ends the returned array.
    """
    sub = normal.nmat[cols][:, cols]
    rhs = np.asarray(grad, dtype=np.float64)
    if sky_grad is not None:
        col = sp.csr_matrix(normal.sky_col[cols][:, None])
        sub = sp.bmat([[sub, col], [col.T, sp.csr_matrix([[normal.sky_diag]])]])
        rhs = np.append(rhs, sky_grad)
    if rhs.size == 0:
        return rhs
    return np.atleast_1d(spsolve(sub.tocsc(), rhs))


def box_sums(values: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over each box ``(x0, x1, y0, y1)`` (half-open, clipped to the image).

    Examples
    --------
    >>> box_sums(np.ones((4, 5)), np.array([[0, 2, 0, 2], [-3, 9, 3, 9]]))
    array([4., 5.])
    """
    ny, nx = values.shape
    sat = np.zeros((ny + 1, nx + 1))
    sat[1:, 1:] = np.cumsum(np.cumsum(values, axis=0), axis=1)
    x0 = np.clip(boxes[:, 0], 0, nx)
    x1 = np.clip(boxes[:, 1], 0, nx)
    y0 = np.clip(boxes[:, 2], 0, ny)
    y1 = np.clip(boxes[:, 3], 0, ny)
    x1, y1 = np.maximum(x1, x0), np.maximum(y1, y0)
    return sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
