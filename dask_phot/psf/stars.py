"""Choosing the stars an ePSF is built from, with the reason each candidate was dropped.

Candidates are a reference catalog's stars (Gaia, or priors flagged as stars) or
every prior. Each is kept only if it is

* on the image, with its whole box (``edge``);
* without masked pixels near its centre (``masked``);
* below the saturation level (``saturated``);
* bright: S/N above a threshold in a first forced fit with a rough PSF (``faint``);
* isolated: its neighbours, weighted by their fluxes and the rough PSF, add little
  light to its core, and none is brighter inside its box (``crowded``);
* compact: its light is as concentrated as the other candidates' (``extended``).

The counts of each reason are kept so that an error can say why too few stars
were left (:class:`StarSelection`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = ["REASONS", "StarSelection", "select_stars"]

#: Rejection reasons, in the order they are tested, with the phrase used in messages.
REASONS: dict[str, str] = {
    "edge": "too close to the image edge",
    "masked": "masked pixels near the centre",
    "saturated": "saturated",
    "faint": "too faint",
    "crowded": "too crowded",
    "extended": "not compact",
    "poor_fit": "poorly fitted by the ePSF",
    "capped": "beyond max_stars (fainter than those used)",
}


@dataclass(eq=False)
class StarSelection:
    """The candidates and the verdict on each.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per candidate: ``x, y`` (pixels), ``flux``, ``snr`` (first forced
        fit), ``reason`` (empty for kept stars, else a key of :data:`REASONS`).
    criteria : dict
        The thresholds used, for messages.
    """

    table: pd.DataFrame
    criteria: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        """Boolean array: candidates kept."""
        return (self.table["reason"] == "").to_numpy()

    @property
    def n_candidates(self) -> int:
        """Number of candidates."""
        return len(self.table)

    @property
    def n_kept(self) -> int:
        """Number of stars kept."""
        return int(self.kept.sum())

    def rejected(self) -> dict[str, int]:
        """Counts of rejected candidates by reason (reasons with none omitted)."""
        counts = self.table.loc[~self.kept, "reason"].value_counts()
        return {r: int(counts[r]) for r in REASONS if r in counts.index}

    def reject(self, index: np.ndarray, reason: str) -> None:
        """Mark candidates ``index`` (positions in the table) as rejected for ``reason``."""
        col = self.table.columns.get_loc("reason")
        self.table.iloc[np.asarray(index, dtype=np.int64), col] = reason

    def summary(self) -> str:
        """One phrase: ``"412 candidates: 380 too faint (S/N < 50), 20 too crowded"``."""
        parts = []
        for reason, count in self.rejected().items():
            text = f"{count} {REASONS[reason]}"
            if reason == "faint" and "snr_min" in self.criteria:
                text += f" (S/N < {self.criteria['snr_min']:g})"
            if reason == "saturated" and "saturation" in self.criteria:
                text += f" (peak >= {self.criteria['saturation']:g})"
            parts.append(text)
        head = f"{self.n_candidates} candidate(s)"
        return head + (": " + ", ".join(parts) if parts else "")


def _edge_and_mask(sel: StarSelection, weight: np.ndarray, box_half: int, core: float) -> None:
    t = sel.table
    ny, nx = weight.shape
    cx = np.floor(t["x"].to_numpy() + 0.5).astype(np.int64)
    cy = np.floor(t["y"].to_numpy() + 0.5).astype(np.int64)
    edge = (cx - box_half < 0) | (cy - box_half < 0) | (cx + box_half >= nx) | (cy + box_half >= ny)
    sel.reject(np.flatnonzero(edge & (t["reason"] == "").to_numpy()), "edge")
    r = int(np.ceil(core))
    offs = np.arange(-r, r + 1)
    disc = (offs[:, None] ** 2 + offs[None, :] ** 2) <= core**2
    todo = np.flatnonzero((t["reason"] == "").to_numpy())
    if todo.size:
        rows = np.clip(cy[todo, None, None] + offs[None, :, None], 0, ny - 1)
        cols = np.clip(cx[todo, None, None] + offs[None, None, :], 0, nx - 1)
        bad = ((weight[rows, cols] <= 0) & disc).any(axis=(1, 2))
        sel.reject(todo[bad], "masked")


def _saturated(sel: StarSelection, image: np.ndarray, saturation: float | None) -> None:
    if saturation is None:
        return
    t = sel.table
    todo = np.flatnonzero((t["reason"] == "").to_numpy())
    cx = np.floor(t["x"].to_numpy()[todo] + 0.5).astype(np.int64)
    cy = np.floor(t["y"].to_numpy()[todo] + 0.5).astype(np.int64)
    offs = np.arange(-1, 2)
    ny, nx = image.shape
    rows = np.clip(cy[:, None, None] + offs[None, :, None], 0, ny - 1)
    cols = np.clip(cx[:, None, None] + offs[None, None, :], 0, nx - 1)
    peak = np.nanmax(image[rows, cols], axis=(1, 2))
    sel.reject(todo[peak >= saturation], "saturated")


def _crowded(sel: StarSelection, nx_: np.ndarray, ny_: np.ndarray, nflux: np.ndarray,
             sigma_psf: float, box_half: int, max_contamination: float) -> None:
    """Neighbour light in the core (Gaussian-weighted flux ratio) and brighter neighbours."""
    t = sel.table
    todo = np.flatnonzero((t["reason"] == "").to_numpy())
    if todo.size == 0 or nx_.size == 0:
        return
    tree = cKDTree(np.column_stack([nx_, ny_]))
    xs, ys, fs = (t[c].to_numpy()[todo] for c in ("x", "y", "flux"))
    lists = tree.query_ball_point(np.column_stack([xs, ys]), r=box_half * np.sqrt(2.0))
    bad = np.zeros(todo.size, bool)
    for k, nb in enumerate(lists):
        nb = np.asarray(nb, dtype=np.int64)
        d2 = (nx_[nb] - xs[k]) ** 2 + (ny_[nb] - ys[k]) ** 2
        other = d2 > 0.25**2  # the star itself
        nb, d2 = nb[other], d2[other]
        if nb.size == 0:
            continue
        fl = np.clip(nflux[nb], 0, None)
        contam = float(np.sum(fl * np.exp(-0.5 * d2 / sigma_psf**2))) / max(fs[k], 1e-300)
        brighter = np.any(fl > fs[k])
        bad[k] = contam > max_contamination or brighter
    sel.reject(todo[bad], "crowded")


def _extended(sel: StarSelection, concentration: np.ndarray, nsigma: float) -> None:
    t = sel.table
    todo = np.flatnonzero((t["reason"] == "").to_numpy())
    if todo.size < 5:
        return
    c = concentration[todo]
    med = np.median(c)
    mad = 1.4826 * np.median(np.abs(c - med))
    if not mad > 0:
        return
    sel.reject(todo[c < med - nsigma * mad], "extended")


def select_stars(image: np.ndarray, weight: np.ndarray, candidates: pd.DataFrame, *,
                 neighbours: pd.DataFrame, fwhm: float, box_half: int,
                 saturation: float | None, snr_min: float, max_contamination: float,
                 compact_nsigma: float, max_stars: int) -> StarSelection:
    """Judge each candidate star.

    Parameters
    ----------
    image, weight : ndarray
        The mosaic (sky not subtracted) and its inverse variance (0 = masked).
    candidates : pandas.DataFrame
        ``x, y`` (pixels), ``flux``, ``snr`` and ``concentration`` from a first
        forced fit of every source with a rough PSF.
    neighbours : pandas.DataFrame
        ``x, y, flux`` of every source that may contaminate a star (the candidates included).
    fwhm : float
        Rough FWHM, pixels.
    box_half : int
        Half side of a star's box, pixels.
    saturation : float, optional
        Pixel value (image units, sky included) at and above which a star is saturated.
    snr_min : float
        Smallest S/N of a star.
    max_contamination : float
        Largest neighbour light in a star's core, as a fraction of its flux.
    compact_nsigma : float
        A candidate less concentrated than the median by this many robust sigmas is extended.
    max_stars : int
        At most this many stars are kept (the highest S/N).

    Returns
    -------
    StarSelection
    """
    table = candidates[["x", "y", "flux", "snr", "concentration"]].reset_index(drop=True).copy()
    table["reason"] = ""
    sel = StarSelection(table, {"snr_min": snr_min, "max_contamination": max_contamination})
    if saturation is not None:
        sel.criteria["saturation"] = float(saturation)
    _edge_and_mask(sel, weight, box_half, max(1.0, 1.5 * fwhm))
    _saturated(sel, image, saturation)
    snr = table["snr"].to_numpy()
    sel.reject(np.flatnonzero((table["reason"] == "").to_numpy() & ~(snr >= snr_min)), "faint")
    _crowded(sel, neighbours["x"].to_numpy(), neighbours["y"].to_numpy(),
             neighbours["flux"].to_numpy(), fwhm / 2.3548, box_half, max_contamination)
    _extended(sel, table["concentration"].to_numpy(), compact_nsigma)
    kept = np.flatnonzero(sel.kept)
    if kept.size > max_stars:
        order = kept[np.argsort(-snr[kept])]
        sel.reject(order[max_stars:], "capped")
    return sel
