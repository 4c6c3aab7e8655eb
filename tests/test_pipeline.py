"""The distributed pipeline against a real S3 endpoint and real Dask clusters."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dask_phot.bands import get_band
from dask_phot.cells import Cell
from dask_phot.config import load_config, storage_options
from dask_phot.pipeline import (
    photometry_frame,
    plan_cells,
    process_cell,
    read_catalog,
    run_catalog,
)
from dask_phot.schema import Flag
from dask_phot.testing import SimBand, simulate_field, write_field

BANDS = ("irac1", "nuv")


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    sims = [SimBand(b, get_band(b).load_psf(), get_band(b).to_ujy,
                    get_band(b).depth_5sigma_ujy, sky=0.01) for b in BANDS]
    field = simulate_field(bands=sims, seed=11, area_arcmin2=6.0, mask_fraction=0.005)
    out = tmp_path_factory.mktemp("field")
    paths = write_field(field, out, noise_product="weight")
    return field, paths


@pytest.fixture(scope="module")
def s3_field(s3_server, field_dir):
    field, paths = field_dir
    bucket = "pipeline-field"
    s3_server.create_bucket(bucket, public=True)
    for key, path in paths.items():
        if key.endswith(("_sci", "_wht")):
            s3_server.upload(path, bucket, path.name)
    return field, paths, bucket


def make_config(paths, bucket, s3_server, out, **cells):
    bands = {b: {"images": [f"s3://{bucket}/{b}_sci.fits"],
                 "noise": [f"s3://{bucket}/{b}_wht.fits"], "noise_kind": "weight"}
             for b in BANDS}
    return load_config({
        "priors": {"path": str(paths["priors"]),
                   "keep_columns": [f"flux_true_{b}" for b in BANDS]},
        "bands": bands,
        "cells": {"rows_per_partition": 250, **cells},
        "output": {"path": str(out)},
        "cluster": {"n_workers": 2, "retries": 3},
        "storage": {"endpoint_url": s3_server.endpoint_url, "anon": True},
    })


def check_catalog(cat: pd.DataFrame, field) -> None:
    """Every prior exactly once, fluxes honest against the truth.

    Pulls ``(flux - true) / flux_err`` of sources with true S/N 1-100 (selected on
    the truth, so the selection does not bias them; above S/N 100 the PSF's pixel
    interpolation, not the noise, sets the spread): their median within three
    standard errors of 0 (0.15 sigma for irac1's ~700 sources, 0.45 for nuv's ~70),
    their robust spread (1.4826 MAD) within 15% of 1 or three of its standard errors
    (1.166 / sqrt(n): 0.42 for nuv's ~70 sources; a run measured 1.19 with a standard
    deviation of 1.03), and their standard deviation below 1.6 (irac1's blends put a
    few sources in the tails: 1.3 here, 1.24 in the pipeline benchmark).
    """
    assert cat["source_id"].is_unique
    assert sorted(cat["source_id"]) == sorted(field.priors["source_id"])
    for b in BANDS:
        pull = (cat[f"flux_{b}"] - cat[f"flux_true_{b}"]) / cat[f"flux_err_{b}"]
        snr = cat[f"flux_true_{b}"] / cat[f"flux_err_{b}"]
        p = pull[np.isfinite(pull) & (snr > 1) & (snr <= 100)].to_numpy()
        assert len(p) > 50
        median = np.median(p)
        robust = 1.4826 * np.median(np.abs(p - median))
        assert abs(median) < 3 * 1.2533 * robust / np.sqrt(len(p)), (b, median, len(p))
        spread = max(0.15, 3 * 1.166 / np.sqrt(len(p)))
        assert abs(robust - 1) < spread and 0.85 < np.std(p) < 1.6, (b, robust, np.std(p))
        assert not (cat[f"flags_{b}"] & int(Flag.CELL_FAILED)).any()


@pytest.mark.slow
# nested-pandas (under lsdb) calls a pandas API that pandas 3.1 deprecates
@pytest.mark.filterwarnings("ignore:The inplace keyword in NestedFrame.drop")
def test_run_on_local_cluster_from_s3_and_read_with_lsdb(s3_field, s3_server, tmp_path):
    lsdb = pytest.importorskip("lsdb")
    from distributed import Client, LocalCluster

    field, paths, bucket = s3_field
    cfg = make_config(paths, bucket, s3_server, tmp_path / "cat")
    s3_server.reset_counts()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        summary = run_catalog(cfg, client=client)
    assert summary.n_cells >= 3 and not summary.failures
    assert s3_server.bytes_served(bucket) > 0  # the pixels came through S3
    cat = read_catalog(tmp_path / "cat")
    check_catalog(cat, field)
    # margin sources are modelled in several cells but reported once
    parts, _ = plan_cells(cfg)
    assert sum(len(p.sources) for p in parts) > len(cat)
    # HATS layout: pandas, pyarrow and lsdb read it
    hats_cat = lsdb.read_hats(tmp_path / "cat")
    df = hats_cat.compute()
    assert len(df) == len(cat) and df["source_id"].is_unique
    assert (tmp_path / "cat" / "dataset" / "_metadata").exists()
    import pyarrow.parquet as pq

    meta = pq.read_schema(tmp_path / "cat" / "dataset" / "_common_metadata").metadata
    assert b"uJy" in meta[b"dask_phot_units"]
    import json

    calibration = json.loads(meta[b"dask_phot_calibration"])
    assert calibration["irac1"]["aperture_correction"] == 1.0  # golfir PSF: total already
    assert calibration == json.loads((tmp_path / "cat" / "dask_phot_run.json").read_text()
                                     )["calibration"]
    recorded = json.loads(meta[b"dask_phot_config"])
    assert recorded["bands"]["nuv"]["images"] == [f"s3://{bucket}/nuv_sci.fits"]
    assert load_config(recorded).config_hash() == cfg.config_hash()


@pytest.mark.slow
def test_reads_overlap_fits_with_one_fit_slot_and_the_catalog_is_unchanged(
        s3_field, s3_server, tmp_path):
    """Two threads per worker, one fit slot (``[cluster] fits_per_worker = "auto"``, the
    default): a task reads while another fits; the catalog is that of the same workers
    without fit slots (``fits_per_worker = 0``),
    bit for bit. (Not the in-process run's: there BLAS runs multi-threaded, Dask's
    workers single-threaded, and sums differ in their last bits.)"""
    import dataclasses
    import json

    from distributed import Client, LocalCluster

    field, paths, bucket = s3_field
    plain = make_config(paths, bucket, s3_server, tmp_path / "plain", order=13)
    plain = dataclasses.replace(plain, cluster=dataclasses.replace(plain.cluster,
                                                                   fits_per_worker=0))
    cfg = make_config(paths, bucket, s3_server, tmp_path / "slots", order=13)
    assert cfg.cluster.fits_per_worker == "auto"  # the default: 1 slot with 2 threads
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        assert "wait" not in run_catalog(plain, client=client).stage_seconds
        summary = run_catalog(cfg, client=client)
    assert summary.n_cells > 10 and not summary.failures
    assert "wait" in summary.stage_seconds  # the band tasks took a fit slot
    reports = [json.loads(r.read_text()) for r in (tmp_path / "slots" / "cells").rglob("*.json")]
    assert all("wait" in r["seconds"] for r in reports)
    cat = read_catalog(tmp_path / "slots")
    pd.testing.assert_frame_equal(cat, read_catalog(tmp_path / "plain"), check_exact=True)
    check_catalog(cat, field)


@pytest.mark.slow
def test_worker_killed_mid_run_completes(s3_field, s3_server, tmp_path):
    from distributed import Client, LocalCluster

    field, paths, bucket = s3_field
    cfg = make_config(paths, bucket, s3_server, tmp_path / "cat", order=13)
    killed: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_one(report, done, total):
            if not killed and done < total - 2:
                pid = sorted(pids.values())[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        summary = run_catalog(cfg, client=client, on_progress=kill_one)
    assert killed, "the run finished before a worker could be killed"
    assert summary.n_cells > 10
    check_catalog(read_catalog(tmp_path / "cat"), field)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_catalog(s3_field, s3_server, tmp_path):
    field, paths, bucket = s3_field
    full = make_config(paths, bucket, s3_server, tmp_path / "full")
    run_catalog(full)

    cfg = make_config(paths, bucket, s3_server, tmp_path / "resumed")

    def stop_after_two(report, done, total):
        if done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_catalog(cfg, on_progress=stop_after_two)
    done_files = list((tmp_path / "resumed").glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    assert len(done_files) == 2
    summary = run_catalog(cfg)
    assert summary.n_cells_skipped == 2
    a = read_catalog(tmp_path / "full")
    b = read_catalog(tmp_path / "resumed")
    pd.testing.assert_frame_equal(a, b)
    check_catalog(b, field)


def test_one_cell_reads_only_its_pixel_box_from_s3(s3_server, tmp_path):
    """Bytes served by S3 for one cell are those of the cell's pixel box."""
    band = get_band("irac1")
    sim = SimBand("irac1", band.load_psf(), band.to_ujy, band.depth_5sigma_ujy, sky=0.01)
    field = simulate_field(bands=[sim], seed=5, area_arcmin2=25.0)
    paths = write_field(field, tmp_path, noise_product="uncertainty")
    s3_server.create_bucket("wide-field", public=True)
    for key in ("irac1_sci", "irac1_unc"):
        s3_server.upload(paths[key], "wide-field", paths[key].name)
    cfg = load_config({
        "priors": {"path": str(paths["priors"])},
        "bands": {"irac1": {"images": ["s3://wide-field/irac1_sci.fits"],
                            "noise": ["s3://wide-field/irac1_unc.fits"],
                            "noise_kind": "uncertainty"}},
        "cells": {"order": 13, "read_merge_gap": 0},
        "output": {"path": str(tmp_path / "cat")},
        "storage": {"endpoint_url": s3_server.endpoint_url, "anon": True},
    })
    parts, indexes = plan_cells(cfg)
    part = max(parts, key=lambda p: p.n_primary)
    s3_server.reset_counts()
    table, report = process_cell(part, indexes, cfg)
    mosaic = indexes["irac1"][0]
    served = s3_server.bytes_served("wide-field/irac1_sci.fits")
    whole = mosaic.shape[0] * mosaic.shape[1] * 4
    # the cell's box: its sources' extent plus half a PSF (+2 px) on each side
    x, y = mosaic.wcs.all_world2pix(part.sources["ra"], part.sources["dec"], 0)
    half = band.psf_size // 2 + 2
    box = (np.ptp(np.round(x)) + 2 * half + 1) * (np.ptp(np.round(y)) + 2 * half + 1) * 4
    assert 0.8 * box <= served <= 1.05 * box
    # a small cell and its 46" margin (the PSF's wings): a fifth of this 5'x5' mosaic
    assert served < 0.2 * whole
    assert report.bytes_read == s3_server.bytes_served("wide-field")
    assert len(table) == part.n_primary and np.isfinite(table["flux_irac1"]).all()


def test_bad_data_cell_recorded_and_run_continues(field_dir, tmp_path):
    field, paths = field_dir
    broken = tmp_path / "nuv_sci.fits"
    raw = paths["nuv_sci"].read_bytes()
    broken.write_bytes(raw[: len(raw) // 2])  # truncated: the header says more rows exist
    cfg = load_config({
        "priors": {"path": str(paths["priors"])},
        "bands": {"irac1": {"images": [str(paths["irac1_sci"])],
                            "noise": [str(paths["irac1_wht"])]},
                  "nuv": {"images": [str(broken)], "noise": [str(paths["nuv_wht"])]}},
        "cells": {"rows_per_partition": 250},
        "output": {"path": str(tmp_path / "cat")},
    })
    summary = run_catalog(cfg)
    assert any(k.startswith("nuv") for k in summary.failures)
    cat = read_catalog(tmp_path / "cat")
    assert len(cat) == len(field.priors)
    failed = (cat["flags_nuv"] & int(Flag.CELL_FAILED)) != 0
    assert failed.any() and np.isnan(cat.loc[failed, "flux_nuv"]).all()
    assert np.isfinite(cat["flux_irac1"]).mean() > 0.95
    reports = list((tmp_path / "cat" / "cells").rglob("*.json"))
    assert any("read failed" in r.read_text() for r in reports)


def test_single_cell_debug_path_matches_the_run(field_dir, tmp_path):
    _, paths = field_dir
    cfg = load_config({
        "priors": {"path": str(paths["priors"])},
        "bands": {"irac1": {"images": [str(paths["irac1_sci"])],
                            "noise": [str(paths["irac1_wht"])]}},
        "cells": {"rows_per_partition": 250},
        "output": {"path": str(tmp_path / "cat")},
    })
    run_catalog(cfg)
    parts, indexes = plan_cells(cfg)
    table, _ = process_cell(parts[0], indexes, cfg)
    norder, ndir, npix = Cell(parts[0].cell.order, parts[0].cell.pixel).path_parts()
    written = pd.read_parquet(tmp_path / "cat" / "dataset" / norder / ndir / f"{npix}.parquet")
    pd.testing.assert_frame_equal(table, written[table.columns], check_dtype=True)
    assert storage_options(cfg) == {"anon": True}
    # the lazy dask DataFrame (explicit meta from dask_phot.schema) gives the same rows
    lazy = photometry_frame(cfg)
    assert lazy.npartitions == len(parts)
    pd.testing.assert_frame_equal(lazy._meta, written[table.columns].iloc[:0],
                                  check_index_type=False)
    computed = lazy.compute().sort_values("source_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(computed, read_catalog(tmp_path / "cat")[computed.columns])


def _write_tiles(sci: Path, wht: Path, outdir: Path, overlap: int) -> None:
    """Cut a mosaic (and its weight) into 4 overlapping tiles with their own WCS."""
    from astropy.io import fits
    from astropy.wcs import WCS

    data, header = fits.getdata(sci, header=True)
    weight = fits.getdata(wht)
    wcs = WCS(header)
    ny, nx = data.shape
    hy, hx = ny // 2, nx // 2
    for i, (ys, xs) in enumerate([(slice(0, hy + overlap), slice(0, hx + overlap)),
                                  (slice(0, hy + overlap), slice(hx - overlap, nx)),
                                  (slice(hy - overlap, ny), slice(0, hx + overlap)),
                                  (slice(hy - overlap, ny), slice(hx - overlap, nx))]):
        hdr = wcs[ys, xs].to_header()
        fits.writeto(outdir / f"tile{i}_sci.fits", data[ys, xs], hdr)
        fits.writeto(outdir / f"tile{i}_wht.fits", weight[ys, xs], hdr)


def test_tiled_mosaics_measure_every_source_like_one_mosaic(field_dir, tmp_path):
    """GALEX-style overlapping tiles: each source is measured in the tile where it is
    most central, and the catalog matches a run on the untiled mosaic."""
    field, paths = field_dir
    _write_tiles(paths["irac1_sci"], paths["irac1_wht"], tmp_path, overlap=40)

    def config(images, noise, out):
        return load_config({
            "priors": {"path": str(paths["priors"])},
            "bands": {"irac1": {"images": images, "noise": noise}},
            "cells": {"rows_per_partition": 400},
            "output": {"path": str(out)},
        })

    run_catalog(config([str(tmp_path / "tile*_sci.fits")], [str(tmp_path / "tile*_wht.fits")],
                       tmp_path / "tiled"))
    run_catalog(config([str(paths["irac1_sci"])], [str(paths["irac1_wht"])], tmp_path / "one"))
    tiled, one = read_catalog(tmp_path / "tiled"), read_catalog(tmp_path / "one")
    assert len(tiled) == len(one) == len(field.priors)
    not_measured = int(Flag.NOT_COVERED | Flag.OFF_IMAGE)
    assert ((tiled["flags_irac1"] & not_measured) == 0).sum() == (
        (one["flags_irac1"] & not_measured) == 0).sum()
    ok = np.isfinite(one["flux_irac1"]) & np.isfinite(tiled["flux_irac1"])
    diff = np.abs(tiled["flux_irac1"] - one["flux_irac1"])[ok] / one["flux_err_irac1"][ok]
    assert ok.mean() > 0.99 and np.median(diff) < 0.05 and np.quantile(diff, 0.99) < 0.5


def _cells_against_whole_mosaic(paths, out: Path, band: str, margin: str | float
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Fluxes of a many-cell run against one fit of the whole mosaic, in sigma.

    Both fit the same PSF, weights and engine options, with the sky fixed at its
    true level in both: a sky fitted per cell is another model than one sky for the
    whole mosaic (that difference is not the margins'). Returns ``|cells - whole| /
    flux_err``, the ratio of the flux errors, and the number of cells.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    from dask_phot import forced_photometry

    cfg = load_config({
        "priors": {"path": str(paths["priors"])},
        "bands": {band: {"images": [str(paths[f"{band}_sci"])],
                         "noise": [str(paths[f"{band}_wht"])], "sky": 0.01}},
        "cells": {"rows_per_partition": 150, "margin_arcsec": margin},
        "output": {"path": str(out)},
    })
    summary = run_catalog(cfg)
    cat = read_catalog(out)
    data, header = fits.getdata(paths[f"{band}_sci"], header=True)
    weight = fits.getdata(paths[f"{band}_wht"])
    x, y = WCS(header).all_world2pix(cat["ra"], cat["dec"], 0)
    b = cfg.bands[0].band
    # final_weight: the whole mosaic's fit takes a cell's path, whose tiles free only
    # their own sources (the others at their first-fit fluxes), with the same weights
    whole = forced_photometry(data.astype(float), b.load_psf(), x, y,
                              weight=weight.astype(float), final_weight=weight.astype(float),
                              sky=0.01, fit_sky=False,
                              **{k: v for k, v in cfg.engine.forced_kwargs().items()
                                 if k != "fit_sky"})
    err = whole.flux_err * b.to_ujy
    assert np.isfinite(cat[f"flux_{band}"]).to_numpy().tolist() == \
        np.isfinite(whole.flux).tolist()
    differ = cat[f"flags_{band}"].to_numpy() ^ whole.flags
    diff = np.abs(cat[f"flux_{band}"].to_numpy() - whole.flux * b.to_ujy) / err
    ratio = cat[f"flux_err_{band}"].to_numpy() / err
    ok = np.isfinite(diff)
    stats = np.c_[cat[f"mismatch_{band}"].to_numpy(), whole.mismatch,
                  cat[f"chi2_{band}"].to_numpy(), whole.chi2]
    return diff[ok], ratio[ok], differ, summary.n_cells, stats


def test_cells_with_margins_give_the_whole_mosaic_fit(field_dir, tmp_path):
    """The pipeline's promise: a field cut into sky cells with margins is measured as one
    fit of the whole mosaic would measure it, the PSFs' wings included (each cell's
    first fit measures every source whose wings reach its final fit): irac1 with its
    automatic margin (34.9"; 99% of fluxes within 0.02 sigma of the whole-mosaic fit, all
    within 0.1), nuv (heavy blending: 5.3" FWHM on 1.5" pixels) with a 180" margin (every
    flux within 0.05 sigma, 99% within 0.02); the same flux errors (99% within 0.2%)."""
    _, paths = field_dir
    for band, margin, worst in (("irac1", "auto", 0.1), ("nuv", 180.0, 0.05)):
        diff, ratio, differ, n_cells, stats = _cells_against_whole_mosaic(
            paths, tmp_path / band, band, margin)
        assert n_cells >= 10 and len(diff) > 200
        assert np.quantile(diff, 0.99) < 0.02 and diff.max() < worst, (band, diff.max())
        # the same flux errors; in irac1 one source of ~900 (S/N 2, MASKED_PIXELS, 7
        # pixels from one whose centre is masked and whose flux is barely constrained)
        # has a 2.7% larger error in its cell than in the whole mosaic
        assert np.quantile(np.abs(ratio - 1), 0.99) < 2e-3 and np.abs(ratio - 1).max() < 0.05
        # the same flags, but MASKED_PIXELS: a cell's clean-pixel zone (margin - h sqrt(2)
        # around its sources) cuts the corner pixels of a stamp whose source is off a
        # pixel centre (they hold ~1e-4 of the PSF); the whole-mosaic fit uses them;
        # and NEGATIVE_FLUX on at most one source, whose flux sits within the few
        # hundredths of sigma checked above of zero (nuv, seed 11: one such source)
        assert not (differ & ~int(Flag.MASKED_PIXELS | Flag.NEGATIVE_FLUX)).any()
        assert ((differ & int(Flag.NEGATIVE_FLUX)) != 0).sum() <= 1
        # the same statistics behind HIGH_CHI2 and MODEL_MISMATCH (measured: mismatch
        # within 0.17, chi2 within 3%; the model of a cell's second fit is its stamps plus
        # the light subtracted before it, not wings re-rendered from its edge sources)
        gap = np.abs(stats[:, 0] - stats[:, 1])
        rel = np.abs(stats[:, 2] / stats[:, 3] - 1)
        assert np.nanmax(gap) < 0.3 and np.nanmax(rel) < 0.05, (band, np.nanmax(gap),
                                                                  np.nanmax(rel))


@pytest.mark.xfail(strict=True, reason="the automatic margin (111.6\" for nuv: its stamp, "
                   "final-fit radius and wings) does not hold the chains of blends of a "
                   "crowded coarse band: its final fit's radius (the stamp's half-diagonal) "
                   "leaves 10% of nuv sources > 0.05 sigma from the whole-mosaic fit, 1% by "
                   "> 0.3 sigma (146\" or 180\", whose final fits reach 42 and 65 pixels: "
                   "none by 0.06)")
def test_auto_margin_gives_the_whole_mosaic_fit_in_crowded_nuv(field_dir, tmp_path):
    _, paths = field_dir
    diff, _, _, _, _ = _cells_against_whole_mosaic(paths, tmp_path / "nuv", "nuv", "auto")
    assert np.quantile(diff, 0.99) < 0.02 and diff.max() < 0.05
