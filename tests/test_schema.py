"""The output schema: one flag table, one builder of band and cell tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from dask_phot import schema
from dask_phot.schema import (
    BAND_COLUMNS,
    FATAL_FLAGS,
    FLAG_MEANINGS,
    MODEL_CODES,
    Flag,
    band_table,
    band_values,
    cell_meta,
    cell_table,
)


def test_every_flag_has_one_meaning_and_the_documentation_shows_it():
    assert list(FLAG_MEANINGS) == list(Flag)
    assert [int(f) for f in Flag] == [1 << i for i in range(len(Flag))]
    rows = re.findall(r"^``(\w+)``\s+(\d+)\s+(.+)$", schema.__doc__, flags=re.M)
    assert rows == [(f.name, str(int(f)), FLAG_MEANINGS[f]) for f in Flag]
    assert "{flag_table}" not in schema.__doc__
    assert FATAL_FLAGS & Flag.NOT_COVERED and not FATAL_FLAGS & Flag.BLENDED


def test_band_table_has_the_schema_columns_and_derives_magnitudes():
    empty = band_table(3, flags=Flag.NOT_COVERED)
    assert list(empty.columns) == list(BAND_COLUMNS)
    assert empty.dtypes.astype(str).tolist() == [v[0] for v in BAND_COLUMNS.values()]
    assert empty.drop(columns=["flags", "model"]).isna().all().all()
    assert (empty["model"] == MODEL_CODES["none"]).all()
    assert (empty["flags"] == int(Flag.NOT_COVERED)).all()
    t = band_table(2, flux=[3631.0, -1.0], flux_err=[36.31, 1.0], chi2=[1.0, 2.0],
                   flags=np.array([0, int(Flag.NEGATIVE_FLUX)]))
    assert t["mag"].iloc[0] == 23.9 - 2.5 * np.log10(3631.0) and np.isnan(t["mag"].iloc[1])
    assert t["mag_err"].iloc[0] == np.float64(2.5 / np.log(10) * 0.01)
    assert t["flags"].tolist() == [0, 256] and t["chi2"].tolist() == [1.0, 2.0]


def test_cell_table_is_cell_meta_filled():
    base = {"source_id": [5, 6], "ra": [150.0, 150.1], "dec": [2.0, 2.1],
            "_healpix_29": [10, 11]}
    keep = {"z": pd.Series([0.5, 1.5], dtype="float32"),
            "name": pd.Series(["a", "b"], dtype=object)}
    bands = {"irac1": band_table(2, flux=[1.0, 2.0], flux_err=[0.1, 0.1]),
             "nuv": band_table(2, flags=Flag.CELL_FAILED)}
    table = cell_table(base, bands, keep)
    meta = cell_meta(["irac1", "nuv"], {"z": "float32", "name": "object"})
    pd.testing.assert_frame_equal(table.iloc[:0], meta, check_index_type=False)
    assert table["flux_irac1"].tolist() == [1.0, 2.0] and table["z"].dtype == np.float32
    assert (table["flags_nuv"] == int(Flag.CELL_FAILED)).all()


def test_band_values_are_band_table_as_independent_writable_arrays():
    values = band_values(3, flags=Flag.NOT_COVERED)
    pd.testing.assert_frame_equal(pd.DataFrame(values), band_table(3, flags=Flag.NOT_COVERED))
    values["flux"][0] = 1.0  # the kernel fills its bands' columns in place
    assert np.isnan(values["flux_err"][0]) and np.isnan(values["chi2"][0])
    assert all(v.flags.writeable for v in values.values())


def test_cell_table_in_a_given_order_is_the_table_sorted():
    """The kernel sorts a cell's rows by HEALPix index before the one DataFrame is built:
    as sorting the built table (extension and object columns included)."""
    base = {"source_id": np.array([5, 6, 7]), "ra": np.array([150.0, 150.1, 150.2]),
            "dec": np.array([2.0, 2.1, 2.2]), "_healpix_29": np.array([12, 10, 12])}
    keep = {"name": pd.Series(["a", "b", "c"], dtype="string", index=[4, 8, 9]),
            "obj": pd.Series(["x", None, "z"], dtype=object, index=[4, 8, 9]),
            "z": pd.Series([0.5, 1.5, 2.5], dtype="float32", index=[4, 8, 9])}
    bands = {"irac1": band_values(3, flux=[1.0, 2.0, 3.0], flux_err=[0.1, 0.1, 0.1])}
    order = np.argsort(base["_healpix_29"], kind="stable")
    got = cell_table(base, bands, keep, order)
    want = cell_table(base, bands, keep).sort_values("_healpix_29", kind="stable")
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_exact=True)
    assert got["source_id"].tolist() == [6, 5, 7] and got["name"].dtype == "string"
