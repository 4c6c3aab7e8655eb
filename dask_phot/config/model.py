"""The run configuration: one section class per TOML table, and :class:`RunConfig`.

Each section declares its keys as fields (see :mod:`dask_phot.config.sections`);
the packaged ``dask_phot/data/default.toml`` documents every one of them, with
the defaults written here (a test holds the two together).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from dask_phot.config.checks import (
    NAME,
    epsf_options,
    memory_size,
    number,
    one_of,
    scheduler_address,
    shape_columns,
    sky_value,
    string,
    strings,
)
from dask_phot.config.sections import setting

if TYPE_CHECKING:
    from dask_phot.bands import Band

__all__ = [
    "MAX_CELL_ORDER",
    "BandFiles",
    "BandImages",
    "CellsConfig",
    "ClusterConfig",
    "EngineConfig",
    "OutputConfig",
    "PriorsConfig",
    "RunConfig",
    "StorageConfig",
    "TemplatesConfig",
    "storage_options",
]

#: Deepest HEALPix order of a sky cell.
MAX_CELL_ORDER = 13

NoiseKind = Literal["weight", "uncertainty", "variance", "none"]


@dataclass(frozen=True, kw_only=True)
class PriorsConfig:
    """``[priors]``: the prior-positions catalog (see :func:`dask_phot.priors.read_priors`)."""

    path: str = setting(check=NAME)
    ra_column: str = setting("ra", check=NAME)
    dec_column: str = setting("dec", check=NAME)
    id_column: str = setting("source_id", check=NAME)
    keep_columns: tuple[str, ...] = setting((), check=strings())
    shape_columns: dict[str, str] = setting(factory=dict, check=shape_columns)
    shape_scale: float = setting(1.0, check=number(0, strict=True))

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Input columns the catalog carries: ``keep_columns``, then the shape columns
        (they define the models the fluxes are of)."""
        cols = list(self.keep_columns)
        cols += [c for c in self.shape_columns.values() if c not in cols]
        return tuple(cols)

    def read_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`dask_phot.priors.read_priors` (not the path)."""
        return {"ra_column": self.ra_column, "dec_column": self.dec_column,
                "id_column": self.id_column, "columns": list(self.output_columns)}


@dataclass(frozen=True, kw_only=True)
class BandFiles:
    """The image keys of a ``[bands.<name>]`` table; ``[band_defaults]`` sets them for all."""

    images: tuple[str, ...] = setting((), check=strings(empty=False))
    noise: tuple[str, ...] = setting((), check=strings())
    noise_kind: NoiseKind = setting("weight", check=one_of("weight", "uncertainty", "variance",
                                                           "none"))
    sky: str | float = setting("fit", check=sky_value)
    model: Literal["auto", "point", "choose", "template"] = setting(
        "auto", check=one_of("auto", "point", "choose", "template"))
    psf: Literal["file", "empirical"] = setting("file", check=one_of("file", "empirical"))
    psf_fallback: Literal["none", "preset"] = setting("none", check=one_of("none", "preset"))
    psf_stars: str = ""
    epsf: dict[str, Any] = setting(factory=dict, check=epsf_options)


@dataclass(frozen=True)
class BandImages:
    """``[bands.<name>]``: one band's images and how to treat them.

    ``noise_kind`` is ``"none"`` whenever no noise files are given; ``sky`` is
    ``"fit"``, ``"clipped"``, ``"none"`` or a fixed sky level in image units;
    ``model`` is ``"auto"`` (Sersic models where the priors give shapes, point
    sources elsewhere), ``"point"`` (every source a point source) or ``"choose"``
    (as ``"auto"``, and a source without a shape becomes a round galaxy where its
    fit prefers one: :mod:`dask_phot.engine.choice`) or ``"template"`` (each
    source's light in the sharp mosaic of ``[templates]``, :mod:`dask_phot.templates`;
    sources without a segment as with ``"auto"``).

    ``psf`` is ``"file"`` (the band's ``psf_file``) or ``"empirical"``: an effective
    PSF built from each mosaic's stars before the cells run
    (:mod:`dask_phot.pipeline.psfs`), with ``epsf`` the options of
    :class:`~dask_phot.psf.empirical.EPSFOptions`, ``psf_stars`` a reference star catalog ("":
    the priors) and ``psf_fallback`` what to do where it cannot be built.
    ``mosaic_psfs`` holds the ePSFs once built (one per mosaic; not configuration).
    """

    name: str
    band: Band
    images: tuple[str, ...]
    noise: tuple[str, ...] = ()
    noise_kind: NoiseKind = "none"
    sky: str | float = "fit"
    model: str = "auto"
    psf: str = "file"
    psf_fallback: str = "none"
    psf_stars: str = ""
    epsf: dict[str, Any] = field(default_factory=dict)
    mosaic_psfs: tuple[Any, ...] = field(default=(), compare=False)

    def _radii(self) -> tuple[float, float, float]:
        """``(h, w, allowance)`` in arcsec: the fitted stamp's and the wings' half-widths
        (``w = 0`` without wings) and the final fit's radius, ``max(h sqrt(2), 2 FWHM)``
        (the half-diagonal: a target's whole stamp is fitted)."""
        scale = self.band.pixel_scale
        h = self.band.psf_size // 2 * scale
        wing = self.band.psf_wing_size or self.band.psf_size
        w = wing // 2 * scale if wing > self.band.psf_size else 0.0
        fwhm = self.band.fwhm if self.band.fwhm else h
        return h, w, max(h * math.sqrt(2.0), 2.0 * fwhm)

    @property
    def margin_arcsec(self) -> float:
        """The cell margin this band needs, in arcsec (see :meth:`fit_zones`).

        With the fitted stamp's half-width ``h`` (``psf_size``), the final fit's radius
        ``a = max(h sqrt(2), 2 FWHM)`` and, for a PSF with wings, their half-width ``w``:
        ``h + a`` without wings (irac1_notebook: 11.6"), and ``h + a + (w + h)`` with
        them, so that every source whose wings reach the final fit's pixels is itself
        measured in full by the first fit. For irac1 (``h = 10``, ``w = 24`` pixels of
        0.6", FWHM 1.95"): ``(10 + 10 sqrt(2) + 24 + 10) * 0.6 = 34.9"``; nuv (13 and 30
        pixels of 1.5"): 111.6".

        The reaches ``h`` and ``w`` are half-widths, not the half-diagonals of the square
        stamps: a stamp's corners beyond ``h`` hold less light than its edges (nuv: 4.5e-4
        of the peak against 8.7e-4; the wing stamp's 1e-6 against 8e-5), light every fit
        already leaves out just beyond them (the first fit models no wings). Measured on
        nuv and irac1 against one fit of the whole mosaic, the half-diagonals' larger
        margins (146.4", 45.8") give the same differences (``tests/test_pipeline.py``);
        the final fit's radius ``a`` is what sets them (nuv, 99% of fluxes: within 0.3
        sigma with its 18 pixels, within 0.03 with the 64 of a 180" margin).
        """
        h, w, a = self._radii()
        return h + a + (w + h if w else 0.0)

    def fit_zones(self, margin_arcsec: float) -> tuple[float, float]:
        """Radii (arcsec) around a cell's primary sources of the pixels its two fits use.

        The first fit uses the pixels within ``margin - h`` (no unmodelled source's
        stamp reaches them); the final fit, after the wings of the first fit's
        fluxes are subtracted, those within ``margin - h - (w + h)`` (its sources'
        wings come from sources measured in full by the first). Without wings both
        are ``margin - h``.
        """
        h, w, _ = self._radii()
        first = margin_arcsec - h
        return first, first - (w + h if w else 0.0)


@dataclass(frozen=True, kw_only=True)
class CellsConfig:
    """``[cells]``: HEALPix partitioning (see :mod:`dask_phot.cells`)."""

    order: int | Literal["auto"] = setting(
        "auto", check=number(0, hi=MAX_CELL_ORDER, integer=True, auto=True))
    rows_per_partition: int = setting(10000, check=number(1, integer=True))
    margin_arcsec: float | Literal["auto"] = setting("auto", check=number(0, auto=True))
    read_merge_gap: int | Literal["auto"] = setting(
        "auto", check=number(0, integer=True, auto=True))
    read_max_overread: float = setting(1.5, check=number(1))
    read_latency: float = setting(0.03, check=number(0))
    read_row_cache: str | int = setting("768MiB", check=memory_size)
    memory_budget: str | int = setting("1GiB", check=memory_size)

    def read_costs(self) -> Any:
        """The :class:`~dask_phot.images.ReadCosts` of ``read_max_overread`` and
        ``read_latency`` (used when ``read_merge_gap = "auto"``)."""
        from dask_phot.images import ReadCosts

        return ReadCosts(latency=self.read_latency, max_overread=self.read_max_overread)

    def row_cache_bytes(self) -> int:
        """``read_row_cache`` in bytes."""
        from dask.utils import parse_bytes

        value = "768MiB" if self.read_row_cache == "auto" else self.read_row_cache
        return int(value) if isinstance(value, int) else int(parse_bytes(value))

    def memory_budget_bytes(self) -> int:
        """``memory_budget`` in bytes (``"auto"``: 1 GiB)."""
        from dask.utils import parse_bytes

        value = "1GiB" if self.memory_budget == "auto" else self.memory_budget
        return int(value) if isinstance(value, int) else int(parse_bytes(value))

    def merge_gap(self) -> int | None:
        """``read_merge_gap`` in bytes, None for ``"auto"``."""
        return None if self.read_merge_gap == "auto" else int(self.read_merge_gap)


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """``[engine]``: keyword options of :func:`dask_phot.forced_photometry`."""

    mode: Literal["scene", "cutout"] = "scene"
    fit_sky: bool = True
    sky_model: Literal["constant", "plane"] = "constant"
    fit_positions: bool | Literal["source", "global"] = setting(
        False, check=one_of(False, True, "source", "global"))
    max_shift: float = setting(0.5, check=number(0, strict=True))
    position_snr: float = setting(5.0, check=number(0))
    high_chi2: float = setting(5.0, check=number(0, strict=True))
    mismatch_sigma: float = setting(3.0, check=number(0, strict=True))
    max_stamp: int = setting(255, check=number(3, integer=True))
    backend: Literal["dask_phot", "tractor"] = setting(
        "dask_phot", check=one_of("dask_phot", "tractor"))

    def forced_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of :func:`dask_phot.forced_photometry`.

        Examples
        --------
        >>> EngineConfig(fit_sky=False).forced_kwargs()["fit_sky"]
        False
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class TemplatesConfig:
    """``[templates]``: the sharp mosaic whose light models the bands with
    ``model = "template"`` (see :mod:`dask_phot.templates` and
    :func:`dask_phot.templates.cell.fit_band_templates`).

    ``segmap`` labels each sharp pixel with the priors ``id_column`` of the
    source that owns it (0: none); ``psf`` is the sharp image's PSF (FITS),
    sampled at ``psf_pixel_scale`` arcsec (0: the mosaic's own scale). The
    defaults (``grow`` 1.2", the mosaic taken as background subtracted) are
    :class:`dask_phot.templates.TemplateOptions`'s: the cheapest setting that
    meets the accuracy targets on a crowded simulated pair.
    """

    image: str = ""
    segmap: str = ""
    psf: str = ""
    psf_pixel_scale: float = setting(0.0, check=number(0))
    grow: float = setting(1.2, check=number(0))
    hires_background: Literal["local", "none"] = setting(
        "none", check=one_of("local", "none"))
    register: bool = True
    margin_arcsec: float | Literal["auto"] = setting("auto", check=number(0, auto=True))

    @property
    def given(self) -> bool:
        """The three files are named."""
        return bool(self.image and self.segmap and self.psf)

    def fit_options(self) -> dict[str, Any]:
        """Keyword options of :func:`dask_phot.templates.fit_templates`."""
        return {"grow": self.grow, "hires_background": self.hires_background,
                "register": self.register}


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """``[output]``: where the HATS catalog is written."""

    path: str = setting("catalog", check=NAME)
    catalog_name: str = setting("dask_phot", check=string(pattern=r"^[A-Za-z0-9_.-]+$"))


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """``[cluster]``: the Dask cluster to run on (``dask-phot run`` and ``detect``)."""

    scheduler: str = setting("local", check=scheduler_address)
    n_workers: int = setting(2, check=number(1, integer=True))
    threads_per_worker: int = setting(2, check=number(1, integer=True))
    fits_per_worker: int | str = setting("auto", check=number(0, integer=True, auto=True))
    memory_limit: str | int = setting("4GiB", check=memory_size)
    retries: int = setting(2, check=number(0, integer=True))
    performance_report: str = ""


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """The keys of ``[storage]`` that dask-phot checks; the table may hold any other
    fsspec ``storage_options`` (``key``, ``secret``, ``client_kwargs``...)."""

    anon: bool = True
    endpoint_url: str | None = setting(None, check=NAME)


@dataclass(frozen=True)
class RunConfig:
    """A complete, validated run configuration (see :func:`dask_phot.config.load_config`).

    ``source`` (the file, or ``"<dict>"``) and ``base`` (the file's folder; ``""``
    for a dict) are informative and not compared.
    """

    priors: PriorsConfig
    bands: tuple[BandImages, ...]
    cells: CellsConfig
    engine: EngineConfig
    output: OutputConfig
    cluster: ClusterConfig
    storage: dict[str, Any] = field(default_factory=dict)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)
    source: str = field(default="<dict>", compare=False)
    base: str = field(default="", compare=False)

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names in configuration order."""
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> BandImages:
        """One band's settings by name."""
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(f"{self.source}: no band {name!r}; bands: {', '.join(self.band_names)}")

    @property
    def margin_arcsec(self) -> float:
        """The cell margin in arcsec; ``"auto"`` is the largest of the bands'
        :attr:`BandImages.margin_arcsec` (34.9" with irac1 alone)."""
        if self.cells.margin_arcsec != "auto":
            return float(self.cells.margin_arcsec)
        return max(b.margin_arcsec for b in self.bands)

    def band_margins(self) -> dict[str, float]:
        """Each band's margin in arcsec: ``[cells] margin_arcsec`` when given, else the
        band's own (:attr:`BandImages.margin_arcsec`; the cells carry the largest, and
        each band models only the sources within its own)."""
        if self.cells.margin_arcsec != "auto":
            return {b.name: float(self.cells.margin_arcsec) for b in self.bands}
        return {b.name: b.margin_arcsec for b in self.bands}

    #: The sections that change results: :meth:`config_hash` covers them.
    SCIENCE_SECTIONS: ClassVar[tuple[str, ...]] = ("priors", "bands", "cells", "engine",
                                                   "templates")

    def to_dict(self) -> dict[str, Any]:
        """Plain, TOML/JSON-serialisable dict; ``load_config(cfg.to_dict()) == cfg``.

        Bands are written in full (every :class:`~dask_phot.bands.Band` field),
        so the record does not depend on the presets of a later version.
        """
        def plain(obj: Any) -> Any:
            if isinstance(obj, dict):
                return copy.deepcopy(obj)
            return {f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v
                    for f in fields(obj)}

        out = {f.name: plain(getattr(self, f.name)) for f in fields(self)
               if f.name not in ("bands", "source", "base")}
        out["bands"] = {b.name: {"images": list(b.images), "noise": list(b.noise),
                                 "noise_kind": b.noise_kind, "sky": b.sky, "model": b.model,
                                 **_psf_keys(b), **b.band.as_config()} for b in self.bands}
        return {f.name: out[f.name] for f in fields(self) if f.name in out}

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without credentials: what outputs and logs may record.

        ``[storage]`` loses its keys, secrets, tokens, profiles and passwords
        (:func:`dask_phot.storage.redact`).
        """
        from dask_phot.storage import redact

        out = self.to_dict()
        out["storage"] = redact(out["storage"])
        return out

    def config_hash(self) -> str:
        """SHA-256 (hex) of the sections that change results (:attr:`SCIENCE_SECTIONS`).

        Output, cluster and storage settings do not change it, so a run can
        resume with another cluster or output location.
        """
        d = self.to_dict()
        science = {k: d[k] for k in self.SCIENCE_SECTIONS}
        blob = json.dumps(science, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def _psf_keys(band: BandImages) -> dict[str, Any]:
    """A band's PSF keys for :meth:`RunConfig.to_dict`: none with the band's own PSF file
    (so that configurations without ePSFs keep their hash)."""
    if band.psf == "file" and not band.psf_stars and not band.epsf \
            and band.psf_fallback == "none":
        return {}
    return {"psf": band.psf, "psf_fallback": band.psf_fallback, "psf_stars": band.psf_stars,
            "epsf": copy.deepcopy(band.epsf)}


def storage_options(cfg: RunConfig | Mapping[str, Any] | Any) -> dict[str, Any]:
    """fsspec ``storage_options`` from ``[storage]``: ``endpoint_url`` in s3fs form.

    Parameters
    ----------
    cfg : RunConfig, DetectConfig or mapping
        A configuration (anything with a ``storage`` table), or that table.

    Examples
    --------
    >>> storage_options({"anon": False, "endpoint_url": "http://127.0.0.1:5000"})
    {'anon': False, 'client_kwargs': {'endpoint_url': 'http://127.0.0.1:5000'}}
    """
    table = cfg if isinstance(cfg, Mapping) else cfg.storage
    opts = copy.deepcopy(dict(table))
    endpoint = opts.pop("endpoint_url", None)
    if endpoint:
        client = dict(opts.get("client_kwargs") or {})
        client.setdefault("endpoint_url", endpoint)
        opts["client_kwargs"] = client
    return opts
