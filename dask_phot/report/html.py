"""A static HTML page to look at a run: summary plots, then per source its SED
beside its cutouts in every band (data, catalogue model, residual / sigma).

The page is plain HTML with PNGs beside it (``index.html``, ``img/*.png``): no
script, no network; open it from disk or serve it anywhere. A band that cannot
be shown (no mosaic there, the images moved) says why in place of its cutout.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.tables import band_names, read_table, uv_detected, xray_column

__all__ = ["ReportSummary", "select_sources", "write_report"]

logger = logging.getLogger(__name__)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table.facts { border-collapse: collapse; font-size: 0.9em; }
table.facts td, table.facts th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
.plots img { max-width: 48%; margin: 0.5%; border: 1px solid #ddd; }
.source { border-top: 1px solid #ccc; padding-top: 0.4em; }
.source .row { display: flex; gap: 1em; align-items: flex-start; }
.source img { border: 1px solid #ddd; }
.missing { color: #a33; font-size: 0.85em; }
"""


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote."""

    index: Path
    images: list[Path] = field(default_factory=list)
    sources: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def select_sources(catalog: pd.DataFrame, n: int = 8, *, band: str | None = None,
                   ids: Sequence[Any] | None = None) -> pd.DataFrame:
    """Sources to show: the given IDs, else X-ray matches first, then the highest S/N.

    Examples
    --------
    >>> cat = pd.DataFrame({"source_id": [1, 2, 3], "flux_b": [1.0, 9.0, 5.0],
    ...                     "flux_err_b": [1.0, 1.0, 1.0]})
    >>> select_sources(cat, 2)["source_id"].tolist()
    [2, 3]
    """
    if ids is not None:
        want = [str(i) for i in ids]
        hit = catalog[catalog["source_id"].astype(str).isin(want)]
        missing = sorted(set(want) - set(hit["source_id"].astype(str)))
        if missing:
            raise KeyError(f"no source(s) {missing} in the catalogue")
        return hit
    band = band or (band_names(catalog) or [None])[0]
    if band is None:
        return catalog.head(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = catalog[f"flux_{band}"].to_numpy(float) / catalog[f"flux_err_{band}"].to_numpy(float)
    key = pd.Series(np.nan_to_num(snr, nan=-np.inf), index=catalog.index)
    match = xray_column(catalog)
    if match is not None:
        key = key + np.where(catalog[match].fillna(False).to_numpy(bool), 1e12, 0.0)
    return catalog.loc[key.sort_values(ascending=False, kind="stable").index[:n]]


def _save(fig: Any, path: Path, images: list[Path]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    images.append(path)
    return path


def _summary_plots(catalog: pd.DataFrame, img: Path, summary: ReportSummary,
                   cell_figure: Any) -> list[tuple[str, Path]]:
    from dask_phot import plots

    bands = band_names(catalog)
    xray = xray_column(catalog)
    out: list[tuple[str, Path]] = []
    pairs = {b: (f"flux_{b}", f"flux_true_{b}") for b in bands
             if f"flux_true_{b}" in catalog.columns}
    errors = {b: f"flux_err_{b}" for b in pairs}
    makers = [("Measured against reference flux (sources at S/N >= 5)", "flux.png",
               lambda: plots.flux_comparison(catalog, pairs, errors=errors, snr_min=5.0)
               if pairs else None)]
    if all(f"irac{i}" in bands for i in (1, 2, 3, 4)):
        makers.append(("IRAC colour-colour (Lacy et al. 2004)", "irac_cc.png",
                       lambda: plots.irac_color_color(catalog, uv_detected=uv_detected(catalog),
                                                      xray_detected=xray)))
    if {"fuv", "nuv", "irac1"} <= set(bands):
        hr = next((c for c in catalog.columns if str(c).upper().endswith("HARDNESS_RATIO")),
                  None)
        makers.append(("UV-IR colour-colour (Bouquin et al. 2015)", "uvir_cc.png",
                       lambda: plots.uv_ir_color_color(catalog, xray_detected=xray,
                                                       hardness=hr)))
    makers.append(("One sky cell: data, model, residual, chi2", "cell.png", cell_figure))
    for title, name, make in makers:
        try:
            fig = make()
        except (LookupError, OSError, ValueError) as exc:
            summary.problems.append(f"{title}: {exc}")
            continue
        if fig is not None:
            out.append((title, _save(fig, img / name, summary.images)))
    return out


def _source_figure(panels: dict[str, Any]) -> Any:
    from matplotlib.figure import Figure

    from dask_phot.plots.images import draw_images

    shown = {b: p for b, p in panels.items() if not isinstance(p, str)}
    if not shown:
        return None
    fig = Figure(figsize=(6.6, 2.1 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), 3, squeeze=False)
    for row, panel in zip(axes, shown.values(), strict=True):
        draw_images(row, panel, marks=True)
    return fig


def _facts_table(catalog: pd.DataFrame, bands: Sequence[str]) -> str:
    rows = []
    for b in bands:
        f, e = catalog[f"flux_{b}"].to_numpy(float), catalog[f"flux_err_{b}"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = f / e
        rows.append(f"<tr><td>{html.escape(b)}</td><td>{np.isfinite(f).sum()}</td>"
                    f"<td>{(snr >= 5).sum()}</td><td>{np.nanmedian(e):.3g}</td></tr>")
    return ("<table class='facts'><tr><th>band</th><th>measured</th><th>S/N &ge; 5</th>"
            "<th>median error [uJy]</th></tr>" + "".join(rows) + "</table>")


def write_report(result: str | Path, out: str | Path, *, n_sources: int = 8,
                 source_ids: Sequence[Any] | None = None, size_arcsec: float = 30.0,
                 catalog: pd.DataFrame | None = None, config: Any = None,
                 partial: bool = False) -> ReportSummary:
    """Write ``out/index.html`` and its PNGs for a run's catalogue.

    Parameters
    ----------
    result : path-like
        A dask-phot output directory (or a catalogue file: then no cutouts).
    out : path-like
        Directory for the page (created).
    n_sources, source_ids
        Which sources get an SED and cutouts, see :func:`select_sources`.
    size_arcsec : float
        Cutout side.
    catalog : pandas.DataFrame, optional
        Use this table (e.g. after :func:`dask_phot.crossmatch.crossmatch`)
        instead of reading ``result``'s.
    config : RunConfig or path, optional
        Where the images are, when not the run's recorded configuration.
    partial : bool
        Report on a catalogue whose run has not finished (the page says so at its
        top); without it such a catalogue is refused.

    Returns
    -------
    ReportSummary
    """
    from dask_phot.plots import cell_diagnostics
    from dask_phot.report.model_images import RunImages, cell_panels

    result, out = Path(result), Path(out)
    catalog = read_table(result, partial=partial) if catalog is None else catalog
    img = out / "img"
    summary = ReportSummary(out / "index.html")
    bands = band_names(catalog)
    run = None
    try:
        run = RunImages.from_result(result, config) if result.is_dir() or config else None
    except (OSError, ValueError) as exc:
        hint = "" if config else " (give --config with where the mosaics are now)"
        summary.problems.append(f"images: {exc}{hint}")

    def cell_figure() -> Any:
        if run is None:
            return None
        return cell_diagnostics(cell_panels(result, catalog, run=run))

    plots = _summary_plots(catalog, img, summary, cell_figure)
    picked = select_sources(catalog, n_sources, ids=source_ids)
    ids = picked["source_id"].tolist() if "source_id" in picked else picked.index.tolist()
    blocks = [_source_block(sid, row, catalog, bands, run, img, summary, size_arcsec)
              for sid, (_, row) in zip(ids, picked.iterrows(), strict=True)]
    page = _page(result, catalog, bands, plots, blocks, summary.problems)
    out.mkdir(parents=True, exist_ok=True)
    summary.index.write_text(page, encoding="utf-8")
    logger.info("report: %s (%d images, %d sources)", summary.index, len(summary.images),
                len(summary.sources))
    return summary


def _source_block(sid: Any, row: pd.Series, catalog: pd.DataFrame, bands: Sequence[str],
                  run: Any, img: Path, summary: ReportSummary, size_arcsec: float) -> str:
    """One source's HTML: its SED beside its cutouts (or why there are none)."""
    from dask_phot.plots import sed_plot
    from dask_phot.report.model_images import cutouts_for

    summary.sources.append(sid)
    sed = _save(sed_plot(row, bands, title=f"source {sid}"), img / f"sed_{sid}.png",
                summary.images)
    parts = [f"<img src='img/{sed.name}' alt='SED of source {sid}' width='420'>"]
    panels = cutouts_for(run, catalog, row, size_arcsec=size_arcsec) if run else {}
    fig = _source_figure(panels)
    if fig is not None:
        cut = _save(fig, img / f"cutouts_{sid}.png", summary.images)
        parts.append(f"<img src='img/{cut.name}' alt='cutouts of source {sid}' width='560'>")
    notes = [f"{b}: {why}" for b, why in panels.items() if isinstance(why, str)]
    if run is None:
        notes.append("no cutouts: the mosaics could not be read (see the notes above); "
                     "cutouts need a dask-phot output directory or --config")
    note_html = "".join(f"<div class='missing'>{html.escape(n)}</div>" for n in notes)
    return (f"<div class='source' id='source-{html.escape(str(sid))}'>"
            f"<h3>source {html.escape(str(sid))}</h3>"
            f"<p>RA {row['ra']:.6f}, Dec {row['dec']:.6f}</p>{note_html}"
            "<div class='row'>" + "".join(parts) + "</div></div>")


def _page(result: Path, catalog: pd.DataFrame, bands: Sequence[str],
          plots: list[tuple[str, Path]], blocks: list[str], problems: list[str]) -> str:
    title = f"dask-phot report: {html.escape(result.name or str(result))}"
    unfinished = catalog.attrs.get("dask_phot_partial")
    banner = (f"<p class='missing'><strong>PARTIAL CATALOGUE: {html.escape(unfinished)}"
              "; the numbers below cover only the cells written so far.</strong></p>"
              if unfinished else "")
    plot_html = "".join(f"<figure><img src='img/{p.name}' alt='{html.escape(t)}'>"
                        f"<figcaption>{html.escape(t)}</figcaption></figure>"
                        for t, p in plots)
    problem_html = "".join(f"<li class='missing'>{html.escape(p)}</li>" for p in problems)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1>{banner}<p>{len(catalog)} sources, bands: "
        f"{html.escape(', '.join(bands))}</p>{_facts_table(catalog, bands)}"
        + (f"<ul>{problem_html}</ul>" if problems else "")
        + f"<h2>Summary plots</h2><div class='plots'>{plot_html}</div>"
        "<h2>Sources: SED and cutouts (data | catalogue model | residual / sigma)</h2>"
        + "".join(blocks) + "</body></html>")
