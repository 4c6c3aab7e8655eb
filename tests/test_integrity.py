"""Issue 16, "a catalog you can trust": each finding re-run as the issue wrote it.

Resume follows the inputs (2), one catalog per folder (3), failed cells retried
and bugs loud (4), input checks before any cluster (5, 6), Ctrl-C (6), unfinished
catalogs (7), units and magnitudes (9). S3 output, kills and faults:
``test_s3_output.py``; mosaics in other celestial frames (10): ``test_frames.py``;
credentials (11): ``test_credentials.py``; the demo's report (8): ``test_cli.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from dask_phot.bands import get_band
from dask_phot.commands import main
from dask_phot.config import ConfigError, load_config
from dask_phot.pipeline import (
    CatalogStore,
    IncompleteCatalogError,
    InputError,
    RunInterrupted,
    read_catalog,
    run_catalog,
)
from dask_phot.psf import PixelPSF, PSFError
from dask_phot.schema import MAG_MIN_SNR, Flag
from dask_phot.testing import simulate_to_dir

ROOT = Path(__file__).parents[1]
# nested-pandas (under lsdb) calls a pandas API that pandas 3.1 deprecates
LSDB_WARNING = pytest.mark.filterwarnings("ignore:The inplace keyword in NestedFrame.drop")


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    """A 1.5 arcmin2 field in irac1 and nuv with its config.toml (never modified)."""
    base = tmp_path_factory.mktemp("integrity-field")
    simulate_to_dir(base, area_arcmin2=1.5, bands=["irac1", "nuv"], seed=4)
    return base


def _project(field: Path, to: Path) -> Path:
    """A private copy of the field (times kept), for tests that change its files."""
    shutil.copytree(field, to)
    return to


def _one_line_error(capsys, code: int, *names: str) -> str:
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dask-phot run: error: "), err
    assert "Dask dashboard" not in out  # checked before any cluster started
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# ---------------------------------------------------------------------- finding 2
@pytest.mark.slow
def test_resume_follows_the_inputs(tmp_path, capsys, dask_scheduler):
    """Re-simulated priors and mosaics re-run the cell; a truncated mosaic is noticed; a
    copied project folder resumes."""
    proj = tmp_path / "simover"
    sim = ["simulate", str(proj), "--area-arcmin2", "4", "--bands", "irac1", "nuv"]
    run = ["run", str(proj / "config.toml"), "--quiet", "--scheduler", dask_scheduler]
    assert main(sim) == 0 and main(run) == 0
    first = read_catalog(proj / "catalog")
    assert main([*sim, "--seed", "7"]) == 0
    capsys.readouterr()
    assert main(run) == 0
    out = capsys.readouterr().out
    assert "1 cells run (1 priors rows, mosaic irac1, mosaic nuv changed), 0 already done" \
        in out, out
    priors = pd.read_parquet(proj / "priors.parquet")
    cat = read_catalog(proj / "catalog")
    assert len(cat) == len(priors) != len(first)
    assert sorted(cat["source_id"]) == sorted(priors["source_id"])
    np.testing.assert_allclose(cat.set_index("source_id").loc[priors["source_id"], "ra"],
                               priors["ra"])
    # a mosaic truncated after a finished run: its cells run again, and fail, loudly
    config = load_config(proj / "config.toml")
    sci = proj / "irac1_sci.fits"
    good = sci.read_bytes()
    sci.write_bytes(good[: len(good) // 2])
    summary = run_catalog(config)
    assert summary.reasons == {"mosaic irac1 changed": 1}
    assert summary.failures == {"irac1: read failed": 1}
    sci.write_bytes(good)
    summary = run_catalog(config)
    assert summary.reasons == {"failed before": 1} and not summary.failures
    # a copy of the project folder elsewhere (times kept) resumes: paths are relative
    copy = _project(proj, tmp_path / "elsewhere" / "simover")
    moved = run_catalog(load_config(copy / "config.toml"))
    assert (moved.n_cells, moved.n_cells_skipped) == (0, 1)
    pd.testing.assert_frame_equal(read_catalog(copy / "catalog"), read_catalog(proj / "catalog"))


# ---------------------------------------------------------------------- finding 3
@LSDB_WARNING
def test_one_catalog_per_output_folder(field, tmp_path, capsys):
    lsdb = pytest.importorskip("lsdb")
    out = tmp_path / "out"
    full = load_config(field / "config.toml", overrides={"cells.order": 13,
                                                         "output.path": str(out)})
    run_catalog(full)
    priors = pd.read_parquet(field / "priors.parquet")
    half = priors[priors["ra"] < priors["ra"].median()]
    half.to_parquet(tmp_path / "half.parquet")
    cfg = load_config(field / "config.toml", overrides={
        "cells.order": 13, "output.path": str(out), "priors.path": str(tmp_path / "half.parquet")})
    with pytest.raises(InputError, match="--overwrite"):
        run_catalog(cfg)
    half_toml = _write_config(field, tmp_path, {
        "cells.order": 13, "output.path": str(out), "priors.path": str(tmp_path / "half.parquet")})
    _one_line_error(capsys, main(["run", str(half_toml)]), str(out), "--overwrite")
    assert len(read_catalog(out)) == len(priors)  # refused: nothing changed
    summary = run_catalog(cfg, overwrite=True)
    assert summary.n_removed > 0  # (the kept cells run again: their margins changed)
    by_pandas = pd.read_parquet(out / "dataset")
    by_lsdb = lsdb.open_catalog(out).compute()
    assert len(by_pandas) == len(by_lsdb) == len(half)
    assert sorted(by_pandas["source_id"]) == sorted(by_lsdb["source_id"]) \
        == sorted(half["source_id"])
    # empty priors: one line, exit 2, the catalog untouched
    priors.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    empty_toml = _write_config(field, tmp_path, {
        "cells.order": 13, "output.path": str(out), "priors.path": str(tmp_path / "empty.parquet")})
    capsys.readouterr()  # lsdb's progress bars
    _one_line_error(capsys, main(["run", str(empty_toml)]), "empty.parquet", "no rows")
    assert len(pd.read_parquet(out / "dataset")) == len(half)


# ---------------------------------------------------------------------- finding 4
def test_failed_cells_are_retried_and_keep_their_traceback(field, tmp_path):
    proj = _project(field, tmp_path / "p")
    cfg = load_config(proj / "config.toml", overrides={"cells.order": 13})
    sci = proj / "nuv_sci.fits"
    good = sci.read_bytes()
    sci.write_bytes(good[: len(good) // 2])
    first = run_catalog(cfg)
    assert set(first.failures) == {"nuv: read failed"}
    cat = read_catalog(proj / "catalog")
    failed = (cat["flags_nuv"] & int(Flag.CELL_FAILED)) != 0
    assert failed.any() and cat.loc[failed, "flux_nuv"].isna().all()
    reports = CatalogStore.open(proj / "catalog").reports()
    errors = [r["errors"]["nuv"] for r in reports.values() if r.get("errors")]
    assert errors and all(e["type"] == "builtins.OSError" and e["stage"] == "read"
                          and "nuv_sci.fits" in e["message"]
                          and e["traceback"].startswith("Traceback (most recent call last)")
                          for e in errors)
    sci.write_bytes(good)
    again = run_catalog(cfg)
    assert again.reasons == {"failed before": len(errors)} and not again.failures
    assert again.n_cells_skipped == again.n_cells + again.n_cells_skipped - len(errors)
    cat = read_catalog(proj / "catalog")
    assert not (cat["flags_nuv"] & int(Flag.CELL_FAILED)).any()
    assert np.isfinite(cat["flux_nuv"]).mean() > 0.9


def test_an_error_of_our_own_code_fails_the_run(field, tmp_path, monkeypatch):
    cfg = load_config(field / "config.toml",
                      overrides={"cells.order": 13, "output.path": str(tmp_path / "cat")})

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in dask-phot")

    monkeypatch.setattr("dask_phot.pipeline.kernel.forced_photometry", bug)
    with pytest.raises(ZeroDivisionError, match="a bug in dask-phot"):
        run_catalog(cfg)
    store = CatalogStore.open(tmp_path / "cat")
    assert not store.reports()  # not recorded as data: the cell runs again next time
    with pytest.raises(IncompleteCatalogError):
        read_catalog(tmp_path / "cat")


# ---------------------------------------------------------------------- finding 5
def _band_config(field: Path, tmp_path: Path, band: dict, name: str = "myband") -> Path:
    text = (f'[priors]\npath = "{field / "priors.parquet"}"\n'
            f'[output]\npath = "{tmp_path / "cat"}"\n[bands.{name}]\n'
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in band.items()))
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_even_psf_and_wrong_pixel_scale_are_refused(field, tmp_path, capsys):
    yy, xx = np.mgrid[:16, :16]
    even = np.exp(-((xx - 7.5) ** 2 + (yy - 7.5) ** 2) / (2 * 1.4**2))
    fits.PrimaryHDU(even / even.sum()).writeto(tmp_path / "even_psf.fits")
    images = {"images": [str(field / "irac1_sci.fits")], "noise": [str(field / "irac1_wht.fits")]}
    bad = _band_config(field, tmp_path, {**images, "psf_file": str(tmp_path / "even_psf.fits"),
                                         "pixel_scale": 0.6})
    with pytest.raises(ConfigError, match="centred between pixels"):
        load_config(bad)
    with pytest.raises(PSFError, match=r"16x16 pixels and centred between pixels \(its peak "
                                       r"is \+0\.50, \+0\.50 px"):
        PixelPSF.from_array(even, 0.6, size=17, pixel_centred=True)
    get_band("nuv").load_psf()  # GALEX's 120x120 file: its peak is on a pixel
    code = main(["run", str(bad)])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "even_psf.fits" in err
    # the mosaic's pixel scale against the band's
    wrong = _band_config(field, tmp_path, {**images, "psf_file": str(field / "irac1_psf.fits"),
                                           "pixel_scale": 1.2})
    line = _one_line_error(capsys, main(["run", str(wrong)]), "irac1_sci.fits",
                           "pixel_scale")
    assert '0.6"/px' in line


def test_a_band_covering_nothing_is_a_warning_and_no_band_an_error(field, tmp_path, capsys):
    elsewhere = tmp_path / "nuv_elsewhere.fits"
    with fits.open(field / "nuv_sci.fits") as hdul:
        hdul[0].header["CRVAL2"] += 1.0
        hdul.writeto(elsewhere)
    cfg = load_config(field / "config.toml", overrides={
        "bands.nuv.images": [str(elsewhere)], "bands.nuv.noise": [],
        "output.path": str(tmp_path / "cat")})
    summary = run_catalog(cfg)
    assert summary.warnings == [f"band nuv: no mosaic covers any of the {summary.n_sources} "
                                "sources (all NOT_COVERED)"]
    assert not summary.failures
    cat = read_catalog(tmp_path / "cat")
    assert (cat["flags_nuv"] == int(Flag.NOT_COVERED)).all()
    only = _band_config(field, tmp_path, {"images": [str(elsewhere)]}, name="nuv")
    _one_line_error(capsys, main(["run", str(only)]), "priors.parquet",
                    "no mosaic covers any")


# ---------------------------------------------------------------------- finding 6
def _bad_inputs(field: Path, tmp: Path) -> dict[str, tuple[dict, tuple[str, ...]]]:
    """Configuration changes -> what the one-line error must name."""
    priors = pd.read_parquet(field / "priors.parquet")
    priors.drop(columns=["ra"]).to_parquet(tmp / "no_ra.parquet")
    nan = priors.copy()
    nan.loc[5, "dec"] = np.nan
    nan.to_parquet(tmp / "nan.parquet")
    (tmp / "empty.parquet").write_bytes(b"")
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "text.fits").write_text("not a FITS file\n" * 300)
    raw = (field / "irac1_sci.fits").read_bytes()
    at = raw.find(b"CRVAL1  =")
    (tmp / "card_sci.fits").write_bytes(raw[:at] + b"CRVAL1  = 15O.1".ljust(80) + raw[at + 80:])
    return {
        "no ra": ({"priors.path": str(tmp / "no_ra.parquet")}, ("no_ra.parquet", "ra_column")),
        "nan": ({"priors.path": str(tmp / "nan.parquet")}, ("nan.parquet", "row 5")),
        "empty parquet": ({"priors.path": str(tmp / "empty.parquet")}, ("empty.parquet",
                                                                       "0 bytes")),
        "empty csv": ({"priors.path": str(tmp / "empty.csv")}, ("empty.csv", "0 bytes")),
        "priors not FITS": ({"priors.path": str(tmp / "text.fits")}, ("text.fits",)),
        "mosaic not FITS": ({"bands.irac1.images": [str(tmp / "text.fits")],
                             "bands.irac1.noise": []}, ("text.fits", "not a FITS file")),
        "corrupt card": ({"bands.irac1.images": [str(tmp / "card_sci.fits")]},
                         ("card_sci.fits", "CRVAL1")),
        "unreachable S3": ({"priors.path": "s3://nowhere/priors.parquet",
                            "storage.endpoint_url": "http://127.0.0.1:9"},
                           ("storage.endpoint_url", "http://127.0.0.1:9")),
    }


def _write_config(field: Path, tmp: Path, changes: dict) -> Path:
    """``tmp/config.toml``: the field's configuration (absolute paths) with ``changes``."""
    import tomli_w

    cfg = load_config(field / "config.toml", overrides={"output.path": str(tmp / "cat"),
                                                        **changes}).to_dict()
    path = tmp / "config.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


def test_bad_inputs_are_one_line_before_any_cluster(field, tmp_path, capsys):
    for case, (changes, names) in _bad_inputs(field, tmp_path).items():
        t0 = time.perf_counter()
        code = main(["run", str(_write_config(field, tmp_path, changes))])
        _one_line_error(capsys, code, *names)
        assert time.perf_counter() - t0 < 10, case
    # RA/DEC headers are recognised whatever their case
    priors = pd.read_parquet(field / "priors.parquet")
    priors.rename(columns={"ra": "RA", "dec": "DEC"}).to_parquet(tmp_path / "upper.parquet")
    cfg = load_config(field / "config.toml", overrides={
        "priors.path": str(tmp_path / "upper.parquet"), "output.path": str(tmp_path / "up")})
    from dask_phot.pipeline import prepare_run

    plan = prepare_run(cfg)
    assert plan.n_sources == len(priors)


@pytest.mark.slow
def test_ctrl_c_says_what_is_kept_and_how_to_resume(field, tmp_path):
    """Ctrl-C in a terminal (SIGINT to the run and its LocalCluster's workers): one line.

    The run gets SIGINT's default action, as from a terminal: a shell that starts the
    tests in the background (``.ci/run &``) passes SIGINT on ignored, and Python then
    keeps ignoring it, so the run would finish and exit 0."""
    proj = _project(field, tmp_path / "p")
    (proj / "config.toml").write_text((proj / "config.toml").read_text()
                                      + "\n[cells]\norder = 13\n")
    cmd = [sys.executable, "-m", "dask_phot.commands", "run", str(proj / "config.toml"),
           "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store = CatalogStore.open(proj / "catalog")
    deadline = time.monotonic() + 300
    while len(store.reports()) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    words = lines[0].split()
    assert lines[0].startswith("dask-phot run: interrupted: ") and words[6] == "cells", err
    assert lines[0].endswith(f"kept in {proj / 'catalog'}; resume with: dask-phot run "
                             f"{proj / 'config.toml'}")
    kept, total = int(words[3]), int(words[5])
    summary = run_catalog(load_config(proj / "config.toml"))
    assert kept >= 1 and summary.n_cells_skipped >= kept
    assert summary.n_cells + summary.n_cells_skipped == total


# ---------------------------------------------------------------------- finding 7
@LSDB_WARNING
def test_an_unfinished_catalog_is_refused_or_marked(field, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    cfg = load_config(field / "config.toml", overrides={"cells.order": 13,
                                                        "output.path": str(tmp_path / "cat")})

    def stop(report, done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        run_catalog(cfg, on_progress=stop)
    assert info.value.kept == 2
    with pytest.raises(IncompleteCatalogError, match="has not finished"):
        read_catalog(tmp_path / "cat")
    part = read_catalog(tmp_path / "cat", partial=True)
    assert 0 < len(part) and "2 of" in part.attrs["dask_phot_partial"]
    assert main(["report", str(tmp_path / "cat"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "has not finished" in err
    assert main(["report", str(tmp_path / "cat"), "--out", str(tmp_path / "r"),
                 "--n-sources", "1", "--partial"]) == 0
    assert "PARTIAL CATALOGUE" in (tmp_path / "r" / "index.html").read_text()
    lsdb = pytest.importorskip("lsdb")
    with pytest.raises(FileNotFoundError):
        lsdb.read_hats(tmp_path / "cat")
    run_catalog(cfg)
    assert len(read_catalog(tmp_path / "cat")) == len(pd.read_parquet(field / "priors.parquet"))


# ---------------------------------------------------------------------- finding 9
def test_units_reach_astropy_and_pyarrow_and_magnitudes_are_significant(field, tmp_path):
    import pyarrow.parquet as pq
    from astropy.table import Table

    cfg = load_config(field / "config.toml", overrides={"output.path": str(tmp_path / "cat")})
    run_catalog(cfg)
    (cell,) = (tmp_path / "cat" / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet")
    table = Table.read(cell)
    assert table["flux_irac1"].unit == "uJy" and table["ra"].unit == "deg"
    assert str(table["mag_nuv"].unit) == "mag(AB)"
    assert "forced flux" in table["flux_irac1"].description
    schema = pq.read_schema(tmp_path / "cat" / "dataset" / "_common_metadata")
    assert schema.field("flux_err_nuv").metadata[b"unit"] == b"uJy"
    props = (tmp_path / "cat" / "hats.properties").read_text()
    assert "hats_index_extra_column" not in props and "hats_builder=dask-phot" in props
    cat = read_catalog(tmp_path / "cat")
    for band in ("irac1", "nuv"):
        snr = cat[f"flux_{band}"] / cat[f"flux_err_{band}"]
        has_mag = cat[f"mag_{band}"].notna()
        assert has_mag.any() and (snr[has_mag] >= MAG_MIN_SNR).all()
        assert (snr[~has_mag & snr.notna()] < MAG_MIN_SNR).all()
        assert cat[f"mag_err_{band}"].max() <= 2.5 / np.log(10) / MAG_MIN_SNR + 1e-12
