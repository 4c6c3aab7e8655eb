"""The HTML report: files, cutout models, and the page in a real headless chromium.

The browser test drives Debian's chromium through the DevTools protocol
(websocket-client): it loads the page from disk, collects console messages,
exceptions and failed loads, checks every <img> decoded, and saves a full-page
screenshot (``REPORT_SCREENSHOT`` env var: where to copy it for a human to look).
It skips, saying why, when chromium or websocket-client is missing
(``apt-get install -y chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib", reason="the report needs matplotlib")

from dask_phot.bands import NOTEBOOK_BANDS
from dask_phot.commands import main
from dask_phot.config import load_config
from dask_phot.pipeline import read_catalog, run_catalog
from dask_phot.report import (
    RunImages,
    band_cutout,
    select_sources,
    write_report,
)
from dask_phot.testing import simulate_to_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 1.5 arcmin2 simulated field in the notebook's six bands, run in-process."""
    base = tmp_path_factory.mktemp("report-run")
    _, paths = simulate_to_dir(base, area_arcmin2=1.5, bands=NOTEBOOK_BANDS, seed=7)
    summary = run_catalog(load_config(paths["config"]))
    assert not summary.failures
    return Path(summary.output)


def _with_xray(cat: pd.DataFrame) -> pd.DataFrame:
    """Mark the 5 brightest IRAC1 sources as X-ray matches with hardness ratios."""
    cat = cat.copy()
    top = cat["flux_irac1"].nlargest(5).index
    cat["chandra_match"] = False
    cat.loc[top, "chandra_match"] = True
    cat["chandra_HARDNESS_RATIO"] = np.nan
    cat.loc[top, "chandra_HARDNESS_RATIO"] = np.linspace(-0.8, 0.8, 5)
    return cat


def test_cutout_model_explains_the_pixels(run_dir):
    cat = read_catalog(run_dir)
    run = RunImages.from_result(run_dir)
    row = cat.loc[cat["flux_irac1"].idxmax()]
    panel = band_cutout(run, cat, "irac1", row["ra"], row["dec"], size_arcsec=20.0)
    ny, nx = panel.data.shape
    assert ny in (33, 34) and nx in (33, 34)  # 20" at 0.6"/px around the source
    assert panel.x[0] == pytest.approx((nx - 1) / 2, abs=0.6)
    assert panel.y[0] == pytest.approx((ny - 1) / 2, abs=0.6)
    resid = panel.normalized_residual()
    resid = resid[np.isfinite(resid)]
    assert 1.4826 * np.median(np.abs(resid - np.median(resid))) == pytest.approx(1.0, abs=0.1)
    # the brightest source is explained to a few per cent of its peak
    peak = np.nanmax(panel.data)
    assert np.nanmax(panel.model) == pytest.approx(peak, rel=0.1)
    assert np.nanmax(np.abs(panel.data - panel.model)) < 0.1 * peak
    # flux conservation of the renderer
    from dask_phot.engine.wings import model_image
    from dask_phot.psf import gaussian_psf

    img = model_image((9, 9), gaussian_psf(1.5, size=7), np.array([0.2, 8.4]),
                      np.array([4.0, 4.0]), np.array([2.0, 3.0]))
    assert 2.0 < img.sum() < 5.0  # both stamps partly off the 9x9 box


def test_report_files_and_cli(run_dir, tmp_path):
    cat = _with_xray(read_catalog(run_dir))
    summary = write_report(run_dir, tmp_path / "rep", n_sources=3, catalog=cat,
                           size_arcsec=20.0)
    assert summary.problems == []
    names = sorted(p.name for p in summary.images)
    assert {"flux.png", "irac_cc.png", "uvir_cc.png", "cell.png"} <= set(names)
    # X-ray matches come first in the selection
    assert set(summary.sources) <= set(cat.loc[cat["chandra_match"], "source_id"])
    page = summary.index.read_text()
    srcs = re.findall(r"src='([^']+)'", page)
    assert len(srcs) == 4 + 2 * 3 and all((tmp_path / "rep" / s).is_file() for s in srcs)
    assert "class='missing'" not in page
    # the command line: a catalogue file has no images, and says so on the page
    cat_file = tmp_path / "cat.parquet"
    cat.to_parquet(cat_file)
    assert main(["report", str(cat_file), "--out", str(tmp_path / "rep2"),
                 "--n-sources", "2"]) == 0
    assert "cutouts need a dask-phot output directory" in (tmp_path / "rep2" / "index.html"
                                                           ).read_text()
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep3"), "--source",
                 str(cat["source_id"].iloc[0])]) == 0


def test_plot_cell_command_draws_the_fullest_cell(run_dir, tmp_path):
    from dask_phot.report import cell_panels

    cat = read_catalog(run_dir)
    panels = cell_panels(run_dir, cat, bands=["irac1", "fuv"])
    assert [p.band for p in panels] == ["irac1", "fuv"]
    assert panels[0].chi2.size == panels[0].x.size == len(cat)  # one cell holds them all
    out = tmp_path / "cell.pdf"
    assert main(["plot", "cell", str(run_dir), "--out", str(out), "--bands", "irac1"]) == 0
    assert out.read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match="no catalogue source in cell"):
        cell_panels(run_dir, cat, cell=0)


def test_select_sources_by_id_and_unknown():
    cat = pd.DataFrame({"source_id": [5, 6], "flux_b": [1.0, 2.0], "flux_err_b": [1.0, 1.0]})
    assert select_sources(cat, ids=[6])["source_id"].tolist() == [6]
    with pytest.raises(KeyError, match="7"):
        select_sources(cat, ids=[7])


def test_report_renders_in_headless_chromium(run_dir, tmp_path, browser):
    summary = write_report(run_dir, tmp_path / "rep", n_sources=2,
                           catalog=_with_xray(read_catalog(run_dir)), size_arcsec=20.0)
    seen = browser.load(summary.index)
    assert seen["problems"] == []
    assert len(seen["images"]) == 4 + 2 * 2
    assert all(done and width > 100 for _, done, width in seen["images"]), seen["images"]
    png = seen["png"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    shot = tmp_path / "report.png"
    shot.write_bytes(png)
    if os.environ.get("REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["REPORT_SCREENSHOT"])

    # the checker sees a broken page: a missing image and a script error
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img src='nope.png'><script>undefinedCall()</script>"
                   "</body></html>")
    seen = browser.load(bad)
    assert any("exception" in p for p in seen["problems"])
    assert any("nope.png" in p or "load failed" in p for p in seen["problems"])
    assert seen["images"] == [["nope.png", True, 0]]
