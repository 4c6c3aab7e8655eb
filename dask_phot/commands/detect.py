"""``dask-phot detect CONFIG``: sources on many mosaics of several surveys, on Dask."""

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
    if summary.merged:
        print(f"merged: {summary.n_sources} sources from {summary.n_tiles} tile(s) -> "
              f"{summary.merged}")
        print(f'use it as priors: [priors] path = "{summary.merged}"')
        return 0
    for survey, path in summary.surveys.items():
        print(f"survey {survey}: {summary.counts[survey]} sources -> {path} "
              "(selection.json beside it)")
    print(f"{summary.n_sources} sources in {len(summary.surveys)} surveys from "
          f"{summary.n_tiles} tile(s)")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``detect`` subcommand to the ``dask-phot`` parser."""
    d = subparsers.add_parser(
        "detect", help="detect and measure sources on many mosaics; write per-group and "
                       "merged catalogs (the merged one is a ready [priors] path)")
    d.add_argument("config", help="TOML file with a [detect] table; every key is documented "
                                  "in dask_phot/data/detect.toml")
    add_cluster_options(d)
    d.add_argument("--in-process", action="store_true",
                   help="no Dask cluster: run the tiles here, one after another")
    d.set_defaults(func=_cmd_detect)
