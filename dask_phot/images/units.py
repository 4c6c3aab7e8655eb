"""Microjansky per pixel value from a mosaic's header: JWST (MJy/sr), HST (PHOTFLAM).

:func:`header_to_ujy` reads the calibration a pipeline writes into the science
header and converts one pixel value (image unit x pixel) to microjansky:

* JWST ``i2d`` (and ``cal``) images are surface brightness, ``BUNIT = 'MJy/sr'``;
  a pixel of value ``v`` holds ``v x PIXAR_SR x 1e12`` uJy, ``PIXAR_SR`` being the
  (output) pixel area in steradians. ``PIXAR_A2`` (arcsec^2) is the same area and
  used when ``PIXAR_SR`` is absent. Count-rate images (``DN/s``) are first
  multiplied by ``PHOTMJSR`` (MJy/sr per DN/s).
* HST ``drz``/``drc`` images are count rates (``ELECTRONS/S``); ``PHOTFNU`` (Jy
  per e-/s, WFC3/IR) gives ``1e6 x PHOTFNU``, else ``PHOTFLAM`` (erg/s/cm^2/A per
  e-/s) and the pivot wavelength ``PHOTPLAM`` (A) give
  ``PHOTFLAM x PHOTPLAM^2 / c x 1e29``. The keywords may be in the primary
  header; :func:`~dask_phot.images.build_index` copies them into the
  extension's header (``INHERITED_KEYWORDS``).
* dask-phot's own ``TOUJY`` keyword (simulated mosaics) is used as it is.

A header that says nothing about its units gives None (the caller decides:
``to_ujy`` in a configuration). A header whose units need a keyword it lacks, a
JWST image in MJy/sr without a pixel area or an HST count-rate image without
PHOTFLAM, is a :class:`~dask_phot.images.MosaicError` naming the file: a
catalog in the wrong units is worse than none.

Examples
--------
>>> header_to_ujy({"BUNIT": "MJy/sr", "PIXAR_SR": 2.1151e-14}, url="x_i2d.fits[SCI]")
0.021151
>>> round(header_to_ujy({"TELESCOP": "HST", "BUNIT": "ELECTRONS/S",
...                      "PHOTFLAM": 7.0724e-20, "PHOTPLAM": 8045.0}, url="x_drz.fits"), 5)
0.15269
>>> header_to_ujy({"TELESCOP": "HST", "BUNIT": "ELECTRONS/S"}, url="x_drz.fits[SCI]")
Traceback (most recent call last):
...
dask_phot.images.MosaicError: x_drz.fits[SCI]: an HST count-rate image (BUNIT 'ELECTRONS/S') without PHOTFLAM and PHOTPLAM (or PHOTFNU) in its headers: cannot convert to microjansky; set to_ujy to give the conversion
"""  # noqa: E501

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from dask_phot.images._fits import MosaicError

__all__ = ["ARCSEC2_PER_SR", "header_to_ujy"]

#: Square arcseconds per steradian.
ARCSEC2_PER_SR = (180.0 / math.pi * 3600.0) ** 2
#: Speed of light, Angstrom per second.
_C_ANGSTROM = 2.99792458e18
_MJYSR = re.compile(r"^\s*MJy\s*(/\s*sr|\s+sr\s*\*?\*?\s*-1|\s*sr\^?-1)\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(ELECTRONS?|COUNTS?|DN|E-?)\s*(/\s*S(EC)?|\s+S\^?-1)\s*$",
                   re.IGNORECASE)
_HINT = "set to_ujy to give the conversion"


def _number(header: Mapping[str, Any], key: str) -> float | None:
    value = header.get(key)
    try:
        out = float(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None
    return out if out is not None and math.isfinite(out) and out > 0 else None


def _pixel_area_sr(header: Mapping[str, Any]) -> float | None:
    area = _number(header, "PIXAR_SR")
    if area is None and (a2 := _number(header, "PIXAR_A2")) is not None:
        area = a2 / ARCSEC2_PER_SR
    return area


def _surface_brightness(header: Mapping[str, Any], unit: str, url: str) -> float:
    area = _pixel_area_sr(header)
    if area is None:
        raise MosaicError(f"{url}: BUNIT is {unit!r} (surface brightness) but its headers "
                          "have no pixel area PIXAR_SR (or PIXAR_A2): cannot convert to "
                          f"microjansky; {_HINT}")
    return 1e12 * area


def _count_rate(header: Mapping[str, Any], unit: str, url: str) -> float | None:
    telescope = str(header.get("TELESCOP", "")).strip().upper()
    if telescope == "JWST" or "PHOTMJSR" in header:
        photmjsr = _number(header, "PHOTMJSR")
        if photmjsr is None:
            raise MosaicError(f"{url}: a JWST count-rate image (BUNIT {unit!r}) without "
                              f"PHOTMJSR: cannot convert to microjansky; {_HINT}")
        return photmjsr * _surface_brightness(header, "MJy/sr", url)
    if (fnu := _number(header, "PHOTFNU")) is not None:
        return fnu * 1e6
    flam, plam = _number(header, "PHOTFLAM"), _number(header, "PHOTPLAM")
    if flam is not None and plam is not None:
        return flam * plam**2 / _C_ANGSTROM * 1e29
    if telescope == "HST" or "PHOTFLAM" in header or "PHOTPLAM" in header:
        raise MosaicError(f"{url}: an HST count-rate image (BUNIT {unit!r}) without PHOTFLAM "
                          "and PHOTPLAM (or PHOTFNU) in its headers: cannot convert to "
                          f"microjansky; {_HINT}")
    return None


def header_to_ujy(header: Mapping[str, Any], *, url: str = "mosaic") -> float | None:
    """Microjansky per (pixel value x pixel) from a science header, or None.

    Parameters
    ----------
    header : mapping
        The science image's header (with the primary header's photometry
        keywords, as :func:`~dask_phot.images.build_index` keeps them).
    url : str
        The mosaic (and extension), for messages.

    Returns
    -------
    float or None
        None when the header says nothing about its units.

    Raises
    ------
    MosaicError
        Units that need a keyword the header lacks (see the module docstring).
    """
    if (own := _number(header, "TOUJY")) is not None:
        return own
    unit = str(header.get("BUNIT", "")).strip()
    if _MJYSR.match(unit):
        return round(_surface_brightness(header, unit, url), 15)
    if _RATE.match(unit) or (not unit and str(header.get("TELESCOP", "")).strip().upper()
                             == "HST"):
        value = _count_rate(header, unit or "none", url)
        return None if value is None else round(value, 15)
    return None
