"""The sharp image's noise in a template, propagated to the fitted flux.

A template is made from the sharp image's pixels, noise included, and is
normalised by their sum. Noise ``n_p`` in sharp pixel ``p`` of a source's
segment changes both the normalisation and the template's shape; to first
order the fitted flux ``A`` changes by

    dA / A = sum_p n_p w_p / S,   w_p = 1 - <T, K_p>_w / <T, T>_w,

where ``S`` is the segment's light, ``T`` the (unit-flux) template and
``K_p`` the blurred image of a unit point at ``p``, taken as the band's PSF
there. Noise at the source's centre mostly rescales ``T`` (``w ~ 0``: a
point template is the same whatever its noise); noise far out in the segment
adds light the fit cannot see and enters fully (``w ~ 1``); in an extended
template's core ``w < 0``. So

    var(A) = (A / S)^2 sigma_h^2 sum_p w_p^2

for white sharp-image noise ``sigma_h`` per pixel. :func:`template_noise`
correlates every template stamp with the band's PSF (FFT, stamps of one size
at once) and sums ``w_p^2`` over its segment's pixels, each placed through the
two WCSs; the fit adds the variance to the flux's (``flux_err``). It matters for segments grown
into their surroundings (``grow``) and for sharp images that are shallow
compared with the blurred one; a drizzled image's correlated noise makes the
pixel RMS too small (give ``hires_sigma`` measured in apertures).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.signal import fftconvolve

from dask_phot.models.stamps import Stamps

__all__ = ["correlate_stamps", "hires_rms", "template_noise"]


def correlate_stamps(stamps: Stamps, psf: object) -> np.ndarray:
    """``(T * P)(p) / <T, T>`` on every stamp's pixels (``stamps``' layout): the
    stamps correlated with the band's PSF ``P``, divided by their squared sums."""
    from dask_phot.templates.kernel import point_stamps

    pc = np.asarray(point_stamps(psf, np.zeros(1), np.zeros(1),
                                  int(psf.size))[0][0], dtype=np.float64)  # type: ignore
    out = np.zeros_like(stamps.data)
    shapes = np.stack([stamps.h, stamps.w], axis=1)
    for hw in np.unique(shapes, axis=0):
        rows = np.flatnonzero((shapes == hw).all(axis=1))
        h, w = int(hw[0]), int(hw[1])
        idx = stamps.ptr[rows][:, None] + np.arange(h * w)[None, :]
        block = stamps.data[idx].reshape(rows.size, h, w)
        corr = fftconvolve(block, pc[None, ::-1, ::-1], mode="same", axes=(1, 2))
        norm = np.einsum("ijk,ijk->i", block, block)
        with np.errstate(divide="ignore", invalid="ignore"):
            corr /= np.where(norm > 0, norm, np.inf)[:, None, None]
        out[idx] = corr.reshape(rows.size, h * w)
    return out


def hires_rms(image: np.ndarray, segmap: np.ndarray, max_pixels: int = 1_000_000
              ) -> float:
    """Robust RMS (1.4826 MAD) of the unlabelled finite sharp pixels (a regular
    subsample of at most ``max_pixels``)."""
    step = max(1, int(np.sqrt(image.size / max_pixels)))
    img, seg = image[::step, ::step], segmap[::step, ::step]
    v = img[(seg == 0) & np.isfinite(img)]
    if v.size < 16:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


@numba.njit(cache=True)
def _weights(seg: np.ndarray, img: np.ndarray, label: np.ndarray, bx0: np.ndarray,
             bx1: np.ndarray, by0: np.ndarray, by1: np.ndarray, cx: np.ndarray,
             cy: np.ndarray, jac: np.ndarray, rx: np.ndarray, ry: np.ndarray,
             corr: np.ndarray, ptr: np.ndarray, sw: np.ndarray, sh: np.ndarray,
             sx0: np.ndarray, sy0: np.ndarray) -> np.ndarray:
    n = label.shape[0]
    out = np.zeros(n)
    for i in range(n):
        j00, j01, j10, j11 = jac[i, 0, 0], jac[i, 0, 1], jac[i, 1, 0], jac[i, 1, 1]
        w, h, o = sw[i], sh[i], ptr[i]
        acc = 0.0
        for r in range(by0[i], by1[i] + 1):
            dy = r - cy[i]
            for c in range(bx0[i], bx1[i] + 1):
                if seg[r, c] != label[i] or not np.isfinite(img[r, c]):
                    continue
                dx = c - cx[i]
                u = rx[i] + j00 * dx + j01 * dy - sx0[i]
                v = ry[i] + j10 * dx + j11 * dy - sy0[i]
                rho = 0.0
                if 0.0 <= u < w - 1 and 0.0 <= v < h - 1:
                    iu, iv = int(u), int(v)
                    fu, fv = u - iu, v - iv
                    k = o + iv * w + iu
                    rho = ((1 - fu) * (1 - fv) * corr[k] + fu * (1 - fv) * corr[k + 1]
                           + (1 - fu) * fv * corr[k + w] + fu * fv * corr[k + w + 1])
                acc += (1.0 - rho) ** 2
        out[i] = acc
    return out


def template_noise(hires: np.ndarray, segmap: np.ndarray, seg: dict, jac: np.ndarray,
                   x: np.ndarray, y: np.ndarray, stamps: Stamps, psf: object) -> np.ndarray:
    """``sum_p w_p^2`` over each template's segment pixels (see the module docstring).

    ``seg`` holds ``id, x, y, xmin, xmax, ymin, ymax`` per template, ``jac`` its
    sharp-to-blurred pixel Jacobian, ``x, y`` its reference position on the
    blurred image (where ``seg``'s ``x, y`` lands) and ``stamps`` the templates.
    """
    if not len(seg["id"]):
        return np.zeros(0)
    corr = correlate_stamps(stamps, psf)
    return _weights(segmap, hires, np.asarray(seg["id"], dtype=np.int64),
                    *(np.asarray(seg[k], dtype=np.int64)
                      for k in ("xmin", "xmax", "ymin", "ymax")),
                    np.asarray(seg["x"], dtype=np.float64),
                    np.asarray(seg["y"], dtype=np.float64),
                    np.ascontiguousarray(jac, dtype=np.float64),
                    np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                    corr, stamps.ptr, stamps.w, stamps.h, stamps.x0, stamps.y0)
