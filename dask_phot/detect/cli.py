"""``dask-phot detect CONFIG`` and ``dask-phot cutouts CATALOG ...`` (registered in
:data:`dask_phot.cli.EXTENSIONS`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``detect`` and ``cutouts`` subcommands to the ``dask-phot`` parser."""
    d = subparsers.add_parser(
        "detect", help="detect and measure sources on many mosaics; write per-group and "
                       "merged catalogs (the merged one is a ready [priors] path)")
    d.add_argument("config", help="TOML file with a [detect] table (dask_phot.detect.config)")
    d.add_argument("--scheduler", help="local | kubernetes | a scheduler address")
    d.add_argument("--workers", type=int, help="number of local workers")
    d.add_argument("--in-process", action="store_true",
                   help="no Dask cluster: run the tiles here, one after another")
    d.set_defaults(func=_cmd_detect)
    c = subparsers.add_parser("cutouts", help="FITS cutouts (every band) and colour PNGs "
                                              "of catalog sources")
    c.add_argument("catalog", help="Parquet, CSV or FITS table with ra, dec and an id")
    c.add_argument("--images", nargs="+", required=True, metavar="BAND=PATHS",
                   help="mosaics per band: paths, globs or URLs (comma-separated)")
    c.add_argument("--out", default="cutouts", help="output directory")
    c.add_argument("--rgb", nargs=3, metavar=("RED", "GREEN", "BLUE"),
                   help="bands of a Lupton colour composite (PNG)")
    c.add_argument("--id-column", default="source_id")
    c.add_argument("--size-column", default="extent_arcsec",
                   help="extent (radius) column, arcsec")
    c.add_argument("--scale", type=float, default=2.0, help="side = scale x 2 x extent")
    c.add_argument("--min-size", type=float, default=3.0, help="arcsec")
    c.add_argument("--max-size", type=float, default=30.0, help="arcsec")
    c.add_argument("--limit", type=int, help="only the first N sources")
    c.set_defaults(func=_cmd_cutouts)


def _cmd_detect(args: argparse.Namespace) -> int:
    from dask_phot.cluster import connect
    from dask_phot.detect.config import load_detect_config
    from dask_phot.detect.mosaics import run_detect

    cfg = load_detect_config(args.config)
    if args.workers:
        cfg = dataclasses.replace(
            cfg, cluster=dataclasses.replace(cfg.cluster, n_workers=args.workers))
    if args.in_process:
        summary = run_detect(cfg)
    else:
        with connect(cfg.cluster, scheduler=args.scheduler) as client:
            print(f"Dask dashboard: {client.dashboard_link}", flush=True)
            summary = run_detect(cfg, client=client)
    for group, path in summary.groups.items():
        off = summary.offsets_arcsec.get(group)
        shift = "" if off is None or off[0] != off[0] else \
            f" (offset to reference {off[0]:+.3f}\", {off[1]:+.3f}\")"
        print(f"group {group}: {path}{shift}")
    print(f"merged: {summary.n_sources} sources from {summary.n_tiles} tile(s) -> "
          f"{summary.merged}")
    print(f'use it as priors: [priors] path = "{summary.merged}"')
    return 0


def _read_table(path: str) -> pd.DataFrame:
    suffix = "".join(Path(path).suffixes).lower()
    if ".parquet" in suffix or suffix.endswith((".parq", ".pq")):
        return pd.read_parquet(path)
    if ".csv" in suffix:
        return pd.read_csv(path)
    from astropy.table import Table

    return Table.read(path).to_pandas()


def _cmd_cutouts(args: argparse.Namespace) -> int:
    from dask_phot.cutouts import CutoutSpec, make_cutouts

    images: dict[str, list[str]] = {}
    for item in args.images:
        band, sep, paths = item.partition("=")
        if not sep or not band or not paths:
            raise FileNotFoundError(f"--images expects BAND=PATHS, got {item!r}")
        images[band] = paths.split(",")
    catalog = _read_table(args.catalog)
    if args.limit:
        catalog = catalog.head(args.limit)
    spec = CutoutSpec(size_column=args.size_column, scale=args.scale, min_size=args.min_size,
                      max_size=args.max_size)
    done = make_cutouts(catalog, images, args.out, spec=spec, rgb=args.rgb,
                        id_column=args.id_column)
    n_png = int((done["png"] != "").sum())
    print(f"{int((done['fits'] != '').sum())} FITS cutouts and {n_png} PNG composites "
          f"-> {args.out}")
    return 0
