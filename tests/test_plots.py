"""Plots: what each function draws (labels, point counts, annotations), and the CLI."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib", reason="plots need matplotlib: pip install 'dask-phot[plots]'")

from dask_phot.plots import (
    BandPanel,
    cell_diagnostics,
    flux_comparison,
    irac_color_color,
    panel_from_fit,
    robust_ratio,
    sed_plot,
    uv_ir_color_color,
)

FORNAX = Path(__file__).parents[2] / "shared" / "data" / "fornax-cosmos"


def _offsets(collection) -> np.ndarray:
    return np.asarray(collection.get_offsets())


def _synthetic(n: int = 200, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"source_id": np.arange(n)})
    for b, scale in (("irac1", 20.0), ("irac2", 18.0), ("irac3", 15.0), ("irac4", 14.0),
                     ("nuv", 2.0), ("fuv", 1.0)):
        df[f"flux_{b}"] = scale * rng.lognormal(0, 0.7, n)
        df[f"flux_err_{b}"] = 0.05 * scale
    df.loc[:9, "flux_irac3"] = np.nan          # 10 rows without IRAC colours
    df.loc[10:14, "flux_irac4"] = -1.0         # 5 more: negative flux
    df.loc[:29, "flux_fuv"] = np.nan           # 30 rows without FUV
    df["flux_true_irac1"] = df["flux_irac1"] / 1.1
    df["uv"] = df["flux_nuv"] > 2.0
    df["xray"] = False
    df.loc[50:69, "xray"] = True
    df["hr"] = np.linspace(-1, 1, n)
    return df


# ---------------------------------------------------------------------- flux comparison
def test_flux_comparison_draws_points_line_and_ratio_text():
    df = _synthetic()
    df.loc[0, "flux_irac1"] = -3.0
    fig = flux_comparison(df, {"irac1": ("flux_irac1", "flux_true_irac1")})
    ax = fig.axes[0]
    assert ax.get_xlabel() == "reference: flux_true_irac1 [uJy]"
    assert ax.get_ylabel() == "measured: flux_irac1 [uJy]"
    assert ax.get_title() == "irac1" and ax.get_xscale() == "log"
    assert len(_offsets(ax.collections[0])) == len(df) - 1
    (line,) = ax.get_lines()
    assert np.allclose(line.get_xdata(), line.get_ydata())          # the 1:1 line
    assert ax.texts[0].get_text() == f"median ratio = 1.100\nscatter = 0.000 (N = {len(df) - 1})"
    # an S/N cut on the measured flux: errors of 20 uJy keep only fluxes >= 100
    df["flux_err_irac1"] = 20.0
    fig = flux_comparison(df, {"irac1": ("flux_irac1", "flux_true_irac1")},
                          errors={"irac1": "flux_err_irac1"}, snr_min=5)
    n = int((df["flux_irac1"] >= 100).sum())
    assert 0 < n < len(df) - 1
    assert len(_offsets(fig.axes[0].collections[0])) == n
    assert fig.axes[0].get_title() == "irac1 (S/N >= 5)"
    assert fig.axes[0].texts[0].get_text().endswith(f"(N = {n})")
    with pytest.raises(ValueError, match="error column"):
        flux_comparison(df, {"irac1": ("flux_irac1", "flux_true_irac1")}, snr_min=5)


@pytest.mark.skipif(not (FORNAX / "multiband_phot.fits").exists(),
                    reason=f"real COSMOS cutout not found under {FORNAX}")
def test_flux_comparison_on_the_notebook_table():
    """The notebook's Tractor IRAC fluxes against COSMOS2015's SPLASH fluxes: its ch1
    fluxes are 12 % low (median ratio 0.879 over 123 sources), ch3/ch4 far off."""
    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = Table.read(FORNAX / "multiband_phot.fits").to_pandas()
    pairs = {f"IRAC ch{c}": (f"ch{c}flux", f"splash_{c}_flux") for c in (1, 2, 3, 4)}
    fig = flux_comparison(df, pairs, ncols=2)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list(pairs)
    for ax, (mcol, rcol) in zip(visible, pairs.values(), strict=True):
        med, scatter, n = robust_ratio(df[mcol], df[rcol])
        assert 0.5 < med < 2.0 and n > 20
        assert len(_offsets(ax.collections[0])) == n
        assert ax.texts[0].get_text() == \
            f"median ratio = {med:.3f}\nscatter = {scatter:.3f} (N = {n})"
    assert visible[0].texts[0].get_text().startswith("median ratio = 0.879\nscatter = 0.325")


def test_flux_comparison_rejects_empty_and_unknown_columns():
    with pytest.raises(ValueError, match="no"):
        flux_comparison(_synthetic(), {})
    with pytest.raises(KeyError, match="flux_zz"):
        flux_comparison(_synthetic(), {"x": ("flux_zz", "flux_irac1")})


# ---------------------------------------------------------------------- colour-colour
def test_irac_color_color_counts_overlays_and_wedge():
    df = _synthetic()
    fig = irac_color_color(df, uv_detected="uv", xray_detected="xray")
    ax = fig.axes[0]
    good = len(df) - 15
    allp, uvp, xp = (len(_offsets(c)) for c in ax.collections)
    assert allp == good
    assert uvp == int(df["uv"].iloc[15:].sum())
    assert xp == 20
    assert ax.get_xlabel() == r"$\log_{10}(S_{5.8}/S_{3.6})$"
    assert ax.get_ylabel() == r"$\log_{10}(S_{8.0}/S_{4.5})$"
    (wedge,) = ax.get_lines()
    assert wedge.get_label() == "Lacy et al. (2004)"
    assert np.allclose(wedge.get_xydata()[1:3], [[-0.1, -0.2], [-0.1, 0.42]])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1:] == [f"UV-detected ({uvp})", "X-ray-detected (20)", "Lacy et al. (2004)"]
    # the notebook's own column names work through the template
    nb = df.rename(columns={f"flux_irac{c}": f"ch{c}flux" for c in (1, 2, 3, 4)})
    fig2 = irac_color_color(nb, bands=("ch1", "ch2", "ch3", "ch4"), flux="{band}flux")
    assert len(fig2.axes[0].collections) == 1
    assert len(_offsets(fig2.axes[0].collections[0])) == good


def test_uv_ir_color_color_colours_xray_sources_by_hardness():
    df = _synthetic()
    fig = uv_ir_color_color(df, xray_detected="xray", hardness="hr")
    ax, cbar = fig.axes
    ok = df["flux_fuv"].notna()
    assert len(_offsets(ax.collections[0])) == int(ok.sum())
    xsel = ok & df["xray"]
    xcoll = ax.collections[1]
    assert len(_offsets(xcoll)) == int(xsel.sum()) == 20
    np.testing.assert_allclose(xcoll.get_array(), df.loc[xsel, "hr"])
    assert cbar.get_ylabel() == "hardness ratio (hr)"
    assert ax.get_xlabel() == "NUV - [3.6] (AB)" and ax.get_ylabel() == "FUV - NUV (AB)"
    x0, y0 = _offsets(ax.collections[0])[0]
    row = df[ok].iloc[0]
    assert x0 == pytest.approx(-2.5 * np.log10(row["flux_nuv"] / row["flux_irac1"]))
    assert y0 == pytest.approx(-2.5 * np.log10(row["flux_fuv"] / row["flux_nuv"]))


def test_colour_colour_snr_cut():
    df = _synthetic()
    df.loc[100:, "flux_err_irac3"] = df["flux_irac3"] / 4            # S/N 4 in irac3 there

    def snr_ok(bands, cut):
        return np.all([(df[f"flux_{b}"] / df[f"flux_err_{b}"]).fillna(0) >= cut
                       for b in bands], axis=0)

    irac = ("irac1", "irac2", "irac3", "irac4")
    ok = np.isfinite(np.log10(df["flux_irac3"] / df["flux_irac1"])) & (df["flux_irac4"] > 0)
    fig = irac_color_color(df, snr_min=5)
    assert len(_offsets(fig.axes[0].collections[0])) == int((ok & snr_ok(irac, 5)).sum())
    assert (ok & snr_ok(irac, 5)).sum() < (ok & snr_ok(irac, 3)).sum() <= ok.sum()
    assert fig.axes[0].get_title() == "IRAC colour-colour (S/N >= 5)"
    fig = irac_color_color(df, snr_min=3)
    assert len(_offsets(fig.axes[0].collections[0])) == int((ok & snr_ok(irac, 3)).sum())
    df.loc[:99, "flux_err_nuv"] = df["flux_nuv"] / 2                  # S/N 2 in NUV
    uvir = ("fuv", "nuv", "irac1")
    both = df["flux_fuv"].notna() & snr_ok(uvir, 3)
    fig = uv_ir_color_color(df, snr_min=3)
    assert len(_offsets(fig.axes[0].collections[0])) == int(both.sum())
    assert 0 < both.sum() <= (df.index >= 100).sum()


# ---------------------------------------------------------------------- SED
def test_sed_plot_detections_upper_limits_and_missing_bands():
    bands = ["fuv", "nuv", "irac1", "irac2", "irac3", "irac4"]
    row = pd.Series({
        "flux_fuv": 0.2, "flux_err_fuv": 0.1,          # S/N 2: upper limit at 0.3
        "flux_nuv": -0.5, "flux_err_nuv": 0.2,         # negative: upper limit at 0.6
        "flux_irac1": 30.0, "flux_err_irac1": 1.0,
        "flux_irac2": 25.0, "flux_err_irac2": 1.0,
        "flux_irac3": np.nan, "flux_err_irac3": np.nan,  # not measured: skipped
        "flux_irac4": 20.0, "flux_err_irac4": 4.0})
    fig = sed_plot(row, bands, title="source 7")
    ax = fig.axes[0]
    det, lim = ax.containers
    assert np.allclose(det.lines[0].get_xdata(), [3.6, 4.5, 8.0])
    assert np.allclose(det.lines[0].get_ydata(), [30.0, 25.0, 20.0])
    assert np.allclose(lim.lines[0].get_xdata(), [0.1516, 0.2267])
    assert np.allclose(lim.lines[0].get_ydata(), [0.3, 0.6])
    assert ax.get_xlabel() == r"wavelength [$\mu$m]" and ax.get_title() == "source 7"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert sorted(t.get_text() for t in ax.texts) == sorted(
        ["fuv", "nuv", "irac1", "irac2", "irac4"])


# ---------------------------------------------------------------------- cell diagnostics
def test_cell_diagnostics_from_an_engine_fit():
    from dask_phot.testing import GaussianPRF, simulate_image

    rng = np.random.default_rng(4)
    n = 40
    x, y = rng.uniform(5, 59, n), rng.uniform(5, 59, n)
    flux = rng.uniform(50, 500, n)
    sim = simulate_image((64, 64), x, y, flux, GaussianPRF(fwhm=2.5, size=15), seed=4,
                         sigma=1.0)
    panel, res = panel_from_fit("irac1", sim.data, sim.psf, x, y, weight=sim.weight)
    fig = cell_diagnostics([panel, BandPanel("nuv", sim.data, sim.model, None, res.chi2[:10])])
    assert len(fig.axes) == 2 * 4 + 2  # 4 per band row + a colour bar per residual
    titles = [ax.get_title() for ax in fig.axes]
    for t in ("irac1: data", "irac1: model", "irac1: residual / sigma",
              "irac1: chi2 (40 sources)", "nuv: chi2 (10 sources)"):
        assert t in titles
    hist = next(ax for ax in fig.axes if ax.get_title() == "irac1: chi2 (40 sources)")
    assert hist.get_xlabel() == "reduced chi2"
    assert sum(p.get_height() for p in hist.patches) == 40
    resid = panel.normalized_residual()
    assert np.nanstd(resid) == pytest.approx(1.0, abs=0.1)   # a good fit: unit residuals
    with pytest.raises(ValueError, match="same 2-D shape"):
        BandPanel("x", np.zeros((3, 3)), np.zeros((3, 4)))


# ---------------------------------------------------------------------- CLI
def test_plot_cli_writes_png_and_pdf(tmp_path):
    from dask_phot.commands import main

    df = _synthetic()
    cat = tmp_path / "cat.parquet"
    df.to_parquet(cat)
    png, pdf = tmp_path / "irac.png", tmp_path / "flux.pdf"
    assert main(["plot", "irac", str(cat), "--out", str(png), "--xray", "xray",
                 "--uv", "uv"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", "flux", str(cat), "--out", str(pdf),
                 "--pair", "irac1=flux_irac1:flux_true_irac1"]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"
    sed = tmp_path / "sed.png"
    assert main(["plot", "sed", str(cat), "--out", str(sed), "--source", "3",
                 "--bands", "irac1", "irac2", "nuv"]) == 0
    assert sed.stat().st_size > 1000
    uvir = tmp_path / "uvir.png"
    assert main(["plot", "uvir", str(cat), "--out", str(uvir), "--xray", "xray",
                 "--hardness", "hr", "--snr-min", "3"]) == 0
    assert main(["plot", "sed", str(cat), "--out", str(sed), "--source", "99999"]) == 2
