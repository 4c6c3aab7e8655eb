"""``dask-phot fetch RECIPE.toml``: fetch a recipe's data from the archives, write a config.

Two kinds of recipe: an ``[archive]`` recipe (priors, image lists and an X-ray
catalog for forced photometry: ``examples/cosmos.toml``) and a survey recipe
(``[mast.surveys.<name>]``: JWST/HST mosaics of several surveys for detection and
cutouts: ``examples/jwst_surveys.toml``). It prints what it fetched and the
command that uses the result; an archive failure is one line on stderr (exit 2).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def _summary(result: Any) -> list[str]:
    lines = [f"priors: {result.n_priors} sources ({result.n_pieces} "
             f"quer{'y' if result.n_pieces == 1 else 'ies'}) -> {result.priors_path}"]
    for band, found in result.images.items():
        noise = f", {len(found.noise)} {found.noise_kind} map(s)" if found.noise else ""
        extra = "".join(f", {len(v)} {k}" for k, v in found.extra.items())
        lines.append(f"{band}: {len(found.images)} image(s){noise}{extra}")
    if result.xray_path is not None:
        lines.append(f"x-ray catalog: {result.n_xray} sources -> {result.xray_path}")
    lines += [f"wrote {result.config_path} (details in {result.manifest_path.name})",
              f"run it with: dask-phot run {result.config_path}"]
    return lines


def _survey_summary(result: Any) -> list[str]:
    lines = []
    for name, found in result.found.items():
        for band, s in found.bands.items():
            choice = found.choices[band]
            lines.append(f"{name} {band}: {len(s.images)} {choice['used']} mosaic(s) "
                         f"({choice['s3_urls']} s3:// and {choice['https_urls']} https URLs; "
                         f"level 3: {choice['level3_observations']}, HLSP: "
                         f"{choice['hlsp_observations']})")
    lines += [f"wrote {result.detect_config}, {result.bands_path.name} (band list) and "
              f"{result.manifest_path.name}",
              f"detect with: dask-phot detect {result.detect_config}"]
    return lines


def _cmd_fetch(args: argparse.Namespace) -> int:
    from dask_phot.archive import RecipeError, fetch_recipe, load_recipe
    from dask_phot.archive.survey_recipe import (
        fetch_surveys,
        is_survey_recipe,
        load_survey_recipe,
    )

    if is_survey_recipe(args.recipe):
        if args.radius_arcmin is not None:
            raise RecipeError(f"{args.recipe}: --radius-arcmin: a survey recipe has no region")
        survey = load_survey_recipe(args.recipe)
        done = fetch_surveys(survey, offline=args.offline, refresh=args.refresh,
                             cache_dir=args.cache_dir, output_dir=args.out)
        print("\n".join(_survey_summary(done)))
        return 0

    overrides = {}
    if args.radius_arcmin is not None:
        overrides = {"archive.radius_arcmin": args.radius_arcmin, "archive.box_arcmin": None}
    recipe = load_recipe(args.recipe, overrides=overrides)
    result = fetch_recipe(recipe, offline=args.offline, refresh=args.refresh,
                          cache_dir=args.cache_dir, output_dir=args.out)
    print("\n".join(_summary(result)))
    return 0


def register(subparsers: Any) -> None:
    """Add the ``fetch`` subcommand to the ``dask-phot`` parser."""
    p = subparsers.add_parser(
        "fetch", help="fetch priors and image lists from the archives (TAP, SIA, MAST, "
                      "HEASARC) for a recipe and write a ready config.toml")
    p.add_argument("recipe", help="recipe TOML file: examples/cosmos.toml (priors and images "
                                  "for a run) or examples/jwst_surveys.toml (survey mosaics "
                                  "for detect and cutouts)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--offline", action="store_true",
                      help="use cached replies only; fail if one is missing")
    mode.add_argument("--refresh", action="store_true",
                      help="ask the services again, replacing cached replies")
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default: the recipe's archive.output_dir)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="reply cache (default: archive.cache_dir, else "
                        "$DASK_PHOT_CACHE/archive or ~/.cache/dask-phot/archive)")
    p.add_argument("--radius-arcmin", type=float, metavar="R",
                   help="search radius around archive.center (replaces the recipe's region)")
    p.set_defaults(func=_cmd_fetch)
