"""The run phase of podman_test.py: S3, the DaskJob's and the chart's containers, the reference.

See podman_test.py for the whole story; specs.py renders the manifests into pods.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import specs  # this directory's modules (podman_test.py puts it on sys.path)
from podman_run import Podman
from pods import podman_run_args

#: Dummy S3 credentials (the Secret dask-phot-s3); the local S3 server checks none.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
BUCKET = "dask-phot-test"
BANDS = ("irac1", "irac2")
#: The field: 702 sources at COSMOS density in two IRAC bands.
AREA_ARCMIN2 = 4.0
SEED = 1
#: Primary sources per cell: 31 cells, so that every worker fits many after its first.
ROWS_PER_CELL = 100
#: Where the catalog volume is mounted in the runner and the workers (see CATALOG_TO_S3).
OUTPUT_MOUNT = "/output"

#: The catalog goes to s3://BUCKET/catalog/<scenario> on the local S3 server, as a batch
#: run's does (no volume is mounted), and the comparison reads it back from S3; False
#: (``--no-catalog-to-s3``) writes it to a host directory mounted at /output in the
#: runner and the workers instead.
CATALOG_TO_S3 = True


def _dask_phot(*args: str, env: dict[str, str] | None = None,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The ``dask-phot`` command of this Python environment."""
    out = subprocess.run([sys.executable, "-c", "import sys; from dask_phot.commands import main; "
                          "sys.exit(main(sys.argv[1:]))", *args], capture_output=True,
                         text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"dask-phot {args[0]} exited {out.returncode}:\n{out.stderr[-3000:]}")
    return out


def upload_field(s3: Any, workdir: Path) -> dict[str, Any]:
    """Simulate the field, put it in the bucket; the run configuration's data tables."""
    field = workdir / "field"
    _dask_phot("simulate", str(field), "--bands", *BANDS, "--area-arcmin2", str(AREA_ARCMIN2),
               "--seed", str(SEED))
    s3.create_bucket(BUCKET, public=False)
    url = {p.name: s3.upload(p, BUCKET, f"field/{p.name}")
           for p in sorted(field.iterdir()) if p.suffix in (".fits", ".parquet")}
    return {"priors": {"path": url["priors.parquet"],
                       "keep_columns": [f"flux_true_{b}" for b in BANDS]},
            "bands": {b: {"images": [url[f"{b}_sci.fits"]], "noise": [url[f"{b}_wht.fits"]],
                          "noise_kind": "weight", "sky": "fit"} for b in BANDS},
            "cells": {"rows_per_partition": ROWS_PER_CELL},
            "cluster": {"threads_per_worker": 1},
            "storage": {"anon": False, "endpoint_url": s3.endpoint_url}}


def config_text(tables: dict[str, Any], output: str) -> str:
    """A run's config.toml."""
    import tomli_w

    return tomli_w.dumps({**tables, "output": {"path": output}})


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return 0, repr(exc)


def wait_ready(probe_url: str, timeout: float = 180) -> float:
    """Poll the scheduler's readiness probe (HTTP 200) until ``timeout``; seconds waited."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if _get(probe_url, timeout=2)[0] == 200:
            return time.time() - t0
        time.sleep(0.25)
    raise TimeoutError(f"readiness probe {probe_url} not ready after {timeout:.0f} s")


def cell_reports(catalog: Path) -> dict[str, dict[str, Any]]:
    """The per-cell reports of a catalog (timings of read, fit, write), by task key."""
    out = {}
    for path in catalog.glob("cells/Norder=*/Npix=*.json"):
        report = json.loads(path.read_text())
        out[f"cell-{report['order']}-{report['pixel']}"] = report
    return out


def _ratio(first: float, warm: list[float]) -> dict[str, Any]:
    median = statistics.median(warm) if warm else None
    return {"first_s": round(first, 3), "warm_median_s": None if median is None else
            round(median, 3), "first_over_warm": round(first / median, 2) if median else None}


def _cell_spans(stream: list[dict[str, Any]]) -> dict[str, tuple[float, float, str]]:
    """Each cell's (start, stop, worker) from its tasks: the band tasks
    ``fit_<band>-<order>-<pixel>`` and the write task ``write-<order>-<pixel>`` (the
    cell ends, on the writing worker, when its write task does)."""
    spans: dict[str, list[Any]] = {}
    for task in stream:
        key = str(task["key"])
        if task["status"] != "OK" or not key.startswith(("fit_", "write-")):
            continue
        cell = "cell-" + key.split("-", 1)[1]
        compute = [s for s in task["startstops"] if s["action"] == "compute"][-1]
        span = spans.setdefault(cell, [compute["start"], None, None])
        span[0] = min(span[0], compute["start"])
        if key.startswith("write-"):
            span[1], span[2] = compute["stop"], task["worker"]
    return {cell: (a, b, w) for cell, (a, b, w) in spans.items() if b is not None}


def first_cells(stream: list[dict[str, Any]], t_start: float,
                reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """From the task stream and the cell reports: container start to the first finished
    cell, and each fresh worker's first cell against its later ones (the whole cell, and
    the fit alone: the part numba's kernels take)."""
    cells = _cell_spans(stream)
    if not cells:
        return {"cells": 0}
    by_worker: dict[str, list[tuple[float, float, str]]] = {}
    for key, (start, stop, worker) in cells.items():
        by_worker.setdefault(worker, []).append((start, stop, key))
    workers = {}
    for worker, spans in sorted(by_worker.items()):
        spans.sort()
        fits = [reports[key]["seconds"]["fit"] for _, _, key in spans if key in reports]
        workers[worker] = {"cells": len(spans),
                           "start_to_first_cell_s": round(spans[0][1] - t_start, 2),
                           "cell": _ratio(spans[0][1] - spans[0][0],
                                          [b - a for a, b, _ in spans[1:]]),
                           "fit": _ratio(fits[0], fits[1:]) if fits else None,
                           "first_cell_read_s": round(reports[spans[0][2]]["seconds"]["read"], 3)
                           if spans[0][2] in reports else None}
    return {"cells": len(cells),
            "start_to_first_cell_s": round(min(s[0][1] for s in by_worker.values()) - t_start,
                                           2),
            "workers": workers}


def _monitor(address: str) -> Any:
    """A Dask client recording the task stream from now on."""
    import warnings

    from distributed import Client
    from distributed.versions import VersionMismatchWarning

    with warnings.catch_warnings():  # this Python's patch release and lz4 differ: harmless
        warnings.simplefilter("ignore", VersionMismatchWarning)
        client = Client(address, timeout=60)
    client.get_task_stream()  # installs the scheduler's task-stream plugin
    return client


def _worker_kernels(client: Any) -> dict[str, dict[str, int]]:
    """Per worker: dask-phot's compiled functions, loaded from the cache or compiled."""
    import dataclasses

    from dask_phot.warmup import cache_stats

    return {w: dataclasses.asdict(s) for w, s in client.run(cache_stats).items()}


def _check_containers(pod: Podman, names: dict[str, Any], dashboard: str) -> dict[str, Any]:
    """The image's HEALTHCHECK in the scheduler and the workers; the dashboard page."""
    checks = {}
    for role in ("scheduler", *names["workers"]):
        name = names["scheduler"] if role == "scheduler" else role
        healthy, output = pod.healthcheck(name)
        checks[f"healthcheck {role}"] = {"healthy": healthy, "output": output[-300:]}
    status, body = _get(f"{dashboard}/status")
    # without Bokeh, /status is a page saying "Dask needs bokeh>=... for the dashboard"
    checks["dashboard /status"] = {"http": status, "served": status == 200
                                   and "Dask needs" not in body}
    return checks


def run_cluster(pod: Podman, label: str, pods: specs.Pods, *, image: str, workdir: Path,
                output_dir: Path | None) -> dict[str, Any]:
    """Start the scheduler, the workers and the runner; wait for the run; measure."""
    prefix = f"dp{os.getpid()}-{label}"
    mounts = ["--volume", f"{output_dir}:{OUTPUT_MOUNT}:rw"] if output_dir else []
    common = {"image": image, "secrets": pods.secrets, "config_maps": pods.config_maps,
              "volume_dirs": pods.volume_dirs, "add_hosts": pods.add_hosts}
    names: dict[str, Any] = {"workers": []}
    t_start = time.time()
    names["scheduler"] = pod.start(podman_run_args(pods.scheduler, name=f"{prefix}-scheduler",
                                                   **common))
    for worker_name, spec in pods.workers.items():
        names["workers"].append(pod.start(podman_run_args(spec, name=f"{prefix}-{worker_name}",
                                                          extra=mounts, **common)))
    ready = wait_ready(pods.probe_url)
    client = _monitor(pods.local_scheduler)
    try:
        t_runner = time.time()
        names["runner"] = pod.start(podman_run_args(pods.runner, name=f"{prefix}-runner",
                                                    extra=mounts, **common))
        code = pod.wait(names["runner"], timeout=900)
        runner_seconds = time.time() - t_runner
        checks = _check_containers(pod, names, pods.dashboard_url)
        stream = client.get_task_stream()
        kernels = _worker_kernels(client)
    finally:
        client.close()
    logs = workdir / "logs" / label
    logs.mkdir(parents=True, exist_ok=True)
    for name in (names["scheduler"], *names["workers"], names["runner"]):
        (logs / f"{name}.log").write_text(pod.logs(name))
    return {"runner_exit": code, "scheduler_ready_s": round(ready, 2),
            "runner_s": round(runner_seconds, 1), "checks": checks,
            "containers": names, "runner_output": pod.logs(names["runner"])[-1500:],
            "worker_kernels": kernels, "task_stream": stream, "t_start": t_start}


def kernel_check(pod: Podman, image: str, pods: specs.Pods) -> dict[str, Any]:
    """In a fresh worker-like container: seed the cache, warm up, count compilations."""
    code = ("import json, time; t = time.perf_counter(); "
            "from dask_phot.warmup import cache_stats, seed_cache, warm_up; "
            "t1 = time.perf_counter(); n = seed_cache(); t2 = time.perf_counter(); "
            "w = warm_up(every_option=False); s = cache_stats(); "
            "print(json.dumps({'import_s': t1 - t, 'seed_files': n, 'seed_s': t2 - t1, "
            "'warm_up_s': w.seconds, 'functions': s.functions, 'cache_hits': s.hits, "
            "'compiled': s.misses}))")
    spec = pods.worker_spec_with_args(["python", "-c", code])
    args = podman_run_args(spec, name=f"dp{os.getpid()}-kernels", image=image,
                           secrets=pods.secrets, config_maps=pods.config_maps)
    name = pod.start(args)
    exit_code = pod.wait(name, timeout=600)
    output = pod.logs(name)
    if exit_code != 0:
        return {"exit": exit_code, "output": output[-2000:]}
    return {key: round(v, 3) if isinstance(v, float) else v
            for key, v in json.loads(output.strip().splitlines()[-1]).items()}


def reference_run(tables: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """``dask-phot run`` outside containers (a LocalCluster), on the same S3 data."""
    where = workdir / "reference"
    where.mkdir(parents=True, exist_ok=True)
    config = where / "config.toml"
    config.write_text(config_text(tables, str(where / "catalog")))
    from dask_phot.warmup import warm_up

    warm_up(every_option=False)  # compiled once here, not in both local workers at once
    t0 = time.perf_counter()
    out = _dask_phot("run", str(config), "--quiet", env={**os.environ, **CREDENTIALS})
    return {"catalog": str(where / "catalog"), "seconds": round(time.perf_counter() - t0, 1),
            "output": out.stdout[-800:]}


def compare(catalog: Path, reference: Path) -> dict[str, Any]:
    """Whether two catalogs are the same table: columns, dtypes, rows, every value."""
    from dask_phot.pipeline import read_catalog

    a, b = read_catalog(catalog), read_catalog(reference)
    same = list(a.columns) == list(b.columns) and a.dtypes.equals(b.dtypes) and a.equals(b)
    out: dict[str, Any] = {"rows": len(a), "reference_rows": len(b), "columns": a.shape[1],
                           "identical": bool(same)}
    if not same and a.shape == b.shape and list(a.columns) == list(b.columns):
        diff = {c: float((a[c] - b[c]).abs().max()) for c in a.columns
                if a[c].dtype.kind == "f" and not a[c].equals(b[c])}
        out["max_abs_difference"] = diff
    return out


def _output(s3: Any, label: str, workdir: Path, to_s3: bool) -> tuple[str, Path | None]:
    """The catalog's path in the run's config, and the host directory mounted for it."""
    if to_s3:
        return f"s3://{BUCKET}/catalog/{label}", None
    host = workdir / f"{label}-output"
    host.mkdir(parents=True, exist_ok=True)
    os.chown(host, 1000, 1000)  # the containers' user
    return f"{OUTPUT_MOUNT}/catalog", host


def _local_catalog(s3: Any, output: str, host: Path | None, workdir: Path, label: str) -> Path:
    if host is not None:
        return host / "catalog"
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options())
    local = workdir / f"{label}-from-s3"
    fs.get(output, str(local), recursive=True)
    return local


def run_all(workdir: Path, *, image: str, chart: bool, catalog_to_s3: bool = CATALOG_TO_S3,
            keep: bool) -> dict[str, Any]:
    """The DaskJob's and (when Helm can render it) the chart's cluster, then the comparison."""
    from dask_phot.s3server import LocalS3Server

    to_s3 = catalog_to_s3
    result: dict[str, Any] = {"catalog_to": "s3" if to_s3 else "mounted volume",
                              "scenarios": {}}
    with LocalS3Server() as s3, Podman() as pod:
        tables = upload_field(s3, workdir)
        catalogs = {}
        for label in ("daskjob", "chart") if chart else ("daskjob",):
            output, host = _output(s3, label, workdir, to_s3)
            objects = specs.kustomize_daskjob(workdir / label / "overlay",
                                              config_text(tables, output), image)
            cluster = None
            if label == "chart":
                try:
                    rendered = specs.render_chart(image, endpoint_url=s3.endpoint_url)
                except ImportError as exc:
                    result["scenarios"]["chart"] = {"skipped": f"helm-python-sdk: {exc}"}
                    continue
                (cluster,) = [d for d in rendered if d["kind"] == "DaskCluster"]
            pods = specs.daskjob_pods(objects, workdir / label, cluster)
            if label == "daskjob":
                result["kernels"] = kernel_check(pod, image, pods)
            result["scenarios"][label] = run_cluster(pod, label, pods, image=image,
                                                     workdir=workdir, output_dir=host)
            catalogs[label] = _local_catalog(s3, output, host, workdir, label)
            run = result["scenarios"][label]
            run.update(first_cells(run.pop("task_stream"), run.pop("t_start"),
                                   cell_reports(catalogs[label])))
            if not keep:
                pod.remove_started()
        if keep:
            pod.started = []
        result["reference"] = reference_run(tables, workdir)
    for label, path in catalogs.items():
        run = result["scenarios"][label]
        if run["runner_exit"] != 0:  # nothing finished to compare: say why instead
            run["catalog"] = {"identical": False,
                              "error": f"runner exited {run['runner_exit']}; its output: "
                                       f"{run['runner_output']}"}
            continue
        run["catalog"] = compare(path, Path(result["reference"]["catalog"]))
    result["passed"] = _passed(result)
    return result


def _passed(result: dict[str, Any]) -> bool:
    ok = bool(result["scenarios"].get("daskjob"))
    for run in result["scenarios"].values():
        if "skipped" in run:
            continue
        ok &= run["runner_exit"] == 0 and run["catalog"]["identical"]
        ok &= run["checks"]["healthcheck scheduler"]["healthy"]
        ok &= run["checks"]["dashboard /status"]["served"]
        ok &= all(k["misses"] == 0 for k in run["worker_kernels"].values())
    return ok and result.get("kernels", {}).get("compiled", 1) == 0
