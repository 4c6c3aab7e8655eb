"""Sky area of a catalogue's footprint, estimated from its own positions.

nway turns every catalogue's size into a source density, ``n / SKYAREA``, and
that density sets the prior odds that a candidate is a chance alignment. A
guessed bounding box overestimates the area of a round or ragged footprint
(the 481-source COSMOS cutout is a 3' cone: 0.0077 deg², not the 0.01 deg²
of its bounding square), which makes every counterpart look more significant.

:func:`footprint_moc` builds the footprint as a HEALPix multi-order coverage
map (MOC, via ``mocpy``, a dependency of ``hats``) from the positions alone:

1. a first pass finds the mean source spacing ``d`` (the area of the order at
   which occupied cells hold about four sources each, divided by ``n``);
2. the positions are binned in cells of about ``d / 4``;
3. a morphological *closing* (dilate by ``1.5 d``, erode by as much) fills the
   empty gaps between sources inside the footprint, where a Poisson field has
   no source by chance, without growing it outward;
4. a final dilation by ``d / 2`` moves the edge from the outermost sources to
   where the coverage really ends (the mean gap at an edge).

On uniform fields of known area this is within 2 % for 500 sources or more
(within about 10 % for 100-200 sources, where an explicit area is better);
on the real catalogues it gives 0.86 deg² for Chandra COSMOS (0.9 deg²
published), 2.04 deg² for XMM-COSMOS (2.0 in nway's example header) and
0.0077 deg² for the 3'-radius optical cone.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

__all__ = ["footprint_area", "footprint_moc"]

logger = logging.getLogger(__name__)

#: Square degrees on the whole sky.
SKY_DEG2 = 4.0 * math.pi * (180.0 / math.pi) ** 2
_FILL = 1.5
_GROW = 0.5
_FINE = 0.25
_MAX_MOC_ORDER = 20


def _cell_deg(order: int) -> float:
    return math.sqrt(SKY_DEG2 / (12 * 4**order))


def _moc(ra: np.ndarray, dec: np.ndarray, order: int) -> Any:
    from astropy import units as u
    from mocpy import MOC

    return MOC.from_lonlat(lon=ra * u.deg, lat=dec * u.deg, max_norder=int(order))


def _spacing_deg(ra: np.ndarray, dec: np.ndarray) -> float:
    """Mean source spacing: sqrt(area / n) at the order holding ~4 sources per cell."""
    n = ra.size
    moc = _moc(ra, dec, 0)
    for order in range(_MAX_MOC_ORDER + 1):
        moc = _moc(ra, dec, order)
        if n / (moc.sky_fraction * 12 * 4**order) < 4:
            break
    return math.sqrt(moc.sky_fraction * SKY_DEG2 / n)


def _check_positions(ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    ra = np.asarray(ra, dtype=np.float64).ravel()
    dec = np.asarray(dec, dtype=np.float64).ravel()
    if ra.shape != dec.shape:
        raise ValueError(f"ra and dec differ in length: {ra.size} != {dec.size}")
    if ra.size < 2:
        raise ValueError("a footprint needs at least 2 positions; give the area explicitly")
    if not (np.isfinite(ra).all() and np.isfinite(dec).all()) or np.abs(dec).max() > 90:
        raise ValueError("ra/dec must be finite degrees with |dec| <= 90")
    return np.mod(ra, 360.0), dec


def footprint_moc(ra: Any, dec: Any) -> Any:
    """HEALPix coverage (a ``mocpy.MOC``) of the sky that a catalogue samples.

    Parameters
    ----------
    ra, dec : array_like
        Source positions, degrees (at least 2).

    Returns
    -------
    mocpy.MOC
        The closed and edge-corrected coverage (see the module docstring).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ra, dec = 150 + rng.random(2000) * 0.2, 2 + rng.random(2000) * 0.2
    >>> from astropy import units as u
    >>> moc = footprint_moc(ra, dec)
    >>> moc.contains_lonlat([150.1, 150.5] * u.deg, [2.1, 2.1] * u.deg).tolist()
    [True, False]
    """
    ra, dec = _check_positions(ra, dec)
    d = _spacing_deg(ra, dec)
    order = int(np.clip(round(math.log2(_cell_deg(0) / (_FINE * d))), 0, _MAX_MOC_ORDER + 4))
    close = max(1, math.ceil(_FILL * d / _cell_deg(order)))
    grow = round(_GROW * d / _cell_deg(order))
    moc = _moc(ra, dec, order)
    for _ in range(close + grow):
        moc = moc.add_neighbours()
    for _ in range(close):
        moc = moc.remove_neighbours()
    logger.debug("footprint of %d sources: spacing %.1f arcsec, order %d, closing %d, "
                 "grow %d", ra.size, d * 3600, order, close, grow)
    return moc


def footprint_area(ra: Any, dec: Any) -> float:
    """Sky area (deg²) covered by a catalogue, from its positions.

    Parameters
    ----------
    ra, dec : array_like
        Source positions, degrees.

    Returns
    -------
    float
        Area of :func:`footprint_moc`, square degrees.

    Examples
    --------
    A uniform 0.3 x 0.3 deg field of 5000 sources:

    >>> rng = np.random.default_rng(0)
    >>> dec = 2 + rng.random(5000) * 0.3
    >>> ra = 150 + rng.random(5000) * 0.3 / np.cos(np.radians(2.15))
    >>> round(footprint_area(ra, dec), 3)  # true area 0.09
    0.089
    """
    return float(footprint_moc(ra, dec).sky_fraction * SKY_DEG2)
