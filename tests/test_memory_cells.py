"""Memory-aware cells: cells above the memory budget are split into HEALPix children."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_phot.bands import get_band
from dask_phot.cells import partition_priors, split_cell
from dask_phot.config import load_config
from dask_phot.pipeline import plan_cells, read_catalog, run_catalog
from dask_phot.pipeline.memory import cell_memory
from dask_phot.testing import SimBand, simulate_field, write_field


@pytest.fixture(scope="module")
def irac_field(tmp_path_factory):
    band = get_band("irac1")
    sim = SimBand("irac1", band.load_psf(), band.to_ujy, band.depth_5sigma_ujy, sky=0.01)
    field = simulate_field(bands=[sim], seed=8, area_arcmin2=10.0)
    return write_field(field, tmp_path_factory.mktemp("memcells"), noise_product="weight")


def _config(paths, out, budget):
    return load_config({
        "priors": {"path": str(paths["priors"])},
        "bands": {"irac1": {"images": [str(paths["irac1_sci"])],
                            "noise": [str(paths["irac1_wht"])], "noise_kind": "weight",
                            "sky": 0.01}},
        "cells": {"rows_per_partition": 100000, "memory_budget": budget},
        "output": {"path": str(out)},
    })


def test_split_cell_is_the_partition_at_the_next_order():
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"source_id": np.arange(600), "ra": 150 + rng.random(600) * 0.3,
                       "dec": 2 + rng.random(600) * 0.3})
    direct = {p.cell: p for p in partition_priors(df, order=9, margin_arcsec=15.0)}
    for parent in partition_priors(df, order=8, margin_arcsec=15.0):
        for kid in split_cell(parent, 15.0):
            want = direct[kid.cell].sources
            pd.testing.assert_frame_equal(kid.sources, want)


@pytest.mark.slow
def test_cells_above_the_budget_are_split_and_measure_the_same(irac_field, tmp_path):
    """With a budget below the one cell's estimate, the plan splits it into children
    (each needing less) and the catalog holds every source once, measured as in
    the unsplit cell: the margins make each cell's fit the whole mosaic's (99% of
    fluxes within 0.02 sigma, all within 0.1, as in
    ``test_cells_with_margins_give_the_whole_mosaic_fit``; the sky is fixed at its true
    level: a sky fitted per cell is another model than one for the whole field)."""
    whole = _config(irac_field, tmp_path / "whole", "100GiB")
    parts, indexes = plan_cells(whole)
    assert len(parts) == 1
    need = cell_memory(parts[0], indexes, whole)["irac1"]
    split = _config(irac_field, tmp_path / "split", int(need) - 1)
    small, _ = plan_cells(split)
    assert len(small) >= 2 and all(p.cell.order > parts[0].cell.order for p in small)
    assert all(cell_memory(p, indexes, split)["irac1"] < need for p in small)
    assert sum(p.n_primary for p in small) == parts[0].n_primary
    run_catalog(whole)
    run_catalog(split)
    a, b = read_catalog(tmp_path / "whole"), read_catalog(tmp_path / "split")
    assert a["source_id"].tolist() == b["source_id"].tolist()
    diff = np.abs(a["flux_irac1"] - b["flux_irac1"]) / a["flux_err_irac1"]
    ok = np.isfinite(diff)
    assert ok.mean() > 0.95
    assert np.quantile(diff[ok], 0.99) < 0.02 and diff[ok].max() < 0.1, diff.max()
