"""Bounded position refinement, alternating with the linear flux solve.

Each iteration solves the fluxes at the current positions (scene mode), then
linearises each source's model (point or galaxy) in its position,
``f S(x + d) ~ f S(x) + f d dS/dx``:

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
from dask_phot.models.render import render_sources
from dask_phot.models.shapes import Shapes
from dask_phot.models.stamps import Stamps
from dask_phot.psf import PSFModel
from dask_phot.schema import Flag

__all__ = ["refine_positions"]

_EPS = 0.02  # pixels, finite-difference step for the derivative stamps


@numba.njit(cache=True, nogil=True)
def _reframe(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
             x0: np.ndarray, y0: np.ndarray, rx0: np.ndarray, ry0: np.ndarray) -> np.ndarray:
    """Stamp values moved onto reference corners ``rx0, ry0`` (zero filled)."""
    out = np.zeros_like(data)
    for i in range(w.shape[0]):
        ox, oy = x0[i] - rx0[i], y0[i] - ry0[i]
        for r in range(h[i]):
            rs = r - oy
            if rs < 0 or rs >= h[i]:
                continue
            for c in range(w[i]):
                cs = c - ox
                if 0 <= cs < w[i]:
                    out[ptr[i] + r * w[i] + c] = data[ptr[i] + rs * w[i] + cs]
    return out


def _derivatives(psf: PSFModel, shapes: Shapes, x: np.ndarray, y: np.ndarray,
                 ref: Stamps, render: dict) -> tuple[Stamps, Stamps]:
    """Stamps of d(model)/dx and d(model)/dy on the frames of ``ref`` (input order)."""

    def framed(xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        st = render_sources(psf, xx, yy, shapes, **render).stamps
        return _reframe(*st.arrays, ref.x0, ref.y0)

    gx = (framed(x + _EPS, y) - framed(x - _EPS, y)) / (2 * _EPS)
    gy = (framed(x, y + _EPS) - framed(x, y - _EPS)) / (2 * _EPS)
    like = (ref.ptr, ref.w, ref.h, ref.x0, ref.y0)
    return Stamps(gx, *like), Stamps(gy, *like)


@numba.njit(cache=True, nogil=True)
def _source_steps(
    sel: np.ndarray, data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
    x0: np.ndarray, y0: np.ndarray, gx: np.ndarray, gy: np.ndarray, flux: np.ndarray,
    resid: np.ndarray, weight: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-source Gauss-Newton position steps (NaN where the 3x3 solve fails)."""
    ny, nx = weight.shape
    sx = np.full(sel.shape[0], np.nan)
    sy = np.full(sel.shape[0], np.nan)
    col = np.zeros(3)
    for t in range(sel.shape[0]):
        i = sel[t]
        f = flux[i]
        a = np.zeros((3, 3))
        b = np.zeros(3)
        for r in range(h[i]):
            yy = y0[i] + r
            if yy < 0 or yy >= ny:
                continue
            for c in range(w[i]):
                xx = x0[i] + c
                if xx < 0 or xx >= nx or weight[yy, xx] <= 0.0:
                    continue
                q = ptr[i] + r * w[i] + c
                wv = weight[yy, xx]
                col[0] = data[q]
                col[1] = f * gx[q]
                col[2] = f * gy[q]
                d = resid[yy, xx] + f * data[q]
                for p in range(3):
                    b[p] += wv * col[p] * d
                    for qq in range(3):
                        a[p, qq] += wv * col[p] * col[qq]
        det = np.linalg.det(a)
        if not det > 0.0:
            continue
        sol = np.linalg.solve(a, b)
        sx[t] = sol[1]
        sy[t] = sol[2]
    return sx, sy


def refine_positions(
    prep: Prepared, psf: PSFModel, shapes: Shapes, *, kind: str, max_shift: float,
    snr_min: float, iterations: int, opts: dict, render: dict,
) -> None:
    """Refine ``prep.x, prep.y`` in place and set the position flags."""
    x_in, y_in = prep.x.copy(), prep.y.copy()
    refined = np.zeros(prep.x.shape[0], dtype=bool)
    for _ in range(max(1, iterations)):
        stamps = render_sources(psf, prep.x, prep.y, shapes, **render).stamps
        flux, var, status, _, _, state = solve_scene(prep, stamps, **opts)
        tiling = state.tiling
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = flux / np.sqrt(var)
        bright = prep.fit & (status == K.ST_OK) & (snr > snr_min)
        if not bright.any():
            break
        model = K.scatter_model(*stamps.arrays, flux, prep.data.shape)
        if opts["nsky"]:
            sky_image(tiling, tiling.sky, opts["nsky"], prep.data.shape, out=model)
        resid = prep.data - model
        gx, gy = _derivatives(psf, shapes, prep.x, prep.y, stamps, render)
        sel = np.flatnonzero(bright)
        if kind == "global":
            step = _global_step(sel, gx, gy, flux, resid, prep.weight)
            sel = np.flatnonzero(prep.fit)
            sx, sy = np.full(sel.size, step[0]), np.full(sel.size, step[1])
        else:
            sx, sy = _source_steps(sel, *stamps.arrays, gx.data, gy.data, flux, resid,
                                   prep.weight)
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


def _global_step(sel: np.ndarray, gx: Stamps, gy: Stamps, flux: np.ndarray,
                 resid: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """One shared shift from the summed derivative images of the bright sources."""
    shape = resid.shape
    f = np.where(np.isin(np.arange(flux.size), sel), flux, np.nan)
    img_x = K.scatter_model(*gx.arrays, f, shape)
    img_y = K.scatter_model(*gy.arrays, f, shape)
    a = np.array([[np.sum(weight * img_x * img_x), np.sum(weight * img_x * img_y)],
                  [np.sum(weight * img_x * img_y), np.sum(weight * img_y * img_y)]])
    b = np.array([np.sum(weight * img_x * resid), np.sum(weight * img_y * resid)])
    try:
        step = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return 0.0, 0.0
    return float(step[0]), float(step[1])
