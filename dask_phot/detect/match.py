"""Matching detections to a reference catalog (Gaia, or any table) and aligning to it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

__all__ = ["MatchResult", "match_reference", "shift_wcs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class MatchResult:
    """Detections matched to a reference catalog.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per detection, input order: ``ref_index`` (row of the reference,
        -1 when unmatched), ``ref_ra``, ``ref_dec``, ``ref_sep_arcsec`` and the
        requested reference columns as ``ref_<name>`` (NaN when unmatched).
    dra_arcsec, ddec_arcsec : float
        Median offset reference minus detection, ``dRA cos(Dec)`` and ``dDec``,
        arcsec (NaN without matches).
    n_matched : int
        Detections with a reference source within the radius.
    """

    table: pd.DataFrame
    dra_arcsec: float
    ddec_arcsec: float
    n_matched: int


def match_reference(
    ra: Any,
    dec: Any,
    reference: pd.DataFrame,
    *,
    radius_arcsec: float = 1.0,
    ra_column: str = "ra",
    dec_column: str = "dec",
    columns: tuple[str, ...] = (),
) -> MatchResult:
    """Nearest reference source within ``radius_arcsec`` of each detection.

    Parameters
    ----------
    ra, dec : array_like
        Detection coordinates, degrees.
    reference : pandas.DataFrame
        The reference catalog (e.g. Gaia DR3 ``ra``, ``dec``, ``source_id``).
    radius_arcsec : float
        Match radius.
    ra_column, dec_column : str
        Reference coordinate columns, degrees.
    columns : tuple of str
        Reference columns copied to the result as ``ref_<name>``.

    Returns
    -------
    MatchResult

    Examples
    --------
    >>> ref = pd.DataFrame({"ra": [150.0, 150.01], "dec": [2.0, 2.0], "g": [18.0, 19.0]})
    >>> res = match_reference([150.0 + 0.2 / 3600, 150.2], [2.0, 2.0], ref, columns=("g",))
    >>> res.table["ref_index"].tolist(), res.table["ref_g"].tolist(), res.n_matched
    ([0, -1], [18.0, nan], 1)
    >>> round(res.dra_arcsec, 3)
    -0.2
    """
    if not radius_arcsec > 0:
        raise ValueError(f"radius_arcsec must be > 0, got {radius_arcsec!r}")
    for name in (ra_column, dec_column, *columns):
        if name not in reference.columns:
            raise ValueError(f"reference catalog has no column {name!r}; it has "
                             f"{', '.join(map(str, reference.columns))}")
    ra_a, dec_a = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (ra, dec))
    n = len(ra_a)
    out = pd.DataFrame({"ref_index": np.full(n, -1, dtype=np.int64),
                        "ref_ra": np.full(n, np.nan), "ref_dec": np.full(n, np.nan),
                        "ref_sep_arcsec": np.full(n, np.nan)})
    for name in columns:
        out[f"ref_{name}"] = _take(reference[name], np.zeros(n, np.int64), np.zeros(n, bool))
    if n == 0 or reference.empty:
        return MatchResult(out, math.nan, math.nan, 0)
    det = SkyCoord(ra_a * u.deg, dec_a * u.deg)
    ref_ra = reference[ra_column].to_numpy(dtype=np.float64)
    ref_dec = reference[dec_column].to_numpy(dtype=np.float64)
    idx, sep, _ = det.match_to_catalog_sky(SkyCoord(ref_ra * u.deg, ref_dec * u.deg))
    ok = sep.arcsec <= radius_arcsec
    out.loc[ok, "ref_index"] = idx[ok]
    out.loc[ok, "ref_ra"], out.loc[ok, "ref_dec"] = ref_ra[idx[ok]], ref_dec[idx[ok]]
    out.loc[ok, "ref_sep_arcsec"] = sep.arcsec[ok]
    for name in columns:
        out[f"ref_{name}"] = _take(reference[name], idx, ok)
    dra = dde = math.nan
    if ok.any():
        cosd = np.cos(np.radians(dec_a[ok]))
        dra_all = ((ref_ra[idx[ok]] - ra_a[ok] + 180.0) % 360.0 - 180.0) * cosd * 3600.0
        dra = float(np.median(dra_all))
        dde = float(np.median((ref_dec[idx[ok]] - dec_a[ok]) * 3600.0))
    logger.info("matched %d of %d detections to the reference (median offset %.3f\", %.3f\")",
                int(ok.sum()), n, dra, dde)
    return MatchResult(out, dra, dde, int(ok.sum()))


def _take(column: pd.Series, idx: np.ndarray, ok: np.ndarray) -> Any:
    """``column[idx]`` where ``ok``, else missing: NaN for floats, <NA> for integers
    (Gaia ``source_id`` does not survive a float), None for others."""
    values = column.to_numpy()
    if np.issubdtype(values.dtype, np.integer):
        taken = values[np.where(ok, idx, 0)] if len(values) else np.zeros(len(ok), np.int64)
        return pd.arrays.IntegerArray(taken.astype(np.int64), ~ok)
    if np.issubdtype(values.dtype, np.floating):
        out = np.full(len(ok), np.nan)
    else:
        out = np.full(len(ok), None, dtype=object)
    out[ok] = values[idx[ok]]
    return out


def shift_wcs(wcs: WCS, dra_arcsec: float, ddec_arcsec: float) -> WCS:
    """A copy of ``wcs`` whose sky positions move by ``(dRA cos Dec, dDec)`` arcsec.

    Applying :attr:`MatchResult.dra_arcsec` and ``ddec_arcsec`` aligns the image to
    the reference catalog (a shift of the reference point; no rotation or scale).

    Examples
    --------
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [150.0, 60.0]; w.wcs.cdelt = [-1e-4, 1e-4]
    >>> s = shift_wcs(w, 1.0, -0.5)
    >>> a, b = w.pixel_to_world_values(10, 10), s.pixel_to_world_values(10, 10)
    >>> round(float((b[0] - a[0]) * 3600 * math.cos(math.radians(60))), 3)
    1.0
    >>> round(float((b[1] - a[1]) * 3600), 3)
    -0.5
    """
    if not (math.isfinite(dra_arcsec) and math.isfinite(ddec_arcsec)):
        raise ValueError("offsets must be finite (no matches?)")
    out = wcs.deepcopy()
    dec0 = float(out.wcs.crval[1])
    out.wcs.crval = [out.wcs.crval[0] + dra_arcsec / 3600.0 / math.cos(math.radians(dec0)),
                     dec0 + ddec_arcsec / 3600.0]
    out.wcs.set()
    return out
