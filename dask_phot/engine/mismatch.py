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

__all__ = ["mismatch_significance"]


def mismatch_significance(stamps: Stamps, weight: np.ndarray, resid: np.ndarray) -> np.ndarray:
    """``t`` of every stamp (in the stamps' order); NaN where it is undefined."""
    return _mismatch(*stamps.arrays, weight, resid)


@numba.njit(cache=True, nogil=True)
def _mismatch(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
              x0: np.ndarray, y0: np.ndarray, weight: np.ndarray, resid: np.ndarray
              ) -> np.ndarray:
    n = w.shape[0]
    ny, nx = weight.shape
    out = np.full(n, np.nan)
    for i in range(n):
        wi, hi, o = w[i], h[i], ptr[i]
        smm = 0.0
        slm = 0.0
        sll = 0.0
        srl = 0.0
        srm = 0.0
        # the stamp's rows and columns inside the image
        r0, r1 = max(0, -y0[i]), min(hi, ny - y0[i])
        c0, c1 = max(0, -x0[i]), min(wi, nx - x0[i])
        for r in range(r0, r1):
            yy = y0[i] + r
            for c in range(c0, c1):
                xx = x0[i] + c
                wv = weight[yy, xx]
                if wv <= 0.0:
                    continue
                m = data[o + r * wi + c]
                lap = -4.0 * m
                if r > 0:
                    lap += data[o + (r - 1) * wi + c]
                if r < hi - 1:
                    lap += data[o + (r + 1) * wi + c]
                if c > 0:
                    lap += data[o + r * wi + c - 1]
                if c < wi - 1:
                    lap += data[o + r * wi + c + 1]
                rv = resid[yy, xx]
                smm += wv * m * m
                slm += wv * lap * m
                sll += wv * lap * lap
                srl += wv * rv * lap
                srm += wv * rv * m
        if smm <= 0.0:
            continue
        a = slm / smm
        norm = sll - a * slm
        if norm <= 0.0:
            continue
        # a broader source is M + (eps / 2) L: its residual is +(eps / 2) L', so t > 0
        out[i] = (srl - a * srm) / math.sqrt(norm)
    return out
