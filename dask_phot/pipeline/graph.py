"""The run's task graph on Dask: one task per cell and band, then one that writes the cell.

Each band of a cell is its own task, keyed ``fit_<band>-<order>-<pixel>`` (the band's
pixel box read and fitted: :func:`fit_band_task`), and each cell has a task keyed
``write-<order>-<pixel>`` that joins its bands' tables and writes the cell
(:func:`write_cell_task`). Dask names a task group by the key's first word
(:func:`dask.utils.key_split` stops at a word holding digits, so ``fit-irac1-...``
would be grouped as ``fit``): the dashboard's progress bars and task stream then show
each band's fits apart (``fit_irac1``, ``fit_nuv``...) and the writes (``write``).

A band's task holds only that band's pixels, so the largest task of a run is a band of
a cell, not the cell, and the bands of one cell run at the same time on different
workers. The tables are those of :func:`~dask_phot.pipeline.kernel.process_cell` (the
bands of a cell are fitted independently): the graph changes where work runs, not its
results.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dask_phot.cells import Cell, CellSources
from dask_phot.config import RunConfig
from dask_phot.images import Mosaic
from dask_phot.pipeline.kernel import CellReport, fit_read, read_cell
from dask_phot.schema import cell_dtypes

__all__ = ["BandResult", "band_key", "fit_band_task", "fit_slot", "join_bands", "run_cells",
           "write_key"]


@dataclass
class BandResult:
    """One band of one cell, fitted: what :func:`write_cell_task` joins.

    ``table`` holds the cell's primary rows with the base columns, the kept input
    columns and the band's columns; ``cpu_seconds`` is the thread CPU time of the task,
    ``modelled`` the sources it modelled.
    """

    band: str
    table: pd.DataFrame
    status: str
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_read: int = 0
    box_bytes: int = 0
    requests: int = 0
    cpu_seconds: float = 0.0
    modelled: int = 0


def _word(band: str) -> str:
    """A band name as one word of a task key (no ``-``: it separates the key's words)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", band)


def band_key(band: str, order: int, pixel: int) -> str:
    """The key of a cell's band task: ``fit_<band>-<order>-<pixel>``.

    Examples
    --------
    >>> band_key("irac1", 8, 1234)
    'fit_irac1-8-1234'
    >>> from dask.utils import key_split
    >>> key_split(band_key("irac1", 8, 1234)), key_split(band_key("w-1", 8, 1234))
    ('fit_irac1', 'fit_w_1')
    """
    return f"fit_{_word(band)}-{order}-{pixel}"


def write_key(order: int, pixel: int) -> str:
    """The key of a cell's write task: ``write-<order>-<pixel>``."""
    return f"write-{order}-{pixel}"


_SLOTS: dict[int, threading.Semaphore] = {}
_SLOTS_LOCK = threading.Lock()


@contextlib.contextmanager
def fit_slot(fits: int) -> Iterator[float]:
    """Hold one of this process's ``fits`` fit slots (none when ``fits`` is 0); yields the
    seconds waited for it.

    ``[cluster] fits_per_worker``: with more worker threads than fit slots, a band task
    reads its pixels while another task fits, then waits here for its turn, so the
    worker's core computes while S3 answers, and no more fits than slots hold their
    memory at once. The slots are process-wide, as the worker's threads are.
    """
    if fits <= 0:
        yield 0.0
        return
    with _SLOTS_LOCK:
        slots = _SLOTS.setdefault(fits, threading.Semaphore(fits))
    t0 = time.perf_counter()
    with slots:
        yield time.perf_counter() - t0


def fit_slots(setting: int | str) -> int:
    """The fit slots of ``[cluster] fits_per_worker`` in this process: the number given,
    or for ``"auto"`` one fewer than the Dask worker's threads (0, no limit, with one
    thread or outside a worker), so one thread reads and writes while the others fit.

    Examples
    --------
    >>> fit_slots(3), fit_slots("auto")  # not on a Dask worker
    (3, 0)
    """
    if setting != "auto":
        return int(setting)
    from distributed import get_worker  # lazily: importing distributed sets up its logging

    try:
        threads = get_worker().state.nthreads
    except ValueError:  # not running on a worker
        return 0
    return threads - 1 if threads > 1 else 0


def fit_band_task(part: CellSources, indexes: Mapping[str, Sequence[Mosaic]],
                  config: RunConfig, band: str) -> BandResult:
    """Read and fit one band of a cell (a Dask task: :func:`band_key`).

    :func:`~dask_phot.pipeline.kernel.process_cell` with the configuration cut to the
    band: the band's own margin, pixel box and fit, exactly as in a whole-cell call.
    The read runs first, the fit in one of the worker's fit slots (:func:`fit_slot`;
    with ``[cluster] fits_per_worker``, ``seconds["wait"]`` is the time waited for it).
    """
    cpu0 = time.thread_time()
    one = dataclasses.replace(config, bands=(config.band(band),))
    read = read_cell(part, {band: indexes[band]}, one)
    slots = fit_slots(config.cluster.fits_per_worker)
    with fit_slot(slots) as waited:
        table, report = fit_read(part, *read, one)
    if slots:
        report.seconds["wait"] = waited
    return BandResult(band, table, report.status[band], report.errors, report.seconds,
                      report.bytes_read, report.box_bytes, report.requests,
                      time.thread_time() - cpu0, report.band_modelled.get(band, 0))


def join_bands(cell: Cell, counts: tuple[int, int], results: Sequence[BandResult],
               config: RunConfig) -> tuple[pd.DataFrame, CellReport]:
    """The cell's table and report from its bands' results (in any order).

    ``counts`` are the cell's primary and modelled sources. The columns and dtypes are
    :func:`~dask_phot.schema.cell_meta`'s, in the configuration's band order; the
    report sums the bands' bytes, requests, times and CPU time.
    """
    by_band = {r.band: r for r in results}
    missing = [b for b in config.band_names if b not in by_band]
    if missing:
        raise ValueError(f"cell {cell}: no result for band(s) {', '.join(missing)}")
    first = by_band[config.band_names[0]].table
    keep = {c: str(first[c].dtype) for c in config.priors.output_columns}
    dtypes = cell_dtypes(list(config.band_names), keep)
    joined: dict[str, pd.Series] = {}  # each column from the first band's table holding it
    for b in config.band_names:
        t = by_band[b].table
        joined.update({c: t[c] for c in t.columns if c not in joined})
    table = pd.DataFrame({c: joined[c] for c in dtypes})
    differ = {c: d for c, d in dtypes.items() if str(table[c].dtype) != d}
    table = table.astype(differ) if differ else table
    report = CellReport(cell.order, cell.pixel, *counts)
    for b in config.band_names:
        r = by_band[b]
        report.status[b] = r.status
        report.errors.update(r.errors)
        for stage, sec in r.seconds.items():
            report.seconds[stage] = report.seconds.get(stage, 0.0) + sec
        report.bytes_read += r.bytes_read
        report.box_bytes += r.box_bytes
        report.requests += r.requests
        report.cpu_seconds += r.cpu_seconds
        report.band_cpu[b] = r.cpu_seconds
        report.band_modelled[b] = r.modelled
    return table, report


def _submit(client: Any, part: CellSources, indexes: Mapping[str, Sequence[Mosaic]],
            config: RunConfig, write: Callable[..., CellReport], extra: Sequence[Any]) -> Any:
    """One cell's band tasks and its write task; the write task's future."""
    cell, retries = part.cell, config.cluster.retries
    bands = [client.submit(fit_band_task, part, {b: indexes[b]}, config, b,
                           key=band_key(b, cell.order, cell.pixel), retries=retries,
                           pure=False)
             for b in config.band_names]
    return client.submit(write, cell, (part.n_primary, len(part.sources)), bands, config,
                         *extra, key=write_key(cell.order, cell.pixel), retries=retries,
                         pure=False)


def run_cells(client: Any, parts: Sequence[CellSources], indexes: Mapping[str, Any],
              config: RunConfig, write: Callable[..., CellReport],
              extra: Sequence[Sequence[Any]], on_cell: Callable[[CellReport], None],
              *, window: int | None = None) -> None:
    """Run cells on a Dask client: each band's task, then the cell's write task.

    Parameters
    ----------
    client : distributed.Client
    parts : sequence of CellSources
        The cells, in the order to submit them (:func:`~dask_phot.pipeline.run.run_order`).
    indexes : mapping
        Band -> mosaics. Each band task carries its band's (a few kB per mosaic: headers
        and WCS), so that a worker that dies loses nothing a retry cannot rebuild.
    config : RunConfig
    write : callable
        ``write(cell, counts, results, config, *extra[i])`` joins
        (:func:`join_bands`) and writes cell ``i``, and returns its report.
    extra : sequence
        Per cell, the further arguments of ``write``.
    on_cell : callable
        Called with each cell's report as it is written.
    window : int, optional
        Cells in flight at most (default: four per worker thread, at least 8). Each
        band task carries its cell's sources; submitting cells as others finish keeps
        the scheduler's and the workers' memory independent of the field's size.

    Cells still running are cancelled when this raises (a failed cell, Ctrl-C).
    """
    from distributed import as_completed

    if window is None:
        window = max(8, 4 * sum(client.nthreads().values()))
    todo = list(zip(parts, extra, strict=True))[::-1]
    running, flying = as_completed(), set()

    def submit_next() -> None:
        part, more = todo.pop()
        fut = _submit(client, part, indexes, config, write, more)
        flying.add(fut)
        running.add(fut)

    try:
        while todo and len(flying) < window:
            submit_next()
        for fut in running:
            flying.discard(fut)
            on_cell(fut.result())
            if todo:
                submit_next()
    except BaseException:
        client.cancel(list(flying))
        raise
