"""``dask-phot simulate | run | demo``: a simulated field, a run, the demo."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from dask_phot.bands import NOTEBOOK_BANDS
from dask_phot.commands._shared import ProgressPrinter, add_cluster_options, cluster_client

__all__ = ["register"]


# ---------------------------------------------------------------------- simulate
def _cmd_simulate(args: argparse.Namespace) -> int:
    from dask_phot.testing import simulate_to_dir

    field, paths = simulate_to_dir(Path(args.outdir), area_arcmin2=args.area_arcmin2,
                                   bands=args.bands, seed=args.seed)
    print(f"simulated {len(field.priors)} sources in {len(args.bands)} band(s) over "
          f"{args.area_arcmin2:g} arcmin2 -> {args.outdir}")
    print(f"run it with: dask-phot run {paths['config']}")
    return 0


# ---------------------------------------------------------------------- run
def _run(config: Any, *, scheduler: str | None, out: str | None, report: str | None,
         quiet: bool) -> Any:
    from distributed import performance_report

    from dask_phot.pipeline import run_catalog

    with cluster_client(config.cluster, scheduler) as client:
        target = report or config.cluster.performance_report
        ctx = performance_report(filename=target) if target else contextlib.nullcontext()
        progress = None if quiet else ProgressPrinter()
        with ctx:
            summary = run_catalog(config, client=client, output=out, on_progress=progress)
    return summary


def _print_summary(summary: Any) -> None:
    st = summary.stage_seconds
    print(f"catalog: {summary.output}")
    print(f"{summary.n_sources} sources x {len(summary.bands)} bands "
          f"({', '.join(summary.bands)}) in {summary.wall_seconds:.1f} s: "
          f"{summary.source_bands_per_second:,.0f} source-bands/s; "
          f"{summary.n_cells} cells run, {summary.n_cells_skipped} already done")
    print("time in stages (summed over workers): " + ", ".join(
        f"{k} {v:.1f} s" for k, v in st.items()) + f"; {summary.bytes_read / 1e6:.1f} MB read")
    if summary.failures:
        print("failures: " + ", ".join(f"{k}: {v}" for k, v in summary.failures.items()))


def _cmd_run(args: argparse.Namespace) -> int:
    from dask_phot.config import load_config

    overrides = {"cluster.n_workers": args.workers} if args.workers else None
    config = load_config(args.config, overrides=overrides)
    summary = _run(config, scheduler=args.scheduler, out=args.out,
                   report=args.performance_report, quiet=args.quiet)
    _print_summary(summary)
    return 1 if summary.failures else 0


# ---------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from dask_phot.config import load_config
    from dask_phot.pipeline import read_catalog
    from dask_phot.s3server import LocalS3Server
    from dask_phot.testing import accuracy_table, simulate_to_dir

    out = Path(args.out)
    bucket = "dask-phot-demo"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dask-phot-demo-") as tmp, LocalS3Server() as s3:
        field, paths = simulate_to_dir(Path(tmp), area_arcmin2=args.area_arcmin2,
                                       bands=NOTEBOOK_BANDS, seed=args.seed,
                                       url_prefix=f"s3://{bucket}")
        s3.create_bucket(bucket, public=True)
        for key, path in paths.items():
            if key.endswith(("_sci", "_wht")):
                s3.upload(path, bucket, path.name)
        print(f"simulated {len(field.priors)} COSMOS-like sources over {args.area_arcmin2:g} "
              f"arcmin2 in {len(NOTEBOOK_BANDS)} bands ({time.perf_counter() - t0:.1f} s); "
              f"mosaics served from {s3.endpoint_url}/{bucket}")
        config = load_config(paths["config"], overrides={
            "output.path": str(out / "catalog"),
            "storage.endpoint_url": s3.endpoint_url, "storage.anon": True,
            "cluster.n_workers": args.workers,
            # a few cells per worker, so that the demo's small field keeps every worker busy
            "cells.rows_per_partition": max(500, len(field.priors) // (2 * args.workers))})
        summary = _run(config, scheduler=None, out=None, report=None, quiet=args.quiet)
        (out / "priors.parquet").write_bytes(paths["priors"].read_bytes())
    _print_summary(summary)
    cat = read_catalog(summary.output)
    print("accuracy against the simulated truth: pulls (flux - true) / flux_err by true S/N")
    print(accuracy_table(cat, NOTEBOOK_BANDS).to_string(index=False, float_format="%.3f"))
    return 1 if summary.failures else 0


# ---------------------------------------------------------------------- parser
def register(subparsers: Any) -> None:
    """Add ``simulate``, ``run`` and ``demo`` to the ``dask-phot`` parser."""
    s = subparsers.add_parser("simulate", help="write a simulated field and a ready config.toml")
    s.add_argument("outdir", help="directory for the mosaics, priors.parquet and config.toml")
    s.add_argument("--area-arcmin2", type=float, default=25.0, metavar="AREA",
                   help="sky area of the field, arcmin² (default: %(default)s)")
    s.add_argument("--bands", nargs="+", default=list(NOTEBOOK_BANDS), metavar="BAND",
                   help="preset bands to simulate (default: the notebook's six)")
    s.add_argument("--seed", type=int, default=1,
                   help="seed of the simulation (default: %(default)s)")
    s.set_defaults(func=_cmd_simulate)
    r = subparsers.add_parser("run", help="run forced photometry for a config.toml")
    r.add_argument("config", help="run configuration (TOML; keys: dask_phot/data/default.toml)")
    r.add_argument("--out", help="output catalog directory (overrides [output] path)")
    add_cluster_options(r)
    r.add_argument("--performance-report", metavar="HTML",
                   help="write a Dask performance report to this file")
    r.add_argument("--quiet", action="store_true", help="no progress line")
    r.set_defaults(func=_cmd_run)
    d = subparsers.add_parser("demo", help="simulate a COSMOS-like field, serve it from a local "
                                           "S3 endpoint and run the pipeline on a LocalCluster")
    d.add_argument("--out", default="dask-phot-demo",
                   help="directory for the catalog and priors (default: %(default)s)")
    d.add_argument("--area-arcmin2", type=float, default=25.0, metavar="AREA",
                   help="sky area of the field, arcmin² (default: %(default)s)")
    d.add_argument("--workers", type=int, default=2, metavar="N",
                   help="local workers (default: %(default)s)")
    d.add_argument("--seed", type=int, default=1,
                   help="seed of the simulation (default: %(default)s)")
    d.add_argument("--quiet", action="store_true", help="no progress line")
    d.set_defaults(func=_cmd_demo)
