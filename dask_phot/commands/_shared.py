"""What several commands share: cluster options, the dashboard line, the progress line."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from dask_phot.config import ClusterConfig

__all__ = ["ProgressPrinter", "add_cluster_options", "cluster_client"]


def add_cluster_options(parser: argparse.ArgumentParser, *, configured: bool = True) -> None:
    """``--scheduler`` and ``--workers``; ``configured``: they override ``[cluster]``."""
    cfg = ClusterConfig()
    scheduler = "the configuration's [cluster] scheduler" if configured else cfg.scheduler
    workers = "the configuration's [cluster] n_workers" if configured else cfg.n_workers
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="'local', 'kubernetes' or a scheduler address such as "
                             f"tcp://host:8786 (default: {scheduler})")
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"number of local (or Kubernetes) workers (default: {workers})")


@contextlib.contextmanager
def cluster_client(cfg: ClusterConfig, scheduler: str | None) -> Iterator[Any]:
    """A Dask client for ``cfg`` (``scheduler`` overrides it); prints the dashboard link."""
    from dask_phot.cluster import connect

    with connect(cfg, scheduler=scheduler) as client:
        print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        yield client


class ProgressPrinter:
    """The progress line of a run on ``stream`` (the CLI's stderr).

    On a terminal the line is redrawn after every cell; elsewhere one line is
    written every ``every`` seconds and at the end. Call it as the
    ``on_progress`` callback of :func:`dask_phot.pipeline.run_catalog`.
    """

    def __init__(self, stream: TextIO | None = None, *, every: float = 5.0) -> None:
        from dask_phot.cluster import RunProgress

        self.stream = stream or sys.stderr
        self.every = every
        self.progress = RunProgress()
        self.last = 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, report: Any, done: int, total: int) -> None:
        self.progress(report, done, total)
        now = time.perf_counter()
        if not (self.tty or now - self.last >= self.every or self.progress.finished):
            return
        self.last = now
        line = self.progress.line()
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.progress.finished:
            self.stream.write("\n")
        self.stream.flush()
