"""``dask-phot simulate | run | demo``: a simulated field, a run, the demo."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
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
def _run(config: Any, plan: Any, *, scheduler: str | None, report: str | None,
         quiet: bool) -> Any:
    from distributed import performance_report

    from dask_phot.pipeline import run_catalog

    with cluster_client(config.cluster, scheduler) as client:
        target = report or config.cluster.performance_report
        ctx = performance_report(filename=target) if target else contextlib.nullcontext()
        progress = None if quiet else ProgressPrinter()
        with ctx:
            summary = run_catalog(config, client=client, on_progress=progress, plan=plan)
    return summary


def _why(reasons: dict[str, int]) -> str:
    return f" ({', '.join(f'{n} {why}' for why, n in reasons.items())})" if reasons else ""


def _print_summary(summary: Any) -> None:
    st = summary.stage_seconds
    print(f"catalog: {summary.output}")
    print(f"{summary.n_sources} sources x {len(summary.bands)} bands "
          f"({', '.join(summary.bands)}) in {summary.wall_seconds:.1f} s: "
          f"{summary.source_bands_per_second:,.0f} source-bands/s; "
          f"{summary.n_cells} cells run{_why(summary.reasons)}, "
          f"{summary.n_cells_skipped} already done")
    print("time in stages (summed over workers): " + ", ".join(
        f"{k} {v:.1f} s" for k, v in st.items()) + f"; {summary.bytes_read / 1e6:.1f} MB read")
    if summary.n_removed:
        print(f"removed {summary.n_removed} cell(s) of another catalog (--overwrite)")
    for warning in summary.warnings:
        print(f"warning: {warning}")
    if summary.failures:
        print("failures: " + ", ".join(f"{k}: {v}" for k, v in summary.failures.items()))
        print("the failed cells' reports (OUT/cells/...json) hold each error and its "
              "traceback; running again retries them")


def _resume_command(args: argparse.Namespace) -> str:
    words = ["dask-phot", "run", args.config]
    if args.out:
        words += ["--out", args.out]
    return shlex.join(words)


def _cmd_run(args: argparse.Namespace) -> int:
    from dask_phot.config import load_config
    from dask_phot.pipeline import RunInterrupted, prepare_run

    overrides = {"cluster.n_workers": args.workers} if args.workers else None
    try:
        config = load_config(args.config, overrides=overrides)
        plan = prepare_run(config, output=args.out, overwrite=args.overwrite)
        summary = _run(config, plan, scheduler=args.scheduler, report=args.performance_report,
                       quiet=args.quiet)
    except RunInterrupted as exc:
        print(f"dask-phot run: interrupted: {exc.kept} of {exc.total} cells kept in "
              f"{exc.output}; resume with: {_resume_command(args)}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("dask-phot run: interrupted before any cell was computed; run again with: "
              f"{_resume_command(args)}", file=sys.stderr)
        return 130
    _print_summary(summary)
    return 1 if summary.failures else 0


# ---------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from dask_phot.config import ClusterConfig, load_config
    from dask_phot.pipeline import prepare_run, read_catalog, run_catalog
    from dask_phot.s3server import LocalS3Server
    from dask_phot.testing import accuracy_table, simulate_to_dir

    out = Path(args.out)
    bucket = "dask-phot-demo"
    with LocalS3Server() as s3, \
            cluster_client(ClusterConfig(n_workers=args.workers), None) as client:
        warm = _warm_kernels(client)
        t0 = time.perf_counter()
        field, paths = simulate_to_dir(out / "field", area_arcmin2=args.area_arcmin2,
                                       bands=NOTEBOOK_BANDS, seed=args.seed)
        s3.create_bucket(bucket, public=True)
        served = {key: s3.upload(path, bucket, path.name) for key, path in paths.items()
                  if key.endswith(("_sci", "_wht"))}
        print(f"simulated {len(field.priors)} COSMOS-like sources over {args.area_arcmin2:g} "
              f"arcmin2 in {len(NOTEBOOK_BANDS)} bands ({time.perf_counter() - t0:.1f} s); "
              f"mosaics served from {s3.endpoint_url}/{bucket}")
        overrides: dict[str, Any] = {
            "output.path": str(out / "catalog"),
            "storage.endpoint_url": s3.endpoint_url, "storage.anon": True,
            "cluster.n_workers": args.workers,
            # a few cells per worker, so that the demo's small field keeps every worker busy
            "cells.rows_per_partition": max(500, len(field.priors) // (2 * args.workers))}
        for b in NOTEBOOK_BANDS:
            overrides[f"bands.{b}.images"] = [served[f"{b}_sci"]]
            overrides[f"bands.{b}.noise"] = [served[f"{b}_wht"]]
        config = load_config(paths["config"], overrides=overrides)
        plan = prepare_run(config, overwrite=True)
        warm.result()
        summary = run_catalog(config, client=client, plan=plan,
                              on_progress=None if args.quiet else ProgressPrinter())
    _print_summary(summary)
    cat = read_catalog(summary.output)
    print("accuracy against the simulated truth: pulls (flux - true) / flux_err by true S/N")
    print(accuracy_table(cat, NOTEBOOK_BANDS).to_string(index=False, float_format="%.3f"))
    print("the same, fluxes kept by the README's filter (flags & UNRELIABLE_FLAGS) == 0:")
    print(accuracy_table(cat, NOTEBOOK_BANDS, trusted=True).to_string(
        index=False, float_format="%.3f"))
    print(f"the field (mosaics, priors, config.toml) is kept in {out / 'field'}; the report: "
          f"dask-phot report {out / 'catalog'} --out {out / 'report'} "
          f"--config {paths['config']}")
    return 1 if summary.failures else 0


def _warm_kernels(client: Any) -> Any:
    """Start compiling the engine's kernels (:func:`dask_phot.warmup.warm_up`) in one
    worker, while this process simulates the field: a fresh install's first demo compiles
    them once, there, into numba's cache, from which the other workers load them
    (instead of each worker compiling them on its first cell, after the simulation)."""
    from dask_phot.warmup import warm_up

    first = sorted(client.scheduler_info()["workers"])[0]
    return client.submit(warm_up, every_option=False, workers=[first], pure=False,
                         key="warm-up")


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
    r.add_argument("--out", help="output catalog directory or s3:// URL (overrides [output] "
                                 "path)")
    r.add_argument("--overwrite", action="store_true",
                   help="remove cells of another catalog found in the output folder "
                        "(without it, the run refuses to mix two catalogs)")
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
