"""Bands with ``psf = "empirical"``: ePSFs built from each mosaic before the cells run.

The simulated mosaic's true PSF is the packaged golfir IRAC ch1 PSF convolved with a
lopsided elliptical kernel, rendered exactly on a phase lattice
(:class:`dask_phot.testing.finepsf.LatticePRF`), so the irac1 preset is wrong for it.
"""

from __future__ import annotations

import json
import os
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from dask_phot.bands import get_band
from dask_phot.config import ConfigError, load_config
from dask_phot.pipeline import read_catalog, run_catalog
from dask_phot.psf.empirical import EmpiricalPSFError
from dask_phot.testing.finepsf import LatticePRF, Lobe, simulate_lattice_field

KERNEL = (Lobe(0.85, 1.4, 0.7, 30.0), Lobe(0.15, 0.8, 0.8, 0.0, 0.6, 0.0))


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    blob = resources.files("dask_phot").joinpath("data", "psf", "irac_ch1_warm_psf.fits")
    with resources.as_file(blob) as path:
        golfir = fits.getdata(path).astype(np.float64)
    prf = LatticePRF(golfir, 0.1, 0.6, kernel=KERNEL, lattice=4)
    band = get_band("irac1")
    im = simulate_lattice_field(prf, area_arcmin2=5.0, seed=4, to_ujy=band.to_ujy, sky=0.05)
    d = tmp_path_factory.mktemp("epsf_field")
    fits.PrimaryHDU(im.data.astype(np.float32), header=im.wcs.to_header()).writeto(
        d / "irac1_sci.fits")
    fits.PrimaryHDU((1.0 / im.sigma**2).astype(np.float32) * np.ones(im.shape, np.float32),
                    header=im.wcs.to_header()).writeto(d / "irac1_wht.fits")
    pri = im.meta["priors"]
    pd.DataFrame({"source_id": pri["source_id"], "ra": pri["ra"], "dec": pri["dec"],
                  "flux_true": pri["flux"] * band.to_ujy}).to_parquet(d / "priors.parquet")
    return d


def config(d, out, *, where=None, storage=None, **band):
    where = where or str(d)
    return load_config({
        "priors": {"path": str(d / "priors.parquet"), "keep_columns": ["flux_true"]},
        "bands": {"irac1": {"images": [f"{where}/irac1_sci.fits"],
                            "noise": [f"{where}/irac1_wht.fits"], "noise_kind": "weight",
                            **band}},
        "output": {"path": str(out)}, "storage": storage or {}}, environ={})


def bright_ratio(cat: pd.DataFrame) -> float:
    snr = cat["flux_irac1"] / cat["flux_err_irac1"]
    sel = snr > 50
    assert sel.sum() >= 15
    return float(np.median(cat.loc[sel, "flux_irac1"] / cat.loc[sel, "flux_true"]))


def test_empirical_band_is_built_cached_recorded_and_right(mosaic, tmp_path) -> None:
    out = tmp_path / "cat"
    cfg = config(mosaic, out, psf="empirical", epsf={"grid": "none"})
    run_catalog(cfg)
    files = sorted((out / "psf" / "irac1").glob("irac1_sci-*.epsf.fits"))
    assert len(files) == 1
    record = json.loads((out / "dask_phot_run.json").read_text())["calibration"]["irac1"]
    assert record["psf"] == "empirical"
    (m,) = record["mosaics"]
    assert m["status"] == "built" and m["file"] == str(files[0]) and m["n_stars"] >= 10
    assert 0.9999 < m["aperture_correction"] < 1.03
    meta = pq.read_schema(out / "dataset" / "_common_metadata").metadata
    assert json.loads(meta[b"dask_phot_calibration"])["irac1"]["mosaics"][0]["file"] == m["file"]
    # 13 stars on this 5 arcmin2 mosaic: the join of their outer profile to golfir's
    # wings is noisy (+2%); with 64 stars (bench_epsf_flux.py) fluxes are within 0.2%
    ratio = bright_ratio(read_catalog(out))
    assert abs(ratio - 1) < 0.03
    # the ePSF's own flux error (a bootstrap of its stars) is recorded and in every error
    assert 0 < m["flux_error"] < 0.05
    cat = read_catalog(out)
    ok = np.isfinite(cat["flux_irac1"]) & np.isfinite(cat["flux_err_irac1"])
    assert ok.sum() > 20
    floor = m["flux_error"] * cat.loc[ok, "flux_irac1"].abs()
    assert np.all(cat.loc[ok, "flux_err_irac1"] >= 0.999 * floor)
    # a second run reuses the file
    stamp = os.stat(files[0]).st_mtime_ns
    run_catalog(cfg)
    record = json.loads((out / "dask_phot_run.json").read_text())["calibration"]["irac1"]
    assert record["mosaics"][0]["status"] == "cached"
    assert os.stat(files[0]).st_mtime_ns == stamp
    # the cells are keyed on their mosaic's ePSF: kept while it stands, fitted again
    # when it would be rebuilt (other priors on the mosaic, say)
    from dask_phot.pipeline import plan as plan_module

    assert not plan_module.prepare_run(cfg).todo
    real = plan_module.epsf_keys

    def rebuilt(*args):
        return {b: [k[::-1] for k in keys] for b, keys in real(*args).items()}

    plan_module.epsf_keys = rebuilt
    try:
        again = plan_module.prepare_run(cfg)
    finally:
        plan_module.epsf_keys = real
    assert again.todo and set(again.reasons.values()) == {"mosaic irac1 changed"}
    # the preset is wrong for this mosaic
    preset = bright_ratio(read_catalog(run_catalog(config(mosaic, tmp_path / "p")).output))
    assert preset < 0.9


def test_too_few_stars_stop_the_run_or_fall_back(mosaic, tmp_path) -> None:
    strict = config(mosaic, tmp_path / "a", psf="empirical", epsf={"min_stars": 5000})
    with pytest.raises(EmpiricalPSFError) as err:
        run_catalog(strict)
    text = str(err.value)
    assert "\n" not in text and text.startswith("bands.irac1: no ePSF for irac1_sci.fits: ")
    assert "5000 needed" in text and "too faint" in text and "psf_fallback" in text
    assert not (tmp_path / "a" / "dataset").exists()
    loose = config(mosaic, tmp_path / "b", psf="empirical", psf_fallback="preset",
                   epsf={"min_stars": 5000})
    run_catalog(loose)
    record = json.loads((tmp_path / "b" / "dask_phot_run.json").read_text())["calibration"]
    (m,) = record["irac1"]["mosaics"]
    assert m["status"] == "fallback" and m["reason"] == "too_few_stars"
    assert m["psf_file"] == "irac_ch1_warm_psf.fits" and "5000 needed" in m["message"]


def test_only_saturated_stars_is_one_line(mosaic, tmp_path) -> None:
    cfg = config(mosaic, tmp_path / "s", psf="empirical", epsf={"saturation": 0.06})
    with pytest.raises(EmpiricalPSFError, match=r"^bands\.irac1: no ePSF for irac1_sci\.fits: "
                       r"every bright star candidate is saturated") as err:
        run_catalog(cfg)
    assert err.value.reason == "saturated"


def test_psf_keys_are_checked_and_recorded(mosaic, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"bands\.irac1\.epsf: .*unknown option.*oversample"):
        config(mosaic, tmp_path, psf="empirical", epsf={"oversample": 4})
    with pytest.raises(ConfigError, match=r"bands\.irac1\.psf: "):
        config(mosaic, tmp_path, psf="measured")
    cfg = config(mosaic, tmp_path, psf="empirical", epsf={"grid": [1, 2]})
    assert cfg.bands[0].epsf == {"grid": (1, 2)}
    assert load_config(cfg.to_dict(), environ={}) == cfg
    assert cfg.config_hash() != config(mosaic, tmp_path).config_hash()
    assert "psf" not in config(mosaic, tmp_path).to_dict()["bands"]["irac1"]


@pytest.mark.slow
def test_epsfs_are_built_on_the_cluster_from_s3(mosaic, s3_server, tmp_path) -> None:
    from distributed import Client, LocalCluster

    s3_server.create_bucket("epsf-field", public=True)
    for name in ("irac1_sci.fits", "irac1_wht.fits"):
        s3_server.upload(mosaic / name, "epsf-field", name)
    cfg = config(mosaic, tmp_path / "cat", where="s3://epsf-field", psf="empirical",
                 storage={"endpoint_url": s3_server.endpoint_url, "anon": True})
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        summary = run_catalog(cfg, client=client)
        tasks = client.run_on_scheduler(
            lambda dask_scheduler: [str(k) for k in dask_scheduler.task_prefixes])
    assert not summary.failures and "epsf" in tasks
    record = json.loads((tmp_path / "cat" / "dask_phot_run.json").read_text())["calibration"]
    (m,) = record["irac1"]["mosaics"]
    assert m["status"] == "built" and m["mosaic"] == "s3://epsf-field/irac1_sci.fits"
    assert abs(bright_ratio(read_catalog(tmp_path / "cat")) - 1) < 0.03


def gaussian_nodes(sigma: float, size: int, over: int = 4) -> np.ndarray:
    """A pixel-integrated circular Gaussian (unit flux) on an ePSF node grid."""
    from scipy.special import erf

    n = over * (size - 1) + 5
    u = (np.arange(n) - (n - 1) / 2) / over
    s = sigma * np.sqrt(2.0)
    p = 0.5 * (erf((u + 0.5) / s) - erf((u - 0.5) / s))
    return np.outer(p, p)


def test_cells_use_their_mosaics_epsf_and_the_grid_at_their_centre(tmp_path) -> None:
    """Two mosaics, one with a 1x2 grid: each box gets its mosaic's ePSF, the grid's at
    its centre (a row of cells: the nearest; see PSFGrid.weights); the flux factor is the
    ePSF's light beyond its box."""
    import dataclasses

    from dask_phot.images import Region
    from dask_phot.pipeline.psfs import MosaicPSF, band_psf
    from dask_phot.psf import EmpiricalPSF
    from dask_phot.psf.stars import StarSelection
    from dask_phot.psf.wings import WingMatch
    from dask_phot.testing import field_wcs

    size, shape = 21, (200, 400)
    narrow, wide = gaussian_nodes(1.2, size), gaussian_nodes(2.0, size)
    sel = StarSelection(pd.DataFrame({"x": [], "y": [], "flux": [], "snr": [],
                                      "concentration": [], "reason": []}))
    stars = pd.DataFrame({"x": [1.0], "y": [2.0]})
    wing = WingMatch("none", 5.0, 9.0, 0.0, 1.0)
    grid = EmpiricalPSF(0.5 * (narrow + wide), 4, 0.6, size, sel, stars, wing, mode="grid",
                        cells=np.stack([narrow, wide]), cell_x=np.array([99.5, 299.5]),
                        cell_y=np.array([99.5, 99.5]), cell_stars=np.array([30, 30]),
                        grid_shape=(1, 2), name="a.fits")
    one = dataclasses.replace(grid, array=0.98 * wide, mode="global", cells=None,
                              grid_shape=None, name="b.fits")
    wcs_a = field_wcs((150.0, 2.0), 0.6, shape)
    wcs_b = field_wcs((150.2, 2.0), 0.6, shape)
    entries = []
    for res, wcs in ((grid, wcs_a), (one, wcs_b)):
        path = tmp_path / res.name.replace(".fits", ".epsf.fits")
        res.write_fits(path)
        entries.append(MosaicPSF(res.name, wcs, str(path), {"status": "built"}))
    cfg = config(tmp_path, tmp_path / "o", psf="empirical")
    band = dataclasses.replace(cfg.bands[0], mosaic_psfs=tuple(entries))

    def box(wcs, x0, y0):
        w = wcs.deepcopy()
        w.wcs.crpix = w.wcs.crpix - np.array([x0, y0])
        return Region(np.zeros((60, 60)), None, x0, y0, w, 0)

    fwhm = {}
    for label, wcs, x0 in (("left", wcs_a, 70), ("mid", wcs_a, 150), ("right", wcs_a, 270),
                           ("b", wcs_b, 170)):
        psf, factor = band_psf(band, box(wcs, x0, 70))
        fwhm[label] = psf.fwhm
        assert psf.size == 21 and psf.wing_size == size
        assert factor == pytest.approx(1 / 0.98 if label == "b" else 1.0, rel=1e-3)
    assert fwhm["left"] == pytest.approx(2.3548 * 1.2, abs=0.3)
    assert fwhm["right"] == pytest.approx(2.3548 * 2.0, abs=0.3)
    assert fwhm["mid"] == fwhm["left"]
    assert fwhm["b"] == pytest.approx(fwhm["right"], abs=0.05)
    # a global ePSF is built once for every box of its mosaic; a grid's blend per box
    assert band_psf(band, box(wcs_b, 20, 90))[0] is band_psf(band, box(wcs_b, 300, 10))[0]
    assert band_psf(band, box(wcs_a, 70, 70))[0] is not band_psf(band, box(wcs_a, 270, 70))[0]
    with pytest.raises(RuntimeError, match="matches none"):
        band_psf(band, box(field_wcs((151.0, 2.0), 0.6, shape), 0, 0))


def test_band_wings_come_from_the_band_psf_file() -> None:
    from dask_phot.commands.psf import _wings
    from dask_phot.pipeline.psfs import band_wings

    wings = band_wings(get_band("irac1"))
    assert wings.kind == "psf" and wings.array_scale == 0.1
    assert wings.includes_pixel_response is False and wings.label == "irac_ch1_warm_psf.fits"
    assert _wings("irac1", None).label == wings.label
    assert band_wings(get_band("irac1_notebook")).includes_pixel_response is True


def test_reference_stars_are_the_candidates(mosaic, tmp_path) -> None:
    pri = pd.read_parquet(mosaic / "priors.parquet")
    pri.nlargest(40, "flux_true")[["ra", "dec"]].to_csv(tmp_path / "stars.csv", index=False)
    out = tmp_path / "cat"
    run_catalog(config(mosaic, out, psf="empirical", psf_stars=str(tmp_path / "stars.csv")))
    record = json.loads((out / "dask_phot_run.json").read_text())["calibration"]["irac1"]
    assert record["psf_stars"] == str(tmp_path / "stars.csv")
    (m,) = record["mosaics"]
    assert m["status"] == "built" and m["stars"].startswith("40 candidate(s)")
    with pytest.raises(EmpiricalPSFError, match=r"^bands\.irac1\.psf_stars: .*nope\.csv"):
        run_catalog(config(mosaic, tmp_path / "x", psf="empirical",
                           psf_stars=str(tmp_path / "nope.csv")))
