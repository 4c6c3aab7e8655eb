"""COSMOS at full size: ~1.2 million priors x 6 bands from S3 on a 2-worker LocalCluster.

Simulates (once, into a cache folder) a square field at COSMOS2015 density in the six
notebook bands, laid out as the archives serve them: IRAC ch1-4 as one large mosaic
each, GALEX NUV/FUV as 2x2 overlapping tiles with their own tangent points
(:func:`dask_phot.testing.survey.write_survey`). The priors and mosaics are served by the
local S3 server (moto, through s3fs, as a public bucket) with a latency added to every
request (``--latency-ms``, 30 by default, as on real S3); the server runs in its own
process so that its CPU does not share the scheduler's interpreter.

Prints, measured in this run, for the whole field and for a central cut (``--cut``,
225 arcmin² by default, the same mosaics): wall time, source-bands per second, worker
seconds per stage, peak memory of each worker, bytes read against the bytes of the
cells' pixel boxes and the number of requests, failures, and the ratio of the time per
source-band of the two (linearity: in wall time, and in the workers' CPU time, which a
shared machine's load does not inflate), then the accuracy against the truth.

Targets (issue 13): full COSMOS (``--area 7200``) in at most 15 minutes on 2 workers,
at most 3 GiB per worker, nothing failed; time per source-band within 20% between the
cut and the whole field; bytes read at most 1.5 times the cells' pixel boxes.

With ``--compress gzip2`` (or ``gzip1``) the mosaics are served tile-compressed, as
``fpack -g2`` would store them (lossless, ``--tile`` x ``--tile`` pixel tiles; written once
next to the cache's plain files): a cell then fetches the compressed tiles that meet its
box instead of rows of a row-major image (:mod:`dask_phot.images._tiled`). The bytes
served are still compared with the cells' pixel boxes as stored uncompressed.

Run: ``python benchmarks/bench_cosmos.py [--area 7200] [--cut 225] [--galaxies 0.7]
[--cache DIR] [--latency-ms 30] [--compress gzip2 [--tile 256]]
[--set cells.read_max_overread=8 ...]``.
Simulating the full field takes about an hour on one core, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

BUCKET = "cosmos"


def _serve(conn: Any, latency: float, files: dict[str, str]) -> None:
    """The S3 server process: upload ``files`` (key -> path), then answer commands."""
    logging.basicConfig(level=logging.WARNING)
    from dask_phot.s3server import LocalS3Server

    with LocalS3Server(latency=latency) as s3:
        s3.create_bucket(BUCKET, public=True)
        for key, path in files.items():
            s3.upload(path, BUCKET, key)
        conn.send(s3.endpoint_url)
        while True:
            cmd = conn.recv()
            if cmd == "reset":
                s3.reset_counts()
                conn.send(None)
            elif cmd == "counts":
                conn.send((s3.bytes_served(f"/{BUCKET}/"), s3.requests_served(f"/{BUCKET}/"),
                           resource.getrusage(resource.RUSAGE_SELF).ru_utime))
            else:
                conn.send(None)
                return


class S3Process:
    """The local S3 server in a child process, holding the field's files."""

    def __init__(self, latency: float, files: dict[str, str]) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, latency, files), daemon=True)
        self.proc.start()
        self.endpoint_url = self.conn.recv()

    def ask(self, cmd: str) -> Any:
        self.conn.send(cmd)
        return self.conn.recv()

    def close(self) -> None:
        self.ask("stop")
        self.proc.join(30)


def _peak_rss() -> int:
    """Peak resident memory of this process, bytes (run on each worker).

    Linux's ``VmHWM``: the peak of this process's own memory. ``ru_maxrss`` is not: it
    survives ``execve``, so a worker spawned by a client that had grown to 2.8 GiB
    reports at least 2.8 GiB (a cut run after the whole field measured 2.76 GiB per
    worker that way; its workers' own peak was 1.5 GiB).
    """
    status = Path("/proc/self/status")
    if status.exists():  # Linux
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _process_cpu() -> float:
    """CPU seconds of this process and its threads so far (run on each worker)."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


def _schedstat() -> tuple[float, float]:
    """Seconds this process's threads ran on a CPU and waited, runnable, for one (Linux's
    ``schedstat``; zeros elsewhere): the wait is what the machine's other load cost."""
    on = wait = 0
    for path in Path(f"/proc/{os.getpid()}/task").glob("*/schedstat"):
        try:
            a, b, _ = path.read_text().split()
        except (OSError, ValueError):
            continue
        on, wait = on + int(a), wait + int(b)
    return on / 1e9, wait / 1e9


def _timeline(stream: list[dict], t0: float, t1: float, waits: dict[str, float]) -> None:
    """Per worker, from Dask's task stream: when its first task started, the time its
    threads computed (the union of its tasks' intervals), the gaps between them and the
    tail after its last task; with the run-queue wait of its threads."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for task in stream:
        for ss in task["startstops"]:
            if ss["action"] == "compute":
                spans.setdefault(task["worker"], []).append((ss["start"], ss["stop"]))
    for worker, iv in sorted(spans.items()):
        iv.sort()
        busy, (a, b) = 0.0, iv[0]
        for s, e in iv[1:]:
            if s > b:
                busy, a = busy + b - a, s
            b = max(b, e)
        busy += b - a
        first, last = iv[0][0] - t0, max(e for _, e in iv) - t0
        print(f"  {worker}: first task at {first:.1f} s, computing {busy:.1f} s, gaps "
              f"{last - first - busy:.1f} s, tail {t1 - t0 - last:.1f} s, {len(iv)} tasks; "
              f"its threads waited {waits.get(worker, 0.0):.1f} s for a CPU")


def _warm() -> float:
    """Compile (or load from numba's cache) the kernels in this worker; CPU seconds spent."""
    from dask_phot.warmup import warm_up

    cpu0 = _process_cpu()
    warm_up(every_option=False)
    return _process_cpu() - cpu0


def _config(cache: Path, manifest: dict, priors_key: str, run_dir: Path, endpoint: str,
            galaxies: float, overrides: dict[str, Any]) -> Any:
    import tomli_w

    from dask_phot.config import load_config

    url = f"s3://{BUCKET}"
    bands = manifest["params"]["bands"]
    images = manifest["images"]
    config = {
        "priors": {"path": f"{url}/{priors_key}",
                   "shape_columns": {k: k for k in ("r_e", "q", "pa", "n")} if galaxies else {},
                   "keep_columns": [f"flux_true_{b}" for b in bands]},
        "bands": {b: {"images": [f"{url}/{n}_sci.fits" for n in images[b]],
                      "noise": [f"{url}/{n}_wht.fits" for n in images[b]],
                      "noise_kind": "weight", "sky": "fit"} for b in bands},
        "output": {"path": str(run_dir / "catalog")},
    }
    path = run_dir / "config.toml"
    path.write_text(tomli_w.dumps(config))
    return load_config(path, overrides={"storage.endpoint_url": endpoint, "storage.anon": True,
                                        **overrides})


def _compressed(path: Path, folder: Path, algorithm: str, tile: int) -> Path:
    """A lossless tile-compressed copy of a plain FITS mosaic, written once into ``folder``."""
    import warnings

    import numpy as np
    from astropy.io import fits

    out = folder / path.name
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".part-{path.name}"
    with fits.open(path, memmap=True) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy notes the header's conversion
        header = hdul[0].header.copy()
        for key in ("SIMPLE", "EXTEND"):
            header.remove(key, ignore_missing=True)
        hdu = fits.CompImageHDU(np.asarray(hdul[0].data), header=header,
                                compression_type=algorithm, tile_shape=(tile, tile),
                                quantize_level=0.0)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(part, overwrite=True)
    os.replace(part, out)
    return out


def _mosaic_files(folder: Path, manifest: dict, args: argparse.Namespace
                  ) -> tuple[dict[str, str], int, int]:
    """S3 key -> local file of every mosaic (tile-compressed copies with ``--compress``),
    their bytes, and the bytes of the plain files."""
    algorithm = {"gzip1": "GZIP_1", "gzip2": "GZIP_2"}.get(args.compress)
    tiled = folder / f"tiled-{args.compress}-{args.tile}"
    files, nbytes, plain = {}, 0, 0
    t0 = time.process_time()
    for names in manifest["images"].values():
        for name in names:
            for kind in ("sci", "wht"):
                path = folder / f"{name}_{kind}.fits"
                plain += path.stat().st_size
                if algorithm is not None:
                    path = _compressed(path, tiled, algorithm, args.tile)
                files[f"{name}_{kind}.fits"] = str(path)
                nbytes += path.stat().st_size
    if algorithm is not None:
        print(f"mosaics tile-compressed ({algorithm}, lossless, {args.tile}x{args.tile} px "
              f"tiles) in {tiled}: {nbytes / 1e9:.2f} GB, {nbytes / plain:.2f} x the plain "
              f"files (compression CPU {time.process_time() - t0:.0f} s, 0 when cached)")
    return files, nbytes, plain


def _read_only(part: Any, indexes: Any, cfg: Any) -> Any:
    """One cell's reads without its fits (``--reads-only``)."""
    from dask_phot.pipeline.kernel import read_cell

    return read_cell(part, indexes, cfg)[2]


def _reads(label: str, cfg: Any, s3: S3Process, args: argparse.Namespace) -> None:
    """Every cell's reads, in the run's order on the run's workers, and what they cost."""
    from distributed import Client, LocalCluster, as_completed

    from dask_phot.cluster import local_worker_settings
    from dask_phot.pipeline import plan_cells
    from dask_phot.pipeline.run import run_order

    with local_worker_settings(), LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, processes=True,
            memory_limit=args.memory_limit, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        parts, indexes = plan_cells(cfg)
        s3.ask("reset")
        t0 = time.perf_counter()
        idx = client.scatter(dict(indexes), broadcast=True)
        futures = [client.submit(_read_only, p, idx, cfg, pure=False) for p in run_order(parts)]
        reports = [f.result() for f in as_completed(futures)]
        wall = time.perf_counter() - t0
    served, n_req, _ = s3.ask("counts")
    box = sum(r.box_bytes for r in reports)
    print(f"\n== {label}, reads only: {len(parts)} cells ==\nwall {wall:.1f} s; worker read "
          f"seconds {sum(r.seconds['read'] for r in reports):.1f}; bytes served "
          f"{served / 1e6:,.1f} MB in {n_req:,} requests; cells' pixel boxes {box / 1e6:,.1f} MB "
          f"-> {served / max(box, 1):.2f} x")


def _run(label: str, cfg: Any, s3: S3Process, args: argparse.Namespace,
         n_bands: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from dask_phot.cluster import local_worker_settings
    from dask_phot.pipeline import plan_cells

    with local_worker_settings(), LocalCluster(
            n_workers=args.workers, threads_per_worker=args.threads, processes=True,
            memory_limit=args.memory_limit, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        t0 = time.perf_counter()
        parts, _ = plan_cells(cfg)
        t_plan = time.perf_counter() - t0
        if not args.cold:  # a fixed cost per worker (issue 13's "compile once"), not per source
            warm = client.run(_warm)
            print("workers warmed up (kernels compiled or loaded; not counted): CPU "
                  + ", ".join(f"{v:.1f} s" for v in warm.values()))
        for rep in range(args.repeat):
            if rep:  # the same run on the same (now used) workers, into a fresh catalog
                print(f"\n-- {label}: repeat {rep + 1} of {args.repeat}, same workers --")
                cfg = dataclasses.replace(cfg, output=dataclasses.replace(
                    cfg.output, path=f"{cfg.output.path}-repeat{rep + 1}"))
            out = _one_run(label, cfg, s3, args, n_bands, client, len(parts), t_plan)
    return out


def _one_run(label: str, cfg: Any, s3: S3Process, args: argparse.Namespace, n_bands: int,
             client: Any, n_cells: int, t_plan: float) -> dict[str, Any]:
    from distributed import get_task_stream, performance_report

    from dask_phot.pipeline import run_catalog

    s3.ask("reset")
    _, _, cpu0 = s3.ask("counts")
    proc0, sched0 = client.run(_process_cpu), client.run(_schedstat)
    report = (performance_report(filename=f"{args.report}-{label}.html") if args.report
              else _null())
    with report, get_task_stream(client) as stream:
        t0, start = time.perf_counter(), time.time()
        summary = run_catalog(cfg, client=client)
        wall = time.perf_counter() - t0
    peaks = client.run(_peak_rss)
    proc1, sched1 = client.run(_process_cpu), client.run(_schedstat)
    served, n_req, cpu1 = s3.ask("counts")
    proc = sum(proc1[w] - proc0.get(w, 0.0) for w in proc1)
    n = summary.n_sources
    st = summary.stage_seconds
    busy = sum(st.values()) or 1.0
    out = {"label": label, "priors": n, "cells": n_cells, "wall": wall, "plan": t_plan,
           "sb_per_s": n * n_bands / wall, "us_per_sb": wall / (n * n_bands) * 1e6,
           "served": served, "requests": n_req, "box": summary.box_bytes,
           "read": summary.bytes_read, "peaks": sorted(peaks.values()),
           "failures": summary.failures, "output": summary.output, "server_cpu": cpu1 - cpu0,
           "cpu_us_per_sb": summary.cpu_seconds / (n * n_bands) * 1e6,
           "proc_us_per_sb": proc / (n * n_bands) * 1e6}
    print(f"\n== {label}: {n:,} priors in {n_cells} cells, {n_bands} bands ==")
    print(f"wall time {wall:.1f} s end to end (plan {t_plan:.1f} s, measured once more "
          f"before the run); {out['sb_per_s']:,.0f} source-bands/s "
          f"({out['us_per_sb']:.0f} us per source-band, {args.workers} workers)")
    print(f"worker CPU: the tasks' threads {summary.cpu_seconds:.1f} s = "
          f"{out['cpu_us_per_sb']:.0f} us per source-band; the worker processes {proc:.1f} s = "
          f"{out['proc_us_per_sb']:.0f} us per source-band (CPU time does not grow with the "
          "machine's load, wall time does)")
    print("worker seconds by stage: " + ", ".join(
        f"{k} {v:.1f} s ({v / busy:.0%})" for k, v in st.items()))
    print("peak memory per worker: " + ", ".join(f"{p / 2**30:.2f} GiB" for p in out["peaks"])
          + f" (target <= 3 GiB: {'met' if max(out['peaks']) <= 3 * 2**30 else 'NOT met'})")
    ratio = served / max(summary.box_bytes, 1)
    print(f"bytes served by S3: {served / 1e6:,.1f} MB in {n_req:,} requests; cells' pixel "
          f"boxes {summary.box_bytes / 1e6:,.1f} MB -> {ratio:.2f} x (target <= 1.5: "
          f"{'met' if ratio <= 1.5 else 'NOT met'}); S3 server CPU {out['server_cpu']:.0f} s")
    print(f"failures: {summary.failures or 'none'}")
    if args.timeline:
        _timeline(stream.data, start, start + wall,
                  {w: sched1[w][1] - sched0.get(w, (0.0, 0.0))[1] for w in sched1})
    out["bands"] = _band_costs(summary.output, n)
    return out


def _band_costs(output: str, n_primary: int) -> dict[str, dict[str, float]]:
    """Per band, from the cell reports: task CPU per primary source-band and the sources
    modelled per primary source (margin sources are modelled in several cells)."""
    from dask_phot.pipeline.output import CatalogStore

    cpu: dict[str, float] = {}
    modelled: dict[str, int] = {}
    for rep in CatalogStore.open(output).reports().values():
        for band, sec in rep.get("band_cpu", {}).items():
            cpu[band] = cpu.get(band, 0.0) + sec
        for band, n in rep.get("band_modelled", {}).items():
            modelled[band] = modelled.get(band, 0) + n
    out = {b: {"us_per_sb": cpu[b] / n_primary * 1e6, "cpu": cpu[b],
               "modelled_per_primary": modelled.get(b, 0) / n_primary} for b in cpu}
    print("per band: task CPU per source-band (us), CPU s, sources modelled / primaries: "
          + "; ".join(f"{b} {v['us_per_sb']:.0f} us, {v['cpu']:.1f} s, "
                      f"{v['modelled_per_primary']:.2f}" for b, v in out.items()))
    return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _accuracy(cat: Any, cfg: Any, cut: float | None) -> None:
    """Pulls by band; in a cut, of the sources farther than the cells' margin from its
    edges (the mosaics hold the field's other sources, which a cut's priors lack)."""
    from dask_phot.bands import NOTEBOOK_BANDS
    from dask_phot.testing import accuracy_table
    from dask_phot.testing.survey import cut_priors

    where = "every source"
    if cut:
        inner = max(cut ** 0.5 - 2 * cfg.margin_arcsec / 60, 0.0) ** 2
        cat = cut_priors(cat, inner)
        where = (f"the {len(cat):,} sources of the central {inner:.0f} arcmin2 (farther than "
                 f"the margin, {cfg.margin_arcsec:.0f}\", from the cut's edges)")
    print(f"accuracy, {where}: pulls (flux - true) / flux_err by true S/N")
    print(accuracy_table(cat, NOTEBOOK_BANDS).to_string(index=False, float_format="%.3f"))


def _parse_set(items: list[str]) -> dict[str, Any]:
    import tomllib

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--area", type=float, default=7200.0, help="field area, arcmin2 "
                    "(7200 = 2 deg2, COSMOS)")
    ap.add_argument("--cut", type=float, default=225.0, help="area of the central cut also "
                    "run, arcmin2 (0: none)")
    ap.add_argument("--galaxies", type=float, default=0.0, help="fraction of Sersic galaxies "
                    "(0.7: fitted with their shapes)")
    default_cache = Path(os.environ.get("DASK_PHOT_CACHE", Path.home() / ".cache" / "dask-phot"))
    ap.add_argument("--cache", type=Path, default=default_cache / "bench-cosmos")
    ap.add_argument("--latency-ms", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    from dask_phot.config import ClusterConfig

    ap.add_argument("--threads", type=int, default=ClusterConfig().threads_per_worker,
                    help="threads per worker (default: [cluster] threads_per_worker; with "
                    "fits_per_worker \"auto\", reads overlap the fits)")
    ap.add_argument("--memory-limit", default="4GiB")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", default=None, help="write Dask performance reports "
                    "<REPORT>-<run>.html")
    ap.add_argument("--timeline", action="store_true", help="print per worker where its "
                    "wall time went (Dask's task stream): first task, computing, gaps, tail")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="configuration override (TOML value), e.g. cells.read_max_overread=8")
    ap.add_argument("--repeat", type=int, default=1, help="run each field this many times "
                    "on the same workers (figures of the last run count): what a worker's "
                    "first cells of each band cost beyond the kernels' warm-up")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--cut-only", action="store_true", help="run the cut alone (on a busy "
                    "machine; no linearity figure)")
    ap.add_argument("--cold", action="store_true", help="count the workers' first "
                    "compilation (or cache load) of the kernels in the run")
    ap.add_argument("--reads-only", action="store_true", help="only read every cell's pixel "
                    "boxes (no fits): the read plan's bytes, requests and time")
    ap.add_argument("--compress", choices=("none", "gzip1", "gzip2"), default="none",
                    help="serve the mosaics tile-compressed (lossless; copies written once "
                    "into the cache folder)")
    ap.add_argument("--tile", type=int, default=256, help="tile size of --compress, pixels")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat: at least 1, got {args.repeat}")
    logging.basicConfig(level=logging.WARNING)

    import dask
    import pandas as pd

    from dask_phot.bands import NOTEBOOK_BANDS
    from dask_phot.pipeline import read_catalog
    from dask_phot.testing.survey import cut_priors, write_survey

    dask.config.set({"logging": {"distributed": "warning"},
                     # a shared machine's load stalls processes for minutes: patience
                     "distributed.comm.timeouts.connect": "300s",
                     "distributed.comm.timeouts.tcp": "900s",
                     "distributed.scheduler.worker-ttl": "1h"})
    folder = args.cache / f"cosmos-a{args.area:g}-g{args.galaxies:g}-s{args.seed}"
    t0 = time.perf_counter()
    manifest = write_survey(folder, area_arcmin2=args.area, bands=NOTEBOOK_BANDS,
                            seed=args.seed, galaxies=args.galaxies)
    print(f"field: {manifest['n_priors']:,} priors over {args.area:g} arcmin2 in "
          f"{folder} ({'simulated' if time.perf_counter() - t0 > 5 else 'cached'}; "
          f"simulation took {manifest['seconds']:.0f} s, not counted)")
    files = {"priors.parquet": str(folder / "priors.parquet")}
    if args.cut:
        cut = folder / f"priors_cut{args.cut:g}.parquet"
        if not cut.is_file():
            cut_priors(pd.read_parquet(folder / "priors.parquet"), args.cut).to_parquet(cut)
        files[cut.name] = str(cut)
    mosaics, mosaic_bytes, _ = _mosaic_files(folder, manifest, args)
    files.update(mosaics)
    t0 = time.perf_counter()
    s3 = S3Process(args.latency_ms / 1000.0, files)
    print(f"S3: {mosaic_bytes / 1e9:.2f} GB of mosaics and tiles uploaded in "
          f"{time.perf_counter() - t0:.0f} s (not counted); {args.latency_ms:g} ms per request")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} "
          "before the runs (timings mean little on a busy machine)")
    overrides = _parse_set(args.set)
    n_bands = len(NOTEBOOK_BANDS)
    results = []
    try:
        runs = [] if args.cut_only else [("whole field", "priors.parquet")]
        if args.cut:
            runs.append((f"{args.cut:g} arcmin2 cut", f"priors_cut{args.cut:g}.parquet"))
        with tempfile.TemporaryDirectory(prefix="bench-cosmos-") as tmp:
            for i, (label, key) in enumerate(runs):
                run_dir = Path(tmp) / f"run{i}"
                run_dir.mkdir()
                cfg = _config(folder, manifest, key, run_dir, s3.endpoint_url, args.galaxies,
                              overrides)
                if args.reads_only:
                    _reads(label, cfg, s3, args)
                    continue
                results.append(_run(label, cfg, s3, args, n_bands))
                if not args.no_accuracy:
                    _accuracy(read_catalog(results[-1]["output"]), cfg,
                              None if key == "priors.parquet" else args.cut)
    finally:
        s3.close()
    if not results:
        return
    whole = results[0]
    if args.cut_only:
        print(f"\nat this rate 7200 arcmin2 would take {whole['wall'] * 7200 / args.cut:.0f} s")
        return
    print(f"\nfull COSMOS target: <= 900 s -> "
          f"{'met' if whole['wall'] <= 900 else 'NOT met'} for {args.area:g} arcmin2 "
          f"({whole['wall']:.0f} s; at this rate 7200 arcmin2 would take "
          f"{whole['wall'] * 7200 / args.area:.0f} s)")
    if len(results) > 1:
        for what, key in (("wall time", "us_per_sb"), ("task CPU", "cpu_us_per_sb"),
                          ("worker process CPU", "proc_us_per_sb")):
            ratio = whole[key] / results[1][key]
            print(f"linearity: {what} per source-band, whole / cut = {whole[key]:.0f} / "
                  f"{results[1][key]:.0f} us = {ratio:.2f} (target within 20%: "
                  f"{'met' if abs(ratio - 1) <= 0.2 else 'NOT met'})")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
