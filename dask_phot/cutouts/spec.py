"""What a cutout run makes: the size rule, the reads, and the colour composites.

Each source's cutout is a square on the sky whose side follows its extent:
``clip(scale x 2 x extent, min_size, max_size)`` arcsec, where the extent is a
catalog column (the Kron aperture's semi-major axis ``extent_arcsec`` written by
``dask-phot detect``), rounded up to an odd number of pixels in each band so the
source sits on the central pixel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["COLOUR_METHODS", "ColourSpec", "CutoutSpec", "cutout_size_arcsec", "load_band_list",
           "odd_pixels", "spec_hash"]

#: Colour composites :mod:`dask_phot.cutouts.colour` can make.
COLOUR_METHODS = ("lupton", "asinh")


@dataclass(frozen=True)
class CutoutSpec:
    """The size rule and the reads of a cutout run.

    Parameters
    ----------
    size_column : str
        Catalog column holding each source's extent (radius), arcsec.
    scale : float
        Side = ``scale x 2 x extent`` (so 2 shows twice the source's diameter).
    min_size, max_size : float
        Bounds on the side, arcsec (also used when the extent is missing).
    max_gap : int
        Bytes read through between two rows of boxes to save a request
        (:func:`dask_phot.images.read_boxes`); 0 reads only the boxes' bytes.
    partition_size : int
        Sources per partition (the unit of work on the cluster and of resuming).
    """

    size_column: str = "extent_arcsec"
    scale: float = 2.0
    min_size: float = 3.0
    max_size: float = 30.0
    max_gap: int = 16384
    partition_size: int = 500

    def __post_init__(self) -> None:
        if not (0 < self.min_size <= self.max_size and self.scale > 0):
            raise ValueError(f"need 0 < min_size <= max_size and scale > 0, got {self}")
        if self.max_gap < 0 or self.partition_size < 1:
            raise ValueError(f"need max_gap >= 0 and partition_size >= 1, got {self}")


@dataclass(frozen=True)
class ColourSpec:
    """Colour composites of three bands (:mod:`dask_phot.cutouts.colour`).

    Parameters
    ----------
    bands : (str, str, str)
        Red, green and blue bands.
    methods : tuple of {"lupton", "asinh"}
        Composites to write; the first is the ``png`` column of the index, the
        others ``png_<method>`` (the contact sheet shows them side by side).
        ``"lupton"``: Lupton et al. (2004), asinh of the summed intensity with the
        colour kept; ``"asinh"``: asinh of each band with a common white point.
    noise_level : float
        Fraction of full scale the background noise (1 sigma) is shown at: it
        sets the linear stretch from the bands' noise.
    max_noise_level : float
        For sources too faint to reach full scale at ``noise_level``: how bright
        the noise may show (their peak at full scale while the noise stays below).
    white : float
        Multiple of the source's peak shown at full scale (Lupton's Q, or the
        asinh white point, follow from it).
    stretch, q : float, optional
        Fixed Lupton stretch (image units after calibration) and Q, instead of
        choosing them per source.
    """

    bands: tuple[str, str, str]
    methods: tuple[str, ...] = ("lupton",)
    noise_level: float = 0.04
    max_noise_level: float = 0.1
    white: float = 1.0
    stretch: float | None = None
    q: float | None = None

    def __post_init__(self) -> None:
        if len(self.bands) != 3:
            raise ValueError(f"colour needs three bands (red, green, blue), got {self.bands}")
        bad = [m for m in self.methods if m not in COLOUR_METHODS]
        if bad or not self.methods:
            raise ValueError(f"colour methods must be among {COLOUR_METHODS}, got "
                             f"{list(self.methods)}")
        if not (0 < self.noise_level <= self.max_noise_level < 1 and self.white > 0):
            raise ValueError(f"need 0 < noise_level < 1 and white > 0, got {self}")


def cutout_size_arcsec(extent: Any, spec: CutoutSpec = CutoutSpec()) -> np.ndarray:
    """Side of each source's cutout, arcsec.

    Examples
    --------
    >>> cutout_size_arcsec([0.1, 2.0, 100.0, np.nan]).tolist()
    [3.0, 8.0, 30.0, 3.0]
    """
    ext = np.asarray(extent, dtype=np.float64)
    side = np.clip(spec.scale * 2.0 * ext, spec.min_size, spec.max_size)
    return np.where(np.isfinite(side), side, spec.min_size)


def odd_pixels(side_arcsec: float, pixel_scale: float) -> int:
    """The odd number of pixels that covers ``side_arcsec`` (at least 1).

    Examples
    --------
    >>> odd_pixels(3.0, 0.04), odd_pixels(3.0, 0.1)
    (75, 31)
    """
    n = max(1, math.ceil(side_arcsec / pixel_scale - 1e-9))
    return n if n % 2 else n + 1


def spec_hash(*parts: Any) -> str:
    """A digest of what a run makes (specs, bands and their mosaics): resuming keys on it."""
    def plain(x: Any) -> Any:
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x
    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_band_list(path: str | os.PathLike[str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Each band's mosaics, and the storage options, from a band list TOML file.

    A band list (``bands.toml``, written by ``dask-phot fetch`` from a survey
    recipe) has a ``[bands.<name>]`` table per band with ``images`` (and
    ``noise``, ``noise_kind``, which cutouts do not read) and an optional
    ``[storage]`` table (fsspec options, as in a run configuration).

    Raises
    ------
    ConfigError
        Unreadable file, unknown keys, a band without images.
    """
    from dask_phot.config import ConfigError, Provenance, read_toml, storage_options
    from dask_phot.config.checks import strings

    data, label, base = read_toml(path, what="band list")
    origin = Provenance(label)
    origin.known("", data, ("bands", "storage"), what="table")
    bands = origin.table("bands", data.get("bands", {}))
    if not bands:
        raise ConfigError(f"{label}: bands: at least one [bands.<name>] table is required")
    images: dict[str, list[str]] = {}
    for name, value in bands.items():
        t = origin.table(f"bands.{name}", value)
        origin.known(f"bands.{name}", t, ("images", "noise", "noise_kind"))
        if "images" not in t:
            origin.fail(f"bands.{name}.images", "required", here=True)
        found = origin.check(f"bands.{name}.images", t["images"], strings(empty=False))
        images[str(name)] = [u if "://" in u or os.path.isabs(u) else str(base / u)
                             for u in found]
    storage = origin.table("storage", data.get("storage", {}))
    return images, storage_options(dict(storage))
