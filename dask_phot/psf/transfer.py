"""PSF transfer functions on a stamp's Fourier grid, for rendering extended sources.

A source model ``M = G * R`` (the source's light ``G`` convolved with the
pixel response ``R`` of the band's PSF) is rendered on a ``k x k`` stamp from
its discrete Fourier transform. :class:`Transfer` lists, for one stamp size,
the frequencies at which the PSF's transform is non-negligible, each with the
stamp frequency bin it folds onto:

* a PSF on the image grid (:class:`~dask_phot.psf.PixelPSF`): the ``k``-point
  DFT of the PSF, one frequency per bin;
* an oversampled PSF (``s`` fine pixels per image pixel): the ``k s``-point DFT
  of the fine PSF, summed over the ``s`` fine pixels of each image pixel (or
  not, for an effective PRF that already includes the pixel response) and
  folded (aliased) onto the ``k`` stamp bins, which is exactly what sampling
  the fine image at image pixels does.

Frequencies are stored as signed integer indices ``u`` of the ``N``-point grid
(``N = k`` or ``k s``); the frequency is ``u / k`` cycles per image pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Transfer", "fine_transfer", "pixel_transfer"]


@dataclass(frozen=True)
class Transfer:
    """The support of a PSF's transform on the Fourier grid of a ``k x k`` stamp.

    Attributes
    ----------
    k : int
        Stamp side (odd).
    n : int
        Side of the frequency grid (``k`` times the oversampling).
    ux, uy : ndarray of int64
        Signed frequency indices (``-n // 2 <= u < n - n // 2``); the frequency
        is ``u / k`` cycles per image pixel.
    jx, jy : ndarray of int64
        Stamp DFT bin each frequency folds onto (``u mod k``).
    rhat : ndarray of complex128, shape (nbases, npts)
        The pixel response's transform at those frequencies, normalised so a
        unit-flux source has unit total, phased to the PSF's centre. One row per
        basis PSF (one, except for PSF grids).
    """

    k: int
    n: int
    ux: np.ndarray
    uy: np.ndarray
    jx: np.ndarray
    jy: np.ndarray
    rhat: np.ndarray
    _half: list = field(default_factory=list, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Number of frequencies in the support."""
        return int(self.ux.shape[0])

    def half(self) -> Transfer:
        """The frequencies that fold onto the non-negative ``jx`` half of the stamp's
        spectrum: enough for a real image (``scipy.fft.irfft2``), whose other half is
        the complex conjugate."""
        if not self._half:  # computed once per transfer (transfers are cached by the PSFs)
            keep = self.jx <= self.k // 2
            self._half.append(Transfer(self.k, self.n, self.ux[keep], self.uy[keep],
                                       self.jx[keep], self.jy[keep],
                                       np.ascontiguousarray(self.rhat[:, keep])))
        return self._half[0]


def _signed(n: int) -> np.ndarray:
    """Signed DFT indices in numpy's order."""
    return np.fft.fftfreq(n, 1.0 / n).round().astype(np.int64)


def _support(full: np.ndarray, k: int, threshold: float) -> Transfer:
    """A Transfer from full ``(nb, n, n)`` transforms, keeping bins above ``threshold``."""
    n = full.shape[-1]
    u = _signed(n)
    uy, ux = np.meshgrid(u, u, indexing="ij")
    amp = np.abs(full).max(axis=0)
    keep = amp > threshold * amp.max()
    return Transfer(k, n, ux[keep].copy(), uy[keep].copy(), np.mod(ux[keep], k),
                    np.mod(uy[keep], k), full[:, keep].copy())


def pixel_transfer(arrays: np.ndarray, k: int, *, threshold: float = 0.0) -> Transfer:
    """Transfer of PSFs sampled on the image grid (odd, centred), for a ``k`` stamp.

    ``arrays`` is one PSF ``(m, m)`` or a stack ``(nb, m, m)`` (a PSF grid's bases),
    each sum-normalised with its centre on the middle pixel; ``k >= m``.

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> tr = pixel_transfer(gaussian_psf(2.0, size=11).array, 15)
    >>> tr.size, complex(tr.rhat[0, 0]).real.__round__(6)
    (225, 1.0)
    """
    stack = np.asarray(arrays, dtype=np.float64)
    if stack.ndim == 2:
        stack = stack[None]
    m = stack.shape[-1]
    if k < m or k % 2 == 0:
        raise ValueError(f"stamp size must be odd and >= the PSF size {m}, got {k}")
    emb = np.zeros((stack.shape[0], k, k))
    o = k // 2 - m // 2
    emb[:, o : o + m, o : o + m] = stack
    full = np.fft.fft2(np.fft.ifftshift(emb, axes=(1, 2)), axes=(1, 2))
    return _support(full, k, threshold)


def fine_transfer(array: np.ndarray, center: tuple[float, float], s: int, k: int, *,
                  integrated: bool, threshold: float = 1e-4) -> Transfer:
    """Transfer of a PSF sampled ``s`` times finer than the image, for a ``k`` stamp.

    Parameters
    ----------
    array : ndarray
        Fine PSF, sum-normalised, any size; light beyond ``k s / 2`` fine pixels
        from the centre wraps around the stamp's period.
    center : (float, float)
        The PSF's centre ``(x, y)`` in 0-based fine pixel coordinates.
    s : int
        Fine pixels per image pixel.
    k : int
        Stamp side (odd).
    integrated : bool
        True for an effective PRF (already includes the detector pixel: image
        pixels are samples of it); False for an optical PSF (image pixels sum
        the ``s x s`` fine pixels they cover).
    threshold : float
        Frequencies whose transform is below ``threshold`` of the peak are dropped.
    """
    n = k * s
    ay, ax = int(np.floor(center[1])), int(np.floor(center[0]))
    wrapped = np.zeros((n, n))
    rows = np.mod(np.arange(array.shape[0]) - ay, n)
    cols = np.mod(np.arange(array.shape[1]) - ax, n)
    np.add.at(wrapped, (rows[:, None], cols[None, :]), array)
    full = np.fft.fft2(wrapped)
    u = _signed(n).astype(np.float64)
    phase_x = np.exp(2j * np.pi * u * (center[0] - ax) / n)
    phase_y = np.exp(2j * np.pi * u * (center[1] - ay) / n)
    full *= phase_y[:, None] * phase_x[None, :]
    if not integrated:
        comb = _comb(u, s, n)
        full *= comb[:, None] * comb[None, :] / s**2
    return _support(full[None], k, threshold)


def _comb(u: np.ndarray, s: int, n: int) -> np.ndarray:
    """Transform of the sum over the ``s`` fine pixels of an image pixel (centred)."""
    x = np.pi * u / n
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sin(s * x) / np.sin(x)
    out[u == 0] = s
    return out
