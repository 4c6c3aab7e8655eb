"""``dask-phot detect CONFIG`` and ``dask-phot cutouts CATALOG --images BAND=PATHS ...``."""

from __future__ import annotations

import argparse
from typing import Any

from dask_phot.commands._shared import add_cluster_options, cluster_client

__all__ = ["register"]


def _cmd_detect(args: argparse.Namespace) -> int:
    from dask_phot.detect import load_detect_config, run_detect

    overrides = {"cluster.n_workers": args.workers} if args.workers else None
    cfg = load_detect_config(args.config, overrides=overrides)
    if args.in_process:
        summary = run_detect(cfg)
    else:
        with cluster_client(cfg.cluster, args.scheduler) as client:
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


def _cmd_cutouts(args: argparse.Namespace) -> int:
    from dask_phot.cutouts import CutoutSpec, make_cutouts
    from dask_phot.tables import read_table

    images: dict[str, list[str]] = {}
    for item in args.images:
        band, sep, paths = item.partition("=")
        if not sep or not band or not paths:
            raise ValueError(f"--images expects BAND=PATHS, got {item!r}")
        images[band] = paths.split(",")
    catalog = read_table(args.catalog)
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


def register(subparsers: Any) -> None:
    """Add the ``detect`` and ``cutouts`` subcommands to the ``dask-phot`` parser."""
    d = subparsers.add_parser(
        "detect", help="detect and measure sources on many mosaics; write per-group and "
                       "merged catalogs (the merged one is a ready [priors] path)")
    d.add_argument("config", help="TOML file with a [detect] table; every key is documented "
                                  "in dask_phot/data/detect.toml")
    add_cluster_options(d)
    d.add_argument("--in-process", action="store_true",
                   help="no Dask cluster: run the tiles here, one after another")
    d.set_defaults(func=_cmd_detect)
    c = subparsers.add_parser("cutouts", help="FITS cutouts (every band) and colour PNGs "
                                              "of catalog sources")
    c.add_argument("catalog", help="Parquet, CSV or FITS table with ra, dec and an id, or a "
                                   "dask-phot output directory")
    c.add_argument("--images", nargs="+", required=True, metavar="BAND=PATHS",
                   help="mosaics per band: paths, globs or URLs (comma-separated)")
    c.add_argument("--out", default="cutouts", help="output directory (default: %(default)s)")
    c.add_argument("--rgb", nargs=3, metavar=("RED", "GREEN", "BLUE"),
                   help="bands of a Lupton colour composite (PNG; needs matplotlib)")
    c.add_argument("--id-column", default="source_id",
                   help="identifier column, in the file names (default: %(default)s)")
    c.add_argument("--size-column", default="extent_arcsec",
                   help="extent (radius) column, arcsec (default: %(default)s)")
    c.add_argument("--scale", type=float, default=2.0,
                   help="side = scale x 2 x extent (default: %(default)s)")
    c.add_argument("--min-size", type=float, default=3.0,
                   help="smallest side, arcsec (default: %(default)s)")
    c.add_argument("--max-size", type=float, default=30.0,
                   help="largest side, arcsec (default: %(default)s)")
    c.add_argument("--limit", type=int, metavar="N", help="only the first N sources")
    c.set_defaults(func=_cmd_cutouts, errors=(ValueError,))
