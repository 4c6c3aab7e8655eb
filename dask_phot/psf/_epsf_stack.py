"""The two alternating steps of an ePSF build: fit the stars, then stack them.

* :func:`cut_stars` cuts each star's box (data, inverse variance) from the mosaic;
* :func:`fit_stars` fits each star's flux, position and local sky with the current
  ePSF (vectorised Gauss-Newton over all stars at once);
* :func:`stack_stars` solves for the ePSF's cubic B-spline coefficients on the
  oversampled grid by weighted linear least squares over every star pixel at its
  exact offset from the star (no binning: an undersampled star still constrains
  the ePSF between nodes), with a weak curvature penalty and outlier clipping.

The least-squares problem is the one of Anderson & King (2000) and photutils'
``EPSFBuilder`` (star pixels scaled by the star's flux, shifted by its position),
solved directly instead of by binned residual iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from dask_phot.psf._epsf_render import b3, decimate

__all__ = ["StarBoxes", "cut_stars", "fit_stars", "stack_stars"]


@dataclass(eq=False)
class StarBoxes:
    """Boxes of ``m x m`` pixels centred on the pixel nearest each star.

    Attributes
    ----------
    data, weight : ndarray, shape (n, m, m)
        Pixel values (neighbours subtracted once known) and inverse variances
        (0 for masked pixels and pixels off the image).
    cx, cy : ndarray of int
        Image column and row of each box's centre pixel.
    """

    data: np.ndarray
    weight: np.ndarray
    cx: np.ndarray
    cy: np.ndarray

    @property
    def half(self) -> int:
        """Half side of the boxes."""
        return int(self.data.shape[1] // 2)

    def subset(self, keep: np.ndarray) -> StarBoxes:
        """The boxes of the stars selected by ``keep`` (boolean or index array)."""
        return StarBoxes(self.data[keep], self.weight[keep], self.cx[keep], self.cy[keep])


def cut_stars(image: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray,
              half: int) -> StarBoxes:
    """Cut ``(2 half + 1)``-pixel boxes around the pixels nearest ``(x, y)`` (off image: w=0)."""
    cx = np.floor(np.asarray(x, float) + 0.5).astype(np.int64)
    cy = np.floor(np.asarray(y, float) + 0.5).astype(np.int64)
    m = 2 * half + 1
    ny, nx = image.shape
    offs = np.arange(-half, half + 1)
    rows = cy[:, None] + offs
    cols = cx[:, None] + offs
    inside = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    r = np.clip(rows, 0, ny - 1)[:, :, None]
    c = np.clip(cols, 0, nx - 1)[:, None, :]
    data = np.where(inside, image[r, c], 0.0)
    w = np.where(inside, weight[r, c], 0.0)
    bad = ~np.isfinite(data) | ~np.isfinite(w) | (w < 0)
    data[bad] = 0.0
    w[bad] = 0.0
    return StarBoxes(data.reshape(-1, m, m), w.reshape(-1, m, m), cx, cy)


@dataclass(eq=False)
class StarFit:
    """Per-star results of :func:`fit_stars` (arrays of length n)."""

    flux: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sky: np.ndarray
    chi2: np.ndarray
    ok: np.ndarray


def fit_stars(coef: np.ndarray, oversampling: int, boxes: StarBoxes, x: np.ndarray,
              y: np.ndarray, sky: np.ndarray, *, radius: float, iterations: int = 4,
              fit_position: bool = True, max_step: float = 0.3,
              error_floor: float = 0.0) -> StarFit:
    """Fit flux and (optionally) position of each star with the ePSF, its sky fixed.

    Parameters
    ----------
    coef : ndarray
        The ePSF's B-spline coefficients (normalised to total flux).
    oversampling : int
        Nodes per pixel.
    boxes : StarBoxes
        The stars' pixels.
    x, y : ndarray
        Starting positions (image pixels).
    sky : ndarray
        Each star's sky level, subtracted from its pixels.
    radius : float
        Only pixels within ``radius`` of the star enter the fit.
    iterations : int
        Gauss-Newton steps.
    fit_position : bool
        Fit the position too (else the flux alone, a linear fit).
    max_step : float
        Largest position change per step, pixels.
    error_floor : float
        Fractional model error added in quadrature to each pixel's noise in the
        reduced chi-square (as in :func:`stack_stars`): without it the brightest stars,
        whose pixels show the current ePSF's small errors, look like the poorest fits.

    Returns
    -------
    StarFit
    """
    m = boxes.data.shape[1]
    h = m // 2
    d = boxes.data - sky[:, None, None]
    x = np.asarray(x, float).copy()
    y = np.asarray(y, float).copy()
    grid = np.arange(m) - h
    flux = np.zeros(x.size)
    for it in range(max(1, iterations)):
        dx, dy = x - boxes.cx, y - boxes.cy
        e, gx, gy = decimate(coef, oversampling, dx, dy, m, deriv=fit_position)
        rr = (grid[None, None, :] - dx[:, None, None]) ** 2 + (grid[None, :, None]
                                                                - dy[:, None, None]) ** 2
        w = np.where(rr <= radius**2, boxes.weight, 0.0)
        ee = np.einsum("nij,nij->n", w * e, e)
        ed = np.einsum("nij,nij->n", w * e, d)
        flux = np.where(ee > 0, ed / np.where(ee > 0, ee, 1.0), 0.0)
        if not fit_position or it == iterations - 1:
            break
        jac = np.stack([e, flux[:, None, None] * gx, flux[:, None, None] * gy], axis=1)
        res = d - flux[:, None, None] * e
        a = np.einsum("npij,nqij->npq", jac * w[:, None], jac)
        b = np.einsum("npij,nij->np", jac * w[:, None], res)
        # (a star whose fit pixels are all masked has a = 0: no step, and it fails `ok`)
        a += np.eye(3)[None] * (1e-12 * np.trace(a, axis1=1, axis2=2)[:, None, None] + 1e-300)
        step = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        x += np.clip(step[:, 1], -max_step, max_step)
        y += np.clip(step[:, 2], -max_step, max_step)
    dx, dy = x - boxes.cx, y - boxes.cy
    e, _, _ = decimate(coef, oversampling, dx, dy, m)
    rr = (grid[None, None, :] - dx[:, None, None]) ** 2 + (grid[None, :, None]
                                                            - dy[:, None, None]) ** 2
    w = np.where(rr <= radius**2, boxes.weight, 0.0)
    res = d - flux[:, None, None] * e
    if error_floor > 0:
        var = 1.0 / np.where(w > 0, w, np.inf) + (error_floor * flux[:, None, None] * e) ** 2
        w = np.divide(1.0, var, out=np.zeros_like(var), where=(w > 0) & (var > 0))
    npix = np.count_nonzero(w, axis=(1, 2))
    chi2 = np.einsum("nij,nij->n", w * res, res) / np.maximum(npix - 3, 1)
    ok = np.isfinite(flux) & (flux > 0) & (npix > 3)
    return StarFit(flux, x, y, sky, chi2, ok)


@numba.njit(cache=True)
def _accumulate(t_x: np.ndarray, t_y: np.ndarray, val: np.ndarray, wt: np.ndarray, n: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Normal equations of the B-spline fit as 7x7 stencils: ``ata[k, 3+dy, 3+dx]``."""
    ata = np.zeros((n * n, 7, 7))
    atb = np.zeros(n * n)
    wx = np.zeros(4)
    wy = np.zeros(4)
    for s in range(t_x.shape[0]):
        w = wt[s]
        if w == 0.0:
            continue
        jx = int(np.floor(t_x[s])) - 1
        jy = int(np.floor(t_y[s])) - 1
        for a in range(4):
            wx[a] = b3(t_x[s] - (jx + a))
            wy[a] = b3(t_y[s] - (jy + a))
        for a in range(4):
            for b in range(4):
                k = (jy + a) * n + jx + b
                wab = wy[a] * wx[b] * w
                atb[k] += wab * val[s]
                for c in range(4):
                    for d in range(4):
                        ata[k, 3 + c - a, 3 + d - b] += wab * wy[c] * wx[d]
    return ata, atb


def _stencil_matrix(ata: np.ndarray, n: int) -> sp.csr_matrix:
    k = np.arange(n * n)
    ky, kx = np.divmod(k, n)
    rows, cols, vals = [], [], []
    for a in range(7):
        for b in range(7):
            qy, qx = ky + a - 3, kx + b - 3
            ok = (qy >= 0) & (qy < n) & (qx >= 0) & (qx < n) & (ata[:, a, b] != 0)
            rows.append(k[ok])
            cols.append(qy[ok] * n + qx[ok])
            vals.append(ata[ok, a, b])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n * n, n * n))


def _curvature(n: int) -> sp.csr_matrix:
    """Sum of squared second differences (xx, yy and 2 xy) of an ``n x n`` coefficient grid."""
    eye = sp.identity(n, format="csr")
    d2 = sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    d1 = sp.diags([-1.0, 1.0], [0, 1], shape=(n - 1, n))
    dxx = sp.kron(eye, d2)
    dyy = sp.kron(d2, eye)
    dxy = sp.kron(d1, d1)
    return (dxx.T @ dxx + dyy.T @ dyy + 2.0 * dxy.T @ dxy).tocsr()


@dataclass(eq=False)
class Stack:
    """Result of :func:`stack_stars`: coefficients and what went into them."""

    coef: np.ndarray
    n_samples: int
    n_clipped: int
    sky: np.ndarray


def stack_stars(boxes: StarBoxes, fit: StarFit, oversampling: int, half: int, *,
                model_coef: np.ndarray | None, smoothing: float, error_floor: float,
                clip: float = 5.0, sky_basis: np.ndarray | None = None) -> Stack:
    """Least-squares ePSF (B-spline coefficients) from the stars' pixels.

    Parameters
    ----------
    boxes : StarBoxes
        The stars' pixels (neighbours subtracted).
    fit : StarFit
        Flux, position and sky of each star (from the previous ePSF).
    oversampling : int
        Nodes per pixel.
    half : int
        Half side of the ePSF in pixels; the grid has ``2 (O half + 2) + 1`` nodes.
    model_coef : ndarray, optional
        Previous ePSF (any odd grid with the same centre and oversampling), for the
        error floor and the clipping.
    smoothing : float
        Weight of the curvature penalty, relative to the data weight of each coefficient.
    error_floor : float
        Fractional model error added in quadrature to each pixel's noise.
    clip : float
        Pixels off the previous ePSF by more than ``clip`` sigma are dropped.
    sky_basis : ndarray, optional
        ``(n_stars, k)`` values at each star of ``k`` smooth functions of the image
        position (1, x, y): the sky is then fitted jointly as their combination,
        shared by all stars, instead of subtracting ``fit.sky``. A per-star sky is
        degenerate with a constant added to the ePSF (``b_i - c F_i``); a shared
        sky is not, because the stars' fluxes differ.
    """
    o = int(oversampling)
    hn = o * half + 2
    n = 2 * hn + 1
    m = boxes.data.shape[1]
    hb = m // 2
    grid = np.arange(m) - hb
    ux = (boxes.cx[:, None, None] + grid[None, None, :]) - fit.x[:, None, None]
    uy = (boxes.cy[:, None, None] + grid[None, :, None]) - fit.y[:, None, None]
    ux, uy = np.broadcast_to(ux, boxes.data.shape), np.broadcast_to(uy, boxes.data.shape)
    f = fit.flux[:, None, None]
    joint = sky_basis is not None
    val = (boxes.data - (0.0 if joint else fit.sky[:, None, None])) / f
    resid_sky = (fit.sky[:, None, None] / f if joint else np.zeros_like(f))
    var = 1.0 / np.where(boxes.weight > 0, boxes.weight, np.inf) / f**2
    if model_coef is not None:
        prev, _, _ = decimate(model_coef, o, fit.x - boxes.cx, fit.y - boxes.cy, m)
        var = var + (error_floor * np.clip(prev, 0, None)) ** 2
    use = ((boxes.weight > 0) & (np.abs(ux) <= half) & (np.abs(uy) <= half)
           & fit.ok[:, None, None] & (var > 0))
    wt = np.divide(1.0, var, out=np.zeros_like(var), where=use)
    tx = (hn + o * ux).ravel()
    ty = (hn + o * uy).ravel()
    val = val.ravel()
    wt = wt.ravel()
    keep = wt > 0
    star = np.broadcast_to(np.arange(f.shape[0])[:, None, None], boxes.data.shape).ravel()[keep]
    offset = np.broadcast_to(resid_sky, boxes.data.shape).ravel()[keep]
    tx, ty, val, wt = tx[keep], ty[keep], val[keep], wt[keep]
    nclip = 0
    if model_coef is not None and clip > 0:
        # outliers (cosmic rays, residuals of neighbours) against the previous ePSF
        prev = _evaluate_grid(model_coef, tx, ty, hn)
        bad = np.abs(val - offset - prev) * np.sqrt(wt) > clip
        nclip = int(bad.sum())
        wt = np.where(bad, 0.0, wt)
    ata, atb = _accumulate(tx, ty, val, wt, n)
    # the curvature penalty is scaled by each node's own data weight: the weights
    # differ by orders of magnitude between the core (error floor) and the wings
    diag = ata[:, 3, 3]
    top = float(diag.max()) if diag.size and diag.max() > 0 else 1.0
    local = sp.diags(np.sqrt(np.clip(diag, 1e-6 * top, None)))
    mat = _stencil_matrix(ata, n) + smoothing * (local @ _curvature(n) @ local)
    mat = (mat + sp.identity(n * n) * (1e-9 * top)).tocsr()
    mat = (mat + mat.T) * 0.5
    x0 = None if model_coef is None else _crop(model_coef, n)
    if not joint:
        coef = _solve(mat, atb, x0).reshape(n, n)
        return Stack(coef, int(keep.sum()), nclip, np.zeros(0))
    g = sky_basis[star] / fit.flux[star, None]
    acb = _cross(tx, ty, g, wt, n)
    abb = (g * wt[:, None]).T @ g
    big = sp.bmat([[mat, sp.csr_matrix(acb)], [sp.csr_matrix(acb.T), sp.csr_matrix(abb)]])
    rhs = np.concatenate([atb, (g * wt[:, None]).T @ val])
    start = None if x0 is None else np.concatenate([x0, np.zeros(g.shape[1])])
    sol = _solve(big.tocsr(), rhs, start)
    return Stack(sol[:n * n].reshape(n, n), int(keep.sum()), nclip, sol[n * n:])


@numba.njit(cache=True)
def _cross(t_x: np.ndarray, t_y: np.ndarray, g: np.ndarray, wt: np.ndarray, n: int
           ) -> np.ndarray:
    """Cross terms ``sum w B_k g_j`` of the B-spline coefficients and the sky terms."""
    out = np.zeros((n * n, g.shape[1]))
    for s in range(t_x.shape[0]):
        w = wt[s]
        if w == 0.0:
            continue
        jx = int(np.floor(t_x[s])) - 1
        jy = int(np.floor(t_y[s])) - 1
        for a in range(4):
            wy = b3(t_y[s] - (jy + a))
            for b in range(4):
                k = (jy + a) * n + jx + b
                wab = wy * b3(t_x[s] - (jx + b)) * w
                for j in range(g.shape[1]):
                    out[k, j] += wab * g[s, j]
    return out


@numba.njit(cache=True)
def evaluate(coef: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    n = coef.shape[0]
    out = np.zeros(tx.shape[0])
    for s in range(tx.shape[0]):
        jx = int(np.floor(tx[s])) - 1
        jy = int(np.floor(ty[s])) - 1
        v = 0.0
        for a in range(4):
            ry = jy + a
            if ry < 0 or ry >= n:
                continue
            wy = b3(ty[s] - ry)
            for b in range(4):
                rx = jx + b
                if 0 <= rx < n:
                    v += wy * b3(tx[s] - rx) * coef[ry, rx]
        out[s] = v
    return out


def _evaluate_grid(coef: np.ndarray, tx: np.ndarray, ty: np.ndarray, hn: int) -> np.ndarray:
    """Evaluate ``coef`` (centred grid) at index coordinates of a grid centred at ``hn``."""
    shift = (coef.shape[0] - 1) // 2 - hn
    return evaluate(np.ascontiguousarray(coef), tx + shift, ty + shift)


def _crop(coef: np.ndarray, n: int) -> np.ndarray:
    """The central ``n x n`` of a (larger) centred coefficient grid."""
    k = (coef.shape[0] - n) // 2
    return coef[k:k + n, k:k + n].ravel() if k >= 0 else np.zeros(n * n)


def _solve(mat: sp.csr_matrix, rhs: np.ndarray, x0: np.ndarray | None) -> np.ndarray:
    """Symmetric positive definite solve: Jacobi-preconditioned conjugate gradients.

    A direct sparse factorisation fills in badly on this 2-D grid with its 7x7
    stencil (seconds to minutes); CG converges in a hundred or so iterations,
    fewer from the previous ePSF. Compiled, so that no BLAS threads are involved.
    """
    mat = mat.tocsr()
    x = np.zeros(rhs.size) if x0 is None else np.asarray(x0, dtype=np.float64).copy()
    maxiter = 20 * int(np.sqrt(rhs.size)) + 100
    it = _cg(mat.indptr.astype(np.int32), mat.indices.astype(np.int32),
             mat.data.astype(np.float64), np.asarray(rhs, dtype=np.float64), x, 1e-7, maxiter)
    if it >= maxiter:
        raise RuntimeError(f"ePSF stack: conjugate gradients did not converge in {maxiter} "
                           "iterations")
    return x


@numba.njit(cache=True)
def _matvec(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, v: np.ndarray,
            out: np.ndarray) -> None:
    for i in range(indptr.size - 1):
        acc = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            acc += data[k] * v[indices[k]]
        out[i] = acc


@numba.njit(cache=True)
def _cg(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, b: np.ndarray,
        x: np.ndarray, rtol: float, maxiter: int) -> int:
    """Jacobi-preconditioned CG on a CSR matrix, in place on ``x``; returns the iterations."""
    n = b.size
    dinv = np.ones(n)
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            if indices[k] == i and data[k] > 0:
                dinv[i] = 1.0 / data[k]
    r = np.empty(n)
    _matvec(indptr, indices, data, x, r)
    bn = 0.0
    for i in range(n):
        r[i] = b[i] - r[i]
        bn += b[i] * b[i]
    bn = np.sqrt(bn)
    if bn == 0.0:
        x[:] = 0.0
        return 0
    z = r * dinv
    p = z.copy()
    q = np.empty(n)
    rz = np.dot(r, z)
    for it in range(maxiter):
        rn = np.sqrt(np.dot(r, r))
        if rn <= rtol * bn:
            return it
        _matvec(indptr, indices, data, p, q)
        alpha = rz / np.dot(p, q)
        for i in range(n):
            x[i] += alpha * p[i]
            r[i] -= alpha * q[i]
            z[i] = r[i] * dinv[i]
        rz_new = np.dot(r, z)
        beta = rz_new / rz
        rz = rz_new
        for i in range(n):
            p[i] = z[i] + beta * p[i]
    return maxiter
