"""Stamps from oversampled effective PSFs: cubic B-spline decimation at each source's phase.

An effective PSF (ePSF) ``E(u)`` is the value of a mosaic pixel whose centre lies at
offset ``u`` (in mosaic pixels) from a unit-flux point source: it already includes
the detector pixel response. It is stored on an oversampled grid of nodes
``u = (j - c) / O`` (``O`` the oversampling, ``c`` the middle node) and is
continuous between nodes as the interpolating cubic B-spline through them. A
source's stamp is ``E`` sampled (decimated) at the pixel centres around it, at
its own sub-pixel phase; nothing is binned or shifted with a second interpolant.

:class:`EPSFStamps` wraps one ePSF, or several measured at image positions and
blended with the weights of :class:`~dask_phot.psf.PSFGrid`, behind the engine's
PSF protocol (``size``, ``pixel_scale``, ``fwhm``, ``stamps``). The stamps are not
renormalised: each sums to the ePSF's flux inside the stamp, so fitted fluxes
are total fluxes when the ePSF is normalised to total flux.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from scipy.linalg import solve_banded

from dask_phot.psf.pixel import PixelPSF, PSFError

__all__ = ["EPSFStamps", "coefficients", "decimate", "node_values", "refine_nodes"]


def node_values(coef: np.ndarray) -> np.ndarray:
    """Values at the nodes of the cubic B-spline with coefficients ``coef`` (zero outside)."""
    out = np.asarray(coef, dtype=np.float64)
    for axis in (0, 1):
        c = np.moveaxis(out, axis, 0)
        v = 4.0 * c
        v[1:] += c[:-1]
        v[:-1] += c[1:]
        out = np.moveaxis(v / 6.0, 0, axis)
    return out


def coefficients(values: np.ndarray) -> np.ndarray:
    """B-spline coefficients interpolating node ``values`` (the inverse of :func:`node_values`)."""
    out = np.asarray(values, dtype=np.float64)
    n = out.shape[0]
    ab = np.zeros((3, n))
    ab[0, 1:] = 1.0 / 6.0
    ab[1, :] = 4.0 / 6.0
    ab[2, :-1] = 1.0 / 6.0
    out = solve_banded((1, 1), ab, out)
    ab = np.zeros((3, out.shape[1]))
    ab[0, 1:] = 1.0 / 6.0
    ab[1, :] = 4.0 / 6.0
    ab[2, :-1] = 1.0 / 6.0
    return np.ascontiguousarray(solve_banded((1, 1), ab, out.T).T)


def refine_nodes(values: np.ndarray, factor: int) -> np.ndarray:
    """The ePSF's cubic B-spline through node ``values`` evaluated ``factor`` times finer.

    The result holds ``(m - 1) * factor + 1`` nodes per side (the same extent and
    centre as the ``m`` nodes given) and keeps the normalisation per node area:
    its sum divided by ``(oversampling * factor)**2`` is the flux it holds. Used
    to hand an ePSF to :class:`~dask_phot.psf.OversampledPSF`, whose Lanczos
    interpolant then follows the B-spline that :class:`EPSFStamps` samples (on the
    ePSF's own nodes the two differ by ~0.3% of the peak between nodes).

    Examples
    --------
    >>> u = (np.arange(41) - 20) / 4.0
    >>> g = np.exp(-0.5 * (u[:, None] ** 2 + u[None, :] ** 2) / 1.3**2)
    >>> f = refine_nodes(g, 3)
    >>> f.shape, bool(np.allclose(f[::3, ::3], g))
    ((121, 121), True)
    """
    factor = int(factor)
    coef = coefficients(values)
    m = coef.shape[0]
    t = np.arange((m - 1) * factor + 1) / factor
    basis = np.zeros((t.size, m))
    for k in range(m):
        s = np.abs(t - k)
        basis[:, k] = np.where(s < 1.0, (4.0 - 6.0 * s**2 + 3.0 * s**3) / 6.0,
                               np.where(s < 2.0, (2.0 - s) ** 3 / 6.0, 0.0))
    return basis @ coef @ basis.T


@numba.njit(cache=True, inline="always")
def b3(s: float) -> float:
    a = abs(s)
    if a < 1.0:
        return (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
    if a < 2.0:
        t = 2.0 - a
        return t * t * t / 6.0
    return 0.0


@numba.njit(cache=True, inline="always")
def _db3(s: float) -> float:
    a = abs(s)
    sg = 1.0 if s >= 0 else -1.0
    if a < 1.0:
        return sg * (-12.0 * a + 9.0 * a * a) / 6.0
    if a < 2.0:
        t = 2.0 - a
        return -sg * 0.5 * t * t
    return 0.0


@numba.njit(cache=True)
def _axis_taps(t0: float, step: float, k: int, w: np.ndarray, dw: np.ndarray,
               i0: np.ndarray) -> None:
    """Taps of the ``k`` samples at index coordinates ``t0 + step * r`` (r = 0..k-1)."""
    for r in range(k):
        t = t0 + step * r
        j = int(np.floor(t)) - 1
        i0[r] = j
        for a in range(4):
            s = t - (j + a)
            w[r, a] = b3(s)
            dw[r, a] = _db3(s)


@numba.njit(cache=True)
def _stamps_kernel(coefs: np.ndarray, idx: np.ndarray, wts: np.ndarray, over: int,
                   dx: np.ndarray, dy: np.ndarray, k: int, deriv: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = dx.shape[0]
    nb = idx.shape[1]
    m = coefs.shape[1]
    c = (m - 1) / 2.0
    h = k // 2
    out = np.zeros((n, k, k))
    gx = np.zeros((n, k, k)) if deriv else np.zeros((1, 1, 1))
    gy = np.zeros((n, k, k)) if deriv else np.zeros((1, 1, 1))
    wx = np.zeros((k, 4))
    wy = np.zeros((k, 4))
    dwx = np.zeros((k, 4))
    dwy = np.zeros((k, 4))
    ix = np.zeros(k, np.int64)
    iy = np.zeros(k, np.int64)
    for i in range(n):
        # pixel column col is at offset (col - h - dx) from the source: index c + O * offset
        _axis_taps(c + over * (-h - dx[i]), float(over), k, wx, dwx, ix)
        _axis_taps(c + over * (-h - dy[i]), float(over), k, wy, dwy, iy)
        for q in range(nb):
            wq = wts[i, q]
            if wq == 0.0:
                continue
            cf = coefs[idx[i, q]]
            for r in range(k):
                for col in range(k):
                    v = 0.0
                    vx = 0.0
                    vy = 0.0
                    for a in range(4):
                        rr = iy[r] + a
                        if rr < 0 or rr >= m:
                            continue
                        for b in range(4):
                            cc = ix[col] + b
                            if cc < 0 or cc >= m:
                                continue
                            cv = cf[rr, cc]
                            v += wy[r, a] * wx[col, b] * cv
                            if deriv:
                                vx += wy[r, a] * dwx[col, b] * cv
                                vy += dwy[r, a] * wx[col, b] * cv
                    out[i, r, col] += wq * v
                    if deriv:
                        # d/d(source x) = -O d/dt
                        gx[i, r, col] -= wq * over * vx
                        gy[i, r, col] -= wq * over * vy
    return out, gx, gy


def decimate(coef: np.ndarray, oversampling: int, dx: np.ndarray, dy: np.ndarray, size: int,
             *, deriv: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample one ePSF (given as B-spline coefficients) at ``size`` x ``size`` pixel centres.

    Parameters
    ----------
    coef : ndarray
        B-spline coefficients on the oversampled node grid (odd side).
    oversampling : int
        Nodes per mosaic pixel.
    dx, dy : ndarray
        Each source's position relative to the centre pixel of its stamp, pixels.
    size : int
        Odd stamp side.
    deriv : bool
        Also return the derivatives of the stamps with respect to the source position.

    Returns
    -------
    stamps, dstamp_dx, dstamp_dy : ndarray
        ``(n, size, size)``; the derivatives are ``(1, 1, 1)`` zeros unless ``deriv``.
    """
    dx = np.ascontiguousarray(dx, dtype=np.float64)
    dy = np.ascontiguousarray(dy, dtype=np.float64)
    n = dx.shape[0]
    return _stamps_kernel(np.ascontiguousarray(coef, dtype=np.float64)[None], np.zeros((n, 1),
                          np.int64), np.ones((n, 1)), int(oversampling), dx, dy, int(size),
                          bool(deriv))


class EPSFStamps:
    """One or several oversampled ePSFs behind the engine's PSF protocol.

    Parameters
    ----------
    arrays : sequence of ndarray
        ePSFs sampled on the oversampled node grid (same odd shape), normalised so
        that ``array.sum() / oversampling**2`` is the flux fraction they hold.
    oversampling : int
        Nodes per mosaic pixel.
    pixel_scale : float
        Mosaic pixel scale, arcsec per pixel.
    x, y : sequence of float, optional
        Image positions where each ePSF applies (needed with several ePSFs); in
        between they are blended with :meth:`dask_phot.psf.PSFGrid.weights`.
    size : int, optional
        Odd stamp side in mosaic pixels; default the largest the arrays cover.

    Examples
    --------
    >>> from dask_phot.psf._epsf_render import EPSFStamps
    >>> u = (np.arange(61) - 30) / 4.0
    >>> g = np.exp(-0.5 * (u[:, None] ** 2 + u[None, :] ** 2) / 1.3**2)
    >>> psf = EPSFStamps([16 * g / g.sum()], 4, 0.6)
    >>> st, x0, y0 = psf.stamps(np.array([20.3]), np.array([11.0]))
    >>> st.shape, int(x0[0]), round(float(st.sum()), 4)
    ((1, 15, 15), 13, 1.0)
    """

    def __init__(self, arrays: Sequence[np.ndarray], oversampling: int, pixel_scale: float,
                 x: Sequence[float] | None = None, y: Sequence[float] | None = None,
                 *, size: int | None = None) -> None:
        arrs = [np.asarray(a, dtype=np.float64) for a in arrays]
        if not arrs or len({a.shape for a in arrs}) != 1:
            raise PSFError("EPSFStamps needs at least one array, all of one shape")
        m = arrs[0].shape[0]
        if arrs[0].ndim != 2 or arrs[0].shape[1] != m or m % 2 == 0:
            raise PSFError("EPSFStamps: arrays must be square with an odd side, "
                           f"got {arrs[0].shape}")
        self.oversampling = int(oversampling)
        self.pixel_scale = float(pixel_scale)
        self.arrays = arrs
        self._coefs = np.stack([coefficients(a) for a in arrs])
        cover = 2 * ((m - 1) // (2 * self.oversampling)) + 1
        self.size = int(size) if size is not None else cover
        if self.size % 2 == 0:
            raise PSFError(f"EPSFStamps: stamp size must be odd, got {self.size}")
        self.half = self.size // 2
        self._grid = None
        if len(arrs) > 1:
            from dask_phot.psf.grid import PSFGrid

            if x is None or y is None:
                raise PSFError("EPSFStamps: several ePSFs need the positions x, y they apply at")
            self._grid = PSFGrid([self.phase_zero(i) for i in range(len(arrs))], x, y)

    def phase_zero(self, i: int = 0) -> PixelPSF:
        """ePSF ``i`` decimated at phase 0 on the mosaic grid, as a sum-normalised PixelPSF."""
        st, _, _ = decimate(self._coefs[i], self.oversampling, np.zeros(1), np.zeros(1),
                            self.size)
        return PixelPSF(st[0], self.pixel_scale, "sum", name="epsf")

    @property
    def fwhm(self) -> float:
        """FWHM in mosaic pixels (median over the ePSFs), from the oversampled arrays."""
        return float(np.median([PixelPSF.fwhm_of(a) / self.oversampling for a in self.arrays]))

    def stamps(self, x: np.ndarray, y: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit-flux stamps at sub-pixel positions; see :meth:`dask_phot.psf.PixelPSF.stamps`."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        cx = np.floor(x + 0.5)
        cy = np.floor(y + 0.5)
        if self._grid is None:
            idx = np.zeros((x.size, 1), np.int64)
            w = np.ones((x.size, 1))
        else:
            idx, w = self._grid.weights(x, y)
            w = w / w.sum(axis=1, keepdims=True)
        out, _, _ = _stamps_kernel(self._coefs, np.ascontiguousarray(idx, np.int64),
                                   np.ascontiguousarray(w), self.oversampling, x - cx, y - cy,
                                   self.size, False)
        return out, cx.astype(np.int64) - self.half, cy.astype(np.int64) - self.half
