"""The run's task graph on a real LocalCluster: a task per cell and band, named so."""

from __future__ import annotations

import pandas as pd
import pytest
from dask.utils import key_split

from dask_phot.bands import get_band
from dask_phot.config import load_config
from dask_phot.pipeline import plan_cells, read_catalog, run_catalog
from dask_phot.pipeline.graph import band_key, write_key
from dask_phot.pipeline.output import CatalogStore
from dask_phot.testing import SimBand, simulate_field, write_field

BANDS = ("irac1", "nuv")


@pytest.fixture(scope="module")
def small_field(tmp_path_factory):
    sims = [SimBand(b, get_band(b).load_psf(), get_band(b).to_ujy,
                    get_band(b).depth_5sigma_ujy, sky=0.01) for b in BANDS]
    field = simulate_field(bands=sims, seed=5, area_arcmin2=1.0)
    return write_field(field, tmp_path_factory.mktemp("graph"), noise_product="weight")


def _config(paths, out):
    return load_config({
        "priors": {"path": str(paths["priors"])},
        "bands": {b: {"images": [str(paths[f"{b}_sci"])], "noise": [str(paths[f"{b}_wht"])],
                      "noise_kind": "weight"} for b in BANDS},
        "cells": {"rows_per_partition": 30},
        "output": {"path": str(out)},
    })


@pytest.mark.slow
def test_band_tasks_named_per_cell_and_band_on_a_local_cluster(small_field, tmp_path):
    """Every cell runs as one task per band (``fit_<band>-<order>-<pixel>``) and a write
    task; Dask groups them by band (the dashboard's progress bars and task stream), and
    the catalog is the one of a run without Dask, value for value."""
    from distributed import Client, LocalCluster, get_task_stream

    cfg = _config(small_field, tmp_path / "dask")
    parts, _ = plan_cells(cfg)
    assert len(parts) >= 3
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        with get_task_stream(client) as stream:
            summary = run_catalog(cfg, client=client)
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    ran = {t["key"] for t in stream.data}
    cells = [(p.cell.order, p.cell.pixel) for p in parts]
    assert {band_key(b, o, p) for o, p in cells for b in BANDS} <= ran
    assert {write_key(o, p) for o, p in cells} <= ran
    assert {key_split(k) for k in ran if not k.startswith("write")} >= {"fit_irac1", "fit_nuv"}
    assert {"fit_irac1", "fit_nuv", "write"} <= set(prefixes)
    assert not summary.failures and summary.cpu_seconds > 0
    reports = CatalogStore.open(tmp_path / "dask").reports()
    assert len(reports) == len(parts)
    for r in reports.values():  # each cell's report: every band's status, the tasks' CPU
        assert set(r["status"]) == set(BANDS) and r["cpu_seconds"] > 0
        assert r["box_bytes"] > 0 and r["seconds"]["fit"] > 0
    local = run_catalog(_config(small_field, tmp_path / "local"))
    assert local.n_sources == summary.n_sources
    pd.testing.assert_frame_equal(read_catalog(tmp_path / "dask"),
                                  read_catalog(tmp_path / "local"))


@pytest.mark.parametrize(("fits", "most"), [(1, 1), (2, 2), (0, 4)])
def test_fit_slots_bound_the_fits_running_at_once(fits, most):
    """``[cluster] fits_per_worker``: at most that many threads inside a fit slot (0: no
    bound); a thread that waited for its slot is told how long."""
    import threading
    import time

    from dask_phot.pipeline.graph import fit_slot

    inside, peak, waits = [0], [0], []
    lock, start = threading.Lock(), threading.Barrier(4)

    def task() -> None:
        start.wait()
        with fit_slot(fits) as waited:
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1
        waits.append(waited)

    threads = [threading.Thread(target=task) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == most
    assert (max(waits) >= 0.04) == (fits in (1, 2))


def test_auto_fit_slots_leave_one_thread_of_a_worker_to_read():
    """``fits_per_worker = "auto"`` (the default): one fewer fit slot than the worker's
    threads, none (no bound) on a one-thread worker or outside Dask; a number is kept."""
    from distributed import Client, LocalCluster

    from dask_phot.config import ClusterConfig
    from dask_phot.pipeline.graph import fit_slots

    assert ClusterConfig().fits_per_worker == "auto" and ClusterConfig().threads_per_worker == 2
    assert fit_slots("auto") == 0 and fit_slots(3) == 3 and fit_slots(0) == 0
    for threads, slots in ((1, 0), (2, 1), (3, 2)):
        with LocalCluster(n_workers=1, threads_per_worker=threads, processes=False,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            assert client.submit(fit_slots, "auto").result() == slots
            assert client.submit(fit_slots, 1).result() == 1
