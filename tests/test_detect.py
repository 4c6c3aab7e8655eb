"""Detection: golden comparison with SExtractor on a real image, completeness against
S/N on simulated images, coverage rules, source-masked background, cosmic-ray flags."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sep", reason="the detect extra (sep) is not installed")

from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning
from scipy.spatial import cKDTree

from dask_phot.aperture import aperture_photometry, kron_photometry
from dask_phot.detect import (
    COSMIC_RAY,
    SINGLE_EXPOSURE,
    DetectionParams,
    detect_sources,
    measure_background,
    noise_map,
    read_conv_file,
    threshold_image,
)
from dask_phot.psf import gaussian_psf
from dask_phot.testing import noise_equivalent_area, simulate_image

SEX_DIR = Path(__file__).parents[2] / "shared" / "data" / "sep-emmi-sextractor"


def _fits(path: Path) -> np.ndarray:
    with warnings.catch_warnings():  # the ESO-LOG cards of this 1992 header are not FITS
        warnings.simplefilter("ignore", AstropyUserWarning)
        with fits.open(path, memmap=False) as hdul:
            return hdul[0].data.astype(np.float64)


@pytest.fixture(scope="module")
def sextractor():
    if not (SEX_DIR / "image.cat").exists():
        pytest.skip(f"SExtractor reference data not found at {SEX_DIR} (../shared/data absent)")
    ref = np.loadtxt(SEX_DIR / "image.cat")
    return {"image": _fits(SEX_DIR / "image.fits"), "back": _fits(SEX_DIR / "back.fits"),
            "rms": _fits(SEX_DIR / "rms.fits"), "cat": ref[np.argsort(ref[:, 2])],
            "kernel": read_conv_file(SEX_DIR / "default.conv")}


def test_golden_against_sextractor(sextractor):
    """SExtractor 2.5 on the ESO/EMMI image (PROVENANCE.md; default.sex: BACK_SIZE 64,
    BACK_FILTERSIZE 3, DETECT_THRESH 1.5 on the global RMS, DETECT_MINAREA 5, the
    3x3 default.conv filter, DEBLEND_MINCONT 1 (no deblending), CLEAN 1, global
    background photometry, PHOT_APERTURES 10 (diameter), GAIN 0, PHOT_AUTOPARAMS 2.5, 0).

    Tolerances (measured agreement in brackets):
    - background map: rtol 1e-5 (identical: max |rel| 0);
    - RMS map: rtol 1e-4 (identical: 0);
    - detections: the same count, 65 (65); positions within 1e-3 px (5.1e-5 px);
    - FLUX_APER (r = 5 px, 5x5 sub-pixels as SExtractor): rtol 2e-4 (4.4e-7);
      FLUXERR_APER: rtol 1e-5 (1.2e-7);
    - Kron: for >= 80% of sources (54/64 with a SExtractor Kron radius),
      2.5 x kron_radius within 0.01 of KRON_RADIUS (the catalog's rounding) and
      FLUX_AUTO within rtol 1e-4 (1e-7 median); the others have neighbours in
      the Kron window, which SExtractor replaces by their mirror images and
      sep masks.
    """
    data, ref = sextractor["image"], sextractor["cat"]
    bkg = measure_background(data, box_size=64, filter_size=3, mask_sources=False)
    np.testing.assert_allclose(bkg.back, sextractor["back"], rtol=1e-5)
    np.testing.assert_allclose(bkg.rms, sextractor["rms"], rtol=1e-4)
    params = DetectionParams(thresh=1.5, minarea=5, deblend_nthresh=32, deblend_cont=1.0,
                             clean=True, clean_param=1.0)
    det = detect_sources(data, params=params, background=bkg, rms=bkg.global_rms,
                         kernel=sextractor["kernel"])
    assert len(det) == len(ref) == 65
    t = det.table.sort_values("y").reset_index(drop=True)
    np.testing.assert_allclose(t["x"], ref[:, 1] - 1.0, atol=1e-3)  # SExtractor is 1-based
    np.testing.assert_allclose(t["y"], ref[:, 2] - 1.0, atol=1e-3)
    ap = aperture_photometry(data, t["x"], t["y"], radii=[5.0], annulus=None,
                             background=bkg.back, rms=bkg.global_rms, subpix=5)
    np.testing.assert_allclose(ap["flux_aper_5"], ref[:, 12], rtol=2e-4)
    np.testing.assert_allclose(ap["flux_err_aper_5"], ref[:, 13], rtol=1e-5)
    kron = kron_photometry(data, t["x"], t["y"], t["a"], t["b"], t["theta"], kron_factor=2.5,
                           min_kron_radius=0.0, min_diameter=0.0, background=bkg.back,
                           rms=bkg.global_rms, segmap=det.segmap, seg_id=t["id"])
    has = ref[:, 14] > 0
    radius_ok = np.abs(2.5 * kron["kron_radius"].to_numpy() - ref[:, 14]) < 0.0101
    flux_ok = np.abs(kron["flux_auto"].to_numpy() / np.where(has, ref[:, 15], 1) - 1) < 1e-4
    assert (radius_ok & flux_ok)[has].mean() >= 0.8


def test_completeness_against_snr():
    """Isolated Gaussian (FWHM 3 px) point sources with PSF S/N 1-40 on white noise,
    default DetectionParams (1.5 sigma, 5 px, FWHM-2 kernel). Measured completeness:
    S/N 3-4: 0, 4-5: 0.15, 5-7: 0.28, 7-10: 0.96, >=10: 1.00; no false detections."""
    psf = gaussian_psf(3.0)
    rng = np.random.default_rng(7)
    n, spacing = 24, 24.0
    c = spacing * (np.arange(n) + 1.0)
    x, y = (v.ravel() + rng.uniform(-0.5, 0.5, n * n) for v in np.meshgrid(c, c))
    snr = np.geomspace(1.0, 40.0, x.size)
    rng.shuffle(snr)
    flux = snr * np.sqrt(noise_equivalent_area(psf))  # sigma = 1
    im = simulate_image((int(spacing * (n + 1)),) * 2, x, y, flux, psf, seed=8, sigma=1.0,
                        sky=10.0)
    det = detect_sources(im.data)
    dist, _ = cKDTree(det.table[["x", "y"]].to_numpy()).query(np.c_[x, y])
    found = dist < 1.5
    edges = [1, 3, 5, 7, 10, 15, 40]
    curve = [found[(snr >= a) & (snr < b)].mean() for a, b in itertools.pairwise(edges)]
    assert curve[0] == 0.0 and curve[1] < 0.5          # S/N < 5: mostly missed
    assert curve[3] > 0.9 and min(curve[4:]) >= 0.99   # S/N > 10: all found
    assert np.all(np.diff(curve) >= -0.02)             # rises with S/N
    assert len(det) - found.sum() <= 2                 # (almost) no spurious detections


def _coverage_scene():
    """Four sources: A on 2 exposures, B (faint) and C (bright) on one, D on the edge of
    zero coverage; returns the image, coverage and positions."""
    psf = gaussian_psf(2.5)
    x = np.array([30.0, 90.0, 130.0, 60.0])
    y = np.array([40.0, 40.0, 60.0, 97.0])
    im = simulate_image((120, 160), x, y, [150.0, 150.0, 3000.0, 3000.0], psf, seed=3)
    cov = np.full(im.shape, 2.0)
    cov[:, 75:] = 1.0
    cov[100:, :] = 0.0
    return im, cov, x, y


def test_coverage_rules_minarea_single_and_zero_coverage():
    im, cov, _, _ = _coverage_scene()
    data = np.where(cov > 0, im.data, 0.0)
    plain = detect_sources(data, params=DetectionParams(thresh=3.0),
                           background_kwargs={"box_size": 32})
    npix = {round(r.x): int(r.npix) for r in plain.table.itertuples()}
    assert {30, 90, 130} <= set(npix)
    params = DetectionParams(thresh=3.0, minarea_single=npix[90] + 1)
    det = detect_sources(data, params=params, coverage=cov, background_kwargs={"box_size": 32})
    kept = {round(v) for v in det.table["x"]}
    assert kept == {30, 130}  # B too small on one exposure, D touches zero coverage
    assert det.n_removed["zero_coverage"] >= 1 and det.n_removed["single_exposure_minarea"] == 1
    flags = dict(zip(det.table["x"].round().astype(int), det.table["flag"], strict=True))
    assert flags[130] & SINGLE_EXPOSURE and not flags[30] & SINGLE_EXPOSURE
    removed_ids = set(plain.table["id"]) - set(det.table["id"])
    assert removed_ids and not np.isin(det.segmap, list(removed_ids)).any()
    crs = np.zeros(im.shape, bool)
    crs[60, 136] = True
    flagged = detect_sources(data, params=params, coverage=cov, cosmic_rays=crs,
                             background_kwargs={"box_size": 32})
    assert len(flagged) == 2  # flagged, not dropped
    assert flagged.table.loc[flagged.table["x"].round() == 130, "flag"].iloc[0] & COSMIC_RAY


def test_background_masks_sources_and_threshold_image():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:256, :256]
    galaxy = 40.0 * np.exp(-np.hypot(xx - 128, yy - 128) / 12.0)
    img = 100.0 + galaxy + rng.normal(0.0, 1.0, galaxy.shape)
    masked = measure_background(img, box_size=32, mask_sources=True)
    unmasked = measure_background(img, box_size=32, mask_sources=False)
    assert abs(masked.back[128, 128] - 100.0) < abs(unmasked.back[128, 128] - 100.0)
    assert masked.mask[128, 128] and not masked.mask[5, 5]
    thr = threshold_image(masked, 3.0)
    assert np.allclose(thr, masked.back + 3.0 * masked.rms)
    err = noise_map(masked, np.full(img.shape, 100.0))  # relative weights rescaled
    assert np.median(err) == pytest.approx(1.0, rel=0.05)


def test_detection_params_validate():
    with pytest.raises(ValueError, match="minarea"):
        DetectionParams(minarea=0)
    with pytest.raises(ValueError, match="deblend_cont"):
        DetectionParams(deblend_cont=2.0)
    assert DetectionParams(kernel_fwhm=0.0).kernel() is None


# --------------------------------------------------------------------------------------
# Many mosaics: tiles, groups, merged priors, reference matching, CLI
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharp_field(tmp_path_factory):
    """Two sharp bands (HST-like f814w, f160w) and IRAC ch1 over 0.5 arcmin2, on disk."""
    from dask_phot.bands import get_band
    from dask_phot.testing import SimBand, simulate_field, write_field

    irac = get_band("irac1")
    bands = [SimBand("f814w", gaussian_psf(2.0, pixel_scale=0.15), 0.1, 0.05, sky=0.01),
             SimBand("f160w", gaussian_psf(2.5, pixel_scale=0.2), 0.1, 0.05, sky=0.01),
             SimBand("irac1", irac.load_psf(), irac.to_ujy, irac.depth_5sigma_ujy, sky=0.05,
                     unit="MJy/sr")]
    field = simulate_field(bands=bands, seed=2, area_arcmin2=0.5)
    out = tmp_path_factory.mktemp("sharp")
    write_field(field, out)
    return field, out


def _detect_cfg(out: Path, name: str, **extra):
    from dask_phot.detect import load_detect_config

    table = {"images": [str(out / "f*_sci.fits")], "noise": [str(out / "f*_wht.fits")],
             "output": str(out / name), "params": {"thresh": 2.0}, **extra}
    return load_detect_config({"detect": table}, environ={})


def test_tiled_run_matches_untiled_and_writes_groups(sharp_field):
    import pandas as pd

    from dask_phot.detect.mosaics import run_detect

    field, out = sharp_field
    whole = run_detect(_detect_cfg(out, "whole"))
    tiled = run_detect(_detect_cfg(out, "tiled", tile_size=96, tile_overlap=40))
    assert tiled.n_tiles > whole.n_tiles == 2 and set(tiled.groups) == {"f814w", "f160w"}
    a, b = pd.read_parquet(whole.merged), pd.read_parquet(tiled.merged)
    assert abs(len(a) - len(b)) <= 2 and len(a) > 40
    tree = cKDTree(np.c_[a["ra"] * np.cos(np.radians(a["dec"])), a["dec"]] * 3600)
    dist, _ = tree.query(np.c_[b["ra"] * np.cos(np.radians(b["dec"])), b["dec"]] * 3600)
    assert np.mean(dist < 0.05) > 0.95  # same sources, same positions
    pairs = cKDTree(np.c_[b["ra"] * np.cos(np.radians(b["dec"])), b["dec"]] * 3600)
    assert not pairs.query_pairs(0.3)  # no duplicates from the tile overlaps
    assert b["source_id"].is_unique and b["n_groups"].max() == 2
    # every bright true source was found, at the right place
    pri = field.priors
    bright = pri[pri["flux_true_f814w"] > 1.0]
    d, _ = tree.query(np.c_[bright["ra"] * np.cos(np.radians(bright["dec"])),
                            bright["dec"]] * 3600)
    assert np.all(d < 0.1)
    assert {"flux_ujy_aper_4", "mag_auto", "fwhm", "kron_radius", "extent_arcsec"} <= set(b)


def test_reference_match_reports_and_applies_offset(sharp_field, tmp_path):
    import pandas as pd

    from dask_phot.detect.mosaics import run_detect

    field, out = sharp_field
    ref = field.priors[field.priors["flux_true_f814w"] > 0.5].copy()
    ref["ra"] += 0.2 / 3600 / np.cos(np.radians(ref["dec"]))  # the reference is 0.2" east
    ref.to_parquet(tmp_path / "gaia.parquet")
    cfg = _detect_cfg(out, "aligned", reference={"path": str(tmp_path / "gaia.parquet"),
                                                 "radius_arcsec": 0.5, "apply_shift": True,
                                                 "columns": ["flux_true_f814w"]})
    summary = run_detect(cfg)
    dra, ddec = summary.offsets_arcsec["f814w"]
    assert dra == pytest.approx(0.2, abs=0.03) and ddec == pytest.approx(0.0, abs=0.03)
    cat = pd.read_parquet(summary.groups["f814w"])
    matched = cat["ref_index"] >= 0
    assert matched.sum() >= 0.9 * len(ref) and cat.loc[~matched, "ref_ra"].isna().all()
    assert np.median(np.abs(cat.loc[matched, "ra"] - cat.loc[matched, "ref_ra"])) * 3600 < 0.05


def test_detect_config_errors_name_the_key(tmp_path):
    from dask_phot.config import ConfigError
    from dask_phot.detect.config import load_detect_config

    bad = tmp_path / "d.toml"
    bad.write_text('[detect]\nimages = ["a.fits"]\n[detect.params]\nthreshold = 2\n')
    with pytest.raises(ConfigError, match=r"detect\.params\.threshold: unknown key.*'thresh'"):
        load_detect_config(bad, environ={})
    bad.write_text('[detect]\nimages = ["a.fits"]\ntile_size = "big"\n')
    with pytest.raises(ConfigError, match=r"detect\.tile_size: must be an integer >= 64, "
                                          r"got 'big'"):
        load_detect_config(bad, environ={})
    bad.write_text('[detect]\nimages = ["a.fits"]\n[detect.params]\nminarea = 0\n')
    with pytest.raises(ConfigError, match=r"detect\.params: minarea"):
        load_detect_config(bad, environ={})
    good = tmp_path / "g.toml"
    good.write_text('[detect]\nimages = ["m/*.fits"]\n[cluster]\nn_workers = 1\n')
    cfg = load_detect_config(good, environ={})
    assert cfg.images == (str(tmp_path / "m/*.fits"),) and cfg.cluster.n_workers == 1


@pytest.mark.slow
def test_cli_detect_on_local_cluster_then_run_uses_merged_priors(sharp_field, tmp_path, capsys):
    """``dask-phot detect`` on a 2-worker LocalCluster writes per-group and merged catalogs;
    ``dask-phot run`` fits IRAC ch1 at the merged catalog's positions."""
    import pandas as pd
    import tomli_w

    from dask_phot.commands import main

    _, out = sharp_field
    cfg = tmp_path / "detect.toml"
    cfg.write_text(tomli_w.dumps({
        "detect": {"images": [str(out / "f*_sci.fits")], "noise": [str(out / "f*_wht.fits")],
                   "output": str(tmp_path / "det"), "tile_size": 128, "tile_overlap": 40,
                   "psf_file": str(out / "f814w_psf.fits"), "params": {"thresh": 2.0}},
        "cluster": {"n_workers": 2}}))
    assert main(["detect", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "Dask dashboard" in text and "merged:" in text
    merged = pd.read_parquet(tmp_path / "det" / "merged.parquet")
    assert (tmp_path / "det" / "f814w.parquet").exists() and len(merged) > 40
    run_cfg = tmp_path / "run.toml"
    run_cfg.write_text(tomli_w.dumps({
        "priors": {"path": str(tmp_path / "det" / "merged.parquet")},
        "bands": {"irac1": {"images": [str(out / "irac1_sci.fits")],
                            "noise": [str(out / "irac1_wht.fits")], "noise_kind": "weight"}},
        "output": {"path": str(tmp_path / "catalog")}, "cluster": {"n_workers": 1}}))
    assert main(["run", str(run_cfg), "--quiet"]) == 0
    cat = pd.read_parquet(tmp_path / "catalog" / "dataset")
    assert len(cat) == len(merged) and set(cat["source_id"]) == set(merged["source_id"])
    assert np.isfinite(cat["flux_irac1"]).mean() > 0.9


def test_detection_and_photometry_are_thread_safe():
    """sep's process-wide settings only grow; concurrent calls give the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    psf = gaussian_psf(2.5)
    rng = np.random.default_rng(11)
    images = [simulate_image((160, 160), rng.uniform(10, 150, 30), rng.uniform(10, 150, 30),
                             rng.uniform(200, 2000, 30), psf, seed=s).data for s in range(4)]

    def work(img):
        det = detect_sources(img, params=DetectionParams(thresh=3.0))
        t = det.table
        return aperture_photometry(img, t["x"], t["y"], radii=[3.0], rms=1.0)["flux_aper_3"]

    serial = [work(img) for img in images]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(work, images))
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
