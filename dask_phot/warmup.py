"""Compile the numba kernels before the first cell: at image build and in fresh workers.

Every cached ``numba.njit`` kernel of dask-phot compiles on its first call (about
20 s for one pipeline cell's kernels on one core) and numba keeps the machine code in its
cache, from which later processes only load it. :func:`warm_up` makes those first calls
on a tiny simulated field: one cell through the pipeline with the packaged defaults, the
same cell with every combination of the engine's options and of a band's sky treatment
and with each source model (a field of stars and Sersic galaxies),
and fits with a :class:`~dask_phot.psf.PSFGrid`; it also reads the preset bands' PSFs,
which a process reads once. It names no kernel: it compiles whatever
the public entry points use today.

Read-only root filesystems. numba uses a cache directory only where it can create a file
(each of its cache locators checks with a temporary file, and a locator that fails is
skipped, for reading too), so a cache compiled into an image and read in place under a
read-only root filesystem is ignored, and every container compiles again. The image
therefore keeps its compiled cache in ``DASK_PHOT_NUMBA_CACHE`` and points
``NUMBA_CACHE_DIR`` at the writable ``/tmp``; :func:`seed_cache` copies the first into the
second. Both run in every Dask worker before it joins its scheduler, through this module's
Dask preload hook :func:`dask_setup` (the image sets
``DASK_DISTRIBUTED__WORKER__PRELOAD='["dask_phot.warmup"]'``; elsewhere
``dask worker --preload dask_phot.warmup``), so that a fresh worker's first cell costs what
its later cells do.

numba's cache is specific to the numba version, the Python version and the CPU it was
compiled for (name and features): a worker on another CPU model finds no entry for its
CPU and compiles (in :func:`dask_setup`, before it takes work).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import sys
import tempfile
import time
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["SEED_ENV", "CacheStats", "WarmUp", "cache_stats", "dask_setup", "engine_variants",
           "psf_grid_fits", "seed_cache", "warm_s3", "warm_up"]

log = logging.getLogger(__name__)

#: Environment variable naming a compiled numba cache to copy into ``NUMBA_CACHE_DIR``.
SEED_ENV = "DASK_PHOT_NUMBA_CACHE"

#: The values a band's ``sky`` takes (see ``[band_defaults]`` in ``data/default.toml``).
SKY_CHOICES: tuple[str | float, ...] = ("fit", "clipped", "none", 0.0)

#: Engine options whose other values compile nothing of dask-phot's (``backend``: the
#: Tractor, an optional external package).
_NOT_COMPILED = frozenset({"backend"})

#: A band's source models (``model``; ``"auto"``, the default, fits the galaxies as
#: Sersic models; the others are fitted once each with the default engine options).
MODEL_CHOICES: tuple[str, ...] = ("auto", "point", "choose")

#: Fraction of galaxies (with shapes in the priors) in the simulated field.
GALAXIES = 0.5

#: The band of the simulated field (a preset: its packaged PSF, as in a real run).
BAND = "irac1"
#: Area of the simulated field, arcmin² (about 50 sources at COSMOS density).
AREA_ARCMIN2 = 0.3


@dataclasses.dataclass(frozen=True)
class WarmUp:
    """What :func:`warm_up` ran.

    Attributes
    ----------
    cells : int
        Pipeline cells fitted (one per option combination).
    fits : int
        Direct :func:`~dask_phot.forced_photometry` calls.
    sources : int
        Sources in the simulated field.
    seconds : float
        Wall time.
    """

    cells: int
    fits: int
    sources: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """numba cache use of dask-phot's compiled functions in this process.

    Attributes
    ----------
    functions : int
        Compiled functions with at least one signature.
    hits : int
        Signatures loaded from the cache.
    misses : int
        Signatures compiled (not found in the cache, or found stale).
    """

    functions: int
    hits: int
    misses: int


def _finite_values(hint: Any) -> tuple[Any, ...]:
    """The values a type annotation allows when they are few: bools and literals."""
    if hint is bool:
        return (False, True)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [_finite_values(arg) for arg in typing.get_args(hint)]
        return tuple(v for part in parts for v in part) if all(parts) else ()
    return ()


def engine_variants() -> list[dict[str, Any]]:
    """Every combination of the engine options that take a few values (``[engine]``).

    Derived from the annotations of :class:`dask_phot.config.EngineConfig` (its
    ``bool`` and ``Literal`` fields), so a new option is covered without listing it.

    Returns
    -------
    list of dict
        ``{"engine.<option>": value, ...}`` overrides, defaults first.

    Examples
    --------
    >>> variants = engine_variants()
    >>> {v["engine.mode"] for v in variants} == {"scene", "cutout"}
    True
    """
    from dask_phot.config import EngineConfig

    hints = typing.get_type_hints(EngineConfig)
    default = EngineConfig()
    choices = {}
    for f in dataclasses.fields(EngineConfig):
        if f.name in _NOT_COMPILED:
            continue
        values = _finite_values(hints[f.name])
        if values:
            first = getattr(default, f.name)
            choices[f.name] = (first, *(v for v in values if v != first))
    return [{f"engine.{k}": v for k, v in zip(choices, combo, strict=True)}
            for combo in itertools.product(*choices.values())]


def _field(workdir: Path, seed: int) -> tuple[dict[str, Any], Any]:
    """A tiny simulated field in one preset band, written as a run's inputs."""
    from dask_phot.bands import get_band
    from dask_phot.testing import SimBand, simulate_field, write_field

    band = get_band(BAND)
    sim = SimBand(band.name, band.load_psf(), band.to_ujy, band.depth_5sigma_ujy or 1.0,
                  sky=0.02, unit=band.unit)
    field = simulate_field(bands=[sim], seed=seed, area_arcmin2=AREA_ARCMIN2,
                           mask_fraction=0.01, galaxies=GALAXIES)
    paths = write_field(field, workdir, noise_product="weight", write_psf=False)
    user = {"priors": {"path": str(paths["priors"]),
                       "shape_columns": {"r_e": "r_e", "q": "q", "pa": "pa", "n": "n"}},
            "bands": {band.name: {"images": [str(paths[f"{band.name}_sci"])],
                                  "noise": [str(paths[f"{band.name}_wht"])],
                                  "noise_kind": "weight"}},
            "output": {"path": str(workdir / "catalog")}}
    return user, field


def _cells(user: Mapping[str, Any], every_option: bool) -> Iterator[tuple[dict[str, Any], Any]]:
    """(overrides, report) of the simulated cell fitted with each option combination.

    The defaults run a worker's whole unit of work (fit and write the cell); the other
    combinations only fit it.
    """
    from dask_phot.config import ConfigError, load_config
    from dask_phot.pipeline import plan_cells, process_cell
    from dask_phot.pipeline.output import CatalogStore
    from dask_phot.pipeline.run import run_one_cell

    config = load_config(user, environ={})
    parts, indexes = plan_cells(config)
    part = max(parts, key=lambda p: p.n_primary)
    store = CatalogStore.open(config.output.path)
    yield {}, run_one_cell(part, indexes, config, store, {})
    variants = [{**engine, f"bands.{BAND}.sky": sky}
                for engine in engine_variants() for sky in SKY_CHOICES]
    variants += [{f"bands.{BAND}.model": model} for model in MODEL_CHOICES[1:]]
    variants = variants if every_option else []
    for overrides in variants:
        try:
            cfg = load_config(user, overrides=overrides, environ={})
        except ConfigError:  # a combination the configuration refuses is never run
            log.debug("warm-up: options %s refused by the configuration", overrides)
            continue
        yield overrides, process_cell(part, indexes, cfg)[1]


def psf_grid_fits(field: Any) -> int:
    """Fit the simulated field with a :class:`~dask_phot.psf.PSFGrid` in each engine mode.

    A grid interpolates pixel-grid PSFs (:class:`~dask_phot.psf.PixelPSF`): the notebook
    preset's PRF at three corners. Returns the number of fits.
    """
    from dask_phot.bands import get_band
    from dask_phot.config import EngineConfig
    from dask_phot.engine import forced_photometry
    from dask_phot.psf import PSFGrid

    image = field.images[BAND]
    psf = get_band(f"{BAND}_notebook").load_psf()
    ny, nx = image.data.shape
    grid = PSFGrid([psf, psf, psf], [0.0, nx - 1.0, 0.0], [0.0, 0.0, ny - 1.0])
    for mode in ("scene", "cutout"):
        kwargs = EngineConfig(mode=mode).forced_kwargs()
        if mode == "cutout":
            kwargs.update(fit_sky=False, cutout_width=psf.size)
        forced_photometry(image.data, grid, image.x, image.y, weight=image.weight, **kwargs)
    return 2


def warm_up(*, every_option: bool = True, seed: int = 20240917) -> WarmUp:
    """Compile (or load from numba's cache) every kernel a run uses, on a tiny field.

    Parameters
    ----------
    every_option : bool
        Also fit the cell with every combination of the engine's options and of the
        band's sky treatment, and with a PSF grid (image build); False: the packaged
        defaults only (a worker's start).
    seed : int
        Seed of the simulated field.

    Returns
    -------
    WarmUp
        Counts and wall time.

    Raises
    ------
    RuntimeError
        If a fit fails: the kernels are broken, and a run would fail the same way.
    """
    from dask_phot.bands import PRESETS

    t0 = time.perf_counter()
    for band in PRESETS.values():  # each band's PSF is read once per process (cached)
        band.load_psf()
    cells = fits = 0
    with tempfile.TemporaryDirectory(prefix="dask-phot-warmup-") as tmp:
        user, field = _field(Path(tmp), seed)
        for overrides, report in _cells(user, every_option):
            if report.failures():
                raise RuntimeError(f"warm-up cell with {overrides or 'the defaults'} failed: "
                                   f"{report.status}")
            cells += 1
    if every_option:  # the library's other PSF model, not used by the pipeline
        fits += psf_grid_fits(field)
    done = WarmUp(cells, fits, len(field.priors), time.perf_counter() - t0)
    log.info("warm-up: %d cells and %d fits of %d sources in %.1f s", done.cells, done.fits,
             done.sources, done.seconds)
    return done


def seed_cache(source: str | os.PathLike[str] | None = None,
               target: str | os.PathLike[str] | None = None) -> int:
    """Copy a compiled numba cache into numba's (writable) cache directory.

    Parameters
    ----------
    source : path-like, optional
        The compiled cache; default ``$DASK_PHOT_NUMBA_CACHE``. Nothing is copied
        when it is unset or not a directory.
    target : path-like, optional
        Default ``NUMBA_CACHE_DIR`` (numba's setting); nothing is copied when it is
        unset or is ``source``.

    Returns
    -------
    int
        Files copied. Files already in ``target`` are kept; each file is copied to a
        temporary name and renamed, so concurrent workers never read half a file.
    """
    if source is None:
        source = os.environ.get(SEED_ENV) or None
    if target is None:
        from numba.core import config as numba_config

        target = numba_config.CACHE_DIR or None
    if source is None or target is None or not Path(source).is_dir():
        return 0
    src, dst = Path(source), Path(target)
    if src.resolve() == dst.resolve():
        return 0
    copied = 0
    for path in sorted(src.rglob("*")):
        out = dst / path.relative_to(src)
        if not path.is_file() or out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        shutil.copy2(path, tmp)
        os.replace(tmp, out)
        copied += 1
    log.info("numba cache: %d files copied from %s to %s", copied, src, dst)
    return copied


def cache_stats() -> CacheStats:
    """Cache hits and misses of the compiled functions of the dask_phot modules imported.

    Examples
    --------
    >>> stats = cache_stats()
    >>> stats.hits >= 0 and stats.misses >= 0
    True
    """
    from numba.core.dispatcher import Dispatcher

    seen: dict[int, Dispatcher] = {}
    for name, module in list(sys.modules.items()):
        if name == "dask_phot" or name.startswith("dask_phot."):
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher):
                    seen[id(value)] = value
    used = [d for d in seen.values() if d.signatures]
    return CacheStats(len(used), sum(sum(d.stats.cache_hits.values()) for d in used),
                      sum(sum(d.stats.cache_misses.values()) for d in used))


def warm_s3() -> None:
    """Import s3fs and build an S3 client, as a cell's first read from S3 does.

    Sends no request: it loads what every S3 client of the process shares (modules,
    botocore's data files), which a worker's first cell would otherwise load.
    """
    import s3fs

    s3fs.S3FileSystem(anon=True, skip_instance_cache=True).connect()


def dask_setup(worker: Any) -> None:
    """Dask preload hook: seed numba's cache, warm the kernels and S3, before the worker joins.

    Parameters
    ----------
    worker : distributed.Worker
        The worker starting (unused: what is warmed is per process).
    """
    t0 = time.perf_counter()
    copied = seed_cache()
    warm_up(every_option=False)
    warm_s3()
    stats = cache_stats()
    log.info("worker warm-up: %d cache files seeded; %d functions, %d loaded from the cache, "
             "%d compiled; %.1f s", copied, stats.functions, stats.hits, stats.misses,
             time.perf_counter() - t0)
