"""Simulated prior catalogs: positions, power-law number counts and colours.

Sources are spread uniformly over a square on the tangent plane around a
centre (the COSMOS field by default), optionally with a fraction of them in
Thomas-process clusters (Gaussian clumps around uniformly placed parents).
Reference fluxes follow power-law cumulative counts ``N(>S) ∝ S**-slope``
between two flux limits; each band's true flux is the reference flux times a
random colour whose mean and scatter depend on the band (the UV bands are
several magnitudes fainter on average, so many UV sources are undetected).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from dask_phot.testing._seeding import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SeedLike,
    child_rng,
    root_entropy,
)

__all__ = [
    "COSMOS_CENTER",
    "COSMOS_DENSITY",
    "Colour",
    "colour_for_band",
    "simulate_sources",
    "tangent_to_sky",
]

logger = logging.getLogger(__name__)

#: Centre of the COSMOS field (RA, Dec) in degrees.
COSMOS_CENTER = (150.01, 2.2)
#: Source density of deep COSMOS prior catalogs, per square degree.
COSMOS_DENSITY = 6.0e5


class Colour(NamedTuple):
    """Colour of a band relative to the reference flux, in magnitudes.

    ``2.5 log10(flux_ref / flux_band) = mean + scatter * (corr * t + sqrt(1 - corr**2) * e)``
    where ``t`` is a per-source standard-normal "SED type" shared by all bands and
    ``e`` an independent standard normal: positive means fainter than the reference.
    """

    mean: float
    scatter: float
    corr: float = 0.0


#: Default colours by canonical band name (the reference is a Ks-like flux).
DEFAULT_COLOURS: dict[str, Colour] = {
    "fuv": Colour(3.6, 1.3, 0.8),
    "nuv": Colour(2.8, 1.1, 0.8),
    "u": Colour(1.8, 0.8, 0.7),
    "g": Colour(1.3, 0.6, 0.7),
    "r": Colour(0.9, 0.5, 0.6),
    "i": Colour(0.6, 0.4, 0.5),
    "z": Colour(0.4, 0.3, 0.4),
    "y": Colour(0.3, 0.3, 0.3),
    "j": Colour(0.15, 0.2, 0.2),
    "h": Colour(0.05, 0.15, 0.1),
    "ks": Colour(0.0, 0.05, 0.0),
    "irac1": Colour(-0.4, 0.4, -0.3),
    "irac2": Colour(-0.5, 0.5, -0.4),
    "irac3": Colour(-0.4, 0.6, -0.4),
    "irac4": Colour(-0.2, 0.8, -0.5),
    "w1": Colour(-0.4, 0.4, -0.3),
    "w2": Colour(-0.5, 0.5, -0.4),
    "w3": Colour(-1.0, 1.0, -0.5),
    "w4": Colour(-1.5, 1.2, -0.5),
}
#: Colour of a band with no default.
FALLBACK_COLOUR = Colour(0.0, 0.3, 0.0)

_IRAC = re.compile(r"(?:irac|ch)[_\-]?([1-4])$")
_WISE = re.compile(r"w(?:ise)?[_\-]?([1-4])$")


def colour_for_band(band: str) -> Colour:
    """Default colour of a band, recognising common spellings (``ch1``, ``irac_1``, ``W2``).

    Examples
    --------
    >>> colour_for_band("GALEX_NUV").mean > 2
    True
    >>> colour_for_band("ch1") == colour_for_band("irac1")
    True
    """
    key = band.lower()
    for uv in ("fuv", "nuv"):
        if uv in key:
            return DEFAULT_COLOURS[uv]
    if m := _IRAC.search(key):
        return DEFAULT_COLOURS[f"irac{m.group(1)}"]
    if m := _WISE.search(key):
        return DEFAULT_COLOURS[f"w{m.group(1)}"]
    for token in (key, re.split(r"[_\-\s.]+", key)[-1]):
        token = "ks" if token in ("k", "k_s", "ks") else token
        if token in DEFAULT_COLOURS:
            return DEFAULT_COLOURS[token]
    logger.debug("no default colour for band %r; using %s", band, FALLBACK_COLOUR)
    return FALLBACK_COLOUR


def tangent_to_sky(
    xi: np.ndarray, eta: np.ndarray, center: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) deprojection of standard coordinates to RA/Dec.

    Parameters
    ----------
    xi, eta : ndarray
        Standard coordinates in degrees (``xi`` towards east, ``eta`` north).
    center : (float, float)
        Tangent point (RA, Dec) in degrees.

    Returns
    -------
    ra, dec : ndarray
        Degrees; RA wrapped to [0, 360).
    """
    ra0, dec0 = np.radians(center[0]), np.radians(center[1])
    x, y = np.radians(xi), np.radians(eta)
    denom = math.cos(dec0) - y * math.sin(dec0)
    ra = ra0 + np.arctan2(x, denom)
    dec = np.arctan2(math.sin(dec0) + y * math.cos(dec0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def _validate(
    area_arcmin2: float,
    density_per_deg2: float,
    center: tuple[float, float],
    bands: Sequence[str],
    clustering: float,
    flux_range_ujy: tuple[float, float],
    slope: float,
) -> None:
    if not (area_arcmin2 > 0 and math.isfinite(area_arcmin2)):
        raise ValueError(f"area_arcmin2 must be > 0, got {area_arcmin2!r}")
    if not (density_per_deg2 >= 0 and math.isfinite(density_per_deg2)):
        raise ValueError(f"density_per_deg2 must be >= 0, got {density_per_deg2!r}")
    if not -90.0 < center[1] < 90.0:
        raise ValueError(f"center Dec must be in (-90, 90), got {center[1]!r}")
    if not 0.0 <= clustering <= 1.0:
        raise ValueError(f"clustering is a fraction in [0, 1], got {clustering!r}")
    lo, hi = flux_range_ujy
    if not 0 < lo < hi:
        raise ValueError(f"flux_range_ujy must satisfy 0 < faint < bright, got {flux_range_ujy}")
    if not slope > 0:
        raise ValueError(f"slope must be > 0, got {slope!r}")
    if len(set(bands)) != len(bands) or not all(isinstance(b, str) and b for b in bands):
        raise ValueError(f"bands must be distinct non-empty names, got {list(bands)}")


def _positions(
    rng: np.random.Generator,
    n: int,
    side: float,
    clustering: float,
    radius: float,
    members: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Uniform positions on a ``side`` square (degrees), a fraction in Thomas clusters."""
    xi = rng.uniform(-side / 2, side / 2, n)
    eta = rng.uniform(-side / 2, side / 2, n)
    if clustering > 0 and n > 0:
        member = rng.random(n) < clustering
        m = int(member.sum())
        n_parents = max(1, round(m / max(members, 1.0)))
        parents = rng.uniform(-side / 2, side / 2, (2, n_parents))
        which = rng.integers(n_parents, size=m)
        off = rng.normal(0.0, radius, (2, m))
        # periodic wrap keeps the count and the mean density exact
        xi[member] = (parents[0, which] + off[0] + side / 2) % side - side / 2
        eta[member] = (parents[1, which] + off[1] + side / 2) % side - side / 2
    return xi, eta


def power_law_fluxes(
    rng: np.random.Generator, n: int, flux_range: tuple[float, float], slope: float
) -> np.ndarray:
    """Draw fluxes with cumulative counts ``N(>S) ∝ S**-slope`` between two limits."""
    lo, hi = (float(v) ** -slope for v in flux_range)
    u = rng.random(n)
    return (lo - u * (lo - hi)) ** (-1.0 / slope)


def simulate_sources(
    *,
    area_arcmin2: float,
    bands: Sequence[str],
    seed: SeedLike,
    density_per_deg2: float = COSMOS_DENSITY,
    center: tuple[float, float] = COSMOS_CENTER,
    clustering: float = 0.0,
    flux_range_ujy: tuple[float, float] = (0.05, 2000.0),
    slope: float = 0.7,
    colors: Mapping[str, tuple[float, ...]] | None = None,
    cluster_radius_arcsec: float = 8.0,
    cluster_members: float = 10.0,
    galaxies: float = 0.0,
    size_median_arcsec: float = 0.3,
    size_sigma: float = 0.6,
) -> pd.DataFrame:
    """Simulate a prior catalog with true fluxes in several bands.

    Parameters
    ----------
    area_arcmin2 : float
        Area of the square field on the tangent plane, in arcmin².
    bands : sequence of str
        Band names; one ``flux_true_<band>`` column each.
    seed : int or None
        Seed of :func:`numpy.random.default_rng`; equal seeds give equal catalogs.
        A band's fluxes do not depend on which other bands are asked for.
    density_per_deg2 : float
        Mean source density; the number of sources is Poisson-distributed.
    center : (float, float)
        Field centre (RA, Dec) in degrees.
    clustering : float
        Fraction of sources placed in Thomas-process clusters.
    flux_range_ujy : (float, float)
        Faint and bright limits of the reference flux, in microJansky.
    slope : float
        Slope of the cumulative counts ``N(>S) ∝ S**-slope``.
    colors : mapping, optional
        Band -> ``(mean, scatter[, corr])`` overriding :data:`DEFAULT_COLOURS`
        (see :class:`Colour`).
    cluster_radius_arcsec : float
        Gaussian sigma of a cluster's members around its centre.
    cluster_members : float
        Mean number of members per cluster.
    galaxies : float
        Fraction of sources that are Sersic galaxies (the rest are point sources).
        With ``galaxies > 0`` the catalog has shape columns: ``r_e`` (half-light
        semi-major axis, arcsec; 0 for point sources), ``q`` (b/a), ``pa``
        (degrees east of north) and ``n`` (Sersic index: 55% exponential discs,
        25% de Vaucouleurs, 20% uniform in 0.5-6).
    size_median_arcsec, size_sigma : float
        Galaxy sizes are log-normal: median ``size_median_arcsec``, ``size_sigma``
        the standard deviation of ``ln r_e``.

    Returns
    -------
    pandas.DataFrame
        ``source_id`` (int64, 0..n-1), ``ra``, ``dec`` (deg), ``flux_ref``,
        ``flux_true_<band>`` (uJy), and the shape columns when ``galaxies > 0``.

    Examples
    --------
    >>> cat = simulate_sources(area_arcmin2=1.0, bands=["irac1", "nuv"], seed=1)
    >>> list(cat.columns)
    ['source_id', 'ra', 'dec', 'flux_ref', 'flux_true_irac1', 'flux_true_nuv']
    >>> 100 < len(cat) < 230
    True
    """
    bands = list(bands)
    _validate(area_arcmin2, density_per_deg2, center, bands, clustering, flux_range_ujy, slope)
    entropy = root_entropy(seed)
    rng = child_rng(entropy, POSITIONS)
    area_deg2 = area_arcmin2 / 3600.0
    n = int(rng.poisson(density_per_deg2 * area_deg2))
    side = math.sqrt(area_deg2)
    xi, eta = _positions(
        rng, n, side, clustering, cluster_radius_arcsec / 3600.0, cluster_members
    )
    ra, dec = tangent_to_sky(xi, eta, center)
    flux_ref = power_law_fluxes(rng, n, flux_range_ujy, slope)
    sed_type = rng.standard_normal(n)
    columns: dict[str, np.ndarray] = {
        "source_id": np.arange(n, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "flux_ref": flux_ref,
    }
    overrides = dict(colors or {})
    for band in bands:
        c = Colour(*overrides[band]) if band in overrides else colour_for_band(band)
        e = child_rng(entropy, COLOURS, band).standard_normal(n)
        mag = c.mean + c.scatter * (c.corr * sed_type + math.sqrt(1.0 - c.corr**2) * e)
        columns[f"flux_true_{band}"] = flux_ref * 10.0 ** (-0.4 * mag)
    if galaxies > 0:
        columns.update(_shapes(child_rng(entropy, SHAPES), n, galaxies, size_median_arcsec,
                               size_sigma))
    logger.debug("simulated %d sources over %.3g arcmin2", n, area_arcmin2)
    return pd.DataFrame(columns)


def _shapes(rng: np.random.Generator, n: int, fraction: float, median: float,
            sigma: float) -> dict[str, np.ndarray]:
    """Shape columns: a ``fraction`` of galaxies with log-normal sizes, the rest points."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"galaxies is a fraction in [0, 1], got {fraction!r}")
    gal = rng.random(n) < fraction
    r_e = np.where(gal, median * np.exp(sigma * rng.standard_normal(n)), 0.0)
    kind = rng.random(n)
    sersic = np.where(kind < 0.55, 1.0, np.where(kind < 0.8, 4.0, rng.uniform(0.5, 6.0, n)))
    return {"r_e": r_e, "q": np.where(gal, rng.uniform(0.3, 1.0, n), 1.0),
            "pa": np.where(gal, rng.uniform(0.0, 180.0, n), 0.0),
            "n": np.where(gal, sersic, 1.0)}
