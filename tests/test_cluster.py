"""Clusters: an existing scheduler by address or from the environment, progress, spec."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import pandas as pd
import pytest

from dask_phot.cluster import PROFILE_KEY, QUIET_MONITORS, RunProgress, local_worker_settings
from dask_phot.commands._shared import ProgressPrinter
from dask_phot.deploy import kube_cluster_spec
from dask_phot.pipeline import CellReport

BIN = Path(sys.executable).parent
#: The dask-phot command of this checkout (the installed script may be another's).
DASK_PHOT = [sys.executable, "-m", "dask_phot.commands"]


@pytest.fixture
def scheduler_and_worker(tmp_path):
    """A ``dask scheduler`` and a ``dask worker`` as separate processes on 127.0.0.1."""
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)]
    try:
        for _ in range(900):  # a scheduler starts in ~2 s, beyond 20 s on a loaded machine
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
             "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "2GiB"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True))
        yield address
    finally:
        for p in reversed(procs):  # each in its own session: signal the whole group
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.mark.slow
def test_run_on_existing_scheduler_via_environment(scheduler_and_worker, tmp_path):
    """`dask-phot run` configured only through DASK_SCHEDULER_ADDRESS (as a DaskJob runner)."""
    address = scheduler_and_worker
    field = tmp_path / "field"
    subprocess.run([*DASK_PHOT, "simulate", str(field), "--area-arcmin2", "2",
                    "--bands", "irac1", "--seed", "4"], check=True, capture_output=True)
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": address}
    report = tmp_path / "report.html"
    out = subprocess.run(
        [*DASK_PHOT, "run", str(field / "config.toml"), "--out",
         str(tmp_path / "cat"), "--performance-report", str(report)],
        capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Dask dashboard:" in out.stdout
    assert "cells " in out.stderr and "sources/s" in out.stderr  # progress line
    cat = pd.read_parquet(tmp_path / "cat" / "dataset")
    assert len(cat) == len(pd.read_parquet(field / "priors.parquet"))
    assert report.exists() and "Dask Performance Report" in report.read_text()[:5000]


@pytest.mark.slow
def test_connect_by_address(scheduler_and_worker):
    from dask_phot.cluster import connect
    from dask_phot.config import ClusterConfig

    with connect(ClusterConfig(), scheduler=scheduler_and_worker) as client:
        assert client.submit(lambda v: v + 1, 41).result() == 42
        assert len(client.scheduler_info()["workers"]) >= 1


def test_progress_line_reports_rate_failures_and_eta():
    stream = io.StringIO()
    prog = ProgressPrinter(stream, every=0.0)
    ok = CellReport(10, 1, n_primary=100, status={"irac1": "ok"})
    bad = CellReport(10, 2, n_primary=50,
                     status={"irac1": "ok", "nuv": "read failed: OSError: truncated"})
    prog(ok, 1, 3)
    prog(bad, 2, 3)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("cells 1/3 | 100 sources |")
    assert "failures: nuv read failed: 1" in lines[1] and "ETA" in lines[1]
    assert "sources/s" in lines[1]


def test_run_progress_is_library_state_without_output(capsys):
    progress = RunProgress()
    progress(CellReport(10, 1, n_primary=30, status={"irac1": "failed: ValueError: x"}), 1, 2)
    assert not progress.finished and progress.sources == 30
    assert progress.line().startswith("cells 1/2 | 30 sources |")
    assert "failures: irac1 failed: 1" in progress.line()
    progress(CellReport(10, 2, n_primary=5, status={"irac1": "ok"}), 2, 2)
    assert progress.finished and "ETA 0 s" in progress.line()
    assert capsys.readouterr() == ("", "")


def test_kube_cluster_spec_is_pure_and_hardened():
    spec = kube_cluster_spec("phot", n_workers=4, image="example/dask-phot:1",
                             env={"AWS_REGION": "us-east-1"}, namespace="science")
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    assert spec["metadata"] == {"name": "phot", "namespace": "science",
                                "labels": {"app.kubernetes.io/name": "dask-phot"}}
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert spec["spec"]["worker"]["replicas"] == 4
    for c in (worker, scheduler):
        assert c["image"] == "example/dask-phot:1"
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"name": "AWS_REGION", "value": "us-east-1"} in c["env"]
        assert not any("SECRET" in e["name"] for e in c["env"])
    assert worker["args"][:2] == ["dask", "worker"] and scheduler["args"] == ["dask", "scheduler"]
    assert kube_cluster_spec("phot", n_workers=4, image="example/dask-phot:1",
                             env={"AWS_REGION": "us-east-1"}, namespace="science") == spec


def _local_config():
    from dask_phot.config import ClusterConfig

    return ClusterConfig(n_workers=1, threads_per_worker=1, memory_limit="1GiB")


@pytest.mark.parametrize("prefix", ["/user/alice/", None])
def test_dashboard_link_behind_jupyterhub(monkeypatch, prefix):
    """With JUPYTERHUB_SERVICE_PREFIX (a JupyterHub, e.g. the Fornax console) the link is
    the hub's server-proxy path to the dashboard's port; without it, Dask's default."""
    import dask
    import distributed  # noqa: F401  (loads its configuration before dask.config.set)

    from dask_phot.cluster import connect

    if prefix is None:
        monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    else:
        monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", prefix)
    with dask.config.set({"distributed.dashboard.link": "{scheme}://{host}:{port}/status"}):
        with connect(_local_config()) as client:
            port = client.scheduler_info()["services"]["dashboard"]
            link = client.dashboard_link
    if prefix is None:
        assert link == f"http://127.0.0.1:{port}/status"
    else:
        assert link == f"/user/alice/proxy/{port}/status"


def test_dashboard_link_user_setting_wins(monkeypatch):
    """A user's own distributed.dashboard.link is kept, hub or not."""
    import dask
    import distributed  # noqa: F401

    from dask_phot.cluster import dashboard_link_template

    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/bob/")
    with dask.config.set({"distributed.dashboard.link": "https://hub.example/{port}/status"}):
        assert dashboard_link_template() == "https://hub.example/{port}/status"
    with dask.config.set({"distributed.dashboard.link": "{scheme}://{host}:{port}/status"}):
        assert dashboard_link_template() == "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"


def test_local_workers_run_without_dask_profiler(monkeypatch):
    monkeypatch.delenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", raising=False)
    before = dask.config.get(PROFILE_KEY)
    with local_worker_settings():
        assert dask.config.get(PROFILE_KEY) is False
    assert dask.config.get(PROFILE_KEY) == before
    # a setting in the environment is kept
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "True")
    with dask.config.set({PROFILE_KEY: True}), local_worker_settings():
        assert dask.config.get(PROFILE_KEY) is True


def test_local_workers_run_quieter_monitors():
    tick = "distributed.admin.tick.interval"
    before = dask.config.get(tick)
    with local_worker_settings():
        for key, value in QUIET_MONITORS.items():
            assert dask.config.get(key) == value
    assert dask.config.get(tick) == before
    # a value set on purpose is kept
    with dask.config.set({tick: "100ms"}), local_worker_settings():
        assert dask.config.get(tick) == "100ms"
        assert dask.config.get("distributed.admin.system-monitor.interval") == "2s"


def _distributed_level() -> int:
    import logging

    return logging.getLogger("distributed").level


@pytest.mark.slow
def test_interrupted_local_cluster_closes_quietly():
    """Ctrl-C during a run: the workers' and this process's ``distributed`` loggers are
    quieted before the cluster closes (a heartbeat racing the closing scheduler would
    print a traceback after the run's one line), and this process's level comes back."""
    import logging

    from dask_phot.cluster import connect, silence_workers
    from dask_phot.config import ClusterConfig

    before = _distributed_level()
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with connect(ClusterConfig(n_workers=1, threads_per_worker=1)) as client:
            seen.append(client)
            assert set(client.run(_distributed_level).values()) != {logging.CRITICAL}
            assert silence_workers(client)
            assert set(client.run(_distributed_level).values()) == {logging.CRITICAL}
            raise KeyboardInterrupt
    assert seen and seen[0].status == "closed"
    assert _distributed_level() == before
