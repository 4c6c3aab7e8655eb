"""Cross-match the photometry with X-ray catalogues using nway (Salvato et al. 2018).

nway is AGPL-3.0 licensed and optional (``pip install 'dask-phot[crossmatch]'``):
it is imported only when a match runs, never when this package is imported.

* :class:`MatchCatalog`: a catalogue, its positional errors and sky area
  (:func:`footprint_area`, from the positions' HEALPix coverage, by default);
* :func:`run_nway`: nway's association table for two catalogues;
  :func:`run_nway_cells`: the same, one Dask task per HEALPix sky cell;
* :func:`crossmatch`: match and merge ``p_any``, ``p_i``, ``match_flag`` and the
  X-ray columns onto the photometry catalogue (thresholds as the notebook:
  ``p_i >= 0.1`` and ``match_flag == 1``);
* :func:`write_nway_fits` / :func:`nway_command`: the files and the command
  for nway's own ``nway.py``.
"""

from dask_phot.crossmatch.distributed import match_cell, plan_match_cells, run_nway_cells
from dask_phot.crossmatch.footprint import footprint_area, footprint_moc
from dask_phot.crossmatch.merge import crossmatch, merge_matches, select_matches
from dask_phot.crossmatch.nway import (
    ASSOCIATION_COLUMNS,
    MatchCatalog,
    load_nway,
    nway_command,
    run_nway,
    write_nway_fits,
)

__all__ = [
    "ASSOCIATION_COLUMNS",
    "MatchCatalog",
    "crossmatch",
    "footprint_area",
    "footprint_moc",
    "load_nway",
    "match_cell",
    "merge_matches",
    "nway_command",
    "plan_match_cells",
    "run_nway",
    "run_nway_cells",
    "select_matches",
    "write_nway_fits",
]
