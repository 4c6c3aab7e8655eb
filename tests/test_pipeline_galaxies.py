"""Galaxies through the pipeline: shapes from the priors, mapped to each mosaic, fitted as
Sersic models; the catalog says which model each flux is of."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_phot.bands import get_band
from dask_phot.config import ConfigError, load_config
from dask_phot.models.shapes import sky_to_pixel, wcs_jacobian
from dask_phot.pipeline import process_cell
from dask_phot.pipeline.kernel import source_shapes
from dask_phot.pipeline.run import plan_cells
from dask_phot.schema import MODEL_CODES, UNRELIABLE_FLAGS, Flag
from dask_phot.testing import simulate_to_dir


@pytest.fixture(scope="module")
def galaxy_field(tmp_path_factory):
    out = tmp_path_factory.mktemp("galaxies")
    field, paths = simulate_to_dir(out, area_arcmin2=4.0, bands=["irac1"], seed=21,
                                   galaxies=0.7)
    return field, paths


def run_cells(paths, **overrides):
    cfg = load_config(paths["config"], overrides=overrides or None, environ={})
    parts, idx = plan_cells(cfg)
    return pd.concat([process_cell(p, idx, cfg)[0] for p in parts], ignore_index=True), cfg


@pytest.mark.slow
def test_galaxies_measured_with_their_shapes(galaxy_field):
    _, paths = galaxy_field
    cat, cfg = run_cells(paths)
    assert set(cfg.priors.shape_columns) == {"r_e", "q", "pa", "n"}
    assert {"r_e", "q", "pa", "n"} <= set(cat.columns)  # the models' shapes are in the catalog
    gal = cat["r_e"] > 0
    fitted = np.isfinite(cat["flux_irac1"])
    assert (cat.loc[gal & fitted, "model_irac1"] == MODEL_CODES["sersic"]).all()
    assert (cat.loc[~gal & fitted, "model_irac1"] == MODEL_CODES["point"]).all()
    pull = (cat["flux_irac1"] - cat["flux_true_irac1"]) / cat["flux_err_irac1"]
    snr = cat["flux_true_irac1"] / cat["flux_err_irac1"]
    mid = np.isfinite(pull) & (snr > 5) & (snr < 100)
    assert mid.sum() > 100
    assert abs(np.median(pull[mid])) < 0.2 and 0.8 < 1.4826 * np.median(
        np.abs(pull[mid] - np.median(pull[mid]))) < 1.2
    # the same galaxies fitted as point sources come out faint and flagged
    points, _ = run_cells(paths, bands={"irac1": {"model": "point"}})
    assert (points.loc[np.isfinite(points["flux_irac1"]), "model_irac1"] == 0).all()
    big = gal & (cat["r_e"] > 0.5) & (snr > 10)
    ratio = points.loc[big, "flux_irac1"] / cat.loc[big, "flux_true_irac1"]
    assert big.sum() >= 8 and np.median(ratio) < 0.85, (big.sum(), np.median(ratio))
    # the residuals of most say so; fitted with their shapes, few do (the flag's rate
    # on right models is 0-6% at S/N > 20: one of these ~9 may carry it)
    mismatch = int(Flag.MODEL_MISMATCH)
    assert np.mean((points.loc[big, "flags_irac1"] & mismatch) != 0) >= 0.5
    assert np.mean((cat.loc[big, "flags_irac1"] & mismatch) != 0) <= 0.15
    assert np.mean((cat.loc[mid, "flags_irac1"] & int(UNRELIABLE_FLAGS)) != 0) < 0.1


def test_sky_shapes_to_each_mosaic(galaxy_field):
    field, paths = galaxy_field
    cfg = load_config(paths["config"])
    parts, idx = plan_cells(cfg)
    from dask_phot.images import read_region, sky_to_box

    mosaic = idx["irac1"][0]
    src = parts[0].sources.iloc[:50]
    xr, yr = sky_to_box(mosaic, src["ra"].to_numpy(), src["dec"].to_numpy(), 40)
    region = read_region(mosaic, xr, yr)
    x, y = region.wcs.all_world2pix(src["ra"].to_numpy(), src["dec"].to_numpy(), 0)
    shapes = source_shapes(src, region, x, y, cfg.priors)
    truth = field.images["irac1"].shapes
    rows = src["source_id"].to_numpy()
    np.testing.assert_allclose(shapes["r_e"], truth["r_e"][rows], rtol=1e-6, atol=1e-9)
    ext = shapes["r_e"] > 0
    d = (shapes["theta"][ext] - truth["theta"][rows][ext] + 90) % 180 - 90
    assert np.abs(d[truth["q"][rows][ext] < 0.95]).max() < 1e-3
    jac = wcs_jacobian(region.wcs, x[:1], y[:1])
    r, _, th = sky_to_pixel(jac, np.array([0.6]), np.array([0.5]), np.array([0.0]))
    assert r[0] == pytest.approx(1.0, rel=1e-3) and th[0] == pytest.approx(90.0, abs=0.1)


def test_shape_columns_errors_name_the_key(tmp_path):
    base = {"priors": {"path": "p.parquet"}, "bands": {"irac1": {"images": ["x.fits"]}}}
    with pytest.raises(ConfigError, match=r"priors\.shape_columns: has unknown key"):
        load_config({**base, "priors": {"path": "p.parquet",
                                        "shape_columns": {"radius": "R"}}}, environ={})
    with pytest.raises(ConfigError, match=r"priors\.shape_columns: must name the half-light"):
        load_config({**base, "priors": {"path": "p.parquet", "shape_columns": {"q": "Q"}}},
                    environ={})
    with pytest.raises(ConfigError, match=r"bands\.irac1\.model: must be one of"):
        load_config({**base, "bands": {"irac1": {"images": ["x.fits"], "model": "sersic"}}},
                    environ={})
    assert get_band("irac1").psf_wing_size == 49


def test_aperture_correction_scales_the_band_fluxes(galaxy_field):
    """A band's aperture correction multiplies its fluxes and errors (nothing else)."""
    _, paths = galaxy_field
    cfg = load_config(paths["config"], environ={})
    corrected = load_config(paths["config"], overrides={
        "bands": {"irac1": {"aperture_correction": 1.25}}}, environ={})
    parts, idx = plan_cells(cfg)
    part = min(parts, key=lambda p: len(p.sources))
    plain, _ = process_cell(part, idx, cfg)
    scaled, _ = process_cell(part, idx, corrected)
    np.testing.assert_allclose(scaled["flux_irac1"], 1.25 * plain["flux_irac1"], rtol=1e-12)
    np.testing.assert_allclose(scaled["flux_err_irac1"], 1.25 * plain["flux_err_irac1"],
                               rtol=1e-12)
    assert (scaled["flags_irac1"] == plain["flags_irac1"]).all()
