"""``dask-phot plot KIND CATALOG --out FILE``: the plots as PNG or PDF.

KIND is ``flux`` (measured vs reference), ``irac`` (IRAC colour-colour), ``uvir``
(UV-IR colour-colour), ``sed`` (one source) or ``cell`` (per-band data, model,
residual and chi2 of one sky cell, from the mosaics the run read). CATALOG is a
dask-phot output directory or a Parquet, FITS or CSV table; the format of FILE
follows its suffix.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["KINDS", "make_figure", "register"]

KINDS = ("flux", "irac", "uvir", "sed", "cell")


def _pairs(catalog: pd.DataFrame, specs: Sequence[str] | None) -> dict[str, tuple[str, str]]:
    from dask_phot.tables import band_names

    if specs:
        out = {}
        for spec in specs:
            label, _, cols = spec.partition("=")
            measured, _, reference = cols.partition(":")
            if not (label and measured and reference):
                raise ValueError(f"--pair wants LABEL=MEASURED:REFERENCE, got {spec!r}")
            out[label] = (measured, reference)
        return out
    return {b: (f"flux_{b}", f"flux_true_{b}") for b in band_names(catalog)
            if f"flux_true_{b}" in catalog.columns}


def make_figure(kind: str, catalog: pd.DataFrame, args: argparse.Namespace) -> Any:
    """The figure of one ``dask-phot plot`` call."""
    from dask_phot import plots
    from dask_phot.tables import band_names, find_source, uv_detected, xray_column

    xray = args.xray or xray_column(catalog)
    if kind == "flux":
        return plots.flux_comparison(catalog, _pairs(catalog, args.pair))
    if kind == "irac":
        uv = args.uv if args.uv else uv_detected(catalog)
        return plots.irac_color_color(catalog, uv_detected=uv, xray_detected=xray,
                                      snr_min=args.snr_min)
    if kind == "uvir":
        return plots.uv_ir_color_color(catalog, xray_detected=xray, hardness=args.hardness,
                                       snr_min=args.snr_min)
    if kind == "sed":
        if args.source is None:
            raise ValueError("plot sed needs --source ID")
        row = find_source(catalog, args.source)
        return plots.sed_plot(row, args.bands or band_names(catalog),
                              title=f"source {args.source}")
    from dask_phot.report.model_images import cell_panels

    return plots.cell_diagnostics(cell_panels(args.catalog, catalog, cell=args.cell,
                                              bands=args.bands))


def _cmd_plot(args: argparse.Namespace) -> int:
    from dask_phot.tables import read_table

    catalog = read_table(args.catalog)
    fig = make_figure(args.kind, catalog, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    print(f"wrote {out}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``dask-phot plot`` to the CLI."""
    p = subparsers.add_parser("plot", help="draw a plot of a catalogue as PNG or PDF",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS, help="which plot: " + ", ".join(KINDS))
    p.add_argument("catalog", help="dask-phot output directory, or Parquet/FITS/CSV table")
    p.add_argument("--out", required=True, help="output file: .png or .pdf")
    p.add_argument("--pair", action="append", metavar="LABEL=MEASURED:REFERENCE",
                   help="flux: columns of one panel (repeat); default every "
                        "flux_BAND with a flux_true_BAND")
    p.add_argument("--xray", metavar="COLUMN",
                   help="column of X-ray-detected rows (default: first *_match)")
    p.add_argument("--uv", metavar="COLUMN",
                   help="irac: column of UV-detected rows (default: NUV S/N >= 3)")
    p.add_argument("--snr-min", type=float, default=0.0, metavar="SNR",
                   help="irac, uvir: only sources with S/N >= SNR in every band of the "
                        "colours (default: %(default)s, all)")
    p.add_argument("--hardness", metavar="COLUMN",
                   help="uvir: hardness-ratio column colouring X-ray sources")
    p.add_argument("--source", metavar="ID", help="sed: the source's source_id (or ID)")
    p.add_argument("--cell", type=int, metavar="PIXEL",
                   help="cell: HEALPix pixel (default: the fullest cell)")
    p.add_argument("--bands", nargs="+", metavar="BAND",
                   help="sed, cell: bands to draw (default: all)")
    p.add_argument("--dpi", type=int, default=120,
                   help="resolution of PNG files (default: %(default)s)")
    p.set_defaults(func=_cmd_plot, errors=(KeyError, ValueError))
