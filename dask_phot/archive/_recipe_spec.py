"""The ``[archive]`` table of a recipe: its keys, their checks and defaults.

Used by :func:`dask_phot.archive.recipe.load_recipe`. Unknown keys and bad values
raise :class:`RecipeError` naming the file and the dotted key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dask_phot.archive.heasarc import HEASARC_VO_URL
from dask_phot.archive.mast import GALEX_FILTERS, MAST_URL
from dask_phot.archive.region import SkyRegion
from dask_phot.archive.sia import IRSA_SIA_URL
from dask_phot.archive.tap import IRSA_TAP_URL
from dask_phot.config import ConfigError

__all__ = ["ImagesSpec", "PriorsSpec", "RecipeError", "XraySpec", "check_archive"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_REQUIRED = object()
_NOISE_KINDS = ("uncertainty", "variance", "weight")


class RecipeError(ConfigError):
    """An unusable archive recipe: the message names the file and the dotted key."""


class _Bad(Exception):
    """A rejected value (the caller adds the file and key)."""


# ---------------------------------------------------------------------- value checks
def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"must be a string, got {v!r}")
    return v.strip()


def _text(v: Any) -> str:
    v = _string(v)
    if not v:
        raise _Bad("must be a non-empty string")
    return v


def _strings(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
        raise _Bad(f"must be a list of non-empty strings, got {v!r}")
    return tuple(x.strip() for x in v)


def _names(v: Any) -> tuple[str, ...]:
    out = (v.strip(),) if isinstance(v, str) and v.strip() else _strings(v)
    if not out:
        raise _Bad("must not be empty")
    return out


def _number(v: Any, *, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or (v <= 0 if positive else v < 0):
        raise _Bad(f"must be a number {'> 0' if positive else '>= 0'}, got {v!r}")
    return float(v)


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _Bad(f"must be an integer >= 0, got {v!r}")
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"must be true or false, got {v!r}")
    return v


def _pair(v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2 or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in v):
        raise _Bad(f"must be a list of two numbers, got {v!r}")
    return float(v[0]), float(v[1])


def _one_of(*allowed: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in allowed:
            raise _Bad(f"must be one of {', '.join(map(repr, allowed))}, got {v!r}")
        return v
    return check


def _table_value(v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise _Bad(f"must be a table, got {v!r}")
    return v


Spec = Mapping[str, tuple[Callable[[Any], Any], Any]]


def _check(value: Any, where: str, label: str, spec: Spec) -> dict[str, Any]:
    """Check one table against ``spec`` (key -> (check, default or _REQUIRED))."""
    if not isinstance(value, Mapping):
        raise RecipeError(f"{label}: {where}: must be a table, got {value!r}")
    for key in value:
        if key not in spec:
            close = difflib.get_close_matches(str(key), list(spec), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"{label}: {where}.{key}: unknown key{hint}; known keys: "
                              f"{', '.join(spec)}")
    out: dict[str, Any] = {}
    for key, (check, default) in spec.items():
        if key in value:
            try:
                out[key] = check(value[key])
            except _Bad as exc:
                raise RecipeError(f"{label}: {where}.{key}: {exc}") from None
        elif default is _REQUIRED:
            raise RecipeError(f"{label}: {where}.{key}: required")
        else:
            out[key] = default
    return out


# ---------------------------------------------------------------------- sections
_ARCHIVE: Spec = {
    "center": (_pair, _REQUIRED), "radius_arcmin": (_number, None),
    "box_arcmin": (_pair, None), "output_dir": (_text, "fetched"), "cache_dir": (_string, ""),
    "services": (_table_value, {}), "priors": (_table_value, _REQUIRED),
    "images": (_table_value, {}), "xray": (_table_value, None),
}
_SERVICES: Spec = {"tap": (_text, IRSA_TAP_URL), "sia": (_text, IRSA_SIA_URL),
                   "mast": (_text, MAST_URL), "heasarc": (_text, HEASARC_VO_URL)}
_PRIORS: Spec = {
    "service": (_string, ""), "table": (_text, _REQUIRED), "columns": (_strings, _REQUIRED),
    "where": (_string, ""), "ra_column": (_text, "ra"), "dec_column": (_text, "dec"),
    "id_column": (_string, ""), "max_piece_radius_arcmin": (_number, 12.0),
    "maxrec": (_count, 0),
}
_SIA: Spec = {
    "source": (_one_of("sia"), "sia"), "service": (_string, ""),
    "collection": (_text, _REQUIRED), "bandpass": (_names, None),
    "science": (_text, "science"), "noise": (_string, "uncertainty"),
    "noise_kind": (_one_of(*_NOISE_KINDS), "uncertainty"), "coverage": (_string, "coverage"),
    "cloud": (_flag, True),
}
_GALEX: Spec = {
    "source": (_one_of("galex"), "galex"), "service": (_string, ""),
    "filter": (_one_of(*(f for f, _ in GALEX_FILTERS.values())), None),
    "min_exptime": (_number, 40000.0), "deepest_only": (_flag, True),
}
_XRAY: Spec = {
    "service": (_string, ""), "catalog": (_text, _REQUIRED),
    "radius_arcmin": (lambda v: _number(v, positive=False), 0.0),
    "columns": (lambda v: v.strip() if isinstance(v, str) and v.strip() else _strings(v), "*"),
    "keep": (_strings, ()), "maxrec": (_count, 100_000),
}


def _service_name(kind: str, url: str) -> str:
    """``"IRSA TAP"``, ``"IRSA SIA"``, ``"MAST"``, ``"HEASARC"``; the kind for other hosts."""
    if kind in ("TAP", "SIA"):
        return f"IRSA {kind}" if "irsa.ipac.caltech.edu" in url else kind
    return kind


@dataclass(frozen=True)
class PriorsSpec:
    """``[archive.priors]``: the TAP query of the priors (see ``query_priors``)."""

    service: str
    table: str
    columns: tuple[str, ...]
    where: str = ""
    ra_column: str = "ra"
    dec_column: str = "dec"
    id_column: str = ""
    max_piece_radius_arcmin: float = 12.0
    maxrec: int = 0

    @property
    def service_name(self) -> str:
        """Name of the service in messages."""
        return _service_name("TAP", self.service)


@dataclass(frozen=True)
class ImagesSpec:
    """``[archive.images.<band>]``: where one band's images come from."""

    band: str
    source: str
    service: str
    collection: str = ""
    bandpass: tuple[str, ...] = ()
    science: str = "science"
    noise: str = "uncertainty"
    noise_kind: str = "uncertainty"
    coverage: str = "coverage"
    cloud: bool = True
    galex_band: str = ""
    min_exptime: float = 40000.0
    deepest_only: bool = True

    @property
    def service_name(self) -> str:
        """Name of the service in messages."""
        return _service_name("SIA" if self.source == "sia" else "MAST", self.service)

    def group_key(self) -> tuple[Any, ...]:
        """Bands with the same key are found by one query."""
        if self.source == "sia":
            return ("sia", self.service, self.collection, self.science, self.noise,
                    self.noise_kind, self.coverage, self.cloud)
        return ("galex", self.service, self.min_exptime, self.deepest_only)


@dataclass(frozen=True)
class XraySpec:
    """``[archive.xray]``: the HEASARC catalog to fetch (see ``xray_catalog``)."""

    service: str
    catalog: str
    radius_arcmin: float = 0.0
    columns: str | tuple[str, ...] = "*"
    keep: tuple[str, ...] = ()
    maxrec: int = 100_000

    @property
    def service_name(self) -> str:
        """Name of the service in messages."""
        return _service_name("HEASARC", self.service)


def _images(band: str, table: Any, services: Mapping[str, str], label: str) -> ImagesSpec:
    where = f"archive.images.{band}"
    if not _NAME_RE.match(band):
        raise RecipeError(f"{label}: {where}: band names are letters, digits and _")
    if not isinstance(table, Mapping):
        raise RecipeError(f"{label}: {where}: must be a table, got {table!r}")
    source = table.get("source", "galex" if band.lower() in GALEX_FILTERS else "sia")
    if source not in ("sia", "galex"):
        raise RecipeError(f"{label}: {where}.source: must be 'sia' or 'galex', got {source!r}")
    if source == "sia":
        v = _check(table, where, label, _SIA)
        return ImagesSpec(band, "sia", v["service"] or services["sia"], v["collection"],
                          v["bandpass"] or (band.upper(),), v["science"], v["noise"],
                          v["noise_kind"], v["coverage"], v["cloud"])
    v = _check(table, where, label, _GALEX)
    galex = {f: b for b, (f, _) in GALEX_FILTERS.items()}
    if v["filter"] is None and band.lower() not in GALEX_FILTERS:
        raise RecipeError(f"{label}: {where}.filter: required for a band not named "
                          f"{' or '.join(GALEX_FILTERS)} ('NUV' or 'FUV')")
    galex_band = galex[v["filter"]] if v["filter"] else band.lower()
    return ImagesSpec(band, "galex", v["service"] or services["mast"], galex_band=galex_band,
                      min_exptime=v["min_exptime"], deepest_only=v["deepest_only"])


def _region(v: Mapping[str, Any], label: str) -> SkyRegion:
    if (v["radius_arcmin"] is None) == (v["box_arcmin"] is None):
        raise RecipeError(f"{label}: archive: give radius_arcmin (a cone) or box_arcmin = "
                          "[width, height] (a box), not both or neither")
    ra, dec = v["center"]
    try:
        if v["radius_arcmin"] is not None:
            return SkyRegion.cone(ra, dec, v["radius_arcmin"] / 60.0)
        width, height = v["box_arcmin"]
        return SkyRegion.box(ra, dec, width / 60.0, height / 60.0)
    except ValueError as exc:
        raise RecipeError(f"{label}: archive: {exc}") from None


def check_archive(table: Any, label: str) -> dict[str, Any]:
    """Check a recipe's ``[archive]`` table.

    Returns
    -------
    dict
        ``region`` (SkyRegion), ``output_dir`` and ``cache_dir`` (str),
        ``priors`` (PriorsSpec), ``images`` (tuple of ImagesSpec), ``xray``
        (XraySpec or None).
    """
    v = _check(table, "archive", label, _ARCHIVE)
    services = _check(v["services"], "archive.services", label, _SERVICES)
    p = _check(v["priors"], "archive.priors", label, _PRIORS)
    priors = PriorsSpec(**{**p, "service": p["service"] or services["tap"]})
    images = tuple(_images(b, t, services, label) for b, t in v["images"].items())
    xray = None
    if v["xray"] is not None:
        x = _check(v["xray"], "archive.xray", label, _XRAY)
        xray = XraySpec(**{**x, "service": x["service"] or services["heasarc"]})
    return {"region": _region(v, label), "output_dir": v["output_dir"],
            "cache_dir": v["cache_dir"], "priors": priors, "images": images, "xray": xray}
