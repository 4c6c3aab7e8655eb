"""``dask-phot crossmatch CATALOG XRAY --out FILE``: X-ray counterparts with nway.

The photometry (a dask-phot output directory or a table) is matched to an
X-ray catalogue (e.g. the ``xray.parquet`` that ``dask-phot fetch`` writes)
with :func:`dask_phot.crossmatch.crossmatch`: which photometry source is each
X-ray source's counterpart, with nway's ``p_any`` and ``p_i``, kept by the
COSMOS notebook's rule (``p_i >= 0.1``, ``match_flag == 1``). The output is
the photometry with the X-ray columns added (``<name>_id``, ``<name>_p_any``,
``<name>_match``...), as Parquet, FITS or CSV by the file's suffix. Needs the
``crossmatch`` extra (nway).
"""

from __future__ import annotations

import argparse
from typing import Any

from dask_phot.commands._shared import add_cluster_options, cluster_client

__all__ = ["register"]


def _column_or_number(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


def _xray_pos_err(table: Any, given: str | None) -> str | float:
    """The X-ray positional error: as given, else the column its name says it is."""
    if given is not None:
        return _column_or_number(given)
    from dask_phot.archive.heasarc import classify_columns

    found = classify_columns([str(c) for c in table.columns])["position_error"]
    if not found:
        raise ValueError("no positional-error column found in the X-ray catalogue (error_radius, "
                         "pos_err...): give --xray-pos-err COLUMN or ARCSEC")
    return found[0]


def _cmd_crossmatch(args: argparse.Namespace) -> int:
    from dask_phot.config import ClusterConfig
    from dask_phot.crossmatch import MatchCatalog, crossmatch
    from dask_phot.tables import read_table, write_table

    catalog = read_table(args.catalog)
    table = read_table(args.xray)
    xray = MatchCatalog(args.name, table, _xray_pos_err(table, args.xray_pos_err),
                        ra=args.xray_ra, dec=args.xray_dec, id_column=args.xray_id)
    match_flag = None if args.match_flag == "any" else int(args.match_flag)
    options = dict(pos_err=_column_or_number(args.pos_err), id_column=args.id_column,
                   radius_arcsec=args.radius, prior_completeness=args.completeness,
                   p_i_min=args.p_i_min, match_flag=match_flag, p_any_min=args.p_any_min)
    if args.per_cell:
        cluster = ClusterConfig(n_workers=args.workers or ClusterConfig().n_workers)
        with cluster_client(cluster, args.scheduler) as client:
            matched = crossmatch(catalog, xray, per_cell=True, client=client, **options)
    else:
        matched = crossmatch(catalog, xray, **options)
    out = write_table(matched, args.out)
    n = int(matched[f"{args.name.lower()}_match"].sum())
    print(f"{args.name}: {n} of {len(matched)} photometry sources matched "
          f"({len(table)} X-ray sources) -> {out}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``dask-phot crossmatch`` to the CLI."""
    p = subparsers.add_parser("crossmatch", help="match the photometry with an X-ray "
                                                 "catalogue (nway) and add its columns",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("catalog", help="dask-phot output directory, or Parquet/FITS/CSV table")
    p.add_argument("xray", help="X-ray catalogue: Parquet/FITS/CSV table (dask-phot fetch "
                                "writes xray.parquet)")
    p.add_argument("--out", required=True,
                   help="output table: .parquet, .fits or .csv")
    p.add_argument("--name", default="XRAY",
                   help="X-ray catalogue name: nway's prefix, and the new columns' "
                        "(lower case) (default: %(default)s)")
    p.add_argument("--xray-ra", default="ra", metavar="COLUMN",
                   help="X-ray right ascension column, degrees (default: %(default)s)")
    p.add_argument("--xray-dec", default="dec", metavar="COLUMN",
                   help="X-ray declination column, degrees (default: %(default)s)")
    p.add_argument("--xray-id", metavar="COLUMN",
                   help="X-ray identifier column (default: the row number)")
    p.add_argument("--xray-pos-err", metavar="COLUMN|ARCSEC",
                   help="X-ray 1-sigma positional error: a column or arcsec (default: the "
                        "column named error_radius, pos_err...)")
    p.add_argument("--pos-err", default="0.1", metavar="COLUMN|ARCSEC",
                   help="photometry positional error (default: %(default)s arcsec, the "
                        "notebook's)")
    p.add_argument("--id-column", default="source_id",
                   help="photometry identifier column (default: %(default)s)")
    p.add_argument("--radius", type=float, default=15.0, metavar="ARCSEC",
                   help="nway search radius (default: %(default)s)")
    p.add_argument("--completeness", type=float, default=0.9,
                   help="nway prior completeness (default: %(default)s)")
    p.add_argument("--p-i-min", type=float, default=0.1, metavar="P",
                   help="lowest p_i of a match (default: %(default)s)")
    p.add_argument("--match-flag", default="1", choices=("1", "2", "any"),
                   help="match_flag of a match: 1 the best candidate, 'any' every candidate "
                        "above --p-i-min (default: %(default)s)")
    p.add_argument("--p-any-min", type=float, default=0.0, metavar="P",
                   help="lowest p_any of a match (default: %(default)s, the notebook's)")
    p.add_argument("--per-cell", action="store_true",
                   help="run nway per HEALPix sky cell on a Dask cluster (same result)")
    add_cluster_options(p, configured=False)
    p.set_defaults(func=_cmd_crossmatch, errors=(KeyError, ValueError))
