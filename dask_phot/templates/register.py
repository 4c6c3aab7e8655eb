"""Registration between the sharp and the blurred image, from the fit's residuals.

Two mosaics' astrometry rarely agree to better than a tenth of an arcsecond,
and a template half a pixel off leaves a dipole in the residual and biases
its flux. As T-PHOT does, the residual of a first fit is cross-correlated
with the model, region by region: to first order a shift ``d`` of every
template in a region leaves the residual ``R = -d . grad(M)``, where ``M`` is
the fitted model (the sum of the templates' gradients times their fluxes), so
the weighted least-squares shift is

    ``d = -(G^T W G)^-1 G^T W R``,   ``G = (dM/dX, dM/dY)``,

the zero-lag peak of the cross-correlation of ``R`` with the model's gradient.
The first fit's fluxes take part of a shift where sources blend, so ``G`` is
taken less its fit by the templates (:func:`decorrelate`): the shift is
fitted jointly with the fluxes, to first order. Templates are rebuilt at the
shifted positions and refitted. Regions whose shift is not
measured well enough take the shift of the whole image; the shifts between
region centres are interpolated bilinearly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft
from scipy import ndimage

from dask_phot.engine.fit import scatter_stamps
from dask_phot.models.stamps import Stamps

__all__ = ["ShiftMap", "decorrelate", "estimate_shifts", "measure_shifts", "model_gradients"]


@dataclass(frozen=True)
class ShiftMap:
    """Shifts on a grid of regions (blurred-image pixels).

    Attributes
    ----------
    dx, dy, err : ndarray, shape (ny, nx)
        Shift of each region and its 1-sigma error (the larger axis).
    measured : ndarray of bool
        Region measured on its own (else: the whole image's shift).
    region : int
        Region side, pixels.
    """

    dx: np.ndarray
    dy: np.ndarray
    err: np.ndarray
    measured: np.ndarray
    region: int

    def at(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shift at pixel positions, bilinear between region centres."""
        gx = (np.asarray(x, dtype=np.float64) + 0.5) / self.region - 0.5
        gy = (np.asarray(y, dtype=np.float64) + 0.5) / self.region - 0.5
        coords = np.array([gy, gx])
        sx = ndimage.map_coordinates(self.dx, coords, order=1, mode="nearest")
        sy = ndimage.map_coordinates(self.dy, coords, order=1, mode="nearest")
        return sx, sy

    def __add__(self, other: ShiftMap) -> ShiftMap:
        return ShiftMap(self.dx + other.dx, self.dy + other.dy, other.err, other.measured,
                        self.region)

    @classmethod
    def zero(cls, shape: tuple[int, int], region: int) -> ShiftMap:
        """No shift anywhere."""
        ny, nx = (max(1, -(-s // region)) for s in shape)
        z = np.zeros((ny, nx))
        return cls(z, z.copy(), z.copy(), np.zeros((ny, nx), bool), region)


def model_gradients(stamps: Stamps, flux: np.ndarray, shape: tuple[int, int],
                    pad: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``dM/dX`` and ``dM/dY`` of the model ``M`` (the stamps scaled by ``flux``; NaN and
    zero left out) by a Fourier derivative of its image, zero-padded by ``pad``.

    The model is as smooth as the band's PSF, so its sampled image holds its
    gradient: this takes one image and two inverse FFTs instead of every template
    rebuilt with its derivatives.

    Examples
    --------
    >>> from dask_phot.models.stamps import Stamps
    >>> x = np.arange(31.0) - 15
    >>> g = np.exp(-0.5 * (x[:, None] ** 2 + x[None, :] ** 2) / 2.0 ** 2)
    >>> st = Stamps.from_square(g[None], np.array([10]), np.array([10]))
    >>> gx, gy = model_gradients(st, np.array([1.0]), (60, 60))
    >>> bool(np.allclose(gx[10:41, 10:41], -x[None, :] / 4.0 * g, atol=1e-6))
    True
    >>> bool(np.allclose(gy[10:41, 10:41], -x[:, None] / 4.0 * g, atol=1e-6))
    True
    """
    f = np.where(np.isfinite(flux), flux, 0.0)
    ny, nx = shape
    # single precision: a 1e-7 error in a gradient moves the shift by less than that
    full = (scipy.fft.next_fast_len(ny + 2 * pad, real=True),
            scipy.fft.next_fast_len(nx + 2 * pad, real=True))
    img = np.zeros(full, dtype=np.float32)
    img[pad:pad + ny, pad:pad + nx] = scatter_stamps(stamps, f, shape)
    spec = scipy.fft.rfft2(img, workers=1)
    ky = (2j * np.pi * scipy.fft.fftfreq(full[0])[:, None]).astype(np.complex64)
    kx = (2j * np.pi * scipy.fft.rfftfreq(full[1])[None, :]).astype(np.complex64)
    gx = scipy.fft.irfft2(spec * kx, s=full, workers=1)[pad:pad + ny, pad:pad + nx]
    gy = scipy.fft.irfft2(spec * ky, s=full, workers=1)[pad:pad + ny, pad:pad + nx]
    return gx.astype(np.float64), gy.astype(np.float64)


def measure_shifts(resid: np.ndarray, weight: np.ndarray, stamps: Stamps, flux: np.ndarray,
                   *, region: int, max_shift: float, max_error: float, joint: bool = True,
                   products: tuple[np.ndarray, ...] | None = None, pad: int = 16) -> ShiftMap:
    """Shifts of the model ``M`` (the stamps scaled by ``flux``) that best fit the
    residual ``resid`` of a joint fit of the same stamps, fitted jointly with their
    fluxes (``joint``; see :func:`decorrelate`) or with the fluxes held.

    Parameters
    ----------
    resid, weight : ndarray
        The fit's residual (data minus its whole model) and inverse variance.
    stamps, flux : Stamps, ndarray
        Every fitted source's model, and the fluxes of those that carry the
        registration (0 or NaN: left out).
    region, max_shift, max_error
        As :func:`estimate_shifts`.
    products : tuple, optional
        :func:`.noise.stamp_products` of the stamps, when already taken.

    Returns
    -------
    ShiftMap
        The shifts to add to the model's positions.
    """
    gx, gy = model_gradients(stamps, flux, resid.shape, pad=pad)
    if joint:
        gx, gy = decorrelate([gx, gy], weight, stamps, products=products)
    return estimate_shifts(resid, weight, gx, gy, region=region, max_shift=max_shift,
                           max_error=max_error)


@numba.njit(cache=True)
def _gather(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray, x0: np.ndarray,
            y0: np.ndarray, imgs: np.ndarray) -> np.ndarray:
    """Per image ``imgs[g]`` and stamp ``i``, the sum over the stamp's pixels on the image
    of the stamp times the image (``out[g, i]``; the stamps read once for all images)."""
    ng, ny, nx = imgs.shape
    out = np.zeros((ng, w.shape[0]))
    acc = np.zeros(ng)
    for i in range(w.shape[0]):
        cs, ce = max(0, -x0[i]), min(w[i], nx - x0[i])
        acc[:] = 0.0
        for r in range(max(0, -y0[i]), min(h[i], ny - y0[i])):
            o = ptr[i] + r * w[i] - x0[i]
            for g in range(ng):
                row = imgs[g, y0[i] + r]
                a = 0.0
                for xx in range(x0[i] + cs, x0[i] + ce):
                    a += data[o + xx] * row[xx]
                acc[g] += a
        for g in range(ng):
            out[g, i] = acc[g]
    return out


@numba.njit(cache=True)
def _normal_product(a: np.ndarray, b: np.ndarray, vals: np.ndarray, diag: np.ndarray,
                    p: np.ndarray) -> np.ndarray:
    """``N p[g]`` for each row ``g`` of ``p``, with the symmetric ``N`` of diagonal ``diag``
    and entries ``vals`` at ``(a, b)`` and ``(b, a)`` (the pairs read once for all rows)."""
    q = diag[None, :] * p
    for t in range(a.shape[0]):
        at, bt, v = a[t], b[t], vals[t]
        for g in range(p.shape[0]):
            q[g, at] += v * p[g, bt]
            q[g, bt] += v * p[g, at]
    return q


@numba.njit(cache=True)
def _scatter_many(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
                  x0: np.ndarray, y0: np.ndarray, amp: np.ndarray, out: np.ndarray) -> None:
    """``out[g] -= sum_i amp[g, i] * stamp_i`` (clipped at the image's edges; the stamps
    read once for all images)."""
    ng, ny, nx = out.shape
    for i in range(w.shape[0]):
        cs, ce = max(0, -x0[i]), min(w[i], nx - x0[i])
        for r in range(max(0, -y0[i]), min(h[i], ny - y0[i])):
            o = ptr[i] + r * w[i] - x0[i]
            for g in range(ng):
                ag = amp[g, i]
                if ag == 0.0 or not np.isfinite(ag):
                    continue
                row = out[g, y0[i] + r]
                for xx in range(x0[i] + cs, x0[i] + ce):
                    row[xx] -= ag * data[o + xx]


def decorrelate(grads: list[np.ndarray], weight: np.ndarray, stamps: Stamps, *,
                iterations: int = 10, products: tuple[np.ndarray, ...] | None = None
                ) -> list[np.ndarray]:
    """Each image of ``grads`` less its weighted least-squares fit by the stamps: the part
    of a gradient the fluxes of a joint fit cannot take.

    A fit at the wrong position lets neighbours' fluxes take part of a shift (in a
    blend, one brighter and one fainter mimic a shift between them), so the
    residual's cross-correlation with the gradient ``G`` measures less than the
    shift (on a crowded pair, 0.254" of 0.3"). Fitting the shift jointly with the
    fluxes, to first order, is the cross-correlation with ``G' = G - M u``,
    ``u = (M^T W M)^-1 M^T W G``: the residual is orthogonal to the stamps ``M``,
    so only the normal matrix changes. ``M^T W M`` is sparse (the overlapping
    stamps' products, :func:`.noise.stamp_products`); ``u`` is solved by
    ``iterations`` of conjugate gradients (Jacobi preconditioned): on the crowded
    pair 5 give 0.289", 10 0.290", 30 0.291". ``products``: the stamps'
    :func:`~.noise.stamp_products`, when already taken. The gradients are solved
    together (each pass over the stamps and the pairs serves all of them).
    """
    from dask_phot.templates.noise import stamp_products

    weight = np.ascontiguousarray(weight, dtype=np.float64)
    n = len(stamps)
    a, b, vals, diag = products if products is not None else stamp_products(stamps, weight)
    live = diag > 0
    pre = np.where(live, 1.0 / np.where(live, diag, 1.0), 0.0)
    ng = len(grads)
    r = np.where(live[None, :], _gather(*stamps.arrays, np.stack([weight * g for g in grads])),
                 0.0)
    u = np.zeros((ng, n))
    z = pre * r
    p = z.copy()
    rz = np.array([float(r[g] @ z[g]) for g in range(ng)])
    going = np.ones(ng, dtype=bool)
    for _ in range(iterations):
        going &= rz > 0
        if not going.any():
            break
        q = _normal_product(a, b, vals, diag, p)
        for g in np.flatnonzero(going):  # (each gradient's own steps, as if alone)
            alpha = rz[g] / float(p[g] @ q[g])
            u[g] += alpha * p[g]
            r[g] -= alpha * q[g]
            z[g] = pre * r[g]
            rz_new = float(r[g] @ z[g])
            p[g] = z[g] + (rz_new / rz[g]) * p[g]
            rz[g] = rz_new
    out = np.array(grads, dtype=np.float64)
    _scatter_many(*stamps.arrays, u, out)
    return list(out)


def _sums(a: np.ndarray, region: int, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    gy, gx = -(-ny // region), -(-nx // region)
    pad = np.zeros((gy * region, gx * region))
    pad[:ny, :nx] = a
    return pad.reshape(gy, region, gx, region).sum(axis=(1, 3))


def estimate_shifts(resid: np.ndarray, weight: np.ndarray, gx: np.ndarray, gy: np.ndarray,
                    *, region: int, max_shift: float, max_error: float) -> ShiftMap:
    """Least-squares shift of each region (see the module docstring).

    Parameters
    ----------
    resid, weight : ndarray
        Residual image (data minus model) and inverse variance.
    gx, gy : ndarray
        The model's gradient images (:func:`model_gradients`).
    region : int
        Region side, pixels.
    max_shift : float
        Shifts are clipped to this length, pixels.
    max_error : float
        A region whose shift error exceeds this (pixels) takes the image's shift.

    Returns
    -------
    ShiftMap
    """
    shape = resid.shape
    w = np.where(np.isfinite(resid), weight, 0.0)
    r = np.where(w > 0, resid, 0.0)
    axx, axy, ayy = (_sums(w * a * b, region, shape) for a, b in ((gx, gx), (gx, gy),
                                                                   (gy, gy)))
    bx, by = -_sums(w * gx * r, region, shape), -_sums(w * gy * r, region, shape)
    dx, dy, err = _solve2(axx, axy, ayy, bx, by)
    gdx, gdy, gerr = _solve2(axx.sum(), axy.sum(), ayy.sum(), bx.sum(), by.sum())
    ok = np.isfinite(err) & (err <= max_error)
    if not np.isfinite(gerr):
        gdx = gdy = 0.0
    dx = np.where(ok, dx, gdx)
    dy = np.where(ok, dy, gdy)
    length = np.hypot(dx, dy)
    scale = np.where(length > max_shift, max_shift / np.maximum(length, 1e-300), 1.0)
    return ShiftMap(dx * scale, dy * scale, np.where(ok, err, gerr), ok, int(region))


def _solve2(axx, axy, ayy, bx, by):  # type: ignore[no-untyped-def]
    """Solve the 2 x 2 systems; the error is the larger axis of the covariance."""
    det = axx * ayy - axy * axy
    with np.errstate(divide="ignore", invalid="ignore"):
        good = det > 1e-12 * np.maximum(axx * ayy, 1e-300)
        dx = np.where(good, (ayy * bx - axy * by) / det, 0.0)
        dy = np.where(good, (axx * by - axy * bx) / det, 0.0)
        tr = (axx + ayy) / det
        disc = np.sqrt(np.maximum(tr**2 / 4 - 1.0 / det, 0.0))
        err = np.where(good, np.sqrt(tr / 2 + disc), np.inf)
    return dx, dy, err

