"""Dask clusters for a run: local, an existing scheduler, or Kubernetes; progress.

``[cluster] scheduler`` selects the cluster:

* ``"local"``: a :class:`distributed.LocalCluster` of worker processes on this
  machine, unless Dask's own ``scheduler-address`` setting is present (for
  instance ``DASK_SCHEDULER_ADDRESS``, which the dask-kubernetes operator sets
  in a DaskJob's runner), in which case that scheduler is used;
* ``"tcp://host:port"`` (or any scheduler address): that scheduler;
* ``"kubernetes"``: a ``dask_kubernetes.operator.KubeCluster`` built from
  :func:`dask_phot.deploy.kube_cluster_spec` (needs the ``kubernetes`` extra and
  a cluster).

:class:`RunProgress` follows a run cell by cell (sources per second, failures,
time left) for whoever shows it; the library only logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dask
from distributed.diagnostics.plugin import WorkerPlugin

from dask_phot._optional import require
from dask_phot.config import ClusterConfig
from dask_phot.deploy import kube_cluster_spec

__all__ = ["JUPYTERHUB_LINK", "PROFILE_KEY", "QUIET_MONITORS", "IgnoreInterrupts", "RunProgress",
           "connect", "dashboard_link_template", "local_worker_settings",
           "silence_workers"]

log = logging.getLogger(__name__)

#: Dask's statistical profiler of worker threads (the dashboard's Profile page).
PROFILE_KEY = "distributed.worker.profile.enabled"
#: Slower periodic monitors for local workers (:func:`local_worker_settings`).
QUIET_MONITORS = {"distributed.admin.tick.interval": "500ms",
                  "distributed.admin.system-monitor.interval": "2s"}
#: Dask's defaults of those settings: a value other than these was set on purpose.
_DASK_DEFAULTS = {"distributed.admin.tick.interval": "20ms",
                  "distributed.admin.system-monitor.interval": "500ms"}

#: Dask's own ``distributed.dashboard.link`` default.
DASK_DEFAULT_LINK = "{scheme}://{host}:{port}/status"
#: The dashboard behind a JupyterHub (jupyter-server-proxy), the link Dask's
#: documentation gives for ``distributed.dashboard.link`` there.
JUPYTERHUB_LINK = "{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status"


def dashboard_link_template() -> str:
    """The ``distributed.dashboard.link`` template a run's clients use.

    The user's own setting, if any; otherwise, in a JupyterHub session (such as the
    Fornax science console: ``JUPYTERHUB_SERVICE_PREFIX`` is set), the server-proxy
    path :data:`JUPYTERHUB_LINK`, which the browser reaches through the hub; otherwise
    Dask's default. Dask fills the template with the environment and the dashboard's
    scheme, host and port (:attr:`distributed.Client.dashboard_link`).
    """
    import distributed  # noqa: F401  (its configuration defaults)

    template = dask.config.get("distributed.dashboard.link", DASK_DEFAULT_LINK)
    if template == DASK_DEFAULT_LINK and os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        return JUPYTERHUB_LINK
    return template


@contextlib.contextmanager
def connect(cfg: ClusterConfig, *, scheduler: str | None = None) -> Iterator[Any]:
    """Yield a :class:`distributed.Client` for ``cfg`` (``scheduler`` overrides it).

    Local clusters and Kubernetes clusters started here are closed on exit; an
    existing scheduler is only disconnected from. A local cluster's workers ignore
    Ctrl-C (:class:`IgnoreInterrupts`): this process handles it. While it is open, the
    client's ``dashboard_link`` follows :func:`dashboard_link_template` (behind a
    JupyterHub proxy: the proxied path).
    """
    import distributed  # noqa: F401  (its configuration defaults are loaded before the set)

    with dask.config.set({"distributed.dashboard.link": dashboard_link_template()}):
        with _connect(cfg, scheduler) as client:
            yield client


@contextlib.contextmanager
def _connect(cfg: ClusterConfig, scheduler: str | None) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    target = scheduler or cfg.scheduler
    env_address = dask.config.get("scheduler-address", None)
    if target == "local" and env_address:
        log.info("using the scheduler from Dask's configuration: %s", env_address)
        target = env_address
    if target == "local":
        with _interrupts_ignored(), local_worker_settings():
            cluster = LocalCluster(n_workers=cfg.n_workers,
                                   threads_per_worker=cfg.threads_per_worker,
                                   memory_limit=cfg.memory_limit, processes=True,
                                   dashboard_address="127.0.0.1:0")
        quiet = contextlib.ExitStack()  # exits last: after the cluster has closed
        with quiet, cluster, Client(cluster) as client:
            client.register_plugin(IgnoreInterrupts())
            try:
                yield client
            except KeyboardInterrupt:
                quiet.enter_context(_logs_silenced("distributed"))
                silence_workers(client)
                raise
    elif target == "kubernetes":
        KubeCluster = require("dask_kubernetes.operator").KubeCluster
        spec = kube_cluster_spec("dask-phot", n_workers=cfg.n_workers,
                                 threads_per_worker=cfg.threads_per_worker)
        with KubeCluster(custom_cluster_spec=spec) as cluster, Client(cluster) as client:
            yield client
    else:
        with Client(target) as client:
            yield client


@contextlib.contextmanager
def local_worker_settings() -> Iterator[None]:
    """Dask settings for the workers of a local cluster started within.

    - Dask's statistical profiler is off. It cost 14% of the workers' CPU on the COSMOS
      bench's 225 arcmin^2 cut (process CPU 865 -> 746 us per source-band, tasks
      unchanged). It stays as set when ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED``
      is in the environment.
    - The event loop's tick (a check for a blocked loop) runs every 500 ms, not 20 ms,
      and the system monitor (the dashboard's CPU and network figures) every 2 s, not
      0.5 s: an idle worker's CPU, 32 -> 10 ms per second (:data:`QUIET_MONITORS`). The
      memory monitor (spilling, pausing) is unchanged. Settings already made (in the
      environment or Dask's configuration files) are kept.
    """
    settings: dict[str, Any] = {key: value for key, value in QUIET_MONITORS.items()
                                if dask.config.get(key) == _DASK_DEFAULTS[key]}
    if "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED" not in os.environ:
        settings[PROFILE_KEY] = False
    with dask.config.set(settings):
        yield


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """Processes started here ignore Ctrl-C (SIGINT): a terminal sends it to every process
    of the run, and only the run itself (this process) should act on it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _logs_silenced(name: str) -> Iterator[None]:
    """Logger ``name`` (and its children) log only CRITICAL records within."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _silence_distributed() -> None:
    """Run on a worker: its ``distributed`` loggers log only CRITICAL records."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def silence_workers(client: Any, timeout: float = 5.0) -> bool:
    """Quiet the ``distributed`` loggers of ``client``'s workers before an interrupted close.

    A cluster closed in the middle of a run races its workers' heartbeats: a worker
    whose heartbeat meets the closing scheduler logs the failure with a traceback, on
    the terminal the run shares with it, after the run's one line. The workers go
    away next, so nothing they would log then is news. Waits at most ``timeout``
    seconds (workers busy in their event loop); returns whether every worker answered.
    """
    done = threading.Event()

    def quiet() -> None:
        try:
            client.run(_silence_distributed, on_error="ignore")
            done.set()
        except OSError as exc:  # the scheduler is already gone: nothing left to quiet
            log.debug("workers not quieted: %s", exc)

    thread = threading.Thread(target=quiet, name="dask-phot-quiet-workers", daemon=True)
    thread.start()
    thread.join(timeout)
    return done.is_set()


class IgnoreInterrupts(WorkerPlugin):
    """A worker plugin: the local cluster's workers (restarted ones too) ignore Ctrl-C.

    The run's own process turns Ctrl-C into one line saying what is kept; its workers,
    in the same process group (and writing to the same terminal), would otherwise die
    printing tracebacks, then warn about each task the interruption cancelled.
    """

    name = "dask-phot-ignore-interrupts"
    idempotent = True

    def setup(self, worker: Any) -> None:
        """Ignore SIGINT in the worker's process (its main thread runs this)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        logging.getLogger("distributed.worker.state_machine").setLevel(logging.ERROR)


class RunProgress:
    """Progress of a run: cells done, sources per second, failures by band, time left.

    Call it as the ``on_progress`` callback of
    :func:`dask_phot.pipeline.run_catalog`; :meth:`line` says where the run
    stands. Each update is logged (``dask_phot.cluster``, DEBUG); the command
    line shows the line on its terminal.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.done = 0
        self.total = 0
        self.sources = 0
        self.failures: Counter = Counter()

    def __call__(self, report: Any, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.sources += report.n_primary
        self.failures.update(f"{band} {kind}" for band, kind in report.failures().items())
        log.debug("%s", self.line())

    @property
    def finished(self) -> bool:
        """True when every cell is done."""
        return self.done == self.total

    def line(self) -> str:
        """``cells 3/10 | 2400 sources | 800 sources/s | failures: none | ETA 9 s``."""
        elapsed = time.perf_counter() - self.start
        rate = self.sources / max(elapsed, 1e-9)
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        fails = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures.items())) or "none"
        return (f"cells {self.done}/{self.total} | {self.sources} sources | {rate:,.0f} "
                f"sources/s | failures: {fails} | ETA {eta:.0f} s")
