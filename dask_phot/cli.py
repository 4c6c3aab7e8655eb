"""Command line: ``dask-phot simulate | run | demo`` (a thin layer over the API)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["main"]

log = logging.getLogger("dask_phot")

NOTEBOOK_BANDS = ("irac1", "irac2", "irac3", "irac4", "nuv", "fuv")

#: Modules that add subcommands: each has ``register(subparsers) -> None``.
EXTENSIONS: tuple[str, ...] = ("dask_phot.deploy", "dask_phot.archive.cli", "dask_phot.detect.cli",
                                "dask_phot.plots.cli", "dask_phot.report.cli")


# ---------------------------------------------------------------------- simulate
def simulate_to_dir(outdir: Path, *, area_arcmin2: float, bands: Sequence[str], seed: int,
                    url_prefix: str | None = None) -> tuple[Any, dict[str, Path]]:
    """Simulate a field in preset bands, write it and a ready ``config.toml``."""
    import tomli_w

    from dask_phot.bands import get_band
    from dask_phot.testing import SimBand, simulate_field, write_field

    sims = []
    for name in bands:
        b = get_band(name)
        sky = 0.05 if b.unit == "MJy/sr" else 1e-3
        sims.append(SimBand(b.name, b.load_psf(), b.to_ujy, b.depth_5sigma_ujy, sky=sky,
                            unit=b.unit))
    field = simulate_field(bands=sims, seed=seed, area_arcmin2=area_arcmin2,
                           mask_fraction=0.005)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = write_field(field, outdir, noise_product="weight")

    def where(key: str) -> str:
        name = paths[key].name
        return f"{url_prefix.rstrip('/')}/{name}" if url_prefix else name

    config = {
        "priors": {"path": "priors.parquet",
                   "keep_columns": [f"flux_true_{b}" for b in bands]},
        "bands": {b: {"images": [where(f"{b}_sci")], "noise": [where(f"{b}_wht")],
                      "noise_kind": "weight", "sky": "fit"} for b in bands},
        "output": {"path": "catalog"},
    }
    (outdir / "config.toml").write_text(tomli_w.dumps(config))
    paths["config"] = outdir / "config.toml"
    return field, paths


def _cmd_simulate(args: argparse.Namespace) -> int:
    field, paths = simulate_to_dir(Path(args.outdir), area_arcmin2=args.area_arcmin2,
                                   bands=args.bands, seed=args.seed)
    print(f"simulated {len(field.priors)} sources in {len(args.bands)} band(s) over "
          f"{args.area_arcmin2:g} arcmin2 -> {args.outdir}")
    print(f"run it with: dask-phot run {paths['config']}")
    return 0


# ---------------------------------------------------------------------- run
def _run(config, *, scheduler: str | None, out: str | None, report: str | None,
         quiet: bool) -> Any:
    from distributed import performance_report

    from dask_phot.cluster import ProgressPrinter, connect
    from dask_phot.pipeline import run_catalog

    with connect(config.cluster, scheduler=scheduler) as client:
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        target = report or config.cluster.performance_report
        ctx = performance_report(filename=target) if target else contextlib.nullcontext()
        progress = None if quiet else ProgressPrinter(sys.stderr)
        with ctx:
            summary = run_catalog(config, client=client, output=out, on_progress=progress)
    return summary


def _print_summary(summary) -> None:
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
def accuracy_table(catalog: pd.DataFrame, bands: Sequence[str]) -> pd.DataFrame:
    """Per band, pulls ``(flux - true) / flux_err`` in two ranges of true S/N.

    Sources are selected on the true S/N (true flux / reported error), which does
    not depend on the noise, so the selection does not bias the pulls. Above
    S/N ~ 100 the pixel-grid PSF interpolation (~1e-3 of the flux for these PSFs)
    is no longer small against the noise, which shows as a wider spread there.
    """
    rows = []
    for b in bands:
        flux, err = catalog[f"flux_{b}"], catalog[f"flux_err_{b}"]
        truth = catalog[f"flux_true_{b}"]
        pull = (flux - truth) / err
        snr = truth / err
        row: dict[str, Any] = {"band": b}
        for label, sel in (("5-100", (snr > 5) & (snr <= 100)), (">100", snr > 100)):
            ok = np.isfinite(pull) & sel
            row[f"n S/N {label}"] = int(ok.sum())
            row[f"median {label}"] = float(np.median(pull[ok])) if ok.any() else np.nan
            row[f"std {label}"] = float(np.std(pull[ok])) if ok.any() else np.nan
        ok = np.isfinite(pull) & (snr > 5)
        row["flux/true"] = float(np.median(flux[ok] / truth[ok])) if ok.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _cmd_demo(args: argparse.Namespace) -> int:
    from dask_phot.config import load_config
    from dask_phot.pipeline import read_catalog
    from dask_phot.s3server import LocalS3Server

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
def build_parser() -> argparse.ArgumentParser:
    """The ``dask-phot`` argument parser."""
    p = argparse.ArgumentParser(prog="dask-phot", description="Forced photometry at scale.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="write a simulated field and a ready config.toml")
    s.add_argument("outdir")
    s.add_argument("--area-arcmin2", type=float, default=25.0)
    s.add_argument("--bands", nargs="+", default=list(NOTEBOOK_BANDS))
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=_cmd_simulate)
    r = sub.add_parser("run", help="run forced photometry for a config.toml")
    r.add_argument("config")
    r.add_argument("--out", help="output catalog directory (overrides [output] path)")
    r.add_argument("--scheduler", help="local | kubernetes | a scheduler address")
    r.add_argument("--workers", type=int, help="number of local workers")
    r.add_argument("--performance-report", help="write a Dask performance report (HTML)")
    r.add_argument("--quiet", action="store_true", help="no progress line")
    r.set_defaults(func=_cmd_run)
    d = sub.add_parser("demo", help="simulate a COSMOS-like field, serve it from a local S3 "
                                    "endpoint and run the pipeline on a LocalCluster")
    d.add_argument("--out", default="dask-phot-demo")
    d.add_argument("--area-arcmin2", type=float, default=25.0)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--quiet", action="store_true", help="no progress line")
    d.set_defaults(func=_cmd_demo)
    import importlib

    for name in EXTENSIONS:
        importlib.import_module(name).register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dask-phot`` command."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import dask

    # distributed logs at INFO to stderr by default (workers too): keep it behind -vv
    quiet_libs = "info" if args.verbose >= 2 else "warning"
    dask.config.set({"logging": {"distributed": quiet_libs, "bokeh": "error",
                                 "tornado": "error"}})
    for name in ("distributed", "bokeh", "tornado"):
        logging.getLogger(name).setLevel(quiet_libs.upper())
    from dask_phot.config import ConfigError
    from dask_phot.psf import PSFError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, PSFError, FileNotFoundError) as exc:
        print(f"dask-phot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
