"""Kron ("auto") radii and fluxes with SExtractor's minimum-radius and -diameter rules.

The Kron radius ``r1`` (first moment of the light profile, in units of the
source ellipse's ``a`` and ``b``) is measured by ``sep.kron_radius`` within
``window`` times the ellipse. The flux is summed in the ellipse scaled by
``k = max(kron_factor * r1, min_kron_radius)`` (SExtractor's
``PHOT_AUTOPARAMS``); when that ellipse is smaller than a circle of diameter
``min_diameter`` (its mean radius ``k sqrt(ab)`` below ``min_diameter / 2``,
as in ``sep``'s documentation), the circle is used instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dask_phot._optional import require
from dask_phot.aperture._common import positions, prepare

__all__ = ["KRON_CIRCULAR", "KRON_FAILED", "kron_photometry"]

#: Flag bit: the minimum-diameter circle replaced the Kron ellipse.
KRON_CIRCULAR = 1 << 10
#: Flag bit: the Kron radius could not be measured (zero/negative moments);
#: the flux is that of the ``min_kron_radius`` ellipse.
KRON_FAILED = 1 << 11


def kron_photometry(
    data: Any,
    x: Any,
    y: Any,
    a: Any,
    b: Any,
    theta: Any,
    *,
    kron_factor: float = 2.5,
    min_kron_radius: float = 3.5,
    min_diameter: float = 3.5,
    window: float = 6.0,
    background: Any = None,
    rms: Any = None,
    weight: Any = None,
    mask: Any = None,
    gain: float | None = None,
    segmap: np.ndarray | None = None,
    seg_id: Any = None,
    subpix: int = 1,
) -> pd.DataFrame:
    """Kron radius and flux of each source.

    Parameters
    ----------
    data : array_like
        2-D image (background-subtracted, or give ``background``).
    x, y : array_like
        0-based positions.
    a, b, theta : array_like
        Ellipse semi-axes (pixels) and angle (radians, counter-clockwise from +x),
        e.g. ``Detections.table`` columns.
    kron_factor, min_kron_radius : float
        SExtractor's ``PHOT_AUTOPARAMS`` (2.5, 3.5).
    min_diameter : float
        Smallest aperture diameter, pixels (0 disables the rule).
    window : float
        Ellipse scale within which the Kron radius is measured.
    background, rms, weight, mask, gain
        As in :func:`~dask_phot.aperture.aperture_photometry`.
    segmap, seg_id : optional
        Segmentation map and each source's label in it: other sources' pixels
        are masked (SExtractor masks them too).
    subpix : int
        Sub-pixel sampling (SExtractor sums whole pixels: 1).

    Returns
    -------
    pandas.DataFrame
        ``kron_radius`` (r1, units of a and b), ``flux_auto``, ``flux_err_auto``,
        ``flag_auto`` (sep's aperture bits, :data:`KRON_CIRCULAR`,
        :data:`KRON_FAILED`), ``auto_radius`` (mean radius ``k sqrt(ab)`` of the
        aperture used, pixels).

    Examples
    --------
    >>> yy, xx = np.mgrid[:64, :64]
    >>> img = 1e3 * np.exp(-0.5 * ((xx - 32) ** 2 + (yy - 32) ** 2) / 2.0 ** 2)
    >>> t = kron_photometry(img, [32.0], [32.0], [2.0], [2.0], [0.0], rms=1.0)
    >>> r1, radius = float(t["kron_radius"][0]), float(t["auto_radius"][0])
    >>> round(r1, 2), radius     # 2.5 r1 < 3.5: the ellipse is 3.5 a = 7 px
    (1.25, 7.0)
    >>> round(float(t["flux_auto"][0] / img.sum()), 3), int(t["flag_auto"][0])
    (0.997, 0)
    >>> edge = kron_photometry(img, [32.0], [32.0], [2.0], [1.0], [np.float32(np.pi / 2)],
    ...                        rms=1.0)                     # sep's float32 angle: accepted
    >>> bool(np.isfinite(edge["flux_auto"][0]))
    True
    """
    sep = require("sep")
    xa, ya = positions(x, y)
    aa, ba, ta = (np.broadcast_to(np.asarray(v, dtype=np.float64), xa.shape).copy()
                  for v in (a, b, theta))
    ok = np.isfinite(aa) & np.isfinite(ba) & (aa > 0) & (ba > 0)
    aa[~ok], ba[~ok], ta[~np.isfinite(ta)] = 1.0, 1.0, 0.0
    # sep wants a >= b and |theta| <= pi/2 exactly; its own float32 angles can round to
    # just beyond pi/2 (1.5707963705 > 1.5707963268): "invalid aperture parameters"
    swap = ba > aa
    aa[swap], ba[swap], ta[swap] = ba[swap], aa[swap], ta[swap] + np.pi / 2
    ta = np.clip((ta + np.pi / 2) % np.pi - np.pi / 2, -np.pi / 2, np.pi / 2)
    prep = prepare(data, background=background, rms=rms, weight=weight, mask=mask)
    seg_kw: dict[str, Any] = {}
    if segmap is not None:
        seg_kw = {"segmap": np.ascontiguousarray(segmap, dtype=np.int32),
                  "seg_id": np.broadcast_to(np.asarray(seg_id, dtype=np.int32), xa.shape)}
    r1, _ = sep.kron_radius(prep.data, xa, ya, aa, ba, ta, window, mask=prep.mask, **seg_kw)
    failed = ~(np.isfinite(r1) & (r1 > 0)) | ~ok
    r1 = np.where(failed, np.nan, r1)
    k = np.maximum(kron_factor * np.nan_to_num(r1), min_kron_radius)
    flux, err, flag = sep.sum_ellipse(prep.data, xa, ya, aa, ba, ta, np.maximum(k, 1e-3),
                                      err=prep.err, gain=gain, mask=prep.mask, subpix=subpix,
                                      **seg_kw)
    flag = flag.astype(np.int32) | np.where(failed, KRON_FAILED, 0)
    radius = k * np.sqrt(aa * ba)
    circle = radius < 0.5 * min_diameter
    if circle.any():
        cw: dict[str, Any] = {}
        if seg_kw:
            cw = {"segmap": seg_kw["segmap"], "seg_id": seg_kw["seg_id"][circle]}
        cf, ce, cfl = sep.sum_circle(prep.data, xa[circle], ya[circle], 0.5 * min_diameter,
                                     err=prep.err, gain=gain, mask=prep.mask, subpix=subpix,
                                     **cw)
        flux[circle], err[circle] = cf, ce
        flag[circle] = cfl | KRON_CIRCULAR | (flag[circle] & KRON_FAILED)
        radius[circle] = 0.5 * min_diameter
    if prep.err is None:
        err = np.full(len(xa), np.nan)
    return pd.DataFrame({"kron_radius": r1, "flux_auto": flux, "flux_err_auto": err,
                         "flag_auto": flag, "auto_radius": radius})
