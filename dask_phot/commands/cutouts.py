"""``dask-phot cutouts CATALOG ... (--images BAND=PATHS ... | --bands bands.toml)``.

FITS cutouts in every band and colour composites of catalog sources, partition by
partition on a Dask cluster (``--in-process``: here), resumable: run it again
after a stop and only the partitions not done are made. It prints the files
written, cutouts per second and the bytes read per cutout against its box, and
writes a contact sheet (``sheet.html``) when there are composites.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from dask_phot.commands._shared import add_cluster_options, cluster_client

__all__ = ["register"]


def _images(args: argparse.Namespace) -> tuple[dict[str, list[str]], dict[str, Any]]:
    from dask_phot.cutouts import load_band_list

    images: dict[str, list[str]] = {}
    storage: dict[str, Any] = {}
    if args.bands:
        images, storage = load_band_list(args.bands)
    for item in args.images or ():
        band, sep, paths = item.partition("=")
        if not sep or not band or not paths:
            raise ValueError(f"--images expects BAND=PATHS, got {item!r}")
        images[band] = paths.split(",")
    if not images:
        raise ValueError("give the mosaics: --images BAND=PATHS ... or --bands bands.toml")
    return images, storage


def _catalog(args: argparse.Namespace) -> Any:
    import pandas as pd

    from dask_phot.tables import read_table

    tables = [read_table(path) for path in args.catalog]
    catalog = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    return catalog.head(args.limit) if args.limit else catalog


class _Progress:
    """One line on stderr every few seconds: partitions, sources and their rate."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.sources = 0

    def __call__(self, stats: dict[str, Any], done: int, total: int) -> None:
        self.sources += stats["n"]
        now = time.perf_counter()
        if now - self.last >= 5.0 or done == total:
            self.last = now
            rate = self.sources / max(now - self.t0, 1e-9)
            print(f"cutouts: {done}/{total} partitions, {self.sources} sources, "
                  f"{rate:.1f}/s", file=sys.stderr, flush=True)


def _report(summary: Any, sheet: Any) -> None:
    print(f"{summary.n_fits} FITS cutouts and {summary.n_png} PNG composites -> "
          f"{summary.out} (index: {summary.index})")
    if summary.n_parts_skipped:
        print(f"resumed: {summary.n_parts_skipped} of {summary.n_parts} partitions were done")
    if summary.n_done:
        per = max(summary.n_box_reads, 1)
        print(f"{summary.n_done} sources in {summary.wall_seconds:.1f} s: "
              f"{summary.cutouts_per_second:.1f} cutouts/s; bytes read per band cutout "
              f"{summary.bytes_read / per:,.0f} against {summary.box_bytes / per:,.0f} in its "
              f"box ({summary.read_ratio:.2f}x)")
    if sheet is not None:
        print(f"contact sheet: {sheet}")


def _cmd_cutouts(args: argparse.Namespace) -> int:
    from dask_phot.config import ClusterConfig
    from dask_phot.cutouts import ColourSpec, CutoutSpec, contact_sheet, run_cutouts

    images, storage = _images(args)
    catalog = _catalog(args)
    group = args.group_column or ("survey" if "survey" in catalog else None)
    spec = CutoutSpec(size_column=args.size_column, scale=args.scale, min_size=args.min_size,
                      max_size=args.max_size, max_gap=args.max_gap,
                      partition_size=args.partition_size)
    colour = None if not args.rgb else ColourSpec(
        tuple(args.rgb), methods=tuple(args.colour), noise_level=args.noise_level,
        white=args.white)
    kwargs = dict(spec=spec, colour=colour, id_column=args.id_column, group_column=group,
                  storage_options=storage, on_progress=_Progress())
    if args.in_process:
        summary = run_cutouts(catalog, images, args.out, **kwargs)
    else:
        cfg = ClusterConfig(n_workers=args.workers or ClusterConfig().n_workers)
        with cluster_client(cfg, args.scheduler) as client:
            summary = run_cutouts(catalog, images, args.out, client=client, **kwargs)
    sheet = None
    if colour is not None and summary.n_png and args.sheet:
        sheet = contact_sheet(summary.index, f"{args.out}/sheet.html", n=args.sheet,
                              id_column=args.id_column,
                              title=f"dask-phot cutouts: {', '.join(colour.bands)}")
    _report(summary, sheet)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``cutouts`` subcommand to the ``dask-phot`` parser."""
    c = subparsers.add_parser("cutouts", help="FITS cutouts (every band) and colour PNGs of "
                                              "catalog sources, on Dask, resumable")
    c.add_argument("catalog", nargs="+",
                   help="Parquet, CSV or FITS tables with ra, dec and an id (several are "
                        "joined: e.g. each survey's merged.parquet), or a dask-phot output")
    c.add_argument("--images", nargs="+", metavar="BAND=PATHS",
                   help="mosaics per band: paths, globs or URLs (comma-separated); "
                        "x_i2d.fits[SCI] names an extension")
    c.add_argument("--bands", metavar="TOML",
                   help="a band list ([bands.<name>] images, and [storage]) such as the "
                        "bands.toml `dask-phot fetch` writes from a survey recipe")
    c.add_argument("--out", default="cutouts", help="output directory (default: %(default)s)")
    c.add_argument("--rgb", nargs=3, metavar=("RED", "GREEN", "BLUE"),
                   help="bands of the colour composites (PNG; needs matplotlib)")
    c.add_argument("--colour", nargs="+", default=["lupton"], choices=["lupton", "asinh"],
                   help="composites to make: Lupton (stretch from the noise, Q from the "
                        "source's peak) and/or asinh per band with a common white point; "
                        "the first is the index's png (default: %(default)s)")
    c.add_argument("--noise-level", type=float, default=0.04,
                   help="fraction of full scale the 1-sigma noise shows at "
                        "(default: %(default)s)")
    c.add_argument("--white", type=float, default=1.0,
                   help="multiple of the source's peak shown at full scale "
                        "(default: %(default)s)")
    c.add_argument("--sheet", type=int, default=60, metavar="N",
                   help="sources on the contact sheet out/sheet.html; 0: none "
                        "(default: %(default)s)")
    c.add_argument("--id-column", default="source_id",
                   help="identifier column, in the file names (default: %(default)s)")
    c.add_argument("--group-column", default="",
                   help="column naming a sub-directory per source (default: 'survey' when "
                        "the catalog has it)")
    c.add_argument("--size-column", default="extent_arcsec",
                   help="extent (radius) column, arcsec (default: %(default)s)")
    c.add_argument("--scale", type=float, default=2.0,
                   help="side = scale x 2 x extent (default: %(default)s)")
    c.add_argument("--min-size", type=float, default=3.0,
                   help="smallest side, arcsec (default: %(default)s)")
    c.add_argument("--max-size", type=float, default=30.0,
                   help="largest side, arcsec (default: %(default)s)")
    c.add_argument("--max-gap", type=int, default=16384, metavar="BYTES",
                   help="bytes read through between boxes' rows to save a request; 0: only "
                        "the boxes (default: %(default)s)")
    c.add_argument("--partition-size", type=int, default=500, metavar="N",
                   help="sources per task and per resumable unit (default: %(default)s)")
    c.add_argument("--limit", type=int, metavar="N", help="only the first N sources")
    add_cluster_options(c, configured=False)
    c.add_argument("--in-process", action="store_true",
                   help="no Dask cluster: make the partitions here, one after another")
    c.set_defaults(func=_cmd_cutouts, errors=(ValueError,))
