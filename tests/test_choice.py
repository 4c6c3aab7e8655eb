"""Point source or galaxy, chosen by the fit, for priors without shapes
(:mod:`dask_phot.engine.choice`): truth rendered independently of the engine
(:mod:`dask_phot.testing.galaxies`, fine grid), elliptical Sersic galaxies that the
choice's round models only approximate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_phot import forced_photometry
from dask_phot.bands import get_band
from dask_phot.config import load_config
from dask_phot.pipeline import process_cell
from dask_phot.pipeline.run import plan_cells
from dask_phot.schema import MODEL_CODES
from dask_phot.testing import simulate_image, simulate_to_dir


@pytest.fixture(scope="module")
def isolated():
    """IRAC ch1 (golfir PSF): 144 isolated sources at S/N 50, a third point sources,
    the rest n=1 or n=4 galaxies of r_e 0.3" to 1.2", axis ratios 0.5-1."""
    psf = get_band("irac1").load_psf()
    rng = np.random.default_rng(8)
    n, side = 144, 37
    gx, gy = np.meshgrid(np.arange(12), np.arange(12))
    x = (gx.ravel() + 0.5) * side + rng.uniform(-0.5, 0.5, n)
    y = (gy.ravel() + 0.5) * side + rng.uniform(-0.5, 0.5, n)
    r_e = np.tile([0.0, 0.5, 1.0, 2.0, 0.0, 1.5], n // 6)  # pixels of 0.6"
    shapes = {"r_e": r_e, "q": rng.uniform(0.5, 1.0, n), "theta": rng.uniform(0, 180, n),
              "n": np.where(rng.random(n) < 0.5, 1.0, 4.0)}
    flux = np.full(n, 1000.0)
    point = psf.stamps(np.zeros(1), np.zeros(1))[0][0]
    sigma = 1000.0 / 50.0 * np.sqrt(np.sum(point**2))
    im = simulate_image((12 * side, 12 * side), x, y, flux, psf, seed=rng, sigma=sigma,
                        shapes=shapes)
    return psf, im, x, y, flux, shapes, sigma


def test_choice_recovers_galaxy_fluxes_without_shapes(isolated):
    psf, im, x, y, flux, shapes, sigma = isolated
    points = forced_photometry(im.data, psf, x, y, sigma=sigma)
    chosen = forced_photometry(im.data, psf, x, y, sigma=sigma, choose_models=True)
    gal = shapes["r_e"] > 0
    assert chosen.chosen_r_e is not None and np.isfinite(chosen.chosen_r_e).all()
    # galaxies of 0.6" and more all become galaxies; their fluxes lose the point fit's bias
    big = shapes["r_e"] >= 1.0
    assert (chosen.chosen_r_e[big] > 0).all()
    ratio_points = np.median(points.flux[big] / flux[big])
    ratio_chosen = np.median(chosen.flux[big] / flux[big])
    assert ratio_points < 0.8 and abs(ratio_chosen - 1) < 0.03, (ratio_points, ratio_chosen)
    small = shapes["r_e"] == 0.5
    assert abs(np.median(chosen.flux[small] / flux[small]) - 1) < 0.03
    # the Sersic index follows the truth's more often than not
    agree = (chosen.chosen_n[big] == shapes["n"][big])
    assert agree.mean() > 0.6
    # point sources stay point sources (threshold: chi2 gain 9), their fluxes unchanged
    assert np.mean(chosen.chosen_r_e[~gal] > 0) <= 0.05
    np.testing.assert_allclose(np.median(chosen.flux[~gal] / flux[~gal]), 1.0, atol=0.01)
    # the chosen galaxies' errors include the spread their shapes allow
    picked = chosen.chosen_r_e > 0
    assert (chosen.flux_err[picked] >= points.flux_err[picked] * 0.99).all()


def test_choice_is_scene_only(isolated):
    psf, im, x, y, _, _, sigma = isolated
    with pytest.raises(ValueError, match="choose_models needs mode='scene'"):
        forced_photometry(im.data, psf, x, y, sigma=sigma, choose_models=True, mode="cutout")


def test_given_shapes_are_kept(isolated):
    """Sources with shapes keep them; only the shapeless are tried."""
    psf, im, x, y, _flux, shapes, sigma = isolated
    half = {k: np.where(np.arange(x.size) % 2 == 0, v, 0.0 if k == "r_e" else v)
            for k, v in shapes.items()}
    res = forced_photometry(im.data, psf, x, y, sigma=sigma, shapes=half, choose_models=True)
    given = half["r_e"] > 0
    assert np.isnan(res.chosen_r_e[given]).all()
    assert np.isfinite(res.chosen_r_e[~given]).any()


@pytest.mark.slow
def test_pipeline_band_model_choose(tmp_path):
    """``model = "choose"``: the catalog says which sources became galaxies (code 3), and
    their fluxes are nearer the truth than the point fits."""
    _, paths = simulate_to_dir(tmp_path, area_arcmin2=2.0, bands=["irac1"], seed=4,
                               galaxies=0.7)

    def run(model: str) -> pd.DataFrame:
        cfg = load_config({  # priors without shapes
            "priors": {"path": str(paths["priors"]), "keep_columns": ["flux_true_irac1"]},
            "bands": {"irac1": {"images": [str(paths["irac1_sci"])],
                                "noise": [str(paths["irac1_wht"])], "model": model}},
            "output": {"path": str(tmp_path / "out")}})
        parts, idx = plan_cells(cfg)
        return pd.concat([process_cell(p, idx, cfg)[0] for p in parts], ignore_index=True)

    points, chosen = run("point"), run("choose")
    assert (points["model_irac1"].isin([MODEL_CODES["point"], MODEL_CODES["none"]])).all()
    picked = chosen["model_irac1"] == MODEL_CODES["chosen"]
    assert picked.sum() >= 10
    snr = chosen["flux_true_irac1"] / chosen["flux_err_irac1"]
    sel = picked & (snr > 20)
    bias_points = np.median(points.loc[sel, "flux_irac1"] / points.loc[sel, "flux_true_irac1"])
    bias_chosen = np.median(chosen.loc[sel, "flux_irac1"] / chosen.loc[sel, "flux_true_irac1"])
    assert abs(bias_chosen - 1) < 0.5 * abs(bias_points - 1), (bias_points, bias_chosen)
