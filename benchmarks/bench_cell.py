"""One cell's band task in-process: its CPU time, per engine stage, on a simulated field.

Reads the largest cells' pixel boxes of one band once from a :func:`write_survey` cache
folder (``bench_cosmos.py``'s, local files: no S3, no cluster) into a pickle, then fits
them in this process as a pipeline band task does (:func:`~dask_phot.pipeline.kernel.
fit_cell`, the same margins and fit zones), timed with ``time.process_time``: so that a
change to the engine can be measured, A/B against another worktree, and profiled
(``py-spy record --native -- python benchmarks/bench_cell.py fit ...``).

Run::

    python benchmarks/bench_cell.py read FIELD --band nuv --cut 225 --cells 2 --out DIR
    python benchmarks/bench_cell.py fit DIR/cell-nuv-0.pkl --repeat 3 [--stages] [--table t.parquet]

``FIELD`` is a cache folder holding ``survey.json`` (e.g. ``~/.cache/dask-phot/bench-cosmos/
cosmos-a900-g0-s1``); ``--cut`` takes the central square of its priors, as
``bench_cosmos.py --cut`` does. ``--stages`` adds the CPU of the engine's main steps.
Compare two worktrees' tables with ``--table`` (the priors' ``flux_true_<band>`` is kept).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import pickle
import time
from pathlib import Path
from typing import Any


def _config(folder: Path, priors: Path, band: str, out: Path) -> Any:
    """The run configuration of one band of the field, read from local files."""
    import tomli_w

    from dask_phot.config import load_config

    manifest = json.loads((folder / "survey.json").read_text())
    names = manifest["images"][band]
    config = {
        "priors": {"path": str(priors), "keep_columns": [f"flux_true_{band}"]},
        "bands": {band: {"images": [str(folder / f"{n}_sci.fits") for n in names],
                         "noise": [str(folder / f"{n}_wht.fits") for n in names],
                         "noise_kind": "weight", "sky": "fit"}},
        "output": {"path": str(out / "catalog")},
    }
    path = out / f"config-{band}.toml"
    path.write_text(tomli_w.dumps(config))
    return load_config(path)


def read(folder: Path, band: str, cut: float, cells: int, out: Path) -> None:
    """Write the ``cells`` largest cells' (config, sources, pixel boxes) as pickles."""
    import pandas as pd

    from dask_phot.pipeline.kernel import read_cell
    from dask_phot.pipeline.plan import plan_cells
    from dask_phot.testing.survey import cut_priors

    out.mkdir(parents=True, exist_ok=True)
    priors = out / f"priors_cut{cut:g}.parquet"
    if not priors.is_file():
        cut_priors(pd.read_parquet(folder / "priors.parquet"), cut).to_parquet(priors)
    cfg = _config(folder, priors, band, out)
    parts, indexes = plan_cells(cfg)
    for k, part in enumerate(sorted(parts, key=lambda p: -p.n_primary)[:cells]):
        regions, status, _ = read_cell(part, indexes, cfg)
        path = out / f"cell-{band}-{k}.pkl"
        with open(path, "wb") as fh:
            pickle.dump((cfg, part, regions), fh)
        print(f"{path}: cell {part.cell.order}/{part.cell.pixel}, {part.n_primary} primary "
              f"and {len(part.sources)} sources {status or ''}")


def _timed(acc: dict[str, float], module: Any, name: str) -> None:
    """Wrap ``module.name`` so that its CPU time adds to ``acc[name]``."""
    f = getattr(module, name)

    @functools.wraps(f)
    def g(*args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return f(*args, **kwargs)
        finally:
            acc[name] += time.process_time() - t0

    setattr(module, name, g)


def _stage_timers() -> dict[str, float]:
    """CPU accumulators around the engine's main steps (called from Python)."""
    import dask_phot.engine._normal as normal
    import dask_phot.engine._pairs as pairs
    import dask_phot.engine.core as core
    import dask_phot.engine.fit as fit
    from dask_phot.engine import _kernels

    acc: dict[str, float] = collections.defaultdict(float)
    for module, names in ((_kernels, ("tile_table", "solve_tiles", "resolve_tiles")),
                          (normal, ("pair_table", "reused_pair_table")),
                          (pairs, ("_pair_cells", "_pair_sums", "_kept_pairs",
                                   "_reused_sums")),
                          (core, ("render_sources",)),
                          (fit, ("wing_image", "mismatch_and_chi2"))):
        for name in names:
            _timed(acc, module, name)
    return acc


def fit(path: Path, repeat: int, stages: bool, table: Path | None) -> None:
    """Fit a pickled cell ``repeat`` times; print the CPU of each run (and its stages)."""
    from dask_phot.pipeline.kernel import TemplateSetup, fit_cell
    from dask_phot.warmup import warm_up

    warm_up(every_option=False)
    acc = _stage_timers() if stages else None
    with open(path, "rb") as fh:
        cfg, part, regions = pickle.load(fh)
    cpu = []
    for _ in range(repeat):
        t0 = time.process_time()
        out, status = fit_cell(part.sources, regions, bands=cfg.bands, engine=cfg.engine,
                               keep=cfg.priors.output_columns, margins=cfg.band_margins(),
                               priors=cfg.priors, templates=TemplateSetup(cfg.templates, {}))
        cpu.append(time.process_time() - t0)
    print(f"{path}: {part.n_primary} primary sources {status}; CPU s "
          f"{' '.join(f'{c:.2f}' for c in cpu)}, least {min(cpu):.2f} "
          f"({1e6 * min(cpu) / part.n_primary:.0f} us per primary)")
    if acc is not None:
        total = sum(cpu)
        for name, sec in sorted(acc.items(), key=lambda kv: -kv[1]):
            print(f"  {name:20s} {sec / repeat:7.3f} s  {100 * sec / total:5.1f}%")
    if table is not None:
        out.to_parquet(table)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("read", help="read the largest cells' pixel boxes into pickles")
    r.add_argument("field", type=Path)
    r.add_argument("--band", default="nuv")
    r.add_argument("--cut", type=float, default=225.0)
    r.add_argument("--cells", type=int, default=1)
    r.add_argument("--out", type=Path, required=True)
    f = sub.add_parser("fit", help="fit a pickled cell in this process")
    f.add_argument("cell", type=Path)
    f.add_argument("--repeat", type=int, default=3)
    f.add_argument("--stages", action="store_true")
    f.add_argument("--table", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.cmd == "read":
        read(args.field, args.band, args.cut, args.cells, args.out)
    else:
        fit(args.cell, args.repeat, args.stages, args.table)


if __name__ == "__main__":
    main()
