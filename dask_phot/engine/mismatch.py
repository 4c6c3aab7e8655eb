"""Model mismatch: is a source more (or less) extended than its model?

After the fit, the residual ``r`` of a correct model is noise. A source that
is broader than its model (a galaxy fitted as a point source) leaves a ring
and a hole that line up with the broadening of its model,
``d M / d(sigma^2) = Laplacian(M) / 2`` (a model convolved with a small
Gaussian). Projecting the residual on that direction, made orthogonal to the
model itself, gives one number per source in units of its noise:

    t = <r, L'>_w / ||L'||_w,   L' = L - (<L, M>_w / <M, M>_w) M,

where ``L`` is the discrete Laplacian of the source's stamp and ``<.,.>_w``
sums over the stamp's pixels with the inverse-variance weights. For a correct
model ``t`` is close to N(0, 1); ``t > 0`` means the source is more extended
than its model, ``t < 0`` more compact. A one-parameter projection is far
more sensitive than the stamp's reduced chi2, which dilutes the same signal
over every pixel: a galaxy fitted as a point source whose flux is off by a
few sigma already shows here.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from dask_phot.models.stamps import Stamps

__all__ = ["mismatch_and_chi2", "mismatch_significance"]


def mismatch_significance(stamps: Stamps, weight: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """``t`` of every stamp (in the stamps' order); NaN where it is undefined."""
    return _mismatch(*stamps.arrays, weight, resid)[0]


def mismatch_and_chi2(stamps: Stamps, weight: np.ndarray, resid: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mismatch_significance` and, from the same pass over the pixels, each
    stamp's ``sum(weight * resid**2)`` over its usable pixels in the image (the
    ``chi2sum`` of :func:`dask_phot.engine._image.footprint_stats`)."""
    return _mismatch(*stamps.arrays, weight, resid)


# the sums may be reordered (vectorised over a stamp row); NaN semantics are kept
_REASSOC = {"reassoc", "contract", "nsz"}


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _mismatch(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
              x0: np.ndarray, y0: np.ndarray, weight: np.ndarray, resid: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    n = w.shape[0]
    ny, nx = weight.shape
    out = np.full(n, np.nan)
    chi = np.zeros(n)
    wide = 1
    for i in range(n):
        wide = max(wide, w[i])
    lap = np.empty(wide)
    zero = np.zeros(wide)
    wbuf = np.empty(wide)
    rbuf = np.empty(wide)
    for i in range(n):
        wi, hi, o = w[i], h[i], ptr[i]
        smm = slm = sll = srl = srm = srr = 0.0
        # the stamp's rows inside the image; its columns outside have no weight
        r0, r1 = max(0, -y0[i]), min(hi, ny - y0[i])
        c0, c1 = max(0, -x0[i]), min(wi, nx - x0[i])
        if c0 >= c1:
            continue
        for r in range(r0, r1):
            yy = y0[i] + r
            mrow = data[o + r * wi : o + (r + 1) * wi]
            up = data[o + (r - 1) * wi : o + r * wi] if r > 0 else zero[:wi]
            down = data[o + (r + 1) * wi : o + (r + 2) * wi] if r < hi - 1 else zero[:wi]
            _laplacian_row(mrow, up, down, lap[:wi])
            if c0 == 0 and c1 == wi:
                wrow = weight[yy, x0[i] : x0[i] + wi]
                rrow = resid[yy, x0[i] : x0[i] + wi]
            else:
                for c in range(wi):
                    inside = c0 <= c < c1
                    wbuf[c] = weight[yy, x0[i] + c] if inside else 0.0
                    rbuf[c] = resid[yy, x0[i] + c] if inside else 0.0
                wrow = wbuf[:wi]
                rrow = rbuf[:wi]
            t = _row_sums(mrow, lap, wrow, rrow)
            smm += t[0]
            slm += t[1]
            sll += t[2]
            srl += t[3]
            srm += t[4]
            srr += t[5]
        chi[i] = srr
        if smm <= 0.0:
            continue
        a = slm / smm
        norm = sll - a * slm
        if norm <= 0.0:
            continue
        # a broader source is M + (eps / 2) L: its residual is +(eps / 2) L', so t > 0
        out[i] = (srl - a * srm) / math.sqrt(norm)
    return out, chi


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC, inline="always")
def _laplacian_row(mrow: np.ndarray, up: np.ndarray, down: np.ndarray, lap: np.ndarray
                   ) -> None:
    """The discrete Laplacian of one stamp row (the stamp is zero beyond its edges)."""
    k = mrow.shape[0]
    for c in range(k):
        lap[c] = up[c] + down[c] - 4.0 * mrow[c]
    for c in range(k - 1):
        lap[c] += mrow[c + 1]
    for c in range(1, k):
        lap[c] += mrow[c - 1]


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC, inline="always")
def _row_sums(mrow: np.ndarray, lap: np.ndarray, wrow: np.ndarray, rrow: np.ndarray
              ) -> tuple[float, float, float, float, float, float]:
    """One row's weighted ``sum(m m), sum(l m), sum(l l), sum(r l), sum(r m), sum(r r)``
    (pixels without weight count nothing)."""
    smm = slm = sll = srl = srm = srr = 0.0
    for c in range(wrow.shape[0]):
        good = wrow[c] > 0.0
        wv = wrow[c] if good else 0.0
        rv = rrow[c] if good else 0.0
        m = mrow[c]
        lv = lap[c]
        smm += wv * m * m
        slm += wv * lv * m
        sll += wv * lv * lv
        srl += wv * rv * lv
        srm += wv * rv * m
        srr += wv * rv * rv
    return smm, slm, sll, srl, srm, srr
