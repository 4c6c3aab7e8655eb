"""``dask-phot report RESULT --out DIR``: write the HTML report of a run."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _cmd_report(args: argparse.Namespace) -> int:
    from dask_phot.report import write_report

    summary = write_report(args.result, args.out, n_sources=args.n_sources,
                           source_ids=args.source, size_arcsec=args.size,
                           config=args.config, partial=args.partial)
    if args.partial:
        print("note: the run of this catalogue has not finished: the report says so and "
              "covers the cells written so far")
    print(f"wrote {summary.index} ({len(summary.sources)} sources, "
          f"{len(summary.images)} images)")
    for problem in summary.problems:
        print(f"  note: {problem}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``dask-phot report`` to the CLI."""
    p = subparsers.add_parser("report", help="write a static HTML report: summary plots, "
                                             "SEDs and cutouts with model and residual")
    p.add_argument("result", help="dask-phot output directory (or a catalogue file)")
    p.add_argument("--out", required=True, help="directory for index.html and img/")
    p.add_argument("--n-sources", type=int, default=8, metavar="N",
                   help="sources shown with SED and cutouts (default: %(default)s)")
    p.add_argument("--source", nargs="+", metavar="ID", help="these source_id values instead")
    p.add_argument("--size", type=float, default=30.0,
                   help="cutout side, arcsec (default: %(default)s)")
    p.add_argument("--config", help="config.toml locating the images (default: the run's "
                                    "recorded configuration)")
    p.add_argument("--partial", action="store_true",
                   help="report on a catalogue whose run has not finished (marked as such "
                        "on the page); without it such a catalogue is refused")
    p.set_defaults(func=_cmd_report)
