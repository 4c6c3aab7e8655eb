"""The survey recipe end to end: two simulated NIRCam surveys on a local S3 endpoint,
MAST look-up (recorded-shape replies) -> detect -> cutouts of 10,000 sources on a cluster.

Simulates the two surveys of ``dask_phot.testing.surveys.DEMO_SURVEYS`` (CEERS-like: two
2000x2000 tiles; PRIMER-like: one 2600x2600 tile; F115W, F200W, F444W at 0.04"/px, in
the JWST i2d layout), puts their level-3 mosaics in a moto S3 bucket named ``stpubdata``
at the keys MAST's path look-up gives, serves the recorded MAST replies on 127.0.0.1,
and runs ``examples/jwst_surveys.toml``: ``fetch`` (look-ups), ``detect`` (both surveys'
tiles as tasks on a 2-worker LocalCluster, cosmic-ray masks in single-exposure areas),
then ``cutouts`` of the first N sources of the merged catalogs (three bands, Lupton and
asinh composites) on the same cluster, and a contact sheet.

Prints, measured in this run: time of each step, sources per survey, cutouts per
second, bytes read per band cutout against the bytes of its box (and what the S3
endpoint served), requests per cutout, and the same for ``max_gap = 0`` (only the
boxes' bytes) on a subset. Timings mean something only on a quiet machine.

Run: ``python benchmarks/bench_surveys.py [--cutouts 10000] [--workers 2] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "archive"


def _bucket_keys() -> dict[str, str]:
    out = {}
    for entry in json.loads((DATA / "mast_path_lookup_surveys.json").read_text()).values():
        if entry["path"]:
            path = entry["path"]
            key = ("mast/" + path.removeprefix("/hlsp_local/public/")
                   if path.startswith("/hlsp_local/") else path.lstrip("/"))
            out[path.rsplit("/", 1)[1]] = key
    return out


def _simulate(base: Path, s3, seed: int) -> tuple[int, int]:
    from dask_phot.testing.surveys import DEMO_SURVEYS, simulate_survey

    keys = _bucket_keys()
    s3.create_bucket("stpubdata")
    n_truth = nbytes = 0
    for survey in DEMO_SURVEYS:
        sim = simulate_survey(survey, base / "sim", seed=seed)
        n_truth += len(sim.truth)
        for row in sim.files.itertuples():
            if row.kind == "level3":  # the HLSP copies are not used (level 3 preferred)
                s3.upload(row.path, "stpubdata", keys[row.product])
                nbytes += Path(row.path).stat().st_size
            Path(row.path).unlink()
    return n_truth, nbytes


def _recipe(base: Path, mast_url: str, endpoint: str) -> Path:
    import tomli_w

    data = tomllib.loads((REPO / "examples" / "jwst_surveys.toml").read_text())
    data["mast"].update(service=mast_url, cache_dir=str(base / "cache"),
                        output_dir=str(base / "surveys"))
    data["storage"] = {"anon": True, "endpoint_url": endpoint}
    path = base / "recipe.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _cutouts(catalog, bands_toml: Path, out: Path, client, *, max_gap: int, colour: bool):
    from dask_phot.cutouts import ColourSpec, CutoutSpec, load_band_list, run_cutouts

    images, storage = load_band_list(bands_toml)
    spec = CutoutSpec(min_size=2.0, max_size=12.0, max_gap=max_gap, partition_size=500)
    rgb = ColourSpec(("f444w", "f200w", "f115w"), methods=("lupton", "asinh")) if colour \
        else None
    return run_cutouts(catalog, images, out, spec=spec, colour=rgb, group_column="survey",
                       storage_options=storage, client=client)


def _report(label: str, summary, served: int, requests: int) -> None:
    per = max(summary.n_box_reads, 1)
    print(f"{label}: {summary.n_done} sources x 3 bands in {summary.wall_seconds:.1f} s = "
          f"{summary.cutouts_per_second:.1f} cutouts/s")
    print(f"  per band cutout: {summary.bytes_read / per:,.0f} bytes read, "
          f"{summary.box_bytes / per:,.0f} bytes in its box "
          f"({summary.read_ratio:.2f} x); S3 served {served / per:,.0f} bytes and "
          f"{requests / summary.n_done:.3f} requests per source (all bands; {requests:,} "
          f"requests)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cutouts", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="keep the outputs (sheet.html...) here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sys.stdout.reconfigure(line_buffering=True)

    import dask
    import pandas as pd
    from distributed import Client, LocalCluster

    from dask_phot.archive.survey_recipe import fetch_surveys
    from dask_phot.cutouts import contact_sheet
    from dask_phot.detect import load_detect_config, run_detect
    from dask_phot.s3server import LocalS3Server
    from dask_phot.testing.archive_server import ArchiveServer, add_mast_survey_routes

    dask.config.set({"logging": {"distributed": "error"}})
    logging.getLogger("distributed").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="bench-surveys-"))
    try:
        with LocalS3Server() as s3, ArchiveServer() as mast:
            add_mast_survey_routes(mast, DATA)
            t0 = time.perf_counter()
            n_truth, nbytes = _simulate(tmp, s3, args.seed)
            print(f"simulated: {n_truth} sources, {nbytes / 1e9:.2f} GB of i2d mosaics on S3 "
                  f"({time.perf_counter() - t0:.0f} s, not counted)")
            t0 = time.perf_counter()
            found = fetch_surveys(_recipe(tmp, mast.url, s3.endpoint_url))
            print(f"look-up: {sum(len(s.bands) for s in found.found.values())} survey bands "
                  f"in {time.perf_counter() - t0:.1f} s -> {found.detect_config}")
            cfg = load_detect_config(found.detect_config, environ={})
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              memory_limit="4GiB", dashboard_address="127.0.0.1:0") as cluster, \
                    Client(cluster) as client:
                t0 = time.perf_counter()
                det = run_detect(cfg, client=client)
                print(f"detect: {det.n_tiles} tiles, " + ", ".join(
                    f"{k} {v} sources" for k, v in det.counts.items())
                    + f" in {time.perf_counter() - t0:.1f} s")
                catalog = pd.concat([pd.read_parquet(p) for p in det.surveys.values()],
                                    ignore_index=True)
                if len(catalog) < args.cutouts:
                    print(f"note: {len(catalog)} sources detected, fewer than "
                          f"{args.cutouts} asked")
                catalog = catalog.head(args.cutouts)
                s3.reset_counts()
                full = _cutouts(catalog, found.bands_path, tmp / "cutouts", client,
                                max_gap=16384, colour=True)
                _report("cutouts (max_gap 16 KiB, FITS + 2 PNGs)", full,
                        s3.bytes_served("stpubdata"), s3.requests_served("stpubdata"))
                subset = catalog.head(min(2000, len(catalog)))
                s3.reset_counts()
                tight = _cutouts(subset, found.bands_path, tmp / "cutouts-gap0", client,
                                 max_gap=0, colour=False)
                _report("cutouts (max_gap 0, FITS only, subset)", tight,
                        s3.bytes_served("stpubdata"), s3.requests_served("stpubdata"))
            sheet = contact_sheet(full.index, tmp / "cutouts" / "sheet.html", n=60,
                                  title="bench_surveys: f444w, f200w, f115w")
            print(f"contact sheet: {sheet}")
            if args.keep:
                keep = Path(args.keep)
                keep.mkdir(parents=True, exist_ok=True)
                for name in ("cutouts", "surveys"):
                    shutil.copytree(tmp / name, keep / name, dirs_exist_ok=True)
                print(f"kept in {keep}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
