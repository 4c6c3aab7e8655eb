"""Tests of dask_phot.priors: reading and checking priors catalogs."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from dask_phot.priors import read_priors


@pytest.fixture
def raw() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 50
    return pd.DataFrame(
        {
            "objid": np.arange(1000, 1000 + n, dtype=np.int64),
            "RA": 150.0 + rng.random(n),
            "DEC": 2.0 + rng.random(n),
            "flux_true_irac1": rng.random(n) * 10,
            "mag": rng.random(n) + 20,
        }
    )


KW = {"ra_column": "RA", "dec_column": "DEC", "id_column": "objid", "columns": ["flux_true_irac1"]}


def _table(raw: pd.DataFrame) -> Table:
    t = Table.from_pandas(raw)
    t["vec"] = np.ones((len(raw), 3))  # multi-dimensional: dropped
    return t


def test_all_sources_give_the_same_frame(raw, tmp_path, caplog):
    expected = read_priors(raw, **KW)
    assert expected.columns.tolist() == ["source_id", "ra", "dec", "flux_true_irac1"]
    assert expected["source_id"].dtype == np.int64 and expected["ra"].dtype == np.float64
    raw.to_parquet(tmp_path / "p.parquet")
    raw.to_csv(tmp_path / "p.csv", index=False)
    _table(raw).write(tmp_path / "p.fits")
    _table(raw).write(tmp_path / "p.ecsv")
    with caplog.at_level(logging.INFO, logger="dask_phot.priors"):
        frames = [
            read_priors(tmp_path / f"p.{ext}", **KW) for ext in ("parquet", "csv", "fits", "ecsv")
        ]
    frames.append(read_priors(_table(raw), **KW))
    assert "'vec'" in caplog.text
    for frame in frames:
        pd.testing.assert_frame_equal(frame, expected, check_exact=False, rtol=1e-12)
        assert all(frame[c].to_numpy().dtype.isnative for c in frame.columns)


def test_fits_big_endian_is_native(raw, tmp_path):
    Table.from_pandas(raw).write(tmp_path / "p.fits")
    assert not Table.read(tmp_path / "p.fits")["RA"].dtype.isnative
    df = read_priors(tmp_path / "p.fits", **KW)
    assert df["ra"].to_numpy().dtype.isnative and df["source_id"].dtype == np.int64


def test_missing_column_lists_available(raw, tmp_path):
    raw.to_parquet(tmp_path / "p.parquet")
    with pytest.raises(
        ValueError,
        match=r"p\.parquet: no RA column 'alpha' \(ra_column; \[priors\] ra_column of a run "
        r"configuration\); available columns: objid, RA, DEC, flux_true_irac1, mag",
    ):
        read_priors(tmp_path / "p.parquet", ra_column="alpha")
    # RA and DEC headers are the default ra and dec, whatever their case
    found = read_priors(tmp_path / "p.parquet", id_column="objid")
    np.testing.assert_array_equal(found["ra"], raw["RA"])
    with pytest.raises(ValueError, match=r"no column 'nope'.*available columns: objid"):
        read_priors(raw, **{**KW, "columns": ["nope"]})


def test_nan_coordinate_names_row(raw, tmp_path):
    raw.loc[7, "DEC"] = np.nan
    raw.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(
        ValueError,
        match=r"p\.csv: Dec column 'DEC' has a missing or "
        r"non-finite value at row 7",
    ):
        read_priors(tmp_path / "p.csv", **KW)


def test_non_numeric_and_out_of_range(raw):
    bad = raw.astype({"RA": object})
    bad.loc[3, "RA"] = "10h00m"
    with pytest.raises(ValueError, match="RA column 'RA' is not numeric: row 3 holds '10h00m'"):
        read_priors(bad, **KW)
    raw.loc[4, "DEC"] = 91.0
    with pytest.raises(ValueError, match=r"Dec column 'DEC' out of range \[-90, 90\] at row 4"):
        read_priors(raw, **KW)


def test_duplicate_ids(raw):
    raw.loc[9, "objid"] = raw.loc[2, "objid"]
    with pytest.raises(
        ValueError,
        match=r"<DataFrame>: id column 'objid' has duplicate "
        r"values: 1002 at rows \[2, 9\]",
    ):
        read_priors(raw, **KW)


def test_missing_id_uses_row_number(raw, tmp_path, caplog):
    raw.drop(columns="objid").to_parquet(tmp_path / "p.parquet")
    with caplog.at_level(logging.WARNING, logger="dask_phot.priors"):
        df = read_priors(tmp_path / "p.parquet", ra_column="RA", dec_column="DEC")
    assert df["source_id"].tolist() == list(range(len(raw)))
    assert "no id column 'source_id'" in caplog.text


def test_ra_wrapped_and_unknown_type(raw, tmp_path):
    raw.loc[0, "RA"] = -10.0
    assert read_priors(raw, **KW)["ra"].iloc[0] == 350.0
    with pytest.raises(ValueError, match=r"p\.txt: unknown priors file type"):
        read_priors(tmp_path / "p.txt")
    with pytest.raises(TypeError, match="source must be"):
        read_priors(42)


def test_remote_parquet(raw, tmp_path, s3_server):
    raw.to_parquet(tmp_path / "p.parquet")
    s3_server.create_bucket("priors-test")
    url = s3_server.upload(tmp_path / "p.parquet", "priors-test", "cat/p.parquet")
    df = read_priors(url, **KW, storage_options=s3_server.storage_options(anon=True))
    pd.testing.assert_frame_equal(df, read_priors(raw, **KW))
