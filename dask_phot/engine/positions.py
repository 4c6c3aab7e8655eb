"""Bounded position refinement, alternating with the linear flux solve.

Each iteration solves the fluxes at the current positions (scene mode), then
linearises the model in the positions, ``f S(x + d) ~ f S(x) + f d dS/dx``:

* ``kind="source"``: each source above the S/N threshold gets a 3-parameter
  weighted fit of (flux, flux*dx, flux*dy) to its own footprint of the
  residual image with its own model added back (neighbours held fixed);
* ``kind="global"``: one shift (dx, dy) shared by all sources above the
  threshold, fitted to the whole residual image.

Steps are limited to half a pixel and the total offset from the input
position to ``max_shift`` pixels; a source that ends on the bound is flagged
``POSITION_AT_BOUND``, and one never refined ``POSITION_NOT_FIT``. The final
fluxes and errors are those of the linear fit at the refined positions.
"""

from __future__ import annotations

import numba
import numpy as np

from dask_phot.engine import _kernels as K
from dask_phot.engine.prepare import Prepared
from dask_phot.engine.scene import sky_image, solve_scene
from dask_phot.psf import PSFModel
from dask_phot.schema import Flag

__all__ = ["refine_positions"]

_EPS = 0.02  # pixels, finite-difference step for the derivative stamps


def _aligned(psf: PSFModel, x: np.ndarray, y: np.ndarray, x0: np.ndarray, y0: np.ndarray
             ) -> np.ndarray:
    """Stamps at (x, y) re-framed onto reference corners ``x0, y0`` (zero filled)."""
    st, sx0, sy0 = psf.stamps(x, y)
    k = st.shape[1]
    pad = np.zeros((st.shape[0], k + 2, k + 2))
    pad[:, 1:-1, 1:-1] = st
    out = np.empty_like(st)
    ddx, ddy = sx0 - x0, sy0 - y0  # in {-1, 0, 1}
    for ox in (-1, 0, 1):
        for oy in (-1, 0, 1):
            sel = (ddx == ox) & (ddy == oy)
            if sel.any():
                out[sel] = pad[sel, 1 - oy : 1 - oy + k, 1 - ox : 1 - ox + k]
    return out


def _derivatives(psf: PSFModel, x: np.ndarray, y: np.ndarray, x0: np.ndarray, y0: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    dx = (_aligned(psf, x + _EPS, y, x0, y0) - _aligned(psf, x - _EPS, y, x0, y0)) / (2 * _EPS)
    dy = (_aligned(psf, x, y + _EPS, x0, y0) - _aligned(psf, x, y - _EPS, x0, y0)) / (2 * _EPS)
    return dx, dy


@numba.njit(cache=True)
def _source_steps(
    sel: np.ndarray, stamps: np.ndarray, gx: np.ndarray, gy: np.ndarray, x0: np.ndarray,
    y0: np.ndarray, flux: np.ndarray, resid: np.ndarray, weight: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-source Gauss-Newton position steps (NaN where the 3x3 solve fails)."""
    ny, nx = weight.shape
    k = stamps.shape[1]
    sx = np.full(sel.shape[0], np.nan)
    sy = np.full(sel.shape[0], np.nan)
    for t in range(sel.shape[0]):
        i = sel[t]
        f = flux[i]
        a = np.zeros((3, 3))
        b = np.zeros(3)
        col = np.zeros(3)
        for r in range(k):
            yy = y0[i] + r
            if yy < 0 or yy >= ny:
                continue
            for c in range(k):
                xx = x0[i] + c
                if xx < 0 or xx >= nx or weight[yy, xx] <= 0.0:
                    continue
                wv = weight[yy, xx]
                col[0] = stamps[i, r, c]
                col[1] = f * gx[i, r, c]
                col[2] = f * gy[i, r, c]
                d = resid[yy, xx] + f * stamps[i, r, c]
                for p in range(3):
                    b[p] += wv * col[p] * d
                    for q in range(3):
                        a[p, q] += wv * col[p] * col[q]
        det = np.linalg.det(a)
        if not det > 0.0:
            continue
        sol = np.linalg.solve(a, b)
        sx[t] = sol[1]
        sy[t] = sol[2]
    return sx, sy


def refine_positions(
    prep: Prepared, psf: PSFModel, *, kind: str, max_shift: float, snr_min: float,
    iterations: int, opts: dict,
) -> None:
    """Refine ``prep.x, prep.y`` in place and set the position flags."""
    x_in, y_in = prep.x.copy(), prep.y.copy()
    refined = np.zeros(prep.x.shape[0], dtype=bool)
    for _ in range(max(1, iterations)):
        stamps, x0, y0 = psf.stamps(prep.x, prep.y)
        flux, var, status, _, _, tiling = solve_scene(prep, stamps, x0, y0, **opts)
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = flux / np.sqrt(var)
        bright = prep.fit & (status == K.ST_OK) & (snr > snr_min)
        if not bright.any():
            break
        model = K.scatter_model(stamps, x0, y0, flux, prep.data.shape)
        if opts["nsky"]:
            model += sky_image(tiling, tiling.sky, opts["nsky"], prep.data.shape)
        resid = prep.data - model
        gx, gy = _derivatives(psf, prep.x, prep.y, x0, y0)
        sel = np.flatnonzero(bright)
        if kind == "global":
            step = _global_step(sel, gx, gy, x0, y0, flux, resid, prep.weight)
            sel = np.flatnonzero(prep.fit)
            sx, sy = np.full(sel.size, step[0]), np.full(sel.size, step[1])
        else:
            sx, sy = _source_steps(sel, stamps, gx, gy, x0, y0, flux, resid, prep.weight)
        good = np.isfinite(sx) & np.isfinite(sy)
        sel, sx, sy = sel[good], np.clip(sx[good], -0.5, 0.5), np.clip(sy[good], -0.5, 0.5)
        refined[sel] = True
        prep.x[sel] = x_in[sel] + np.clip(prep.x[sel] + sx - x_in[sel], -max_shift, max_shift)
        prep.y[sel] = y_in[sel] + np.clip(prep.y[sel] + sy - y_in[sel], -max_shift, max_shift)
        if np.all(np.abs(sx) < 1e-3) and np.all(np.abs(sy) < 1e-3):
            break
    at_bound = (np.abs(prep.x - x_in) >= max_shift - 1e-9) | (
        np.abs(prep.y - y_in) >= max_shift - 1e-9)
    prep.flags[refined & at_bound] |= int(Flag.POSITION_AT_BOUND)
    prep.flags[prep.fit & ~refined] |= int(Flag.POSITION_NOT_FIT)


def _global_step(
    sel: np.ndarray, gx: np.ndarray, gy: np.ndarray, x0: np.ndarray, y0: np.ndarray,
    flux: np.ndarray, resid: np.ndarray, weight: np.ndarray,
) -> tuple[float, float]:
    """One shared shift from the summed derivative images of the bright sources."""
    shape = resid.shape
    f = np.where(np.isin(np.arange(flux.size), sel), flux, np.nan)
    img_x = K.scatter_model(gx, x0, y0, f, shape)
    img_y = K.scatter_model(gy, x0, y0, f, shape)
    a = np.array([[np.sum(weight * img_x * img_x), np.sum(weight * img_x * img_y)],
                  [np.sum(weight * img_x * img_y), np.sum(weight * img_y * img_y)]])
    b = np.array([np.sum(weight * img_x * resid), np.sum(weight * img_y * resid)])
    try:
        step = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return 0.0, 0.0
    return float(step[0]), float(step[1])
