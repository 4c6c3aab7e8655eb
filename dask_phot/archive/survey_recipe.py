"""Survey recipes: JWST/HST surveys on MAST in, a ready detect config and a band list out.

A survey recipe is a ``dask-phot detect`` configuration (``[detect]``,
``[detect.params]``, ``[cluster]``, ``[storage]``... as in
``dask_phot/data/detect.toml``) without the mosaics, plus a ``[mast]`` table
naming the surveys::

    [mast]
    output_dir = "surveys"            # relative to the recipe file
    prefer = "level3"                 # where a filter has level-3 and HLSP mosaics
    noise = "WHT"                     # WHT (weight) or ERR (uncertainty) extensions
    [mast.surveys.ceers]              # -> dask_phot.archive.survey_images
    proposal_id = ["1345"]
    hlsp = "ceers"
    filters = ["F115W", "F200W", "F444W"]

:func:`load_survey_recipe` checks it all before anything is fetched (unknown keys
are :class:`~dask_phot.archive.RecipeError` naming the file and dotted key);
:func:`fetch_surveys` looks the surveys up and writes, in ``output_dir``:

* ``detect.toml``: the recipe's detect settings with a ``[detect.surveys.<name>]``
  table per survey (``images`` = ``...i2d.fits[SCI]``, ``noise`` = ``[WHT]``,
  ``coverage`` = ``[CON]`` context maps, and ``archive``: what was chosen), so
  ``dask-phot detect surveys/detect.toml`` writes one merged catalog per survey;
* ``bands.toml``: the band list, ``[bands.<band>]`` with every survey's mosaics of
  that band (``images``, ``noise``, ``noise_kind``) and ``[storage]``, for
  ``dask-phot cutouts --bands`` and for a run configuration's ``[bands]``;
* ``surveys.json``: per survey and band, the choice (level 3 or HLSP), the counts
  and every URL.

Examples
--------
>>> recipe = load_survey_recipe({"mast": {"surveys": {"ceers": {
...     "proposal_id": ["1345"], "hlsp": "ceers", "filters": ["F200W"]}}}})
>>> [(s.name, s.proposal_id, s.hlsp) for s in recipe.surveys], recipe.prefer
([('ceers', ('1345',), 'ceers')], 'level3')
>>> load_survey_recipe({"mast": {"surveys": {"ceers": {"proposal": ["1345"]}}}})
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dask_phot.archive.RecipeError: <dict>: mast.surveys.ceers.proposal: unknown key; ... (did you mean 'proposal_id'?)
"""  # noqa: E501

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dask_phot.archive._cache import ArchiveCache
from dask_phot.archive._recipe_spec import RecipeError
from dask_phot.archive.mast import MAST_URL
from dask_phot.archive.mast_surveys import MAST_BUCKET, SurveyImages, SurveySpec, survey_images
from dask_phot.config import ConfigError, Provenance, build_section, read_toml, setting
from dask_phot.config.checks import NAME, strings, table
from dask_phot.config.layers import resolve_paths

__all__ = ["SurveyFetch", "SurveyRecipe", "fetch_surveys", "is_survey_recipe",
           "load_survey_recipe"]

_PENDING = "archive://pending"


@dataclass(frozen=True, kw_only=True)
class _SurveyKeys:
    """``[mast.surveys.<name>]``."""

    proposal_id: tuple[str, ...] = setting((), check=strings())
    hlsp: str = ""
    instrument: str = setting("NIRCAM/IMAGE", check=NAME)
    filters: tuple[str, ...] = setting((), check=strings())
    collection: Literal["JWST", "HST"] = "JWST"


@dataclass(frozen=True, kw_only=True)
class _MastKeys:
    """``[mast]``."""

    service: str = setting(MAST_URL, check=NAME)
    output_dir: str = setting("surveys", check=NAME)
    cache_dir: str = ""
    prefer: Literal["level3", "hlsp"] = "level3"
    noise: Literal["WHT", "ERR"] = "WHT"
    cloud: bool = True
    bucket: str = setting(MAST_BUCKET, check=NAME)
    surveys: dict[str, Any] = setting(check=table)


@dataclass(frozen=True)
class SurveyRecipe:
    """A checked survey recipe (see :func:`load_survey_recipe`)."""

    surveys: tuple[SurveySpec, ...]
    service: str
    output_dir: Path
    cache_dir: Path | None
    prefer: str
    noise: str
    cloud: bool
    bucket: str
    detect: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<dict>"


@dataclass(frozen=True)
class SurveyFetch:
    """What :func:`fetch_surveys` found and wrote."""

    found: Mapping[str, SurveyImages]
    detect_config: Path
    bands_path: Path
    manifest_path: Path


def is_survey_recipe(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> bool:
    """Whether a recipe is a survey recipe (a ``[mast]`` table with surveys)."""
    try:
        data, _, _ = read_toml(path_or_dict, what="recipe", error=RecipeError)
    except RecipeError:
        return False
    return isinstance(data.get("mast"), dict) and "surveys" in data["mast"]


def _specs(mast: _MastKeys, origin: Provenance) -> tuple[SurveySpec, ...]:
    out = []
    tables = origin.table("mast.surveys", mast.surveys)
    if not tables:
        origin.fail("mast.surveys", "at least one [mast.surveys.<name>] table is required")
    for name, value in tables.items():
        key = f"mast.surveys.{name}"
        keys = build_section(_SurveyKeys, value, key=key, origin=origin)
        if not keys.proposal_id and not keys.hlsp:
            origin.fail(key, "give proposal_id (level-3 products) and/or hlsp (the HLSP's "
                             "provenance name)")
        out.append(SurveySpec(str(name), keys.proposal_id, keys.hlsp, keys.instrument,
                              tuple(f.upper() for f in keys.filters), keys.collection))
    return tuple(out)


def _detect_config(recipe_detect: Mapping[str, Any],
                   surveys: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The detect configuration: the recipe's tables with the surveys' mosaics filled in."""
    out = copy.deepcopy(dict(recipe_detect))
    detect = out.setdefault("detect", {})
    for key in ("images", "noise", "coverage", "surveys"):
        if key in detect:
            raise RecipeError(f"detect.{key}: set by the fetch from [mast.surveys]; remove it")
    detect.setdefault("group_by", "filter")
    detect["surveys"] = {name: dict(entry) for name, entry in surveys.items()}
    return out


def load_survey_recipe(path_or_dict: str | os.PathLike[str] | Mapping[str, Any], *,
                       overrides: Mapping[str, Any] | None = None) -> SurveyRecipe:
    """Read and check a survey recipe.

    Parameters
    ----------
    path_or_dict : path-like or mapping
        A recipe TOML file, or its content.
    overrides : mapping, optional
        Top-level ``[mast]`` keys to replace (``{"output_dir": ...}``).

    Raises
    ------
    RecipeError
        Unreadable file, unknown key or bad value in ``[mast]``, or detect
        settings that :func:`~dask_phot.detect.load_detect_config` rejects.
    """
    from dask_phot.detect.config import DETECT_PATHS, load_detect_config

    data, label, base = read_toml(path_or_dict, what="recipe", error=RecipeError)
    if "mast" not in data:
        raise RecipeError(f"{label}: no [mast] table: a survey recipe names its surveys there")
    origin = Provenance(label, error=RecipeError)
    mast = build_section(_MastKeys, {**data.pop("mast"), **(overrides or {})}, key="mast",
                         origin=origin)
    specs = _specs(mast, origin)
    detect = resolve_paths(data, base, DETECT_PATHS)
    pending = {s.name: {"images": [f"{_PENDING}/{s.name}.fits"]} for s in specs}
    try:
        load_detect_config(_detect_config(detect, pending), environ={})
    except ConfigError as exc:
        raise RecipeError(f"{label}: {str(exc).removeprefix('<dict>: ')}") from None

    def path(text: str) -> Path | None:
        return base / Path(text).expanduser() if text else None

    return SurveyRecipe(specs, mast.service, path(mast.output_dir) or base,
                        path(mast.cache_dir), mast.prefer, mast.noise, mast.cloud,
                        mast.bucket, detect, label)


def _survey_entry(found: SurveyImages) -> dict[str, Any]:
    images, noise, coverage = [], [], []
    kinds = {s.noise_kind for s in found.bands.values()}
    for s in found.bands.values():
        images += s.images
        noise += s.noise
        coverage += s.extra.get("coverage", ())
    entry: dict[str, Any] = {"images": images}
    if len(noise) == len(images) and len(kinds) == 1:
        entry.update(noise=noise, noise_kind=kinds.pop())
    else:
        entry["noise_kind"] = "none"
    if len(coverage) == len(images):
        entry.update(coverage=coverage, coverage_kind="context")
    entry["archive"] = {b: dict(c) for b, c in found.choices.items()}
    return entry


def _bands(found: Mapping[str, SurveyImages]) -> dict[str, dict[str, Any]]:
    """Each band's mosaics over all surveys (surveys cover different sky)."""
    out: dict[str, dict[str, Any]] = {}
    for survey in found.values():
        for band, s in survey.bands.items():
            entry = out.setdefault(band, {"images": [], "noise": [], "noise_kind": s.noise_kind})
            entry["images"] += s.images
            entry["noise"] += s.noise
            if s.noise_kind != entry["noise_kind"] or not s.noise:
                entry["noise_kind"] = "none"
    for entry in out.values():
        if entry["noise_kind"] == "none":
            entry["noise"] = []
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def fetch_surveys(recipe: SurveyRecipe | str | os.PathLike[str] | Mapping[str, Any], *,
                  offline: bool = False, refresh: bool = False,
                  cache_dir: str | os.PathLike[str] | None = None,
                  output_dir: str | os.PathLike[str] | None = None) -> SurveyFetch:
    """Look a recipe's surveys up on MAST; write ``detect.toml``, ``bands.toml``, ``surveys.json``.

    Parameters
    ----------
    recipe : SurveyRecipe, path-like or mapping
    offline, refresh : bool
        Cached replies only / ask again (see :class:`~dask_phot.archive.ArchiveCache`).
    cache_dir, output_dir : path-like, optional
        Override the recipe's ``mast.cache_dir`` / ``mast.output_dir``.

    Raises
    ------
    ArchiveError
        A look-up failed; a survey without mosaics (one line naming it and the query).
    RecipeError
        The written detect configuration does not load.
    """
    import tomli_w

    from dask_phot.config import storage_options
    from dask_phot.detect.config import load_detect_config

    if not isinstance(recipe, SurveyRecipe):
        recipe = load_survey_recipe(recipe)
    cache = ArchiveCache(cache_dir or recipe.cache_dir, offline=offline, refresh=refresh)
    storage = storage_options(recipe.detect.get("storage", {}))
    found = {spec.name: survey_images(spec, prefer=recipe.prefer, noise=recipe.noise,
                                      cloud=recipe.cloud, bucket=recipe.bucket,
                                      mast_url=recipe.service, storage_options=storage,
                                      cache=cache) for spec in recipe.surveys}
    out = Path(output_dir).expanduser() if output_dir else recipe.output_dir
    out.mkdir(parents=True, exist_ok=True)
    config = _detect_config(recipe.detect, {n: _survey_entry(f) for n, f in found.items()})
    detect_path = out / "detect.toml"
    _write(detect_path, f"# written by dask-phot fetch from {recipe.source}\n"
           + tomli_w.dumps(config))
    try:
        load_detect_config(detect_path, environ={})  # the written file must load as it stands
    except ConfigError as exc:
        raise RecipeError(f"{recipe.source}: the detect configuration written to "
                          f"{detect_path} does not load: {exc}") from None
    bands = {"bands": _bands(found)}
    if "storage" in recipe.detect:
        bands["storage"] = dict(recipe.detect["storage"])
    bands_path = out / "bands.toml"
    _write(bands_path, f"# written by dask-phot fetch from {recipe.source}: every survey's "
           "mosaics per band\n" + tomli_w.dumps(bands))
    manifest = {"recipe": recipe.source, "cache": str(cache.directory), "offline": offline,
                "prefer": recipe.prefer, "noise": recipe.noise,
                "surveys": {n: {"spec": {"proposal_id": list(f_spec.proposal_id),
                                         "hlsp": f_spec.hlsp, "instrument": f_spec.instrument,
                                         "filters": list(f_spec.filters)},
                                "choices": found[n].choices,
                                "bands": {b: s.config_entry() | {k: list(v) for k, v in
                                                                 s.extra.items()}
                                          for b, s in found[n].bands.items()}}
                            for n, f_spec in ((s.name, s) for s in recipe.surveys)}}
    manifest_path = out / "surveys.json"
    _write(manifest_path, json.dumps(manifest, indent=1))
    return SurveyFetch(found, detect_path, bands_path, manifest_path)
