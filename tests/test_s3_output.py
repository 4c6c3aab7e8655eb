"""The catalog written to S3 (issue 16, finding 1): atomic cells, resume from S3, kills, faults.

All against the local S3 endpoint (moto, :class:`dask_phot.s3server.LocalS3Server`)
through s3fs, and read back with lsdb from S3:

* a run writes the HATS catalog to ``s3://`` and lsdb, pandas and
  :func:`read_catalog` read it; a second run resumes from the reports on S3;
* killed (SIGKILL to a worker; SIGKILL to the whole run, its own LocalCluster
  included) and resumed, the catalog is identical to the uninterrupted one;
* through a fault-injecting proxy (:class:`dask_phot.testing.FaultyProxy`: dropped
  connections, 503 Slow Down, replies stalled past the read timeout, bodies cut
  half way) at a 15% fault rate, nothing is lost and the catalog is identical;
  with no fault, the proxy changes no byte read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from dask_phot.config import load_config
from dask_phot.images.rows import row_cache
from dask_phot.pipeline import CatalogStore, IncompleteCatalogError, read_catalog, run_catalog
from dask_phot.testing import FaultyProxy, simulate_to_dir

ROOT = Path(__file__).parents[1]
IN, OUT = "s3cat-in", "s3cat-out"
#: Fraction of the requests that get a fault in the fault-injection test.
FAULT_RATE = 0.15
# nested-pandas (under lsdb) calls a pandas API that pandas 3.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in NestedFrame.drop")


@pytest.fixture(scope="module")
def field(s3_server, tmp_path_factory) -> Path:
    """A 1.5 arcmin2 irac1 + nuv field; priors local, mosaics in a public bucket."""
    base = tmp_path_factory.mktemp("s3cat")
    _, paths = simulate_to_dir(base, area_arcmin2=1.5, bands=["irac1", "nuv"], seed=12)
    s3_server.create_bucket(IN, public=True)
    s3_server.create_bucket(OUT, public=False)
    for key, path in paths.items():
        if key.endswith(("_sci", "_wht")):
            s3_server.upload(path, IN, path.name)
    return base


def _table(field: Path, out: str, endpoint: str, **storage) -> dict:
    bands = {b: {"images": [f"s3://{IN}/{b}_sci.fits"], "noise": [f"s3://{IN}/{b}_wht.fits"]}
             for b in ("irac1", "nuv")}
    return {"priors": {"path": str(field / "priors.parquet")}, "bands": bands,
            "cells": {"order": 13}, "output": {"path": out},
            "storage": {"endpoint_url": endpoint, "key": "testing", "secret": "testing",
                        "anon": False, **storage}}


def _config(field: Path, out: str, endpoint: str, **storage):
    return load_config(_table(field, out, endpoint, **storage), environ={})


def _lsdb(url: str, s3_server) -> pd.DataFrame:
    """The catalog at ``url`` read back from S3 by lsdb."""
    lsdb = pytest.importorskip("lsdb")
    from upath import UPath

    path = UPath(url, **s3_server.storage_options())
    df = pd.DataFrame(lsdb.read_hats(path).compute()).reset_index()
    df = df.astype({c: t.numpy_dtype for c, t in df.dtypes.items()
                    if isinstance(t, pd.ArrowDtype)})
    return df.sort_values("source_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(field, s3_server) -> tuple[pd.DataFrame, int, int]:
    """An uninterrupted in-process run to S3 read back with lsdb, its mosaic bytes read and
    the bytes S3 served for the mosaics."""
    s3_server.reset_counts()
    row_cache(0)  # no rows kept from another test's run
    summary = run_catalog(_config(field, f"s3://{OUT}/reference", s3_server.endpoint_url))
    served = s3_server.bytes_served(f"/{IN}/")
    assert not summary.failures and summary.n_cells >= 8
    return _lsdb(f"s3://{OUT}/reference", s3_server), summary.bytes_read, served


@pytest.fixture(scope="module")
def reference(uninterrupted) -> pd.DataFrame:
    """The uninterrupted run's catalog, read back from S3 with lsdb."""
    return uninterrupted[0]


def _keys(s3_server, prefix: str) -> list[str]:
    pages = s3_server.boto3_client().get_paginator("list_objects_v2").paginate(
        Bucket=OUT, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_the_catalog_on_s3_reads_back_and_resumes_from_s3(field, s3_server, reference):
    url = f"s3://{OUT}/reference"
    storage = s3_server.storage_options()
    cat = read_catalog(url, storage_options=storage)
    pd.testing.assert_frame_equal(cat, reference[cat.columns])
    by_pandas = pd.read_parquet(f"{url}/dataset", storage_options=storage)
    assert len(by_pandas) == len(cat) == len(pd.read_parquet(field / "priors.parquet"))
    keys = _keys(s3_server, "reference/")
    names = {k.split("/", 1)[1] for k in keys}
    assert {"hats.properties", "properties", "partition_info.csv", "dataset/_metadata",
            "dataset/_common_metadata", "dask_phot_run.json"} <= names
    cells = [k for k in names if k.startswith("dataset/Norder=")]
    reports = [k for k in names if k.startswith("cells/")]
    assert len(cells) == len(reports) >= 8
    assert len(names) == len(cells) + len(reports) + 6  # no temporary objects
    again = run_catalog(_config(field, url, s3_server.endpoint_url))
    assert (again.n_cells, again.n_cells_skipped) == (0, len(cells))


@pytest.mark.slow
def test_a_worker_killed_mid_run_gives_the_same_catalog(field, s3_server, reference):
    from distributed import Client, LocalCluster

    url = f"s3://{OUT}/worker-killed"
    killed: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_one(report, done, total):
            if not killed and done < total - 2:
                killed.append(pid := sorted(pids.values())[0])
                os.kill(pid, signal.SIGKILL)

        summary = run_catalog(_config(field, url, s3_server.endpoint_url), client=client,
                              on_progress=kill_one)
    assert killed and not summary.failures
    pd.testing.assert_frame_equal(_lsdb(url, s3_server), reference)


@pytest.mark.slow
def test_the_whole_run_killed_and_resumed_gives_the_same_catalog(field, s3_server,
                                                                 reference, tmp_path):
    import tomli_w

    url = f"s3://{OUT}/run-killed"
    config = tmp_path / "config.toml"
    table = _table(field, url, s3_server.endpoint_url)
    table["cluster"] = {"n_workers": 2}
    config.write_text(tomli_w.dumps(table))
    store = CatalogStore.open(url, s3_server.storage_options())
    proc = subprocess.Popen([sys.executable, "-m", "dask_phot.commands", "run", str(config),
                             "--quiet"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 400
    while len(store.reports()) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner, its scheduler and its workers
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    kept = len(store.reports())
    assert kept >= 2 and store.record()["status"] == "running"
    with pytest.raises(IncompleteCatalogError):
        read_catalog(url, storage_options=s3_server.storage_options())
    summary = run_catalog(load_config(config))
    assert summary.n_cells_skipped >= kept and not summary.failures
    assert json.loads(store.fs.cat_file(f"{store.root}/dask_phot_run.json"))["status"] \
        == "finished"
    pd.testing.assert_frame_equal(_lsdb(url, s3_server), reference)


@pytest.mark.slow
def test_faults_between_run_and_s3_lose_nothing(field, s3_server, uninterrupted):
    reference, bytes_read, served_direct = uninterrupted
    # the process keeps the mosaics' rows (keyed by their s3:// url) between runs: empty it,
    # as before the uninterrupted run, so that both runs' bytes are their own
    row_cache(0)
    with FaultyProxy(s3_server.endpoint_url, rate=0.0) as clean:
        s3_server.reset_counts()
        through = run_catalog(_config(field, f"s3://{OUT}/clean", clean.endpoint_url))
        served = s3_server.bytes_served(f"/{IN}/")
    # with no fault, going through the proxy changes no byte read
    assert through.bytes_read == bytes_read and served == served_direct
    assert clean.fault_count == 0
    s3_server.reset_counts()
    with FaultyProxy(s3_server.endpoint_url, rate=FAULT_RATE, stall_seconds=3.0,
                     seed=16) as proxy:
        faulty = run_catalog(_config(field, f"s3://{OUT}/faulty", proxy.endpoint_url,
                                     config_kwargs={"read_timeout": 2.0}))
    print(f"fault injection: {proxy.fault_count} faults in {proxy.requests} requests "
          f"({dict(proxy.faults)}); mosaic bytes served {served_direct} without faults, "
          f"{s3_server.bytes_served(f'/{IN}/')} with the retries")
    assert not faulty.failures and faulty.n_cells == through.n_cells
    assert set(proxy.faults) == {"drop", "503", "slow", "cut"} and proxy.fault_count >= 10
    pd.testing.assert_frame_equal(_lsdb(f"s3://{OUT}/faulty", s3_server), reference)
