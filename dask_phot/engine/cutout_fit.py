"""Cutout mode: the COSMOS notebook's per-target fit, done right.

For each target, a square cutout of ``width`` pixels centred on its pixel is
fitted with every source whose centre lies inside the cutout, each with its
model (a point source, or a galaxy of given shape), the sky fixed (the given
sky, or the 3-sigma-clipped mean of the cutout as the notebook does). Unlike
the notebook, positions are 0-based and the reported variance is the
*target's* marginal variance from the inverse of the cutout's normal matrix,
which includes its covariance with neighbours.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from scipy.spatial import cKDTree

from dask_phot.engine import _kernels as K
from dask_phot.engine.prepare import Prepared
from dask_phot.models.stamps import Stamps

__all__ = ["clipped_mean", "solve_cutouts"]


@numba.njit(cache=True, nogil=True)
def clipped_mean(
    data: np.ndarray, weight: np.ndarray, region: np.ndarray, nsig: float, iters: int
) -> float:
    """Sigma-clipped mean of the usable pixels of a region (NaN if none).

    Same algorithm as astropy's ``sigma_clipped_stats(..., sigma=nsig,
    maxiters=iters)``: clip about the median at ``nsig`` population standard
    deviations until nothing changes, then take the mean of what is left.
    """
    rx0, rx1, ry0, ry1 = region[0], region[1], region[2], region[3]
    vals = np.empty((ry1 - ry0) * (rx1 - rx0))
    cnt = 0
    for yy in range(ry0, ry1):
        for xx in range(rx0, rx1):
            if weight[yy, xx] > 0.0:
                vals[cnt] = data[yy, xx]
                cnt += 1
    if cnt == 0:
        return math.nan
    v = vals[:cnt]
    for _ in range(iters):
        med = np.median(v)
        std = np.std(v)
        keep = (v >= med - nsig * std) & (v <= med + nsig * std)
        if keep.all():
            break
        v = v[keep]
        if v.size == 0:
            return math.nan
    return float(np.mean(v))


@numba.njit(cache=True, nogil=True)
def _solve_cutouts(
    targets: np.ndarray, ptr: np.ndarray, members: np.ndarray, boxes: np.ndarray,
    sdata: np.ndarray, sptr: np.ndarray, sw: np.ndarray, sh: np.ndarray, x0: np.ndarray,
    y0: np.ndarray, data: np.ndarray, weight: np.ndarray, sky_given: bool, tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = sw.shape[0]
    flux = np.full(n, np.nan)
    var = np.full(n, np.nan)
    status = np.full(n, K.ST_FAILED, dtype=np.int64)
    hasdeg = np.zeros(n, dtype=np.bool_)
    skyv = np.zeros(n)
    for t in range(targets.shape[0]):
        i = targets[t]
        mem = members[ptr[t] : ptr[t + 1]]
        m = mem.shape[0]
        nmat, rhs = K.build_normal(mem, sdata, sptr, sw, sh, x0, y0, data, weight, boxes[t], 1)
        sky = 0.0
        if not sky_given:
            sky = clipped_mean(data, weight, boxes[t], 3.0, 5)
            if not math.isfinite(sky):
                continue
        for a in range(m):
            rhs[a] -= sky * nmat[a, m]
        want = np.zeros(m, dtype=np.bool_)
        pos = 0
        for a in range(m):
            if mem[a] == i:
                want[a] = True
                pos = a
        sol, v, st = K.solve_normal_rl(nmat[:m, :m].copy(), rhs[:m].copy(), want, tol)
        status[i] = st[pos]
        skyv[i] = sky
        if st[pos] == K.ST_OK:
            flux[i] = sol[pos]
            var[i] = v[pos]
            for bb in range(pos + 1, m):
                if st[bb] == K.ST_DEGENERATE and nmat[bb, bb] > 0.0:
                    c = nmat[pos, bb] / math.sqrt(nmat[pos, pos] * nmat[bb, bb])
                    if c > 0.999:
                        hasdeg[i] = True
    return flux, var, status, hasdeg, skyv


def solve_cutouts(
    prep: Prepared, stamps: Stamps, *, width: int, sky_given: bool, tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit every fitted source in its own cutout (``stamps`` in input order); see the
    module docstring."""
    if width < 3:
        raise ValueError(f"cutout_width must be >= 3 pixels, got {width}")
    half = width // 2
    ny, nx = prep.data.shape
    idx = np.flatnonzero(prep.fit)
    cx = np.floor(prep.x[idx] + 0.5).astype(np.int64)
    cy = np.floor(prep.y[idx] + 0.5).astype(np.int64)
    boxes = np.column_stack([np.maximum(cx - half, 0), np.minimum(cx + half + 1, nx),
                             np.maximum(cy - half, 0), np.minimum(cy + half + 1, ny)])
    tree = cKDTree(np.column_stack([cx, cy]))
    lists = tree.query_ball_point(np.column_stack([cx, cy]), r=half + 1e-9, p=np.inf)
    counts = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    ptr = np.concatenate([[0], np.cumsum(counts)])
    members = np.concatenate([idx[np.sort(v)] for v in lists]) if len(lists) else idx
    return _solve_cutouts(idx, ptr, members.astype(np.int64), boxes.astype(np.int64),
                          *stamps.arrays, prep.data, prep.weight, sky_given, tol)
