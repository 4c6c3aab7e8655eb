"""The survey recipe end to end on two simulated NIRCam surveys served from a local S3
endpoint: MAST look-up (recorded-shape replies) -> detect -> cutouts, and the bad inputs.

The mosaics are small versions of ``DEMO_SURVEYS`` (the recorded replies name their
files); ``benchmarks/bench_surveys.py`` runs the same at 10,000 sources on a cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from astropy.io import fits
from astropy.wcs import WCS
from scipy.spatial import cKDTree

from dask_phot.commands import main
from dask_phot.detect import COSMIC_RAY, SINGLE_EXPOSURE
from dask_phot.testing.archive_server import ArchiveServer, add_mast_survey_routes
from dask_phot.testing.mast_products import write_drz, write_i2d
from dask_phot.testing.surveys import DEMO_SURVEYS, simulate_survey, survey_wcs

pytest.importorskip("astroquery")
pytest.importorskip("sep", reason="the detect extra (sep) is not installed")
pytest.importorskip("astroscrappy", reason="the detect extra (astroscrappy) is not installed")

DATA = Path(__file__).parent / "data" / "archive"
REPO = Path(__file__).resolve().parents[1]
SHAPE = (320, 320)


def _bucket_keys() -> dict[str, str]:
    """Product file name -> its key in the stpubdata bucket (from the recorded look-up)."""
    out = {}
    for entry in json.loads((DATA / "mast_path_lookup_surveys.json").read_text()).values():
        path = entry["path"]
        if path:
            key = ("mast/" + path.removeprefix("/hlsp_local/public/")
                   if path.startswith("/hlsp_local/") else path.lstrip("/"))
            out[path.rsplit("/", 1)[1]] = key
    return out


@pytest.fixture(scope="module")
def surveys(tmp_path_factory, s3_server):
    """Both surveys simulated, in the bucket, looked up: the written detect.toml etc."""
    base = tmp_path_factory.mktemp("surveys")
    keys = _bucket_keys()
    s3_server.create_bucket("stpubdata")
    files, truth = [], {}
    for survey in DEMO_SURVEYS:
        small = dataclasses.replace(survey, shape=SHAPE, cosmic_rays=12)
        sim = simulate_survey(small, base / "sim", seed=11)
        files.append(sim.files)
        truth[survey.name] = sim
        for row in sim.files.itertuples():
            s3_server.upload(row.path, "stpubdata", keys[row.product])
    files = pd.concat(files, ignore_index=True)
    with ArchiveServer() as mast:
        add_mast_survey_routes(mast, DATA)
        data = tomllib.loads((REPO / "examples" / "jwst_surveys.toml").read_text())
        data["mast"].update(service=mast.url, cache_dir=str(base / "cache"),
                            output_dir=str(base / "out"))
        data["detect"]["tile_size"] = 512
        data["storage"] = {"anon": True, "endpoint_url": s3_server.endpoint_url}
        (base / "recipe.toml").write_text(tomli_w.dumps(data))
        assert main(["fetch", str(base / "recipe.toml")]) == 0
    yield {"base": base, "out": base / "out", "files": files, "truth": truth}
    client = s3_server.boto3_client()
    for name in files["product"]:
        client.delete_object(Bucket="stpubdata", Key=keys[name])


@pytest.fixture(scope="module")
def detected(surveys):
    assert main(["detect", str(surveys["out"] / "detect.toml"), "--in-process"]) == 0
    return {name: pd.read_parquet(surveys["out"] / "detections" / name / "merged.parquet")
            for name in ("ceers", "primer")}


def _sky(ra, dec):
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    return np.c_[ra * np.cos(np.radians(dec)), dec] * 3600.0


def _on_mosaics(sources: pd.DataFrame, surveys, name: str) -> np.ndarray:
    """Sources at least 10 pixels inside one of the survey's F200W mosaics."""
    inside = np.zeros(len(sources), bool)
    for path in surveys["files"].query("survey == @name and filter == 'F200W' and "
                                       "kind == 'level3'")["path"]:
        wcs = WCS(fits.getheader(path, "SCI"))
        x, y = wcs.world_to_pixel_values(sources["ra"], sources["dec"])
        inside |= (x > 10) & (x < SHAPE[1] - 10) & (y > 10) & (y < SHAPE[0] - 10)
    return inside


def test_detect_one_merged_catalog_per_survey_with_the_selection(surveys, detected):
    for name, merged in detected.items():
        sel = json.loads((surveys["out"] / "detections" / name / "selection.json").read_text())
        assert sel["n_sources"] == len(merged) > 40 and (merged["survey"] == name).all()
        assert set(sel["groups"]) == {"f115w", "f200w", "f444w"}
        assert sel["archive"]["f200w"]["used"] == "level3"
        assert sel["settings"]["min_snr"] == 3.0 and merged["snr"].min() >= 3.0
        g = sel["groups"]["f200w"]
        assert g["detected"] >= g["after_min_snr"] >= g["after_deduplication"] > 0
        assert all(m["image"].startswith("s3://stpubdata/jwst/public/") for m in g["mosaics"])
        sim = surveys["truth"][name]
        bright = sim.truth[sim.truth["flux_true_F200W"] > 0.5]
        bright = bright[_on_mosaics(bright, surveys, name)]
        d, _ = cKDTree(_sky(merged["ra"], merged["dec"])).query(_sky(bright["ra"],
                                                                     bright["dec"]))
        assert np.mean(d < 0.1) > 0.9, np.sort(d)  # bright sources found, within 2.5 pixels
    ceers = detected["ceers"]
    # tiles of both ceers mosaics overlap: one row per source
    assert not cKDTree(_sky(ceers["ra"], ceers["dec"])).query_pairs(0.05)


def test_fluxes_in_microjansky_from_pixar_sr(surveys, detected):
    ratios = []
    for name in ("ceers", "primer"):
        cat = pd.read_parquet(surveys["out"] / "detections" / name / "f200w.parquet")
        truth = surveys["truth"][name].truth
        points = truth[(truth["r_e"] == 0) & (truth["flux_true_F200W"] > 0.3)]
        d, i = cKDTree(_sky(cat["ra"], cat["dec"])).query(_sky(points["ra"], points["dec"]))
        near = d < 0.04
        ratios += list(cat["flux_ujy_aper_8"].to_numpy()[i[near]]
                       / points["flux_true_F200W"].to_numpy()[near])
    # an 8-pixel (0.32") aperture holds all but ~1% of F200W's 0.066" FWHM PSF
    assert len(ratios) >= 5 and np.median(ratios) == pytest.approx(1.0, abs=0.06), ratios


def test_cosmic_rays_flagged_in_single_exposure_areas(surveys, detected):
    flagged, near_cr = 0, 0
    for name in ("ceers", "primer"):
        cat = pd.read_parquet(surveys["out"] / "detections" / name / "f115w.parquet")
        sim = surveys["truth"][name]
        crs = sim.cosmic_rays[(sim.cosmic_rays["filter"] == "F115W")]
        cr = (cat["flag"] & COSMIC_RAY) > 0
        assert ((cat.loc[cr, "flag"] & SINGLE_EXPOSURE) > 0).all()  # only in 1-exposure areas
        for tile, rows in cat[cr].groupby(cat.loc[cr, "mosaic"]):
            t = 0 if "-o001_" in tile else 1
            hits = crs[crs["tile"] == t]
            d, _ = cKDTree(hits[["x", "y"]].to_numpy(float)).query(
                rows[["x_mosaic", "y_mosaic"]].to_numpy(float))
            near_cr += int(np.sum(d < 4.0))
            flagged += len(rows)
        sel = json.loads((surveys["out"] / "detections" / name / "selection.json").read_text())
        assert sel["groups"]["f115w"]["cosmic_ray_flagged"] == int(cr.sum())
    assert flagged >= 5 and near_cr >= 0.8 * flagged  # flags mark the rays put there


def _local_mosaic(surveys, name: str) -> Path:
    files = surveys["files"]
    return Path(files.loc[files["product"] == name.split("[")[0], "path"].iloc[0])


def test_cutouts_pixels_wcs_resume_and_contact_sheet(surveys, detected, tmp_path, capsys,
                                                     browser):
    cats = [str(surveys["out"] / "detections" / n / "merged.parquet") for n in detected]
    out = tmp_path / "cut"
    args = ["cutouts", *cats, "--bands", str(surveys["out"] / "bands.toml"), "--rgb", "f444w",
            "f200w", "f115w", "--colour", "lupton", "asinh", "--out", str(out),
            "--in-process", "--partition-size", "100", "--min-size", "1.5", "--sheet", "24"]
    assert main(args) == 0
    text = capsys.readouterr().out
    n = sum(len(c) for c in detected.values())
    assert f"{n} FITS cutouts and {n} PNG composites" in text and "cutouts/s" in text
    index = pd.read_parquet(out / "cutouts.parquet")
    assert len(index) == n and set(index["group"]) == {"ceers", "primer"}
    assert (index["bands"] == "f115w,f200w,f444w").mean() > 0.95
    rng = np.random.default_rng(0)
    for row in index.iloc[rng.choice(len(index), 25, replace=False)].itertuples():
        with fits.open(row.fits) as hdul:
            assert [h.name for h in hdul[1:]] == row.bands.upper().split(",")
            for hdu in hdul[1:]:
                h = hdu.header
                ny, nx = hdu.data.shape
                assert ny == nx and nx % 2 == 1 and nx * h["PIXSCALE"] >= row.size_arcsec
                with fits.open(_local_mosaic(surveys, h["MOSAIC"])) as mosaic:
                    sci = mosaic["SCI"].data
                    y0, x0 = h["Y0"], h["X0"]
                    want = np.full((ny, nx), np.nan, np.float32)
                    ys = slice(max(y0, 0), min(y0 + ny, sci.shape[0]))
                    xs = slice(max(x0, 0), min(x0 + nx, sci.shape[1]))
                    want[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = sci[ys, xs]
                    np.testing.assert_array_equal(hdu.data, want)  # the mosaic's pixels
                    wmos = WCS(mosaic["SCI"].header)
                x, y = WCS(h).world_to_pixel_values(row.ra, row.dec)
                assert abs(x - nx // 2) <= 0.5 and abs(y - ny // 2) <= 0.5  # centred
                ra, dec = WCS(h).pixel_to_world_values(nx // 2, ny // 2)
                assert np.allclose(wmos.world_to_pixel_values(ra, dec),
                                   (x0 + nx // 2, y0 + ny // 2), atol=1e-6)
        assert Path(row.png).exists() and Path(row.png_asinh).exists()
    assert index["lupton_q"].max() > 1.0 > index["lupton_q"].min()  # Q follows brightness

    # resumable: lose a partition's index and one of its files; only that part is made
    part = out / "_parts" / "part-00001.parquet"
    lost = pd.read_parquet(part)["fits"].iloc[0]
    kept = index["fits"].iloc[0]
    before = os.path.getmtime(kept)
    part.unlink()
    Path(lost).unlink()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"resumed: {len(list((out / '_parts').glob('*.parquet'))) - 1} of" in text
    assert Path(lost).exists() and os.path.getmtime(kept) == before

    seen = browser.load(out / "sheet.html")
    assert seen["problems"] == []
    assert len(seen["images"]) == 48 and all(d and w > 0 for _, d, w in seen["images"])
    shot = tmp_path / "sheet.png"
    shot.write_bytes(seen["png"])
    assert seen["png"][:8] == b"\x89PNG\r\n\x1a\n" and len(seen["png"]) > 100_000
    if os.environ.get("CUTOUT_SHEET_SCREENSHOT"):
        shutil.copy(shot, os.environ["CUTOUT_SHEET_SCREENSHOT"])


def _one_line_exit_2(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_mosaics_are_one_line_each(tmp_path, capsys):
    shape = (80, 80)
    rng = np.random.default_rng(2)
    data, sigma = rng.normal(0, 1, shape), np.ones(shape)
    exp = np.ones((2, *shape), bool)
    wcs = survey_wcs((34.4, -5.2), 0.04, shape, 0.0)
    no_wht = write_i2d(tmp_path / "a_i2d.fits", data, sigma, exp, wcs, filter="F200W",
                       extensions=("SCI", "ERR", "CON"))
    no_pix = write_i2d(tmp_path / "b_i2d.fits", data, sigma, exp, wcs, filter="F200W",
                       drop_keywords=("PIXAR_SR", "PIXAR_A2"))
    no_flam = write_drz(tmp_path / "c_drz.fits", data, sigma, exp, wcs, filter="F814W",
                        drop_keywords=("PHOTFLAM",))
    cases = [(no_wht, "WHT", rf"{no_wht}: no extension WHT \(its HDUs: PRIMARY"),
             (no_pix, "WHT", rf"{no_pix}\[SCI\]: BUNIT is 'MJy/sr' \(surface brightness\) but "
                             r"its headers have no pixel area PIXAR_SR"),
             (no_flam, "WHT", rf"{no_flam}\[SCI\]: an HST count-rate image \(BUNIT "
                              r"'ELECTRONS/S'\) without PHOTFLAM and PHOTPLAM")]
    for path, noise, message in cases:
        cfg = tmp_path / f"{path.stem}.toml"
        cfg.write_text(tomli_w.dumps({"detect": {
            "images": [f"{path}[SCI]"], "noise": [f"{path}[{noise}]"],
            "output": str(tmp_path / "det")}}))
        err = _one_line_exit_2(["detect", str(cfg), "--in-process"], capsys)
        assert err.startswith("dask-phot detect: error: ")
        assert re.search(message, err), err
    pd.DataFrame({"source_id": [1], "ra": [34.4], "dec": [-5.2]}).to_parquet(
        tmp_path / "c.parquet")
    err = _one_line_exit_2(["cutouts", str(tmp_path / "c.parquet"), "--images",
                            f"f200w={no_pix}[SCI]", "--in-process", "--out",
                            str(tmp_path / "cut")], capsys)
    assert "no pixel area PIXAR_SR" in err and err.startswith("dask-phot cutouts: error: ")


@pytest.mark.slow
def test_detect_and_cutouts_on_a_two_worker_cluster(surveys, detected, tmp_path, capsys):
    """The same survey run with its tiles and partitions as tasks on a LocalCluster."""
    cfg = tomllib.loads((surveys["out"] / "detect.toml").read_text())
    cfg["detect"]["output"] = str(tmp_path / "det")
    (tmp_path / "detect.toml").write_text(tomli_w.dumps(cfg))
    assert main(["detect", str(tmp_path / "detect.toml"), "--workers", "2"]) == 0
    for name, merged in detected.items():
        again = pd.read_parquet(tmp_path / "det" / name / "merged.parquet")
        assert len(again) == len(merged)
        np.testing.assert_allclose(again["flux_auto"], merged["flux_auto"])
    cats = [str(tmp_path / "det" / n / "merged.parquet") for n in detected]
    assert main(["cutouts", *cats, "--bands", str(surveys["out"] / "bands.toml"),
                 "--out", str(tmp_path / "cut"), "--workers", "2", "--partition-size",
                 "150", "--rgb", "f444w", "f200w", "f115w", "--sheet", "0"]) == 0
    text = capsys.readouterr().out
    assert "Dask dashboard" in text and "cutouts/s" in text
    index = pd.read_parquet(tmp_path / "cut" / "cutouts.parquet")
    assert len(index) == sum(len(c) for c in detected.values()) and (index["fits"] != "").all()
