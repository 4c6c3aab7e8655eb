"""Science plots of a catalogue: flux check, colour-colour diagrams, one source's SED.

Every function returns a :class:`matplotlib.figure.Figure` built without
``pyplot`` (no global figure state: safe in threads and Dask workers); save it
with ``fig.savefig("x.png")``. Column names are templates with ``{band}``, so
the same functions draw a dask-phot catalogue (``flux_{band}``) and the COSMOS
notebook's table (``{band}flux`` with bands ``ch1`` .. ``ch4``, ``nuv``, ``fuv``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.bands import flux_to_mag, get_band

__all__ = [
    "LACY_WEDGE",
    "flux_comparison",
    "irac_color_color",
    "robust_ratio",
    "sed_plot",
    "uv_ir_color_color",
]

#: Lacy et al. (2004) AGN selection in log(S5.8/S3.6) vs log(S8.0/S4.5):
#: x > -0.1, y > -0.2, y <= 0.8 x + 0.5.
LACY_WEDGE = {"x_min": -0.1, "y_min": -0.2, "slope": 0.8, "intercept": 0.5}


def _figure(ncols: int = 1, nrows: int = 1, *, size: tuple[float, float] = (5.0, 4.5)) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")


def _col(catalog: pd.DataFrame, template: str, band: str) -> np.ndarray:
    name = template.format(band=band)
    if name not in catalog.columns:
        raise KeyError(f"no column {name!r} in the catalogue")
    return pd.to_numeric(catalog[name], errors="coerce").to_numpy(dtype=np.float64)


def _mask(catalog: pd.DataFrame, spec: str | np.ndarray | pd.Series | None) -> np.ndarray:
    """A boolean row mask from a column name, an array, or None (no rows)."""
    if spec is None:
        return np.zeros(len(catalog), dtype=bool)
    if isinstance(spec, str):
        if spec not in catalog.columns:
            raise KeyError(f"no column {spec!r} in the catalogue")
        spec = catalog[spec]
    arr = pd.Series(spec).fillna(False).to_numpy()
    if arr.shape != (len(catalog),):
        raise ValueError(f"mask has {arr.size} entries for {len(catalog)} rows")
    return arr.astype(bool)


# ---------------------------------------------------------------------- flux check
def robust_ratio(measured: Any, reference: Any) -> tuple[float, float, int]:
    """Median of ``measured / reference`` and its robust scatter.

    Parameters
    ----------
    measured, reference : array_like
        Fluxes; pairs where either is not finite or not positive are skipped.

    Returns
    -------
    median : float
    scatter : float
        1.4826 x the median absolute deviation of the ratio (a Gaussian sigma).
    n : int
        Pairs used.

    Examples
    --------
    >>> robust_ratio([1.0, 2.2, 3.0, 40.0, -1.0], [1.0, 2.0, 3.0, 4.0, 1.0])
    (1.05, 0.0741, 4)
    """
    m = np.asarray(measured, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    ok = np.isfinite(m) & np.isfinite(r) & (m > 0) & (r > 0)
    if not ok.any():
        return float("nan"), float("nan"), 0
    ratio = m[ok] / r[ok]
    med = float(np.median(ratio))
    scatter = 1.4826 * float(np.median(np.abs(ratio - med)))
    return round(med, 4), round(scatter, 4), int(ok.sum())


def flux_comparison(catalog: pd.DataFrame, pairs: Mapping[str, tuple[str, str]], *,
                    errors: Mapping[str, str] | None = None, snr_min: float = 0.0,
                    unit: str = "uJy", ncols: int = 3) -> Any:
    """Measured against reference flux, one log-log panel per band.

    Parameters
    ----------
    catalog : pandas.DataFrame
    pairs : mapping
        Panel title -> ``(measured column, reference column)``.
    errors : mapping, optional
        Panel title -> measured-flux error column, for the ``snr_min`` cut.
    snr_min : float
        Keep only sources measured at this S/N or more (needs ``errors``);
        0 keeps every positive pair. Near the detection limit, keeping only
        positive measured fluxes biases the ratio high: cut on S/N there.
    unit : str
        Flux unit for the axis labels.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        Each panel: the positive pairs as points, the 1:1 line, and the text
        ``median ratio = M\\nscatter = S (N = n)`` from :func:`robust_ratio`.
    """
    if not pairs:
        raise ValueError("flux_comparison: no (measured, reference) column pairs given")
    ncols = min(ncols, len(pairs))
    nrows = -(-len(pairs) // ncols)
    fig = _figure(ncols, nrows, size=(4.2, 4.0))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, (mcol, rcol)) in zip(axes, pairs.items(), strict=False):
        m = _col(catalog, mcol, "")
        r = _col(catalog, rcol, "")
        if snr_min > 0:
            if not errors or title not in errors:
                raise ValueError(f"flux_comparison: snr_min needs an error column for {title!r}")
            with np.errstate(divide="ignore", invalid="ignore"):
                m = np.where(m / _col(catalog, errors[title], "") >= snr_min, m, np.nan)
        ok = np.isfinite(m) & np.isfinite(r) & (m > 0) & (r > 0)
        ax.scatter(r[ok], m[ok], s=6, alpha=0.6, color="tab:blue", label="sources")
        if ok.any():
            lo, hi = float(min(r[ok].min(), m[ok].min())), float(max(r[ok].max(), m[ok].max()))
            ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="1:1")
            ax.set_xscale("log")
            ax.set_yscale("log")
        med, scatter, n = robust_ratio(m, r)
        ax.text(0.04, 0.96, f"median ratio = {med:.3f}\nscatter = {scatter:.3f} (N = {n})",
                transform=ax.transAxes, va="top", ha="left", fontsize=9,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.set_xlabel(f"reference: {rcol} [{unit}]")
        ax.set_ylabel(f"measured: {mcol} [{unit}]")
        ax.set_title(f"{title} (S/N >= {snr_min:g})" if snr_min > 0 else title)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    return fig


# ---------------------------------------------------------------------- colour-colour
def _detected(catalog: pd.DataFrame, flux: str, flux_err: str, bands: Sequence[str],
              snr_min: float) -> np.ndarray:
    """Rows with S/N >= ``snr_min`` in every band (every row when ``snr_min`` is 0)."""
    ok = np.ones(len(catalog), dtype=bool)
    if snr_min > 0:
        for band in bands:
            f, e = _col(catalog, flux, band), _col(catalog, flux_err, band)
            with np.errstate(divide="ignore", invalid="ignore"):
                ok &= np.nan_to_num(f / e) >= snr_min
    return ok


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(a / b)
    out[~((a > 0) & (b > 0))] = np.nan
    return out


def irac_color_color(catalog: pd.DataFrame, *,
                     bands: Sequence[str] = ("irac1", "irac2", "irac3", "irac4"),
                     flux: str = "flux_{band}", uv_detected: Any = None,
                     xray_detected: Any = None, snr_min: float = 0.0,
                     flux_err: str = "flux_err_{band}") -> Any:
    """IRAC colour-colour diagram with the Lacy et al. (2004) AGN wedge.

    Parameters
    ----------
    catalog : pandas.DataFrame
    bands : 4 str
        The 3.6, 4.5, 5.8 and 8.0 um bands, in that order.
    flux : str
        Flux column template.
    uv_detected, xray_detected : str or array_like of bool, optional
        Rows to overlay (a column name or a mask), e.g. ``"chandra_match"``.
    snr_min : float
        Draw only sources with ``flux / flux_err >= snr_min`` in all four bands
        (0: every source with both colours).
    flux_err : str
        Flux-error column template, for ``snr_min``.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: ``log10(S5.8/S3.6)`` against ``log10(S8.0/S4.5)``; the
        collections in order: all sources, UV-detected, X-ray-detected (only
        rows with both colours finite are drawn), then the wedge line.
    """
    f1, f2, f3, f4 = (_col(catalog, flux, b) for b in bands)
    x, y = _log_ratio(f3, f1), _log_ratio(f4, f2)
    ok = np.isfinite(x) & np.isfinite(y) & _detected(catalog, flux, flux_err, bands, snr_min)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(x[ok], y[ok], s=8, color="0.6", label=f"all ({ok.sum()})")
    for spec, colour, marker, what in ((uv_detected, "tab:blue", "s", "UV-detected"),
                                       (xray_detected, "tab:red", "*", "X-ray-detected")):
        sel = ok & _mask(catalog, spec)
        if spec is not None:
            ax.scatter(x[sel], y[sel], s=60 if marker == "*" else 22, marker=marker,
                       facecolor="none" if marker == "s" else colour, edgecolor=colour,
                       label=f"{what} ({sel.sum()})")
    w, right = LACY_WEDGE, 1.5
    corner = w["slope"] * w["x_min"] + w["intercept"]
    ax.plot([right, w["x_min"], w["x_min"], right],
            [w["y_min"], w["y_min"], corner, w["slope"] * right + w["intercept"]],
            color="k", lw=1.2, label="Lacy et al. (2004)")
    ax.set_xlim(-1.0, 1.5)
    ax.set_ylim(-1.0, 1.5)
    ax.set_xlabel(r"$\log_{10}(S_{5.8}/S_{3.6})$")
    ax.set_ylabel(r"$\log_{10}(S_{8.0}/S_{4.5})$")
    ax.set_title("IRAC colour-colour" + (f" (S/N >= {snr_min:g})" if snr_min > 0 else ""))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def uv_ir_color_color(catalog: pd.DataFrame, *, fuv: str = "fuv", nuv: str = "nuv",
                      ir: str = "irac1", flux: str = "flux_{band}",
                      xray_detected: Any = None, hardness: str | None = None,
                      snr_min: float = 0.0, flux_err: str = "flux_err_{band}") -> Any:
    """UV-IR colour-colour diagram (Bouquin et al. 2015): FUV-NUV against NUV-[3.6].

    Parameters
    ----------
    catalog : pandas.DataFrame
    fuv, nuv, ir : str
        Band names filling ``flux``.
    flux : str
        Flux column template (uJy; converted to AB magnitudes).
    xray_detected : str or array_like of bool, optional
        X-ray-detected rows, drawn over the others.
    hardness : str, optional
        Column of the X-ray hardness ratio colouring them (with a colour bar).
    snr_min : float
        Draw only sources with ``flux / flux_err >= snr_min`` in the three bands
        (0: every source with both colours).
    flux_err : str
        Flux-error column template, for ``snr_min``.

    Returns
    -------
    matplotlib.figure.Figure
        Collections: all sources with both colours, then the X-ray-detected ones.
    """
    m_fuv, _ = flux_to_mag(_col(catalog, flux, fuv), 0.0)
    m_nuv, _ = flux_to_mag(_col(catalog, flux, nuv), 0.0)
    m_ir, _ = flux_to_mag(_col(catalog, flux, ir), 0.0)
    x, y = m_nuv - m_ir, m_fuv - m_nuv
    ok = np.isfinite(x) & np.isfinite(y) & _detected(catalog, flux, flux_err, (fuv, nuv, ir),
                                                     snr_min)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(x[ok], y[ok], s=8, color="0.6", label=f"all ({ok.sum()})")
    if xray_detected is not None:
        sel = ok & _mask(catalog, xray_detected)
        if hardness is not None:
            hr = pd.to_numeric(catalog[hardness], errors="coerce").to_numpy()[sel]
            sc = ax.scatter(x[sel], y[sel], c=hr, cmap="coolwarm", vmin=-1, vmax=1, s=60,
                            marker="*", edgecolor="k", linewidth=0.4,
                            label=f"X-ray-detected ({sel.sum()})")
            fig.colorbar(sc, ax=ax, label=f"hardness ratio ({hardness})")
        else:
            ax.scatter(x[sel], y[sel], s=60, marker="*", color="tab:red",
                       label=f"X-ray-detected ({sel.sum()})")
    ax.set_xlabel(f"NUV - [{_ir_label(ir)}] (AB)")
    ax.set_ylabel("FUV - NUV (AB)")
    ax.set_title("UV-IR colour-colour (Bouquin et al. 2015)"
                 + (f", S/N >= {snr_min:g}" if snr_min > 0 else ""))
    ax.legend(loc="upper right", fontsize=8)
    return fig


def _ir_label(band: str) -> str:
    """``3.6`` for a preset band with a wavelength, else the band's name."""
    try:
        wavelength = get_band(band).wavelength
    except (KeyError, ValueError):
        return band
    return f"{wavelength:g}" if wavelength else band


# ---------------------------------------------------------------------- SED
def _log_wavelength_axis(ax: Any, lam: np.ndarray) -> None:
    """Log wavelength axis labelled at 0.1, 0.2, 0.5, 1, 2, 5 ... um (no crowded minors)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    if lam.size:
        lo, hi = float(lam.min()) / 1.3, float(lam.max()) * 1.3
        ax.set_xlim(lo, hi)
        ticks = [t * 10.0**k for k in range(-2, 4) for t in (1, 2, 5) if lo <= t * 10.0**k <= hi]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def sed_plot(row: Mapping[str, Any] | pd.Series, bands: Sequence[str], *,
             flux: str = "flux_{band}", err: str = "flux_err_{band}",
             wavelengths: Mapping[str, float] | None = None, snr_min: float = 3.0,
             title: str | None = None, ax: Any = None) -> Any:
    """Spectral energy distribution of one source: flux against wavelength.

    Parameters
    ----------
    row : mapping or pandas.Series
        The source's catalogue row.
    bands : sequence of str
        Bands to draw.
    flux, err : str
        Column templates (uJy).
    wavelengths : mapping, optional
        Band -> wavelength in um; default the band presets' (:func:`get_band`).
    snr_min : float
        Below this S/N (or for a flux <= 0) the band is an upper limit drawn
        at ``snr_min x err`` with a downward arrow.
    title : str, optional
    ax : matplotlib.axes.Axes, optional
        Draw into it (the report's grid); default a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        One axes, log-log: detections as points with error bars (the first
        container), upper limits (the second); bands with no measurement
        (NaN) are skipped.
    """
    lam, f, e = [], [], []
    for b in bands:
        lam.append(float((wavelengths or {}).get(b) or get_band(b).wavelength))
        f.append(float(row[flux.format(band=b)]))
        e.append(float(row[err.format(band=b)]))
    lam_a, f_a, e_a = np.array(lam), np.array(f), np.array(e)
    measured = np.isfinite(f_a) & np.isfinite(e_a) & (e_a > 0)
    det = measured & (f_a > 0) & (f_a >= snr_min * e_a)
    lim = measured & ~det
    if ax is None:
        fig = _figure(size=(5.0, 3.8))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.errorbar(lam_a[det], f_a[det], yerr=e_a[det], fmt="o", color="tab:blue", capsize=2,
                label=f"S/N >= {snr_min:g}")
    ax.errorbar(lam_a[lim], snr_min * e_a[lim], yerr=0.3 * snr_min * e_a[lim], uplims=True,
                fmt="v", color="tab:gray", label=f"{snr_min:g}-sigma upper limit")
    for b, x_, y_ in zip(np.array(bands)[measured], lam_a[measured],
                         np.where(det, f_a, snr_min * e_a)[measured], strict=True):
        ax.annotate(str(b), (x_, y_), textcoords="offset points", xytext=(4, 4), fontsize=7)
    _log_wavelength_axis(ax, lam_a[measured])
    if measured.any():
        ax.set_yscale("log")
    ax.set_xlabel(r"wavelength [$\mu$m]")
    ax.set_ylabel(r"flux density [$\mu$Jy]")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    return fig
