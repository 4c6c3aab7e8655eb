"""From nway's association table to X-ray columns on the photometry catalogue.

:func:`select_matches` applies the notebook's rule (``p_i >= 0.1`` and
``match_flag == 1``, optionally a ``p_any`` floor); :func:`merge_matches`
puts the kept X-ray source, its probabilities and its columns on the
matching photometry rows; :func:`crossmatch` does both for one or more X-ray
catalogues, in one nway run or per sky cell on Dask.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.crossmatch.distributed import run_nway_cells
from dask_phot.crossmatch.nway import MatchCatalog, run_nway

__all__ = ["crossmatch", "merge_matches", "select_matches"]

logger = logging.getLogger(__name__)


def select_matches(assoc: pd.DataFrame, *, p_i_min: float = 0.1, match_flag: int | None = 1,
                   p_any_min: float = 0.0) -> pd.DataFrame:
    """Rows of an association table that count as a match.

    Parameters
    ----------
    assoc : pandas.DataFrame
        From :func:`~dask_phot.crossmatch.run_nway`.
    p_i_min : float
        Lowest ``p_i`` kept (the notebook: 0.1).
    match_flag : int or None
        Required ``match_flag`` (the notebook: 1, the best candidate); None keeps any.
    p_any_min : float
        Lowest ``p_any`` kept. The notebook has none (0): with ``p_i``
        normalised over the candidates, a lone candidate 10" from a Chandra
        source has ``p_i = 1`` although ``p_any ~ 0``.

    Returns
    -------
    pandas.DataFrame
        The kept rows (candidate pairs only, never the no-counterpart rows).

    Examples
    --------
    >>> assoc = pd.DataFrame({"X_ID": [1, 1, 2], "OPT_ID": [pd.NA, 7, 8],
    ...                       "p_any": [0.9, 0.9, 0.01], "p_i": [0.0, 1.0, 1.0],
    ...                       "match_flag": [0, 1, 1], "ncat": [1, 2, 2]})
    >>> select_matches(assoc)["OPT_ID"].tolist()
    [7, 8]
    >>> select_matches(assoc, p_any_min=0.5)["OPT_ID"].tolist()
    [7]
    """
    keep = (assoc["ncat"] >= 2) & (assoc["p_i"] >= p_i_min) & (assoc["p_any"] >= p_any_min)
    if match_flag is not None:
        keep &= assoc["match_flag"] == match_flag
    return assoc[keep]


def merge_matches(catalog: pd.DataFrame, assoc: pd.DataFrame, xray: MatchCatalog, *,
                  catalog_name: str, catalog_id: str | None = None,
                  columns: Sequence[str] | None = None, prefix: str | None = None,
                  **select: Any) -> pd.DataFrame:
    """The photometry catalogue with its X-ray counterparts' columns.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Photometry catalogue (the secondary of the match).
    assoc : pandas.DataFrame
        Association table with ``{xray.name}_ID`` and ``{catalog_name}_ID``.
    xray : MatchCatalog
        The X-ray catalogue (the primary of the match).
    catalog_name : str
        nway name of the photometry catalogue.
    catalog_id : str, optional
        Column of ``catalog`` holding the IDs given to nway; default row numbers.
    columns : sequence of str, optional
        X-ray columns to carry over; default all of ``xray.table``.
    prefix : str, optional
        Prefix of the new columns; default ``xray.name.lower() + "_"``.
    **select
        Thresholds for :func:`select_matches`.

    Returns
    -------
    pandas.DataFrame
        ``catalog`` (same rows, same order) plus ``{prefix}id``, ``{prefix}p_any``,
        ``{prefix}p_i``, ``{prefix}match_flag``, ``{prefix}separation`` (arcsec),
        ``{prefix}match`` (bool) and ``{prefix}{column}`` for each X-ray column;
        missing where no X-ray source matches. When two X-ray sources pick the
        same photometry source, the one with the larger ``p_any * p_i`` wins.
    """
    prefix = f"{xray.name.lower()}_" if prefix is None else prefix
    x_key, c_key = f"{xray.name}_ID", f"{catalog_name}_ID"
    kept = _one_per_source(select_matches(assoc, **select), c_key, xray.name)
    x_cols = list(xray.table.columns if columns is None else columns)
    x_table = xray.table[x_cols].copy()
    x_table.insert(0, "_xid", xray.ids())
    kept = kept.merge(x_table, left_on=x_key, right_on="_xid", how="left")
    new = pd.DataFrame({
        "id": kept[x_key].to_numpy(), "p_any": kept["p_any"], "p_i": kept["p_i"],
        "match_flag": kept["match_flag"].astype("Int64"), "separation": kept["separation"],
        "match": True})
    for c in x_cols:
        new[c] = kept[c].to_numpy()
    new.columns = [f"{prefix}{c}" for c in new.columns]
    ids = np.arange(len(catalog)) if catalog_id is None else catalog[catalog_id].to_numpy()
    new.index = pd.Index(kept[c_key].to_numpy())
    out = new.reindex(ids)
    out[f"{prefix}match"] = out[f"{prefix}match"].fillna(False).astype(bool)
    out.index = catalog.index
    clash = [c for c in out.columns if c in catalog.columns]
    if clash:
        raise ValueError(f"catalogue already has columns {clash}; choose another prefix")
    return pd.concat([catalog, out], axis=1)


def _one_per_source(kept: pd.DataFrame, key: str, name: str) -> pd.DataFrame:
    """Keep, for each photometry source, its most probable X-ray match."""
    kept = kept.assign(_score=kept["p_any"] * kept["p_i"])
    kept = kept.sort_values("_score", ascending=False, kind="stable")
    dup = kept[key].duplicated()
    if dup.any():
        logger.info("%s: %d photometry sources were the best match of more than one X-ray "
                    "source; kept the most probable", name, int(dup.sum()))
    return kept[~dup]


def crossmatch(catalog: pd.DataFrame, xray: MatchCatalog | Sequence[MatchCatalog], *,
               pos_err: str | float = 0.1, name: str = "OPT", ra: str = "ra", dec: str = "dec",
               id_column: str | None = None, area_deg2: float | None = None,
               radius_arcsec: float = 15.0, prior_completeness: float = 0.9,
               p_i_min: float = 0.1, match_flag: int | None = 1, p_any_min: float = 0.0,
               per_cell: bool = False, order: int | None = None, client: Any = None,
               ) -> pd.DataFrame:
    """Match a photometry catalogue to X-ray catalogues with nway and merge the results.

    Each X-ray catalogue is matched on its own, as nway's primary catalogue
    (as in the COSMOS notebook: which optical source is the X-ray source's
    counterpart?), against ``catalog`` as the secondary.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Photometry catalogue, e.g. :func:`dask_phot.pipeline.read_catalog`.
    xray : MatchCatalog or sequence of MatchCatalog
        X-ray catalogues, each with its own name (the prefix of its columns).
    pos_err : str or float
        Positional error of the photometry sources: column or arcsec (the
        notebook: 0.1).
    name, ra, dec, id_column, area_deg2
        The photometry catalogue's nway name, columns and sky area, as in
        :class:`MatchCatalog`.
    radius_arcsec, prior_completeness
        nway settings (the notebook: 15 and 0.9).
    p_i_min, match_flag, p_any_min
        Which associations count as matches, see :func:`select_matches`.
    per_cell, order, client
        Run nway per HEALPix cell (:func:`run_nway_cells`) on ``client``.

    Returns
    -------
    pandas.DataFrame
        ``catalog`` plus, per X-ray catalogue, the columns of :func:`merge_matches`.
    """
    cat = MatchCatalog(name, catalog, pos_err, ra=ra, dec=dec, id_column=id_column,
                       area_deg2=area_deg2)
    if cat.area_deg2 is None:
        cat = cat.with_table(catalog, cat.area())
    out = catalog
    for x in [xray] if isinstance(xray, MatchCatalog) else list(xray):
        if x.name == name:
            raise ValueError(f"X-ray catalogue and photometry share the name {name!r}")
        kw = {"radius_arcsec": radius_arcsec, "prior_completeness": prior_completeness}
        if per_cell:
            assoc = run_nway_cells(x, cat, order=order, client=client, **kw)
        else:
            assoc = run_nway(x, cat, **kw)
        out = merge_matches(out, assoc, x, catalog_name=name, catalog_id=id_column,
                            p_i_min=p_i_min, match_flag=match_flag, p_any_min=p_any_min)
        logger.info("%s: %d of %d photometry sources matched", x.name,
                    int(out[f"{x.name.lower()}_match"].sum()), len(out))
    return out
