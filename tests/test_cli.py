"""The dask-phot command line, run in-process as a user would call it."""

from __future__ import annotations

import pandas as pd
import pytest

from dask_phot.cli import main


@pytest.mark.slow
def test_simulate_then_run(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "f"), "--area-arcmin2", "2",
                 "--bands", "irac1", "nuv", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "dask-phot run" in out and (tmp_path / "f" / "config.toml").exists()
    assert main(["run", str(tmp_path / "f" / "config.toml"), "--quiet", "--workers", "1",
                 "--out", str(tmp_path / "cat")]) == 0
    out = capsys.readouterr().out
    assert "Dask dashboard: http://127.0.0.1:" in out and "source-bands/s" in out
    cat = pd.read_parquet(tmp_path / "cat" / "dataset")
    priors = pd.read_parquet(tmp_path / "f" / "priors.parquet")
    assert len(cat) == len(priors) and {"flux_irac1", "flux_err_nuv"} <= set(cat.columns)


def test_config_error_names_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[priors]\npath = "p.parquet"\n[bands.irac1]\nimages = ["x.fits"]\n'
                   "[engine]\nfit_skyy = true\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "engine.fit_skyy" in err and "fit_sky" in err


@pytest.mark.slow
def test_demo_serves_from_local_s3_and_reports_accuracy(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--area-arcmin2", "2",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mosaics served from http://127.0.0.1:" in out
    assert "accuracy against the simulated truth" in out and "std 5-100" in out
    for band in ("irac1", "irac2", "irac3", "irac4", "nuv", "fuv"):
        assert band in out
    assert (tmp_path / "demo" / "catalog" / "properties").exists()
