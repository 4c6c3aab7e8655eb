"""``[bands.<name>]`` tables: a band's images and, optionally, the band's definition.

A band table holds the image keys of :class:`~dask_phot.config.model.BandFiles`
(``images``, ``noise``, ``noise_kind``, ``sky``) and the fields of
:class:`~dask_phot.bands.Band` that define or override the band (``preset``,
``psf_file``, ``pixel_scale``, ``to_ujy``...). A table named after a preset
with no definition keys is that preset. :func:`band_from_config` makes a
:class:`~dask_phot.bands.Band` from the definition keys alone (the band's own
checks judge the values).

Examples
--------
>>> band = band_from_config("deep1", {"preset": "irac1", "depth_5sigma_ujy": 0.2})
>>> band.psf_file, band.depth_5sigma_ujy
('irac_ch1_warm_psf.fits', 0.2)
>>> band_from_config("x", {"psf_file": "PSFfuv.fits", "pixel_scal": 1.5})
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
dask_phot.config.ConfigError: bands.x.pixel_scal: unknown key; known keys: ... (did you mean 'pixel_scale'?)
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from dask_phot.bands import PRESETS, Band, BandError, get_band, locate_psf_file
from dask_phot.config.model import BandFiles, BandImages
from dask_phot.config.sections import Provenance, build_section, section_keys

__all__ = ["BAND_DEFINITION_KEYS", "BAND_TABLE_KEYS", "band_from_config", "band_images"]

logger = logging.getLogger(__name__)

#: Keys of a band table that define the band: the :class:`~dask_phot.bands.Band`
#: fields (but its name, the table's) and ``preset``.
BAND_DEFINITION_KEYS: tuple[str, ...] = (
    *(f.name for f in dataclasses.fields(Band) if f.name != "name"), "preset")
#: Every key a ``[bands.<name>]`` table may hold.
BAND_TABLE_KEYS: tuple[str, ...] = (*section_keys(BandFiles), *BAND_DEFINITION_KEYS)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _preset_values(where: str, preset: Any, settings: Mapping[str, Any],
                   origin: Provenance) -> dict[str, Any]:
    """A preset's settings to start from; ``to_ujy`` is dropped when it must follow a new
    pixel area (an MJy/sr preset given a new ``pixel_scale`` and no ``to_ujy``)."""
    if not isinstance(preset, str):
        origin.fail(f"{where}.preset", f"must be a string, got {preset!r}")
    try:
        base = get_band(preset)
    except BandError as exc:
        origin.fail(f"{where}.preset", str(exc))
    values = base.as_config()
    if "pixel_scale" in settings and "to_ujy" not in settings and base.unit == "MJy/sr":
        values.pop("to_ujy")
        logger.info("%s: to_ujy recomputed for pixel_scale %r", where, settings["pixel_scale"])
    return values


def band_from_config(
    name: str, table: Mapping[str, Any], *, base_dir: str | os.PathLike[str] | None = None,
    origin: Provenance | None = None,
) -> Band:
    """A band from its definition keys, e.g. a ``[bands.<name>]`` TOML table.

    Parameters
    ----------
    name : str
        Band name (the table's key).
    table : mapping
        :class:`~dask_phot.bands.Band` fields (``psf_file`` and ``pixel_scale``
        required), or ``preset = "<name>"`` plus the fields to override. When a
        preset in MJy/sr gets a new ``pixel_scale`` and no ``to_ujy``,
        ``to_ujy`` follows the new pixel area.
    base_dir : path-like, optional
        Directory that relative ``psf_file`` paths are taken from (the
        configuration file's); default the working directory.
    origin : Provenance, optional
        Where the table came from, for messages.

    Raises
    ------
    ConfigError
        Unknown keys, missing keys, bad values or a missing/unusable PSF file;
        the message names ``bands.<name>`` and the key.
    """
    where = f"bands.{name}"
    origin = origin or Provenance("")
    settings = origin.table(where, table)
    origin.known(where, settings, BAND_DEFINITION_KEYS)
    preset = settings.pop("preset", None)
    values = {} if preset is None else _preset_values(where, preset, settings, origin)
    values.update(settings)
    for key in ("psf_file", "pixel_scale"):
        if key not in values:
            origin.fail(f"{where}.{key}", f"required (or give preset = '<name>', one of "
                                          f"{', '.join(PRESETS)})", here=True)
    try:
        path = locate_psf_file(values.pop("psf_file"), where, base_dir=base_dir)
        return Band.from_psf_file(name, path, **values)
    except (BandError, TypeError) as exc:
        raise origin.error(f"{origin.where(where)}: {exc}".removeprefix(": ")) from None


def band_images(name: str, value: Any, defaults: BandFiles, origin: Provenance) -> BandImages:
    """One ``[bands.<name>]`` table, its image keys over ``[band_defaults]``."""
    key = f"bands.{name}"
    if not _NAME_RE.match(str(name)):
        origin.fail(key, "band name must start with a letter and hold only letters, digits "
                         "and '_' (it names output columns)")
    table = origin.table(key, value)
    origin.known(key, table, BAND_TABLE_KEYS)
    if "images" not in table:
        origin.fail(f"{key}.images", "required (paths, globs or URLs of the band's images)")
    file_keys = {k: v for k, v in table.items() if k not in BAND_DEFINITION_KEYS}
    files = build_section(BandFiles, file_keys, key=key, origin=origin)
    files = dataclasses.replace(defaults, **{k: getattr(files, k) for k in file_keys})
    if files.noise and files.noise_kind == "none":
        origin.fail(f"{key}.noise_kind", "is 'none' but noise files are given")
    if len(files.noise) not in (0, 1, len(files.images)):
        origin.fail(f"{key}.noise", f"must list one file per image ({len(files.images)}) or "
                                    f"one glob, got {len(files.noise)}")
    definition = {k: v for k, v in table.items() if k in BAND_DEFINITION_KEYS}
    if not definition and name in PRESETS:
        band = PRESETS[name]
    else:
        if "preset" not in definition and name.lower() in PRESETS:
            definition = {"preset": name.lower(), **definition}
        if "preset" not in definition and not {"psf_file", "pixel_scale"} <= definition.keys():
            origin.fail(key, f"not a preset band ({', '.join(PRESETS)}): give "
                             f"preset = '<name>' or psf_file and pixel_scale")
        band = band_from_config(name, definition, origin=origin)
    return BandImages(name=name, band=band, images=files.images, noise=files.noise,
                      noise_kind=files.noise_kind if files.noise else "none", sky=files.sky,
                      model=files.model, psf=files.psf, psf_fallback=files.psf_fallback,
                      psf_stars=files.psf_stars, epsf=dict(files.epsf))
