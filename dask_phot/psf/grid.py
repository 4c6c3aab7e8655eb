"""PSFs measured at several image positions, interpolated in between (:class:`PSFGrid`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dask_phot.psf.pixel import PixelPSF, PSFError
from dask_phot.psf.render import lanczos_stamps
from dask_phot.psf.transfer import Transfer, pixel_transfer

__all__ = ["PSFGrid"]


class PSFGrid:
    """PSFs measured at several image positions, interpolated in between.

    Inside the convex hull of the measurement positions the PSF is the
    barycentric (linear) interpolation of the three surrounding PSFs; outside
    it, the nearest PSF is used. Interpolated PSFs are renormalised to unit sum.

    Parameters
    ----------
    psfs : sequence of PixelPSF
        Same size and pixel scale, sum-normalised.
    x, y : array_like
        0-based pixel positions where each PSF applies.
    """

    def __init__(self, psfs: Sequence[PixelPSF], x: Sequence[float], y: Sequence[float]):
        if len(psfs) == 0 or len(psfs) != len(x) or len(x) != len(y):
            raise PSFError("PSFGrid needs as many positions as PSFs, and at least one")
        sizes = {p.size for p in psfs}
        scales = {round(p.pixel_scale, 9) for p in psfs}
        if len(sizes) != 1 or len(scales) != 1:
            raise PSFError(f"PSFGrid: PSFs differ in size {sizes} or pixel scale {scales}")
        for p in psfs:
            p.check_normalized()
        self.psfs = list(psfs)
        self.size = psfs[0].size
        self.half = self.size // 2
        self.pixel_scale = psfs[0].pixel_scale
        self._bases = np.stack([p.array for p in psfs])
        self.interp_order = int(psfs[0].interp_order)
        self._points = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
        self._transfers: dict[int, Transfer] = {}

    def transfer(self, k: int) -> Transfer:
        """Transforms of every basis PSF on a ``k x k`` stamp's Fourier grid (one row each;
        blended per source with :meth:`weights`); cached."""
        if k not in self._transfers:
            self._transfers[k] = pixel_transfer(self._bases, k)
        return self._transfers[k]

    @property
    def fwhm(self) -> float:
        """Median FWHM of the grid's PSFs, in pixels."""
        return float(np.median([p.fwhm for p in self.psfs]))

    def weights(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(indices (n, 3), weights (n, 3))`` of the PSFs to blend at each position."""
        from scipy.spatial import Delaunay, cKDTree

        pts = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
        n = len(pts)
        idx = np.zeros((n, 3), dtype=np.int64)
        w = np.zeros((n, 3))
        nearest = cKDTree(self._points).query(pts)[1] if n else np.zeros(0, int)
        idx[:, 0] = nearest
        w[:, 0] = 1.0
        if len(self._points) >= 3 and np.linalg.matrix_rank(
            self._points - self._points[0]
        ) == 2:
            tri = Delaunay(self._points)
            simplex = tri.find_simplex(pts)
            inside = simplex >= 0
            t = tri.transform[simplex[inside]]
            b = np.einsum("nij,nj->ni", t[:, :2], pts[inside] - t[:, 2])
            bary = np.column_stack([b, 1.0 - b.sum(axis=1)])
            idx[inside] = tri.simplices[simplex[inside]]
            w[inside] = bary
        return idx, w

    def at(self, x: float, y: float) -> PixelPSF:
        """The interpolated PSF at one position."""
        idx, w = self.weights(np.array([x]), np.array([y]))
        arr = np.tensordot(w[0], self._bases[idx[0]], axes=1)
        return PixelPSF(arr, self.pixel_scale, "sum", name=f"grid@({x:.1f},{y:.1f})")

    def stamps(
        self, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render unit-flux stamps with the PSF interpolated at each position."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        idx, w = self.weights(x, y)
        local = np.einsum("nk,nkij->nij", w, self._bases[idx])
        local /= local.sum(axis=(1, 2))[:, None, None]
        cx = np.floor(x + 0.5)
        cy = np.floor(y + 0.5)
        out = lanczos_stamps(local, np.arange(len(x)), x - cx, y - cy, self.interp_order)
        return out, cx.astype(np.int64) - self.half, cy.astype(np.int64) - self.half
