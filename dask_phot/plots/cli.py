"""``dask-phot plot KIND CATALOG --out FILE``: the plots as PNG or PDF.

KIND is ``flux`` (measured vs reference), ``irac`` (IRAC colour-colour), ``uvir``
(UV-IR colour-colour), ``sed`` (one source) or ``cell`` (per-band data, model,
residual and chi2 of one sky cell, from the mosaics the run read). CATALOG is a
dask-phot output directory or a Parquet, FITS or CSV table; the format of FILE
follows its suffix.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["band_names", "find_source", "load_catalog", "register", "uv_detected",
           "xray_column"]

KINDS = ("flux", "irac", "uvir", "sed", "cell")
_FLUX_RE = re.compile(r"^flux_(?!err_|true_)([A-Za-z][A-Za-z0-9_]*)$")


def load_catalog(path: str | Path) -> pd.DataFrame:
    """A catalogue from a dask-phot output directory, Parquet, FITS or CSV file."""
    path = Path(path)
    if path.is_dir():
        from dask_phot.pipeline import read_catalog

        return read_catalog(path)
    if not path.exists():
        raise FileNotFoundError(f"no catalogue at {path}")
    suffix = "".join(path.suffixes).lower()
    if ".fits" in suffix or suffix.endswith(".fit"):
        import warnings

        from astropy.table import Table

        with warnings.catch_warnings():  # non-standard unit strings in archive tables
            warnings.simplefilter("ignore")
            return Table.read(path).to_pandas()
    if suffix.endswith(".csv"):
        return pd.read_csv(path)
    return pd.read_parquet(path)


def band_names(catalog: pd.DataFrame) -> list[str]:
    """Bands with a ``flux_{band}`` column, in column order.

    Examples
    --------
    >>> band_names(pd.DataFrame(columns=["flux_irac1", "flux_err_irac1", "flux_true_nuv",
    ...                                  "flux_nuv"]))
    ['irac1', 'nuv']
    """
    return [m.group(1) for c in catalog.columns if (m := _FLUX_RE.match(str(c)))]


def xray_column(catalog: pd.DataFrame) -> str | None:
    """The first ``*_match`` column (added by :func:`dask_phot.crossmatch.crossmatch`)."""
    return next((c for c in catalog.columns if str(c).endswith("_match")), None)


def uv_detected(catalog: pd.DataFrame, band: str = "nuv", snr: float = 3.0) -> np.ndarray | None:
    """Rows detected at ``snr`` in ``band`` (None when the band is absent)."""
    if f"flux_{band}" not in catalog.columns or f"flux_err_{band}" not in catalog.columns:
        return None
    f, e = catalog[f"flux_{band}"].to_numpy(float), catalog[f"flux_err_{band}"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(f / e) >= snr


def find_source(catalog: pd.DataFrame, source: str) -> pd.Series:
    """The row whose ``source_id`` (or ``ID``/``id``) is ``source``."""
    for col in ("source_id", "ID", "id"):
        if col in catalog.columns:
            hit = catalog[catalog[col].astype(str) == str(source)]
            if len(hit):
                return hit.iloc[0]
    raise KeyError(f"no source {source!r} in the catalogue")


def _pairs(catalog: pd.DataFrame, specs: Sequence[str] | None) -> dict[str, tuple[str, str]]:
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

    xray = args.xray or xray_column(catalog)
    if kind == "flux":
        return plots.flux_comparison(catalog, _pairs(catalog, args.pair))
    if kind == "irac":
        uv = args.uv if args.uv else uv_detected(catalog)
        return plots.irac_color_color(catalog, uv_detected=uv, xray_detected=xray)
    if kind == "uvir":
        return plots.uv_ir_color_color(catalog, xray_detected=xray, hardness=args.hardness)
    if kind == "sed":
        if args.source is None:
            raise ValueError("plot sed needs --source ID")
        row = find_source(catalog, args.source)
        return plots.sed_plot(row, args.bands or band_names(catalog),
                              title=f"source {args.source}")
    from dask_phot.report.cutouts import cell_panels

    return plots.cell_diagnostics(cell_panels(args.catalog, catalog, cell=args.cell,
                                              bands=args.bands))


def _cmd_plot(args: argparse.Namespace) -> int:
    try:
        catalog = load_catalog(args.catalog)
        fig = make_figure(args.kind, catalog, args)
    except (KeyError, ValueError) as exc:
        print(f"dask-phot plot: error: {exc}", file=sys.stderr)
        return 2
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
    p.add_argument("kind", choices=KINDS)
    p.add_argument("catalog", help="dask-phot output directory, or Parquet/FITS/CSV table")
    p.add_argument("--out", required=True, help="output file: .png or .pdf")
    p.add_argument("--pair", action="append",
                   help="flux: LABEL=MEASURED:REFERENCE columns (repeat); default every "
                        "flux_BAND with a flux_true_BAND")
    p.add_argument("--xray", help="column of X-ray-detected rows (default: first *_match)")
    p.add_argument("--uv", help="irac: column of UV-detected rows (default: NUV S/N >= 3)")
    p.add_argument("--hardness", help="uvir: hardness-ratio column colouring X-ray sources")
    p.add_argument("--source", help="sed: the source's source_id (or ID)")
    p.add_argument("--cell", type=int, help="cell: HEALPix pixel (default the fullest cell)")
    p.add_argument("--bands", nargs="+", help="sed/cell: bands to draw (default all)")
    p.add_argument("--dpi", type=int, default=120)
    p.set_defaults(func=_cmd_plot)
