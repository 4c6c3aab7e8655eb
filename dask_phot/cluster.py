"""Dask clusters for a run: local, an existing scheduler, or Kubernetes; progress.

``[cluster] scheduler`` selects the cluster:

* ``"local"``: a :class:`distributed.LocalCluster` of worker processes on this
  machine, unless Dask's own ``scheduler-address`` setting is present (for
  instance ``DASK_SCHEDULER_ADDRESS``, which the dask-kubernetes operator sets
  in a DaskJob's runner), in which case that scheduler is used;
* ``"tcp://host:port"`` (or any scheduler address): that scheduler;
* ``"kubernetes"``: a ``dask_kubernetes.operator.KubeCluster`` built from
  :func:`kube_cluster_spec` (needs the ``kubernetes`` extra and a cluster).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, TextIO

import dask

from dask_phot.config import ClusterConfig

__all__ = ["ProgressPrinter", "connect", "kube_cluster_spec"]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "ghcr.io/dask-phot/dask-phot:0.1.0"


def kube_cluster_spec(
    name: str,
    *,
    image: str = DEFAULT_IMAGE,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory: str = "4Gi",
    cpu: str = "1",
    env: dict[str, str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A ``DaskCluster`` custom resource (dask-kubernetes operator) as a plain dict.

    Pure: nothing is contacted. The same image runs the scheduler and the
    workers; S3 credentials are never put here (mount them from a Secret).

    Examples
    --------
    >>> spec = kube_cluster_spec("phot", n_workers=3)
    >>> spec["kind"], spec["spec"]["worker"]["replicas"]
    ('DaskCluster', 3)
    """
    env_list = [{"name": k, "value": v} for k, v in sorted((env or {}).items())]
    resources = {"requests": {"cpu": cpu, "memory": memory},
                 "limits": {"cpu": cpu, "memory": memory}}
    security = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    worker = {
        "name": "worker", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads",
                 str(threads_per_worker), "--memory-limit", "0", "--dashboard",
                 "--dashboard-address", "8788", "--local-directory", "/tmp"],
        "env": env_list, "resources": resources, "securityContext": security,
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    scheduler = {
        "name": "scheduler", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["dask", "scheduler"], "env": env_list, "securityContext": security,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"cpu": "1", "memory": "2Gi"}},
        "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"},
                           "initialDelaySeconds": 0, "periodSeconds": 1, "timeoutSeconds": 300},
        "livenessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"},
                          "initialDelaySeconds": 15, "periodSeconds": 20},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
           "volumes": [{"name": "tmp", "emptyDir": {}}]}
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "dask-phot"}}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": meta,
        "spec": {
            "worker": {"replicas": int(n_workers), "spec": {**pod, "containers": [worker]}},
            "scheduler": {
                "spec": {**pod, "containers": [scheduler]},
                "service": {"type": "ClusterIP",
                            "selector": {"dask.org/cluster-name": name,
                                         "dask.org/component": "scheduler"},
                            "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": 8786,
                                       "targetPort": "tcp-comm"},
                                      {"name": "http-dashboard", "protocol": "TCP",
                                       "port": 8787, "targetPort": "http-dashboard"}]},
            },
        },
    }


@contextlib.contextmanager
def connect(cfg: ClusterConfig, *, scheduler: str | None = None) -> Iterator[Any]:
    """Yield a :class:`distributed.Client` for ``cfg`` (``scheduler`` overrides it).

    Local clusters and Kubernetes clusters started here are closed on exit; an
    existing scheduler is only disconnected from.
    """
    from distributed import Client, LocalCluster

    target = scheduler or cfg.scheduler
    env_address = dask.config.get("scheduler-address", None)
    if target == "local" and env_address:
        log.info("using the scheduler from Dask's configuration: %s", env_address)
        target = env_address
    if target == "local":
        with LocalCluster(n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
                          memory_limit=cfg.memory_limit, processes=True,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            yield client
    elif target == "kubernetes":
        try:
            from dask_kubernetes.operator import KubeCluster
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise RuntimeError("scheduler 'kubernetes' needs dask-kubernetes: "
                               "pip install 'dask-phot[kubernetes]'") from exc
        spec = kube_cluster_spec("dask-phot", n_workers=cfg.n_workers,
                                 threads_per_worker=cfg.threads_per_worker)
        with KubeCluster(custom_cluster_spec=spec) as cluster, Client(cluster) as client:
            yield client
    else:
        with Client(target) as client:
            yield client


class ProgressPrinter:
    """Progress line for a run: cells, sources/s, failures by reason, ETA.

    Call it as the ``on_progress`` callback of
    :func:`dask_phot.pipeline.run_catalog`. Writes to ``stream`` (the CLI
    passes stderr); on a terminal the line is redrawn, elsewhere one line is
    written every ``every`` seconds and at the end.
    """

    def __init__(self, stream: TextIO, *, every: float = 5.0) -> None:
        self.stream = stream
        self.every = every
        self.start = time.perf_counter()
        self.last = 0.0
        self.sources = 0
        self.failures: Counter = Counter()
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, report: Any, done: int, total: int) -> None:
        self.sources += report.n_primary
        self.failures.update(f"{band} {kind}" for band, kind in report.failures().items())
        now = time.perf_counter()
        if not (self.tty or now - self.last >= self.every or done == total):
            return
        self.last = now
        elapsed = now - self.start
        rate = self.sources / max(elapsed, 1e-9)
        eta = elapsed / done * (total - done) if done else float("nan")
        fails = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        line = (f"cells {done}/{total} | {self.sources} sources | {rate:,.0f} sources/s | "
                f"failures: {fails} | ETA {eta:.0f} s")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done == total:
            self.stream.write("\n")
        self.stream.flush()
