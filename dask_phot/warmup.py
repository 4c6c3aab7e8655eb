"""Compile the numba kernels before the first cell: at image build and in fresh workers.

Every cached ``numba.njit`` kernel of dask-phot compiles on its first call (about
20 s for one pipeline cell's kernels on one core) and numba keeps the machine code in its
cache, from which later processes only load it. :func:`warm_up` makes those first calls
on a tiny simulated field: one cell through the pipeline with the packaged defaults, the
same cell with every combination of the engine's options and of a band's sky treatment
and with each source model (a field of stars and Sersic galaxies),
template fits of the same field (:mod:`dask_phot.templates`: a sharp image of its
sources rendered with numpy, fitted directly and as a pipeline template cell, with the
registration measuring a shift) and fits with a :class:`~dask_phot.psf.PSFGrid`; it also
reads the preset bands' PSFs, which a process reads once. It names no kernel: it compiles
whatever the public entry points use today.

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
import math
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

import numpy as np

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
        Pipeline cells fitted (one per option combination, and a template cell).
    fits : int
        Direct :func:`~dask_phot.forced_photometry` and
        :func:`~dask_phot.templates.fit_templates` calls.
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


#: Pixel scale of the warm-up's sharp image (arcsec; HST-like) and the FWHM of its
#: Gaussian PSF (sharp pixels).
SHARP_SCALE = 0.06
SHARP_FWHM = 1.7
#: The template fits of the image build (:func:`template_fits`): the defaults (shared
#: outskirts, registration), then segments grown without sharing and the sharp PSF's
#: wings given back, with the local sharp background, and with a sky plane and no
#: registration. A run's ``[templates]`` sets ``grow``, ``hires_background`` and
#: ``register``; the engine's ``sky_model`` and ``fit_sky`` apply too.
TEMPLATE_VARIANTS: tuple[dict[str, Any], ...] = (
    {}, {"grow": 0.0}, {"outskirts": "grown", "hires_background": "local"},
    {"sky_model": "plane", "register": False})


def _sharp_pair(field: Any, seed: int) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray]:
    """A sharp image of the simulated field's sources, its segmentation map, WCS and PSF.

    Rendered with numpy (no GalSim): each prior a circular Gaussian of its half-light
    radius (stars: the PSF), convolved analytically with the Gaussian sharp PSF, on a
    grid rotated by 20 degrees with respect to the band's. A pixel belongs to the source
    that lights it most where that light exceeds twice the noise; faint sources get no
    segment, as undetected priors do. Labels are the priors' ``source_id``.
    """
    from dask_phot.testing.pairs import tan_wcs

    image = field.images[BAND]
    ny, nx = image.data.shape
    scale = float(field.images[BAND].psf.pixel_scale)
    side = round(max(ny, nx) * scale / SHARP_SCALE)
    center = tuple(image.wcs.wcs.crval)
    wcs = tan_wcs(SHARP_SCALE, (side, side), center, rotation=20.0)
    pri = field.priors
    x, y = wcs.world_to_pixel_values(pri["ra"].to_numpy(), pri["dec"].to_numpy())
    psf_var = (SHARP_FWHM / 2.3548) ** 2
    r_e = np.nan_to_num(pri["r_e"].to_numpy(np.float64), nan=0.0) / SHARP_SCALE
    var = psf_var + r_e ** 2
    flux = np.abs(pri[f"flux_true_{BAND}"].to_numpy(np.float64))
    noise = 0.02 * float(np.median(flux / (2 * np.pi * var)))
    model = np.zeros((side, side))
    best = np.zeros((side, side))
    seg = np.zeros((side, side), dtype=np.int32)
    for i, sid in enumerate(pri["source_id"].to_numpy()):
        half = math.ceil(6 * math.sqrt(var[i]))
        cy, cx = round(y[i]), round(x[i])
        ys = slice(*np.clip([cy - half, cy + half + 1], 0, side))
        xs = slice(*np.clip([cx - half, cx + half + 1], 0, side))
        yy, xx = np.ogrid[ys, xs]
        light = flux[i] / (2 * np.pi * var[i]) * np.exp(
            -0.5 * ((xx - x[i]) ** 2 + (yy - y[i]) ** 2) / var[i])
        model[ys, xs] += light
        own = (light > best[ys, xs]) & (light > 2 * noise)
        seg[ys, xs][own], best[ys, xs][own] = sid, light[own]
    rng = np.random.default_rng(seed)
    sharp = (model + rng.normal(0.0, noise, model.shape)).astype(np.float32)
    g = np.arange(-7, 8, dtype=np.float64)
    psf = np.exp(-0.5 * np.add.outer(g ** 2, g ** 2) / psf_var)
    return sharp, seg, wcs, psf / psf.sum()


def template_fits(field: Any, workdir: Path, user: Mapping[str, Any], seed: int, *,
                  every_option: bool) -> tuple[int, int]:
    """Fit the simulated field with templates, directly and as a pipeline template cell.

    The sharp image is :func:`_sharp_pair`'s; the band's WCS is handed out 0.3" east of
    the truth, so the registration measures a shift. The direct fits take the sharp
    image and its map as FITS files and ``detect_sources`` give them (float32, int32),
    the pipeline cell as it reads them (float64, int64) with the priors without a
    segment as point sources and Sersic galaxies. ``every_option``: also
    :data:`TEMPLATE_VARIANTS` and a float64 / int64 direct fit.

    Returns
    -------
    cells, fits : int
        Pipeline cells and direct :func:`~dask_phot.templates.fit_templates` calls.
    """
    from astropy.io import fits

    from dask_phot.config import load_config
    from dask_phot.pipeline import plan_cells, process_cell
    from dask_phot.psf import PixelPSF
    from dask_phot.templates import fit_templates

    sharp, seg, swcs, spsf = _sharp_pair(field, seed)
    image = field.images[BAND]
    moved = image.wcs.deepcopy()
    moved.wcs.crval = moved.wcs.crval + np.array([0.3 / 3600 / np.cos(
        np.radians(moved.wcs.crval[1])), 0.0])
    hpsf = PixelPSF.from_array(spsf, SHARP_SCALE)
    inputs = [(sharp, seg)] + ([(sharp.astype(np.float64), seg.astype(np.int64))]
                               if every_option else [])
    variants = TEMPLATE_VARIANTS if every_option else TEMPLATE_VARIANTS[:1]
    runs = [(hires, labels, {}) for hires, labels in inputs]
    runs += [(sharp, seg, options) for options in variants[1:]]
    for hires, labels, options in runs:
        fit_templates(image.data, moved, image.psf, hires, swcs, hpsf, labels,
                      weight=image.weight, **options)
    fits.writeto(workdir / "sharp.fits", sharp, swcs.to_header())
    fits.writeto(workdir / "sharp_seg.fits", seg, swcs.to_header())
    fits.writeto(workdir / "sharp_psf.fits", spsf.astype(np.float32))
    tpl = {"image": str(workdir / "sharp.fits"), "segmap": str(workdir / "sharp_seg.fits"),
           "psf": str(workdir / "sharp_psf.fits"), "psf_pixel_scale": SHARP_SCALE}
    cfg = load_config({**user, "templates": tpl},
                      overrides={f"bands.{BAND}.model": "template"}, environ={})
    parts, indexes = plan_cells(cfg)
    report = process_cell(max(parts, key=lambda p: p.n_primary), indexes, cfg)[1]
    if report.failures():
        raise RuntimeError(f"warm-up template cell failed: {report.status}")
    return 1, len(runs)


def warm_up(*, every_option: bool = True, templates: bool | None = None,
            seed: int = 20240917) -> WarmUp:
    """Compile (or load from numba's cache) every kernel a run uses, on a tiny field.

    Parameters
    ----------
    every_option : bool
        Also fit the cell with every combination of the engine's options and of the
        band's sky treatment, with a PSF grid, and with templates in each of
        :data:`TEMPLATE_VARIANTS` (image build); False: the packaged defaults only.
    templates : bool, optional
        Also fit the field with templates (with ``every_option``: each of
        :data:`TEMPLATE_VARIANTS`); default ``every_option``. A worker started with
        the preload (:func:`dask_setup`) does, as it cannot know whether its run has
        a template band and loading their kernels from a compiled cache is cheap; a
        fresh install's first run (``dask-phot demo``) does not compile them (~15 s
        of CPU) for bands that do not use them.
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
        if every_option if templates is None else templates:
            done_cells, done_fits = template_fits(field, Path(tmp), user, seed,
                                                  every_option=every_option)
            cells, fits = cells + done_cells, fits + done_fits
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
    warm_up(every_option=False, templates=True)
    warm_s3()
    stats = cache_stats()
    log.info("worker warm-up: %d cache files seeded; %d functions, %d loaded from the cache, "
             "%d compiled; %.1f s", copied, stats.functions, stats.hits, stats.misses,
             time.perf_counter() - t0)
