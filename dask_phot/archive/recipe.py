"""Archive recipes: a TOML file naming what to fetch, turned into a ready ``config.toml``.

A recipe is a dask-phot run configuration (``[priors]``, ``[bands.<name>]``,
``[engine]``... as in ``dask_phot/data/default.toml``) without the data, plus an
``[archive]`` table that says where the data come from::

    [archive]
    center = [150.01, 2.2]            # ICRS degrees
    radius_arcmin = 0.5               # or box_arcmin = [width, height]
    output_dir = "cosmos"             # relative to the recipe file
    [archive.services]                # base URLs (a mirror, a test server...)
    tap = "https://irsa.ipac.caltech.edu/TAP"
    [archive.priors]                  # -> dask_phot.archive.query_priors
    table = "cosmos2015"
    columns = ["ra", "dec", "id", "ks_flux_aper2"]
    [archive.images.irac1]            # -> irsa_images (source = "sia")
    collection = "spitzer_scosmos"
    bandpass = "IRAC1"
    [archive.images.nuv]              # -> galex_images (source = "galex")
    source = "galex"
    [archive.xray]                    # optional -> xray_catalog
    catalog = "ccosmoscat"

:func:`load_recipe` checks the ``[archive]`` table here (unknown keys and bad values
are :class:`RecipeError`, naming the file and dotted key) and the rest with
:func:`dask_phot.config.load_config`, before anything is fetched.
:func:`fetch_recipe` fetches, writes ``priors.parquet``, ``xray.parquet``,
``config.toml`` (the run configuration with the priors file and each band's
image and noise URLs filled in) and ``fetch.json`` (what was asked, and products
the run does not use: coverage and GALEX sky-background maps). Relative paths in
the recipe's run tables are taken from the recipe's directory, as
:func:`~dask_phot.config.load_config` takes them, and written out absolute; what
the recipe leaves to the defaults (``output.path = "catalog"``) lands in
``output_dir``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dask_phot.archive._cache import ArchiveCache
from dask_phot.archive._recipe_spec import (
    ImagesSpec,
    PriorsSpec,
    RecipeError,
    XraySpec,
    check_archive,
)
from dask_phot.archive.region import SkyRegion
from dask_phot.archive.sia import ImageSet
from dask_phot.config import ConfigError, load_config, read_toml, resolve_run_paths

__all__ = ["FetchResult", "ImagesSpec", "PriorsSpec", "Recipe", "RecipeError", "XraySpec",
           "fetch_recipe", "load_recipe"]

logger = logging.getLogger(__name__)

_PENDING = "archive://pending"
_SET_BY_FETCH = ("path", "ra_column", "dec_column", "id_column")


@dataclass(frozen=True)
class Recipe:
    """A checked recipe (see :func:`load_recipe`)."""

    region: SkyRegion
    output_dir: Path
    cache_dir: Path | None
    priors: PriorsSpec
    images: tuple[ImagesSpec, ...]
    xray: XraySpec | None
    run: Mapping[str, Any]
    source: str = "<dict>"


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_recipe` fetched and wrote."""

    config_path: Path
    priors_path: Path
    n_priors: int
    n_pieces: int
    images: Mapping[str, ImageSet]
    xray_path: Path | None
    n_xray: int
    manifest_path: Path


# ---------------------------------------------------------------------- loading
def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = str(key).split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"overrides: {key}: {part} is not a table")
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _run_config(run: Mapping[str, Any], priors: PriorsSpec,
                bands: Mapping[str, Mapping[str, Any]], label: str) -> dict[str, Any]:
    """The run configuration: the recipe's run tables with the fetched data filled in."""
    out = copy.deepcopy(dict(run))
    table = out.setdefault("priors", {})
    if not isinstance(table, dict):
        raise RecipeError(f"{label}: priors: must be a table")
    for key in _SET_BY_FETCH:
        if key in table:
            raise RecipeError(f"{label}: priors.{key}: set by the fetch from [archive.priors]; "
                              "remove it")
    table.update({"path": "priors.parquet", "ra_column": priors.ra_column.lower(),
                  "dec_column": priors.dec_column.lower()})
    if priors.id_column:
        table["id_column"] = priors.id_column.lower()
    given = out.get("bands", {})
    if not isinstance(given, dict):
        raise RecipeError(f"{label}: bands: must be a table of [bands.<name>] tables")
    merged: dict[str, Any] = {}
    for name, entry in bands.items():
        user = given.get(name, {})
        if not isinstance(user, dict):
            raise RecipeError(f"{label}: bands.{name}: must be a table")
        clash = [k for k in entry if k in user]
        if clash:
            raise RecipeError(f"{label}: bands.{name}.{clash[0]}: set by the fetch from "
                              f"[archive.images.{name}]; remove it")
        merged[name] = {**user, **entry}
    merged.update({k: v for k, v in given.items() if k not in merged})
    out["bands"] = merged
    return out


def _pending_bands(specs: tuple[ImagesSpec, ...]) -> dict[str, dict[str, Any]]:
    return {s.band: {"images": [f"{_PENDING}/{s.band}.fits"]} for s in specs}


def load_recipe(path_or_dict: str | os.PathLike[str] | Mapping[str, Any], *,
                overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Read and check a recipe.

    Parameters
    ----------
    path_or_dict : path-like or mapping
        A recipe TOML file, or its content as a dict.
    overrides : mapping, optional
        Dotted keys set before checking, e.g. ``{"archive.radius_arcmin": 48}``;
        a ``None`` value removes the key.

    Raises
    ------
    RecipeError
        Unreadable file, unknown key or bad value in ``[archive]``, a run table
        that :func:`dask_phot.config.load_config` rejects, a key the fetch sets.

    Examples
    --------
    >>> recipe = load_recipe({"archive": {
    ...     "center": [150.01, 2.2], "radius_arcmin": 0.5,
    ...     "priors": {"table": "cosmos2015", "columns": ["ra", "dec", "id"]},
    ...     "images": {"irac1": {"collection": "spitzer_scosmos", "bandpass": "IRAC1"},
    ...                "nuv": {"source": "galex"}}}})
    >>> recipe.region.describe(), [(s.band, s.source) for s in recipe.images]
    ('cone of radius 0.5 arcmin around (150.01, 2.2)', [('irac1', 'sia'), ('nuv', 'galex')])
    >>> load_recipe({"archive": {"center": [150.01, 2.2], "radius_arcmn": 0.5}})
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_phot.archive.RecipeError: <dict>: archive.radius_arcmn: unknown key; ... (did you mean 'radius_arcmin'?)
    """  # noqa: E501
    data, label, base = read_toml(path_or_dict, what="recipe", error=RecipeError)
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    if "archive" not in data:
        raise RecipeError(f"{label}: no [archive] table: a recipe says what to fetch there")
    checked = check_archive(data.pop("archive"), label)
    run = resolve_run_paths(data, base)  # the recipe's own paths, as load_config takes them
    specs: tuple[ImagesSpec, ...] = checked["images"]
    try:
        load_config(_run_config(run, checked["priors"], _pending_bands(specs), label),
                    environ={})
    except ConfigError as exc:
        text = str(exc).removeprefix("<dict>: ")
        raise RecipeError(f"{label}: {text}") from None

    def path(text: str) -> Path | None:
        return base / Path(text).expanduser() if text else None

    return Recipe(region=checked["region"], output_dir=path(checked["output_dir"]) or base,
                  cache_dir=path(checked["cache_dir"]), priors=checked["priors"],
                  images=specs, xray=checked["xray"], run=run, source=label)


# ---------------------------------------------------------------------- fetching
def _fetch_priors(recipe: Recipe, cache: ArchiveCache) -> tuple[pd.DataFrame, int]:
    from dask_phot.archive.tap import plan_pieces, query_priors
    from dask_phot.priors import read_priors

    p = recipe.priors
    ids = [p.id_column] if p.id_column else []
    kwargs = dict(table=p.table, columns=[*p.columns, *ids], ra_column=p.ra_column,
                  dec_column=p.dec_column, where=p.where or None,
                  max_piece_radius=p.max_piece_radius_arcmin / 60.0)
    pieces = plan_pieces(recipe.region, **kwargs)
    frame = query_priors(recipe.region, **kwargs, service_url=p.service,
                         id_column=p.id_column or None, maxrec=p.maxrec or None, cache=cache,
                         service_name=p.service_name)
    keep = recipe.run.get("priors", {}).get("keep_columns", [])
    extra = [keep] if isinstance(keep, str) else list(keep)
    try:
        read_priors(frame, ra_column=p.ra_column.lower(), dec_column=p.dec_column.lower(),
                    id_column=p.id_column.lower() or "source_id",
                    columns=list(dict.fromkeys(extra)))
    except ValueError as exc:
        raise RecipeError(f"{recipe.source}: the priors fetched from {p.service_name} "
                          f"({p.table}) cannot be used (add the column to "
                          f"archive.priors.columns?): {exc}") from None
    return frame, len(pieces)


def _fetch_images(recipe: Recipe, cache: ArchiveCache) -> dict[str, ImageSet]:
    from dask_phot.archive.mast import galex_images
    from dask_phot.archive.sia import irsa_images

    found: dict[str, ImageSet] = {}
    groups: dict[tuple[Any, ...], list[ImagesSpec]] = {}
    for spec in recipe.images:
        groups.setdefault(spec.group_key(), []).append(spec)
    for specs in groups.values():
        s = specs[0]
        if s.source == "sia":
            found.update(irsa_images(
                recipe.region, collection=s.collection, sia_url=s.service,
                bands={x.band: list(x.bandpass) for x in specs}, science_subtype=s.science,
                noise_subtype=s.noise, noise_kind=s.noise_kind, coverage_subtype=s.coverage,
                prefer_cloud=s.cloud, cache=cache, service_name=s.service_name))
        else:
            found.update(galex_images(
                recipe.region, bands=[x.galex_band for x in specs], min_exptime=s.min_exptime,
                deepest_only=s.deepest_only, mast_url=s.service, cache=cache,
                service_name=s.service_name))
            for x in specs:  # a band named other than nuv/fuv gets its GALEX filter's files
                found[x.band] = ImageSet(x.band, *[getattr(found[x.galex_band], f) for f in
                                                   ("images", "noise", "noise_kind", "extra")])
    return {spec.band: found[spec.band] for spec in recipe.images}


def _fetch_xray(recipe: Recipe, cache: ArchiveCache) -> pd.DataFrame:
    from dask_phot.archive.heasarc import xray_catalog

    x = recipe.xray
    assert x is not None
    region = recipe.region
    if x.radius_arcmin:
        region = SkyRegion.cone(region.ra, region.dec, x.radius_arcmin / 60.0)
    return xray_catalog(region, catalog=x.catalog, columns=x.columns,
                        keep=list(x.keep) or None, heasarc_url=x.service,
                        maxrec=x.maxrec or None, cache=cache, service_name=x.service_name)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def _manifest(recipe: Recipe, cache: ArchiveCache, n_pieces: int, priors: pd.DataFrame,
              images: Mapping[str, ImageSet], xray: pd.DataFrame | None) -> dict[str, Any]:
    """``fetch.json``: what was asked, what came back, products the run does not use."""
    return {
        "recipe": recipe.source, "region": recipe.region.describe(),
        "cache": str(cache.directory), "offline": cache.offline,
        "priors": {"service": recipe.priors.service, "table": recipe.priors.table,
                   "pieces": n_pieces, "rows": len(priors), "path": "priors.parquet"},
        "images": {b: {"images": list(s.images), "noise": list(s.noise),
                       "noise_kind": s.config_entry()["noise_kind"],
                       **{k: list(v) for k, v in s.extra.items()}} for b, s in images.items()},
        "xray": None if xray is None or recipe.xray is None else {
            "service": recipe.xray.service, "catalog": recipe.xray.catalog,
            "rows": len(xray), "path": "xray.parquet", "columns": list(map(str, xray.columns))},
    }


def fetch_recipe(
    recipe: Recipe | str | os.PathLike[str] | Mapping[str, Any],
    *,
    offline: bool = False,
    refresh: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
) -> FetchResult:
    """Fetch a recipe's priors, image lists and X-ray catalog; write a ready config.

    Parameters
    ----------
    recipe : Recipe, path-like or mapping
        A recipe, or what :func:`load_recipe` reads.
    offline : bool
        Use cached replies only (:class:`ArchiveError` for anything not cached).
    refresh : bool
        Ask the services again, replacing cached replies.
    cache_dir, output_dir : path-like, optional
        Override the recipe's ``archive.cache_dir`` / ``archive.output_dir``.

    Returns
    -------
    FetchResult

    Raises
    ------
    ArchiveError
        A service failed (or, offline, a reply is not cached).
    RecipeError
        The fetched data do not fit the run configuration.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    cache = ArchiveCache(cache_dir or recipe.cache_dir, offline=offline, refresh=refresh)
    out = Path(output_dir).expanduser() if output_dir else recipe.output_dir
    priors, n_pieces = _fetch_priors(recipe, cache)
    images = _fetch_images(recipe, cache)
    xray = _fetch_xray(recipe, cache) if recipe.xray else None
    out.mkdir(parents=True, exist_ok=True)
    priors_path = out / "priors.parquet"
    priors.to_parquet(priors_path, index=False)
    xray_path = None
    if xray is not None:
        xray_path = out / "xray.parquet"
        xray.to_parquet(xray_path, index=False)
    config = _run_config(recipe.run, recipe.priors,
                         {b: s.config_entry() for b, s in images.items()}, recipe.source)
    import tomli_w

    config_path = out / "config.toml"
    _write(config_path, f"# written by dask-phot fetch from {recipe.source}\n"
           + tomli_w.dumps(config))
    load_config(config_path, environ={})  # the written file must load as it stands
    manifest_path = out / "fetch.json"
    _write(manifest_path, json.dumps(_manifest(recipe, cache, n_pieces, priors, images, xray),
                                     indent=1) + "\n")
    logger.info("fetched %d priors, %d band(s); wrote %s", len(priors), len(images),
                config_path)
    return FetchResult(config_path, priors_path, len(priors), n_pieces, images, xray_path,
                       0 if xray is None else len(xray), manifest_path)

