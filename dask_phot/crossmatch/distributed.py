"""nway per HEALPix sky cell on Dask: the same associations as one run, in pieces.

nway holds every candidate combination of the whole catalogue in memory and
runs in one process. :func:`run_nway_cells` cuts the sky into HEALPix cells
(:mod:`dask_phot.cells`), and in each cell matches the primary sources that
lie *in* the cell against the secondary sources in the cell *plus a margin*
wider than the search radius, so every candidate of every primary source is
present. Each primary source is in exactly one cell, so concatenating the
cells' tables gives every association once: nothing lost, nothing doubled.

Why the probabilities are the same and not only close: for two catalogues
nway's prior for a pair is ``completeness / rho2_plus`` with
``rho2_plus = (n2 + 1) / area2`` the secondary's density (the primary's
density cancels), and everything else is computed per primary source from its
own candidates. Each cell is therefore given the *global* density: its
secondary area is set to ``(n2_cell + 1) * area2 / (n2 + 1)`` (and its primary
area to ``n1_cell * area1 / n1``), so nway's per-cell numbers equal the
whole-catalogue ones (a test checks this against one nway run).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.cells import Cell, choose_order, margin_sources, partition_priors
from dask_phot.crossmatch.nway import MatchCatalog, run_nway, sort_associations

__all__ = ["match_cell", "plan_match_cells", "run_nway_cells"]

logger = logging.getLogger(__name__)

#: Extra margin beyond the search radius, arcsec: covers the cell-boundary model.
MARGIN_PAD_ARCSEC = 1.0


def _positions_frame(cat: MatchCatalog) -> pd.DataFrame:
    ra, dec = cat.positions()
    return pd.DataFrame({"ra": ra, "dec": dec, "_row": np.arange(len(ra))})


def plan_match_cells(primary: MatchCatalog, secondary: MatchCatalog, *, radius_arcsec: float,
                     order: int | None = None, rows_per_cell: int = 200_000,
                     ) -> list[tuple[Cell, np.ndarray, np.ndarray]]:
    """Cells and, for each, the row numbers of its primary and its secondary sources.

    Parameters
    ----------
    primary, secondary : MatchCatalog
    radius_arcsec : float
        nway's search radius; the secondary margin is this plus
        :data:`MARGIN_PAD_ARCSEC`.
    order : int, optional
        HEALPix order of the cells; default the lowest order whose busiest cell
        holds at most ``rows_per_cell`` secondary sources.
    rows_per_cell : int
        See ``order``.

    Returns
    -------
    list of (Cell, ndarray, ndarray)
        Only cells holding at least one primary source; the primary rows are
        the sources inside the cell, the secondary rows those inside or within
        the margin.
    """
    p_pos, s_pos = _positions_frame(primary), _positions_frame(secondary)
    if order is None:
        order = choose_order(s_pos["ra"], s_pos["dec"], rows_per_cell) if len(s_pos) else 0
    margin = float(radius_arcsec) + MARGIN_PAD_ARCSEC
    s_parts = {p.cell.pixel: p.sources for p in
               partition_priors(s_pos, order=order, margin_arcsec=margin)}
    plan = []
    for part in partition_priors(p_pos, order=order, margin_arcsec=0.0):
        rows = s_parts.get(part.cell.pixel)
        if rows is None:  # no secondary source inside: only the margin can hold candidates
            rows = margin_sources(s_pos, part.cell, margin)
        plan.append((part.cell, part.sources["_row"].to_numpy(), rows["_row"].to_numpy()))
    logger.info("nway on %d order-%d cells (%.1f arcsec margins)", len(plan), order, margin)
    return plan


def match_cell(primary: MatchCatalog, secondary: MatchCatalog, *,
               densities: tuple[float, float], radius_arcsec: float,
               prior_completeness: float, prob_ratio_secondary: float) -> pd.DataFrame:
    """Run nway on one cell's rows with the whole catalogues' densities.

    Parameters
    ----------
    primary, secondary : MatchCatalog
        The cell's primary sources and its secondary sources with margin.
    densities : (float, float)
        ``(n1 / area1, (n2 + 1) / area2)`` of the whole catalogues, per deg².

    Returns
    -------
    pandas.DataFrame
        As :func:`~dask_phot.crossmatch.run_nway`.
    """
    n1, n2 = len(primary.table), len(secondary.table)
    areas = (max(n1, 1) / densities[0], (n2 + 1) / densities[1])
    return run_nway(primary, secondary, radius_arcsec=radius_arcsec,
                    prior_completeness=prior_completeness,
                    prob_ratio_secondary=prob_ratio_secondary, areas=areas)


def run_nway_cells(primary: MatchCatalog, secondary: MatchCatalog, *,
                   radius_arcsec: float = 15.0, prior_completeness: float = 0.9,
                   prob_ratio_secondary: float = 0.5, order: int | None = None,
                   rows_per_cell: int = 200_000, client: Any = None) -> pd.DataFrame:
    """:func:`~dask_phot.crossmatch.run_nway`, one Dask task per sky cell.

    Parameters
    ----------
    primary, secondary : MatchCatalog
        As for :func:`~dask_phot.crossmatch.run_nway`; their areas are computed
        once on the whole catalogues.
    radius_arcsec, prior_completeness, prob_ratio_secondary
        As for :func:`~dask_phot.crossmatch.run_nway`.
    order, rows_per_cell
        Cell size, see :func:`plan_match_cells`.
    client : distributed.Client, optional
        Where to run the cells; default in this process, one cell after the
        other (the debug path).

    Returns
    -------
    pandas.DataFrame
        The association table, row for row as one nway run on the whole
        catalogues gives it (same order: primary rows in input order).
    """
    areas = (primary.area(), secondary.area())
    densities = (len(primary.table) / areas[0], (len(secondary.table) + 1) / areas[1])
    plan = plan_match_cells(primary, secondary, radius_arcsec=radius_arcsec, order=order,
                            rows_per_cell=rows_per_cell)
    kwargs = {"densities": densities, "radius_arcsec": radius_arcsec,
              "prior_completeness": prior_completeness,
              "prob_ratio_secondary": prob_ratio_secondary}
    pieces = []
    for _cell, p_rows, s_rows in plan:
        p_cat = primary.with_table(primary.table.iloc[p_rows], areas[0])
        s_cat = secondary.with_table(secondary.table.iloc[s_rows], areas[1])
        if client is None:
            pieces.append(match_cell(p_cat, s_cat, **kwargs))
        else:
            pieces.append(client.submit(match_cell, p_cat, s_cat, pure=False, **kwargs))
    if client is not None:
        pieces = client.gather(pieces)
    if not pieces:
        return run_nway(primary.with_table(primary.table.iloc[:0], areas[0]), secondary,
                        areas=areas)
    out = pd.concat(pieces, ignore_index=True)
    key = f"{primary.name}_ID"
    rank = pd.Series(np.arange(len(primary.table)), index=primary.ids())
    return sort_associations(out, rank.loc[out[key].to_numpy()].to_numpy())
