"""nway cross-matching: real Chandra/XMM COSMOS catalogues, per-cell = whole, the nway CLI.

Real data: ``../shared/data/fornax-cosmos`` (Chandra COSMOS, 1761 sources, and the
481-source COSMOS2015 cutout the COSMOS notebook photometers) and
``../shared/data/nway-cosmos-xmm`` (XMM-COSMOS positions shipped with nway); see
their PROVENANCE.md. Tests that need them skip when the folder is absent.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# find_spec, not importorskip: importing nwaylib by hand would make ./cache (see load_nway)
if importlib.util.find_spec("nwaylib") is None:
    pytest.skip("nway not installed: pip install 'dask-phot[crossmatch]'",
                allow_module_level=True)

from dask_phot.cells import assign_cells
from dask_phot.crossmatch import (
    MatchCatalog,
    crossmatch,
    footprint_area,
    nway_command,
    run_nway,
    run_nway_cells,
    select_matches,
    write_nway_fits,
)

DATA = Path(__file__).parents[2] / "shared" / "data"
FORNAX = DATA / "fornax-cosmos"
XMM = DATA / "nway-cosmos-xmm" / "COSMOS_XMM.fits"
needs_data = pytest.mark.skipif(not (FORNAX / "COSMOS_chandra.fits").exists()
                                or not XMM.exists(),
                                reason=f"real COSMOS catalogues not found under {DATA}")


def _read(path: Path) -> pd.DataFrame:
    from astropy.table import Table

    with warnings.catch_warnings():  # 'DEGREE', 'CT/S' ... are not FITS units
        warnings.simplefilter("ignore")
        table = Table.read(path, hdu=1)
    df = table.to_pandas()
    for col in df.columns:
        if df[col].dtype == object and len(df) and isinstance(df[col].iloc[0], bytes):
            df[col] = df[col].str.decode("ascii").str.strip()
    return df


@pytest.fixture(scope="module")
def cosmos() -> dict[str, pd.DataFrame]:
    if not (FORNAX / "COSMOS_chandra.fits").exists() or not XMM.exists():
        pytest.skip(f"real COSMOS catalogues not found under {DATA}")
    return {"chandra": _read(FORNAX / "COSMOS_chandra.fits"),
            "opt": _read(FORNAX / "multiband_phot.fits"), "xmm": _read(XMM)}


def _chandra(cosmos) -> MatchCatalog:
    return MatchCatalog("CHANDRA", cosmos["chandra"], "ERROR_RADIUS", ra="RA", dec="DEC",
                        id_column="ID")


def _sep_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    from astropy.coordinates import SkyCoord

    a, b = SkyCoord(ra1, dec1, unit="deg"), SkyCoord(ra2, dec2, unit="deg")
    return a.separation(b).arcsec


# ---------------------------------------------------------------------- footprints
@needs_data
def test_footprint_areas_of_the_real_catalogues(cosmos):
    """Chandra COSMOS covers 0.9 deg2 (Elvis+2009); XMM-COSMOS about 2 deg2 (nway's
    example header says 2.0); the optical cutout is a cone of radius = its largest
    ``dist`` (arcsec from the centre)."""
    opt = cosmos["opt"]
    cone = np.pi * (opt["dist"].max() / 3600) ** 2
    assert footprint_area(opt["ra"], opt["dec"]) == pytest.approx(cone, rel=0.05)
    assert footprint_area(cosmos["chandra"]["RA"], cosmos["chandra"]["DEC"]) == \
        pytest.approx(0.9, rel=0.08)
    assert footprint_area(cosmos["xmm"]["RA"], cosmos["xmm"]["DEC"]) == \
        pytest.approx(2.0, rel=0.05)


def test_footprint_area_of_uniform_fields_and_bad_input():
    rng = np.random.default_rng(3)
    for n, side in ((600, 0.1), (3000, 0.5)):
        dec = -30 + rng.random(n) * side
        ra = 10 + rng.random(n) * side / np.cos(np.radians(-30 + side / 2))
        assert footprint_area(ra, dec) == pytest.approx(side**2, rel=0.04)
    with pytest.raises(ValueError, match="at least 2"):
        footprint_area([1.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        footprint_area([1.0, np.nan], [2.0, 2.0])


# ---------------------------------------------------------------------- real catalogues
@needs_data
def test_chandra_cosmos_matches_and_known_pairs(cosmos):
    """nway on Chandra COSMOS x the 481-source cutout, the notebook's settings.

    Known pairs: COSMOS2015 itself associates 20 of the 481 sources with a Chandra
    COSMOS source (``id_chandra09`` is set), an identification made independently of
    nway. Every one of them must come out as an nway match with p_any > 0.8 whose
    Chandra position lies within 2.5" of the optical one (three are checked by name).
    The notebook's rule (p_i >= 0.1, match_flag == 1) also keeps 3 lone candidates
    8-12" away with p_any ~ 0: p_any >= 0.5 removes exactly those.
    """
    opt = cosmos["opt"]
    out = crossmatch(opt, _chandra(cosmos), id_column="ID")
    assert len(out) == len(opt) and out["ID"].tolist() == opt["ID"].tolist()
    matched = out[out["chandra_match"]]
    assert len(matched) == 23
    assert ((matched["chandra_p_i"] >= 0.1) & (matched["chandra_match_flag"] == 1)).all()
    secure = matched[matched["chandra_p_any"] >= 0.5]
    assert len(secure) == 20
    assert (matched.loc[matched["chandra_p_any"] < 0.5, "chandra_separation"] > 8).all()

    known = out[out["id_chandra09"].notna()]
    assert len(known) == 20
    assert set(known["ID"]) == set(secure["ID"])
    assert (known["chandra_p_any"] > 0.8).all()
    sep = _sep_arcsec(known["ra"], known["dec"], known["chandra_RA"], known["chandra_DEC"])
    assert sep.max() < 2.5
    np.testing.assert_allclose(sep, known["chandra_separation"], atol=0.01)
    by_id = out.set_index("ID")
    for opt_id, name in ((128, "CXOC J095956.8+021121"), (247, "CXOC J100005.8+021358"),
                         (444, "CXOC J095950.9+021236")):
        assert by_id.loc[opt_id, "chandra_NAME"] == name
    # the X-ray columns ride along: hardness ratio for the colour-colour plot
    assert known["chandra_HARDNESS_RATIO"].notna().all()
    assert out.loc[~out["chandra_match"], "chandra_p_any"].isna().all()


@needs_data
def test_xmm_cosmos_matches_agree_with_chandra(cosmos):
    """XMM-COSMOS (errors 1-3") x the cutout: 12 matches, the secure ones mostly the
    same optical sources that Chandra picks, and each such XMM position within 3" of the
    Chandra one (the two X-ray catalogues see the same AGN)."""
    opt = cosmos["opt"]
    xmm = MatchCatalog("XMM", cosmos["xmm"], "pos_err", ra="RA", dec="DEC", id_column="ID")
    out = crossmatch(opt, [_chandra(cosmos), xmm], id_column="ID")
    xm = out[out["xmm_match"]]
    assert len(xm) == 12
    secure = xm[xm["xmm_p_any"] >= 0.5]
    both = secure[secure["chandra_match"] & (secure["chandra_p_any"] >= 0.5)]
    assert len(secure) == 11 and len(both) == 9
    sep = _sep_arcsec(both["xmm_RA"], both["xmm_DEC"], both["chandra_RA"], both["chandra_DEC"])
    assert sep.max() < 3.0
    # a known pair: optical 77 = XMM 95 = CXOC J100006.8+021236
    row = out.set_index("ID").loc[77]
    assert row["xmm_id"] == 95 and row["chandra_NAME"] == "CXOC J100006.8+021236"


@needs_data
def test_nway_command_line_on_written_fits_gives_the_same(cosmos, tmp_path):
    """write_nway_fits writes what nway.py reads (EXTNAME, SKYAREA, ID, POS_ERR): the
    real CLI gives the API's probabilities."""
    script = shutil.which("nway.py") or str(Path(sys.executable).parent / "nway.py")
    if not Path(script).exists():
        pytest.skip("nway.py script not found next to the Python interpreter")
    chandra = _chandra(cosmos)
    opt = MatchCatalog("OPT", cosmos["opt"], 0.1, id_column="ID")
    f1 = write_nway_fits(chandra, tmp_path / "chandra.fits")
    f2 = write_nway_fits(opt, tmp_path / "opt.fits")
    cmd = nway_command(f1, f2, tmp_path / "out.fits", secondary_pos_err=0.1)
    proc = subprocess.run([sys.executable, script, *cmd[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cli = _read(tmp_path / "out.fits")
    cli = cli[cli["OPT_ID"] > 0].set_index(["CHANDRA_ID", "OPT_ID"]).sort_index()
    api = run_nway(chandra, opt)
    api = api[api["ncat"] == 2].astype({"OPT_ID": np.int64})
    api = api.set_index(["CHANDRA_ID", "OPT_ID"]).sort_index()
    assert api.index.equals(cli.index)
    for col in ("p_any", "p_i", "match_flag"):
        np.testing.assert_allclose(api[col], cli[col], rtol=1e-5, atol=1e-6, err_msg=col)


# ---------------------------------------------------------------------- per cell
def _planted(seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, int]]:
    """3000 optical sources on 0.3 x 0.3 deg; 240 X-ray sources: 200 planted at
    Gaussian offsets (sigma = their error, 0.5-2") from an optical source, 40 random."""
    rng = np.random.default_rng(seed)
    n, side = 3000, 0.3
    opt = pd.DataFrame({"source_id": np.arange(1000, 1000 + n),
                        "ra": 150 + rng.random(n) * side / np.cos(np.radians(2.15)),
                        "dec": 2 + rng.random(n) * side})
    host = rng.choice(n, 200, replace=False)
    err = rng.uniform(0.5, 2.0, 240)
    dra = rng.normal(0, err[:200]) / 3600 / np.cos(np.radians(opt["dec"].to_numpy()[host]))
    ddec = rng.normal(0, err[:200]) / 3600
    xray = pd.DataFrame({
        "xid": np.arange(240),
        "RA": np.r_[opt["ra"].to_numpy()[host] + dra,
                    150 + rng.random(40) * side / np.cos(np.radians(2.15))],
        "DEC": np.r_[opt["dec"].to_numpy()[host] + ddec, 2 + rng.random(40) * side],
        "ERR": err, "HR": rng.uniform(-1, 1, 240)})
    truth = dict(zip(range(200), opt["source_id"].to_numpy()[host], strict=True))
    return opt, xray, truth


def test_per_cell_match_equals_one_nway_run_on_dask():
    """Cells of order 10 (~3.4'), X-ray sources near their edges: the per-cell tables,
    run on a Dask client, concatenate to exactly the whole-catalogue nway table."""
    from distributed import Client

    opt, xray, truth = _planted()
    x = MatchCatalog("XRAY", xray, "ERR", ra="RA", dec="DEC", id_column="xid")
    o = MatchCatalog("OPT", opt, 0.1, id_column="source_id")
    whole = run_nway(x, o, radius_arcsec=10.0)
    with Client(processes=False, n_workers=1, threads_per_worker=2,
                dashboard_address=None) as client:
        cells = run_nway_cells(x, o, radius_arcsec=10.0, order=10, client=client)
    pd.testing.assert_frame_equal(whole, cells, check_exact=False, rtol=1e-12, atol=0)

    # the test means something: candidate pairs straddle cell boundaries
    pairs = whole[whole["ncat"] == 2]
    xcell = assign_cells(xray.set_index("xid").loc[pairs["XRAY_ID"]]
                         .rename(columns={"RA": "ra", "DEC": "dec"}), 10).to_numpy()
    ocell = assign_cells(opt.set_index("source_id").loc[pairs["OPT_ID"].astype(int)], 10)
    assert (xcell != ocell.to_numpy()).sum() >= 10
    # and nway finds the planted counterparts
    kept = select_matches(whole, p_any_min=0.5)
    found = dict(zip(kept["XRAY_ID"], kept["OPT_ID"], strict=True))
    right = sum(found.get(k) == v for k, v in truth.items())
    assert right >= 180 and sum(k >= 200 for k in found) <= 4


def test_crossmatch_per_cell_in_process_and_merge_rules():
    opt, xray, _ = _planted(seed=8)
    x = MatchCatalog("XRAY", xray, "ERR", ra="RA", dec="DEC", id_column="xid")
    kw = {"id_column": "source_id", "radius_arcsec": 10.0}
    a = crossmatch(opt, x, **kw)
    b = crossmatch(opt, x, per_cell=True, order=9, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns[:3]) == ["source_id", "ra", "dec"]
    assert {"xray_p_any", "xray_p_i", "xray_match_flag", "xray_separation", "xray_HR",
            "xray_RA"} <= set(a.columns)
    assert a["xray_match"].sum() == a["xray_id"].notna().sum() >= 180
    assert a["xray_id"].dropna().is_unique
    strict = crossmatch(opt, x, p_i_min=0.99, p_any_min=0.9, **kw)
    assert 0 < strict["xray_match"].sum() < a["xray_match"].sum()
    with pytest.raises(ValueError, match="share the name"):
        crossmatch(opt, MatchCatalog("OPT", xray, 1.0, ra="RA", dec="DEC"))


def test_match_catalog_validation_and_empty_inputs():
    df = pd.DataFrame({"ra": [150.0, 150.001], "dec": [2.0, 2.0], "e": [1.0, 0.0]})
    with pytest.raises(ValueError, match="identifier"):
        MatchCatalog("bad name", df, 1.0)
    with pytest.raises(KeyError, match="no column"):
        MatchCatalog("X", df, "err")
    with pytest.raises(ValueError, match="> 0"):
        MatchCatalog("X", df, "e").errors()
    x = MatchCatalog("X", df, 1.0, area_deg2=1.0)
    none = MatchCatalog("OPT", df.iloc[:0], 0.1, area_deg2=1.0)
    table = run_nway(x, none)
    assert table["ncat"].tolist() == [1, 1] and table["p_any"].tolist() == [0.0, 0.0]
    assert table["OPT_ID"].isna().all()


def test_crossmatch_command_writes_the_api_result(tmp_path, capsys):
    from dask_phot.commands import main

    opt, xray, _ = _planted(seed=8)
    xray = xray.rename(columns={"ERR": "ERROR_RADIUS"})
    opt.to_parquet(tmp_path / "phot.parquet")
    xray.to_parquet(tmp_path / "xray.parquet")
    out = tmp_path / "matched.parquet"
    assert main(["crossmatch", str(tmp_path / "phot.parquet"), str(tmp_path / "xray.parquet"),
                 "--out", str(out), "--name", "CHANDRA", "--xray-ra", "RA", "--xray-dec",
                 "DEC", "--xray-id", "xid", "--radius", "10"]) == 0
    expected = crossmatch(opt, MatchCatalog("CHANDRA", xray, "ERROR_RADIUS", ra="RA",
                                            dec="DEC", id_column="xid"),
                          id_column="source_id", radius_arcsec=10.0)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
    n = int(expected["chandra_match"].sum())
    assert f"CHANDRA: {n} of {len(opt)} photometry sources matched" in capsys.readouterr().out
    assert main(["crossmatch", str(tmp_path / "phot.parquet"), str(tmp_path / "xray.parquet"),
                 "--out", str(out), "--xray-ra", "nope"]) == 2
    assert "no column" in capsys.readouterr().err
