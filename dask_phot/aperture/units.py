"""Image units to microjansky (PHOTFNU, PHOTFLAM, MJy/sr, band presets) and AB magnitudes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.bands import Band, flux_to_mag, get_band

__all__ = ["add_physical_fluxes", "flux_conversion"]

#: Speed of light in Angstrom per second.
_C_ANGSTROM = 2.99792458e18
#: erg s^-1 cm^-2 Hz^-1 per microjansky.
_UJY_CGS = 1e-29
_MJYSR = re.compile(r"^\s*MJy\s*/\s*sr\s*$", re.IGNORECASE)


def flux_conversion(
    header: Mapping[str, Any] | None = None,
    *,
    to_ujy: float | None = None,
    band: str | Band | None = None,
    photfnu: float | None = None,
    photflam: float | None = None,
    photplam: float | None = None,
    pixel_area_sr: float | None = None,
) -> float:
    """Microjansky per (image unit x pixel).

    The first that applies wins: ``to_ujy``; a ``band`` preset's ``to_ujy``;
    ``photfnu`` (Jy per unit, HST/WFC3-IR style); ``photflam`` with ``photplam``
    (erg/s/cm^2/A per unit, pivot wavelength in A); ``MJy/sr`` images with a pixel
    area (JWST); then from ``header``: dask-phot's ``TOUJY``, ``PHOTFNU``,
    ``PHOTFLAM`` + ``PHOTPLAM``, ``BUNIT = 'MJy/sr'`` + ``PIXAR_SR``.

    Raises
    ------
    ValueError
        Nothing to convert with.

    Examples
    --------
    >>> zp = lambda f: 23.9 - 2.5 * math.log10(f)   # AB zero point of the unit
    >>> round(zp(flux_conversion({"PHOTFLAM": 7.0724e-20, "PHOTPLAM": 8045.0})), 2)
    25.94
    >>> round(zp(flux_conversion(photfnu=1.5e-7)), 2)
    25.96
    >>> round(flux_conversion(band="irac1"), 4)
    8.4616
    >>> flux_conversion({"BUNIT": "MJy/sr", "PIXAR_SR": 2.35e-14})
    0.0235
    """
    h = dict(header or {})
    if to_ujy is not None:
        value = float(to_ujy)
    elif band is not None:
        value = get_band(band).to_ujy
    elif photfnu is None and photflam is None and pixel_area_sr is None and h.get("TOUJY"):
        value = float(h["TOUJY"])  # dask-phot's own keyword (simulated mosaics)
    elif photfnu is not None or (photflam is None and h.get("PHOTFNU")):
        value = float(photfnu if photfnu is not None else h["PHOTFNU"]) * 1e6
    elif photflam is not None or (h.get("PHOTFLAM") and h.get("PHOTPLAM")):
        flam = float(photflam if photflam is not None else h["PHOTFLAM"])
        plam = float(photplam if photplam is not None else h.get("PHOTPLAM", np.nan))
        value = flam * plam**2 / _C_ANGSTROM / _UJY_CGS
    elif pixel_area_sr is not None or (_MJYSR.match(str(h.get("BUNIT", "")))
                                       and h.get("PIXAR_SR")):
        area = float(pixel_area_sr if pixel_area_sr is not None else h["PIXAR_SR"])
        value = 1e12 * area
    else:
        raise ValueError("no flux calibration: give to_ujy, a band, PHOTFNU, PHOTFLAM with "
                         "PHOTPLAM, or an MJy/sr image with PIXAR_SR")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"flux conversion must be finite and > 0, got {value!r}")
    return float(round(value, 15))


def add_physical_fluxes(table: pd.DataFrame, to_ujy: float, *,
                        prefix: str = "flux_") -> pd.DataFrame:
    """Add microjansky fluxes and AB magnitudes for every ``<prefix><name>`` column.

    For each column ``flux_<name>`` with a matching ``flux_err_<name>``, adds
    ``flux_ujy_<name>``, ``flux_err_ujy_<name>``, ``mag_<name>`` and
    ``mag_err_<name>`` (NaN magnitudes for non-positive fluxes, never -99).

    Examples
    --------
    >>> t = pd.DataFrame({"flux_auto": [10.0, -1.0], "flux_err_auto": [1.0, 1.0]})
    >>> out = add_physical_fluxes(t, 0.1)
    >>> out["mag_auto"].round(2).tolist(), out["flux_ujy_auto"].tolist()
    ([23.9, nan], [1.0, -0.1])
    """
    out = table.copy()
    for col in list(table.columns):
        if not col.startswith(prefix) or col.startswith(f"{prefix}err_"):
            continue
        name = col[len(prefix):]
        err_col = f"{prefix}err_{name}"
        if err_col not in table.columns or name.startswith("ujy_"):
            continue
        f = table[col].to_numpy(dtype=np.float64) * to_ujy
        e = table[err_col].to_numpy(dtype=np.float64) * to_ujy
        mag, mag_err = flux_to_mag(f, e)
        out[f"flux_ujy_{name}"], out[f"flux_err_ujy_{name}"] = f, e
        out[f"mag_{name}"], out[f"mag_err_{name}"] = mag, mag_err
    return out
