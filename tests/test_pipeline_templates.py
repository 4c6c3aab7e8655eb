"""Templates through the pipeline: a band with ``model = "template"`` fitted per sky cell
from the sharp mosaic of ``[templates]`` (its box read per cell), segment labels tied to
the priors' ids, priors without a segment fitted as point sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from dask_phot.config import ConfigError, load_config
from dask_phot.pipeline import process_cell
from dask_phot.pipeline.plan import plan_cells
from dask_phot.psf import OversampledPSF
from dask_phot.schema import MODEL_CODES, Flag
from dask_phot.templates import fit_templates
from dask_phot.templates.segments import measure_segments

IRAC1_PSF = Path(__file__).resolve().parents[1] / "dask_phot" / "data" / "psf" \
    / "irac_ch1_warm_psf.fits"


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    """A 75" simulated HST/IRAC pair on disk: sharp mosaic, its map (labels = priors ids),
    the sharp PSF, the IRAC-like mosaic, priors (segments' centroids and three priors
    without a segment) and a config whose irac1 band is fitted with templates."""
    pytest.importorskip("galsim")
    import tomli_w

    from dask_phot.detect import DetectionParams, detect_sources
    from dask_phot.testing.pairs import simulate_pair

    out = tmp_path_factory.mktemp("tpl_pipeline")
    psf = OversampledPSF.from_fits(IRAC1_PSF, 0.6, size=21)
    sim = simulate_pair(psf, size_arcsec=75.0, seed=4)
    det = detect_sources(sim.hires, params=DetectionParams(thresh=1.5, minarea=5,
                                                           deblend_cont=1.0),
                         rms=sim.hires_sigma, background=0.0)
    seg = det.segmap.astype(np.int32)
    fits.writeto(out / "sharp.fits", sim.hires.astype(np.float32), sim.hires_wcs.to_header())
    fits.writeto(out / "sharp_seg.fits", seg, sim.hires_wcs.to_header())
    fits.writeto(out / "sharp_psf.fits", sim.hires_psf.array.astype(np.float32))
    fits.writeto(out / "irac1.fits", sim.image.astype(np.float32), sim.wcs.to_header())
    t = measure_segments(sim.hires, seg)
    sky = sim.hires_wcs.pixel_to_world(t.x, t.y)
    # three priors the sharp image lacks: undetected sources' true positions
    lone = sim.truth[[not (seg[round(v.yh), round(v.xh)]) for v in
                      sim.truth.itertuples()]].head(3)
    ids = np.concatenate([t.id, 100000 + np.arange(len(lone))])
    priors = pd.DataFrame({"source_id": ids,
                           "ra": np.concatenate([sky.ra.deg, lone.ra]),
                           "dec": np.concatenate([sky.dec.deg, lone.dec])})
    priors.to_parquet(out / "priors.parquet")
    config = {"priors": {"path": "priors.parquet"},
              "bands": {"irac1": {"images": ["irac1.fits"], "noise_kind": "none",
                                  "model": "template"}},
              "templates": {"image": "sharp.fits", "segmap": "sharp_seg.fits",
                            "psf": "sharp_psf.fits", "hires_background": "none",
                            "grow": 0.6},
              "output": {"path": "catalog"}}
    (out / "config.toml").write_text(tomli_w.dumps(config))
    return sim, seg, psf, out


def _run(out: Path, **overrides):  # type: ignore[no-untyped-def]
    cfg = load_config(out / "config.toml", overrides=overrides or None, environ={})
    parts, idx = plan_cells(cfg)
    return pd.concat([process_cell(p, idx, cfg)[0] for p in parts], ignore_index=True), cfg


@pytest.mark.slow
def test_template_band_in_cells_matches_one_whole_fit(pair_dir) -> None:  # type: ignore[no-untyped-def]
    sim, seg, psf, out = pair_dir
    cat, cfg = _run(out, cells={"order": 13})  # 26" cells: a dozen, each with its margin
    assert len(plan_cells(cfg)[0]) >= 6
    assert cfg.band("irac1").model == "template" and cfg.templates.grow == 0.6
    cat = cat.set_index("source_id")
    lone = cat.index >= 100000
    assert (cat.loc[lone, "model_irac1"] == MODEL_CODES["point"]).all()
    tpl = cat["model_irac1"] == MODEL_CODES["template"]
    assert tpl.sum() > 0.6 * (~lone).sum()
    # the same inputs fitted as one image: cells agree within a fraction of an error
    whole = fit_templates(sim.image, sim.wcs, psf, sim.hires, sim.hires_wcs, sim.hires_psf,
                          seg, hires_background="none", grow=0.6).set_index("id")
    to_ujy = cfg.band("irac1").band.to_ujy * cfg.band("irac1").band.flux_correction()
    ids = cat.index[~lone]
    a = cat.loc[ids, "flux_irac1"].to_numpy() / to_ujy
    b = whole.loc[ids, "flux"].to_numpy()
    err = whole.loc[ids, "flux_err"].to_numpy()
    ok = np.isfinite(a) & np.isfinite(b) & (b > 5 * err)
    assert ok.sum() > 40
    d = np.abs(a[ok] - b[ok]) / err[ok]
    assert np.median(d) < 0.1 and np.mean(d < 0.5) > 0.9, (np.median(d), np.mean(d < 0.5))
    # and against the truth: segments owned by one source
    share = sim.segment_truth(seg)
    share = share[share.label > 0].sort_values("share").groupby("label").tail(1)
    own = share[share.share > 0.8].set_index("label").source
    own = own[own.index.isin(ids)]
    true = sim.truth.flux.to_numpy()[own.to_numpy()] * to_ujy
    meas = cat.loc[own.index, "flux_irac1"].to_numpy()
    snr = true / cat.loc[own.index, "flux_err_irac1"].to_numpy()
    sel = (snr > 10) & np.isfinite(meas)
    assert sel.sum() > 30 and abs(np.median(meas[sel] / true[sel]) - 1) < 0.03
    fitted = np.isfinite(cat["flux_irac1"])
    assert (cat.loc[fitted, "flags_irac1"] & int(Flag.NOT_COVERED) == 0).all()


def test_template_band_needs_templates_section(tmp_path: Path) -> None:
    base = {"priors": {"path": "p.parquet"},
            "bands": {"irac1": {"images": ["x.fits"], "model": "template"}}}
    with pytest.raises(ConfigError, match=r"bands\.irac1\.model: \"template\" needs "
                                          r"\[templates\] image, segmap and psf"):
        load_config(base, environ={})
    cfg = load_config({**base, "templates": {"image": "s.fits", "segmap": "m.fits",
                                             "psf": "p.fits", "grow": 0.3}}, environ={})
    assert cfg.templates.given and cfg.templates.fit_options()["grow"] == 0.3
    assert cfg.config_hash() != load_config(
        {**base, "templates": {"image": "s.fits", "segmap": "m.fits", "psf": "p.fits"}},
        environ={}).config_hash()
    with pytest.raises(ConfigError, match=r"templates\.hires_background: must be one of"):
        load_config({**base, "templates": {"image": "s.fits", "segmap": "m.fits",
                                           "psf": "p.fits", "hires_background": "sky"}},
                    environ={})


def _small_inputs(tmp_path: Path, *, seg_shape=(200, 200), priors_at=(150.0, 2.0),
                  psf_scale: float = 0.0) -> Path:
    """Small [templates] inputs for the checks made before a run."""
    import tomli_w

    from dask_phot.testing.pairs import tan_wcs

    hw = tan_wcs(0.06, (200, 200), (150.0, 2.0))
    lw = tan_wcs(0.6, (30, 30), (150.0, 2.0))
    fits.writeto(tmp_path / "sharp.fits", np.zeros((200, 200), np.float32), hw.to_header())
    fits.writeto(tmp_path / "seg.fits", np.zeros(seg_shape, np.int32), hw.to_header())
    g = np.arange(-15, 16.0)
    fits.writeto(tmp_path / "hpsf.fits", np.exp(-0.5 * np.add.outer(g**2, g**2) / 1.5**2))
    fits.writeto(tmp_path / "irac1.fits", np.zeros((30, 30), np.float32), lw.to_header())
    pd.DataFrame({"source_id": [1], "ra": [priors_at[0]], "dec": [priors_at[1]]}).to_parquet(
        tmp_path / "priors.parquet")
    cfg = {"priors": {"path": "priors.parquet"},
           "bands": {"irac1": {"images": ["irac1.fits"], "model": "template"}},
           "templates": {"image": "sharp.fits", "segmap": "seg.fits", "psf": "hpsf.fits",
                         "psf_pixel_scale": psf_scale}}
    (tmp_path / "config.toml").write_text(tomli_w.dumps(cfg))
    return tmp_path / "config.toml"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seg_shape": (100, 200)}, r"seg\.fits: shape \(100, 200\) differs from .*sharp\.fits"),
    ({"priors_at": (151.0, 2.0)}, r"sharp\.fits: the sharp mosaic holds none of the 1 priors"),
    ({"psf_scale": 0.2}, r"hpsf\.fits: hires_psf: pixel scale 0\.2\"/px is coarser"),
])
def test_bad_template_inputs_stop_the_run_naming_the_file(tmp_path: Path, kwargs, message
                                                          ) -> None:  # type: ignore[no-untyped-def]
    path = _small_inputs(tmp_path, **kwargs)
    cfg = load_config(path, environ={})
    with pytest.raises(ConfigError, match=message):
        plan_cells(cfg)


def test_bad_template_inputs_exit_2(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``dask-phot run``: one line naming the file, exit code 2."""
    from dask_phot.commands.main import main

    path = _small_inputs(tmp_path, seg_shape=(100, 200))
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seg.fits: shape (100, 200) differs" in err[0], err


@pytest.mark.slow
def test_report_draws_template_bands_with_templates(pair_dir) -> None:  # type: ignore[no-untyped-def]
    """``dask-phot report``'s model of a template band: the catalogue's fluxes drawn
    with the templates leave residuals near the noise (sigma 1); the same fluxes
    drawn as point sources do not."""
    from dataclasses import replace

    from dask_phot.report.model_images import RunImages, band_cutout

    _, _, _, out = pair_dir
    cat, cfg = _run(out)
    run = RunImages.from_result(out, cfg)
    bright = cat[cat["model_irac1"] == MODEL_CODES["template"]].nlargest(1, "flux_irac1")
    ra, dec = float(bright.ra.iloc[0]), float(bright.dec.iloc[0])
    panel = band_cutout(run, cat, "irac1", ra, dec, size_arcsec=20.0)
    resid = panel.data - panel.model
    assert np.std(panel.data) > 5 and np.std(resid) < 1.5, (np.std(panel.data),
                                                            np.std(resid))
    as_points = replace(cfg, bands=tuple(replace(b, model="point") for b in cfg.bands))
    points = band_cutout(RunImages(as_points, run.indexes), cat, "irac1", ra, dec,
                         size_arcsec=20.0)
    assert np.std(points.data - points.model) > 1.5 * np.std(resid)
