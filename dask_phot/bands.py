"""Imaging bands: PSF, pixel grid and flux calibration of each band.

A :class:`Band` is the small parameter object the COSMOS forced-photometry
notebook kept per band (PRF, cutout width, flux conversion, mosaic pixel
scale), plus what the rest of dask-phot needs to know about the band. Presets
for Spitzer/IRAC, GALEX and unWISE ship with the package, with their PSF files
(``dask_phot/data/psf``, provenance in its README.md); any other band is made
from a PSF file with :meth:`Band.from_psf_file` or from a configuration table
with :func:`dask_phot.config.band_from_config`.

Fluxes are in microjansky: an image value ``v`` (in :attr:`Band.unit`, per
pixel) is ``v * to_ujy`` uJy, and AB magnitudes are ``23.9 - 2.5 log10(uJy)``.

Examples
--------
>>> band = get_band("IRAC1")
>>> band.name, band.pixel_scale, band.psf_size, round(band.to_ujy, 4)
('irac1', 0.6, 17, 8.4616)
>>> psf = band.load_psf()
>>> psf.size, round(psf.sum, 12)
(17, 1.0)
>>> round(get_band("nuv").ab_zeropoint, 2)
20.08
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from dask_phot.psf import Normalize, PixelPSF, PSFError, header_pixel_scale

__all__ = [
    "AB_ZEROPOINT_UJY",
    "NOTEBOOK_BANDS",
    "PRESETS",
    "Band",
    "BandError",
    "flux_to_mag",
    "get_band",
    "locate_psf_file",
    "mjysr_to_ujy",
    "packaged_psf_files",
]

logger = logging.getLogger(__name__)

#: AB magnitude of a 1 uJy source: ``mag = 23.9 - 2.5 log10(flux_uJy)``.
AB_ZEROPOINT_UJY = 23.9
#: Square arcseconds per steradian, as the COSMOS notebook writes it.
_ARCSEC2_PER_SR = 4.254517e10
#: uJy of 1 nanomaggy (AB): unWISE images are in Vega nanomaggies.
_UJY_PER_NANOMAGGY = 3.631
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PSF_PACKAGE = "dask_phot"
_PSF_DIR = ("data", "psf")


class BandError(ValueError):
    """A band definition that cannot be used (the message names the band and key)."""


def mjysr_to_ujy(pixel_scale: float) -> float:
    """Microjansky per pixel of an image in MJy/sr with square pixels of ``pixel_scale``.

    Examples
    --------
    >>> mjysr_to_ujy(0.6) == 1e12 / 4.254517e10 * 0.6**2
    True
    """
    return 1e12 / _ARCSEC2_PER_SR * pixel_scale**2


def flux_to_mag(flux: Any, err: Any) -> tuple[np.ndarray, np.ndarray]:
    """AB magnitudes and their uncertainties from fluxes in microjansky.

    Parameters
    ----------
    flux, err : array_like
        Fluxes and 1-sigma flux uncertainties, in uJy.

    Returns
    -------
    mag, mag_err : ndarray
        ``23.9 - 2.5 log10(flux)`` and ``2.5 / ln(10) * err / flux``; NaN where
        the flux is not finite and positive (a negative flux is kept in the
        flux column, it has no magnitude).

    Examples
    --------
    >>> mag, mag_err = flux_to_mag([1.0, 3631.0, -2.0], [0.1, 0.0, 1.0])
    >>> mag.round(3).tolist(), mag_err.round(4).tolist()
    ([23.9, 15.0, nan], [0.1086, 0.0, nan])
    """
    f = np.asarray(flux, dtype=np.float64)
    e = np.asarray(err, dtype=np.float64)
    good = np.isfinite(f) & (f > 0)
    safe = np.where(good, f, 1.0)
    mag = np.where(good, AB_ZEROPOINT_UJY - 2.5 * np.log10(safe), np.nan)
    mag_err = np.where(good, 2.5 / math.log(10.0) * e / safe, np.nan)
    return mag, mag_err


# ---------------------------------------------------------------------- validation
def _number(where: str, key: str, value: Any, *, optional: bool = False) -> float | None:
    """A finite number > 0 (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not (math.isfinite(float(value)) and float(value) > 0):
        raise BandError(f"{where}: {key} must be a number > 0, got {value!r}")
    return float(value)


def _odd_size(where: str, key: str, value: Any) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < 3 or value % 2 == 0:
        raise BandError(
            f"{where}: {key} must be an odd integer >= 3 (the PSF centre is a pixel), "
            f"got {value!r}"
        )
    return int(value)


def _text(where: str, key: str, value: Any, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise BandError(f"{where}: {key} must be a{'' if empty else ' non-empty'} string, "
                        f"got {value!r}")
    return value


# ---------------------------------------------------------------------- the Band
@dataclass(frozen=True, kw_only=True)
class Band:
    """One imaging band: its PSF, mosaic pixel grid and flux calibration.

    Parameters
    ----------
    name : str
        Band label, used in output column names (``flux_<name>``): a letter,
        then letters, digits or ``_``.
    psf_file : str
        A PSF FITS file: the name of a packaged file (see
        :func:`packaged_psf_files`) or a filesystem path.
    pixel_scale : float
        Mosaic pixel scale, arcsec/pixel.
    to_ujy : float
        Microjansky per image unit per pixel.
    unit : str
        Image unit (``"MJy/sr"``, ``"count/s"``, ``"nanomaggy (Vega)"``...).
    cutout_width : float, optional
        Cutout side in arcsec for the notebook-parity cutout mode; default the
        PSF stamp's width ``psf_size * pixel_scale``.
    psf_size : int
        Odd side of the PSF stamp, in mosaic pixels.
    wavelength : float, optional
        Effective wavelength, micron.
    fwhm : float, optional
        Nominal PSF FWHM, arcsec (documentation and defaults, not used to fit).
    psf_pixel_scale : float, optional
        Pixel scale the PSF file is sampled at; default ``pixel_scale``. When it
        differs, :meth:`load_psf` resamples the PSF onto the mosaic grid.
    psf_normalize : {"sum", "peak", "none"}
        Normalisation of the loaded PSF; forced photometry needs ``"sum"``.
    depth_5sigma_ujy : float, optional
        A typical 5-sigma point-source depth in uJy. Only a default for the
        simulator (:mod:`dask_phot.testing`), not a property of any dataset.
    description : str
        Free text: instrument, provenance.

    Raises
    ------
    BandError
        A value of the wrong type or range; the message names the key.
    """

    name: str
    psf_file: str
    pixel_scale: float
    to_ujy: float = 1.0
    unit: str = ""
    cutout_width: float | None = None
    psf_size: int
    wavelength: float | None = None
    fwhm: float | None = None
    psf_pixel_scale: float | None = None
    psf_normalize: Normalize = "sum"
    depth_5sigma_ujy: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise BandError(
                f"bands.{self.name}: band name must start with a letter and hold only "
                f"letters, digits and '_' (it names output columns), got {self.name!r}"
            )
        where = f"bands.{self.name}"
        psf_file = self.psf_file
        if isinstance(psf_file, os.PathLike):
            psf_file = os.fspath(psf_file)
        values: dict[str, Any] = {
            "psf_file": _text(where, "psf_file", psf_file, empty=False),
            "pixel_scale": _number(where, "pixel_scale", self.pixel_scale),
            "to_ujy": _number(where, "to_ujy", self.to_ujy),
            "unit": _text(where, "unit", self.unit),
            "psf_size": _odd_size(where, "psf_size", self.psf_size),
            "description": _text(where, "description", self.description),
        }
        for key in ("cutout_width", "wavelength", "fwhm", "psf_pixel_scale", "depth_5sigma_ujy"):
            values[key] = _number(where, key, getattr(self, key), optional=True)
        if values["psf_pixel_scale"] is None:
            values["psf_pixel_scale"] = values["pixel_scale"]
        if values["cutout_width"] is None:
            values["cutout_width"] = values["psf_size"] * values["pixel_scale"]
        if self.psf_normalize not in ("sum", "peak", "none"):
            raise BandError(f"{where}: psf_normalize must be 'sum', 'peak' or 'none', "
                            f"got {self.psf_normalize!r}")
        for key, value in values.items():
            object.__setattr__(self, key, value)

    # ------------------------------------------------------------------ calibration
    @property
    def ab_zeropoint(self) -> float:
        """AB zeropoint of the image unit: ``mag = ab_zeropoint - 2.5 log10(value)``."""
        return AB_ZEROPOINT_UJY - 2.5 * math.log10(self.to_ujy)

    # ------------------------------------------------------------------ PSF
    def load_psf(self) -> PixelPSF:
        """The band's PSF on the mosaic grid: ``psf_size`` square, normalised.

        The file is read once per process and parameters (cached). A PSF
        sampled at another pixel scale is resampled with
        :meth:`PixelPSF.from_oversampled` (taking its geometric centre as the
        centre); one on the mosaic grid is used as is when already
        ``psf_size`` square, and otherwise cut to ``psf_size`` around its peak.

        Raises
        ------
        BandError
            The file is missing, unreadable or not a usable PSF.
        """
        where = f"bands.{self.name}"
        source = _locate(self.psf_file, where)
        try:
            return _load_psf(source, _stamp(source), self.pixel_scale, self.psf_pixel_scale,
                             self.psf_size, self.psf_normalize, self.name)
        except PSFError as exc:
            raise BandError(f"{where}: psf_file: {exc}") from exc

    def psf_flux_fraction(self) -> float:
        """Fraction of the PSF file's total flux inside the loaded stamp.

        Normalising a truncated PSF to unit sum makes fitted fluxes those
        within the stamp, lower than total fluxes by this fraction.
        """
        self.load_psf()  # validates, with a clear error
        source = _locate(self.psf_file, f"bands.{self.name}")
        stamp = _stamp(source)
        raw = _load_psf(source, stamp, self.pixel_scale, self.psf_pixel_scale,
                        self.psf_size, "none", self.name)
        return raw.sum / float(_read_psf(source, stamp)[0].sum())

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_psf_file(
        cls,
        name: str,
        path: str | os.PathLike[str],
        *,
        pixel_scale: float,
        psf_pixel_scale: float | None = None,
        to_ujy: float | None = None,
        psf_size: int | None = None,
        **settings: Any,
    ) -> Band:
        """A band from any PSF FITS file and mosaic pixel scale.

        Parameters
        ----------
        name : str
            Band name.
        path : str or path-like
            PSF FITS file (a packaged PSF name, or a path). The first HDU
            holding a 2-D image is used.
        pixel_scale : float
            Mosaic pixel scale, arcsec/pixel.
        psf_pixel_scale : float, optional
            Pixel scale of the PSF file; default from its header (PIXSCALE,
            PIXASEC, CD/CDELT...), else ``pixel_scale``.
        to_ujy : float, optional
            uJy per image unit per pixel; default :func:`mjysr_to_ujy` when
            ``unit="MJy/sr"``, else 1.
        psf_size : int, optional
            Odd stamp size in mosaic pixels; default the smallest odd size
            covering the file's PSF.
        **settings
            Other :class:`Band` fields (``unit``, ``wavelength``...). A missing
            ``fwhm`` is measured on the loaded PSF.

        Raises
        ------
        BandError
            Missing or unusable file, bad values; the message names the key.

        Examples
        --------
        >>> band = Band.from_psf_file("myirac", "PRF_IRAC_ch1.fits", pixel_scale=0.6,
        ...                           unit="MJy/sr")
        >>> band.psf_size, round(band.to_ujy, 4), round(band.fwhm, 1)
        (17, 8.4616, 2.0)
        """
        where = f"bands.{name}"
        psf_file = _text(where, "psf_file", os.fspath(path), empty=False)
        source = _locate(psf_file, where, key="psf_file")
        scale = _number(where, "pixel_scale", pixel_scale)
        try:
            arr, header_scale = _read_psf(source, _stamp(source))
        except PSFError as exc:
            raise BandError(f"{where}: psf_file: {exc}") from exc
        if psf_pixel_scale is None:
            psf_pixel_scale = header_scale if header_scale is not None else scale
        in_scale = _number(where, "psf_pixel_scale", psf_pixel_scale)
        if psf_size is None:
            psf_size = math.ceil(max(arr.shape) * in_scale / scale - 1e-9)
            psf_size += 1 - psf_size % 2
        if to_ujy is None:
            to_ujy = mjysr_to_ujy(scale) if settings.get("unit") == "MJy/sr" else 1.0
        stored = source[1] if source[0] == "package" else str(source[1])
        try:
            band = cls(name=name, psf_file=stored, pixel_scale=scale,
                       psf_pixel_scale=in_scale, to_ujy=to_ujy, psf_size=psf_size, **settings)
        except TypeError as exc:
            raise BandError(f"{where}: {exc}") from exc
        psf = band.load_psf()
        if band.fwhm is None:
            band = replace(band, fwhm=round(psf.fwhm * band.pixel_scale, 3))
        return band

    def as_config(self) -> dict[str, Any]:
        """The band as a configuration table (no ``None``): what
        :func:`dask_phot.config.band_from_config` makes the same band from.

        Examples
        --------
        >>> get_band("w1").as_config()["psf_file"]
        'psf_model_w1.fits'
        """
        return {k: v for k, v in asdict(self).items() if k != "name" and v is not None}


# ---------------------------------------------------------------------- PSF files
@functools.cache
def packaged_psf_files() -> tuple[str, ...]:
    """Names of the PSF FITS files shipped in ``dask_phot/data/psf``."""
    folder = resources.files(_PSF_PACKAGE).joinpath(*_PSF_DIR)
    return tuple(sorted(p.name for p in folder.iterdir() if p.name.endswith(".fits")))


def _locate(
    psf_file: str, where: str, *, key: str = "psf_file", base_dir: str | os.PathLike | None = None
) -> tuple[str, Any]:
    """Resolve a PSF name to ``("package", name)`` or ``("file", absolute Path)``."""
    bare = os.path.basename(psf_file) == psf_file
    if bare and psf_file in packaged_psf_files():
        return ("package", psf_file)
    path = Path(psf_file).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_file():
        return ("file", path.resolve())
    raise BandError(
        f"{where}: {key} {psf_file!r} not found: no file {str(path)!r}"
        f"{'' if not bare else ' and no packaged PSF of that name'}; packaged PSFs: "
        f"{', '.join(packaged_psf_files())}"
    )


def locate_psf_file(psf_file: Any, where: str, *,
                    base_dir: str | os.PathLike[str] | None = None) -> str:
    """A PSF file as a band stores it: a packaged PSF's name, or an absolute path.

    Parameters
    ----------
    psf_file : str
        A packaged PSF name (see :func:`packaged_psf_files`) or a path.
    where : str
        The band (``bands.<name>``) for messages.
    base_dir : path-like, optional
        Directory relative paths are taken from; default the working directory.

    Raises
    ------
    BandError
        Not a non-empty string, or no such packaged PSF or file.
    """
    kind, loc = _locate(_text(where, "psf_file", psf_file, empty=False), where,
                        base_dir=base_dir)
    return loc if kind == "package" else str(loc)


def _stamp(source: tuple[str, Any]) -> tuple[int, int]:
    """Cache key part that changes when a filesystem PSF file is rewritten."""
    if source[0] == "package":
        return (0, 0)
    st = os.stat(source[1])
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _read_psf(source: tuple[str, Any], stamp: tuple[int, int]) -> tuple[np.ndarray, float | None]:
    """Read ``(image, header pixel scale)`` from the first 2-D image HDU of a PSF file."""
    from astropy.io import fits

    kind, loc = source
    label = loc if kind == "package" else str(loc)
    try:
        if kind == "package":
            blob = resources.files(_PSF_PACKAGE).joinpath(*_PSF_DIR, loc).read_bytes()
            opened = fits.open(io.BytesIO(blob))
        else:
            opened = fits.open(loc)
        with opened as hdul:
            hdu = next((h for h in hdul if h.data is not None and h.data.ndim == 2), None)
            if hdu is None:
                raise PSFError(f"{label}: no HDU holds a 2-D image")
            data = np.array(hdu.data, dtype=np.float64)
            scale = header_pixel_scale(hdu.header)
    except OSError as exc:
        raise PSFError(f"{label}: cannot read PSF FITS file ({exc})") from exc
    data.setflags(write=False)
    return data, scale


@functools.lru_cache(maxsize=64)
def _load_psf(
    source: tuple[str, Any],
    stamp: tuple[int, int],
    pixel_scale: float,
    psf_pixel_scale: float,
    psf_size: int,
    normalize: Normalize,
    band: str,
) -> PixelPSF:
    """Pure, cached: the PSF of a band from its file and parameters (raises PSFError)."""
    arr, _ = _read_psf(source, stamp)
    label = source[1] if source[0] == "package" else Path(source[1]).name
    if math.isclose(psf_pixel_scale, pixel_scale, rel_tol=1e-9):
        if arr.shape == (psf_size, psf_size):
            return PixelPSF(arr, pixel_scale, normalize, name=label)
        return PixelPSF.from_array(arr, pixel_scale, size=psf_size, normalize=normalize,
                                   name=label)
    return PixelPSF.from_oversampled(arr, psf_pixel_scale, pixel_scale, size=psf_size,
                                     normalize=normalize, name=label)


# ---------------------------------------------------------------------- presets
def _irac(ch: int, wavelength: float, fwhm: float, depth: float) -> Band:
    return Band(
        name=f"irac{ch}", psf_file=f"PRF_IRAC_ch{ch}.fits", pixel_scale=0.6,
        to_ujy=mjysr_to_ujy(0.6), unit="MJy/sr", cutout_width=10.0, psf_size=17,
        wavelength=wavelength, fwhm=fwhm, psf_pixel_scale=0.6, depth_5sigma_ujy=depth,
        description=(
            f"Spitzer/IRAC channel {ch} mosaics at 0.6\"/px (COSMOS), with the 17x17 "
            "PRF the COSMOS forced-photometry notebook uses; depth_5sigma_ujy is only "
            "a simulator default (S-COSMOS/SPLASH-like)."
        ),
    )


def _galex(band: str, psf_file: str, to_ujy: float, wavelength: float, fwhm: float,
           depth: float) -> Band:
    return Band(
        name=band, psf_file=psf_file, pixel_scale=1.5, to_ujy=to_ujy, unit="count/s",
        cutout_width=40.0, psf_size=27, wavelength=wavelength, fwhm=fwhm,
        psf_pixel_scale=1.5, depth_5sigma_ujy=depth,
        description=(
            f"GALEX {band.upper()} intensity maps at 1.5\"/px; the 120x120 peak-normalised "
            "PSF is cut to the notebook's 40\" cutout (27 px) around its peak and "
            "normalised to sum 1; depth_5sigma_ujy is only a simulator default "
            "(deep-imaging-survey-like)."
        ),
    )


#: unWISE W1-W4: (Vega-to-AB offset, wavelength, FWHM, psf_size, psf_pixel_scale, depth)
_UNWISE: Mapping[int, tuple[float, float, float, int, float, float]] = MappingProxyType({
    1: (2.699, 3.4, 6.1, 41, 2.75, 20.0),
    2: (3.339, 4.6, 6.4, 41, 2.75, 30.0),
    3: (5.174, 12.0, 6.5, 61, 2.75, 700.0),
    4: (6.620, 22.0, 12.0, 61, 5.5, 5000.0),
})


def _unwise(w: int) -> Band:
    offset, wavelength, fwhm, size, psf_scale, depth = _UNWISE[w]
    return Band(
        name=f"w{w}", psf_file=f"psf_model_w{w}.fits", pixel_scale=2.75,
        to_ujy=_UJY_PER_NANOMAGGY * 10 ** (-0.4 * offset), unit="nanomaggy (Vega)",
        cutout_width=size * 2.75, psf_size=size, wavelength=wavelength, fwhm=fwhm,
        psf_pixel_scale=psf_scale, depth_5sigma_ujy=depth,
        description=(
            f"unWISE W{w} coadds at 2.75\"/px (Vega nanomaggies, converted to AB uJy with "
            f"a {offset} mag offset), with the Meisner & Schlafly full-depth PSF model "
            f"cut to {size} px"
            + (" (the W4 model is at the native 5.5\"/px and is interpolated onto the "
               "2.75\" grid)" if w == 4 else "")
            + "; depth_5sigma_ujy is only a simulator default."
        ),
    )


def _presets() -> dict[str, Band]:
    bands = [
        _irac(1, 3.6, 1.95, 0.5), _irac(2, 4.5, 2.02, 0.6),
        _irac(3, 5.8, 1.88, 11.0), _irac(4, 8.0, 1.98, 15.0),
        _galex("nuv", "PSFnuv_faint.fits", 33.73, 0.2267, 5.3, 0.5),
        _galex("fuv", "PSFfuv.fits", 107.6, 0.1516, 4.2, 0.6),
        *(_unwise(w) for w in (1, 2, 3, 4)),
    ]
    return {b.name: b for b in bands}


#: Read-only mapping of preset name -> :class:`Band`.
PRESETS: Mapping[str, Band] = MappingProxyType(_presets())

#: The bands of the COSMOS forced-photometry notebook, in its order.
NOTEBOOK_BANDS: tuple[str, ...] = ("irac1", "irac2", "irac3", "irac4", "nuv", "fuv")


def get_band(name: str | Band) -> Band:
    """A preset band by name (case-insensitive); a :class:`Band` is returned as is.

    Raises
    ------
    BandError
        Unknown name; the message lists the presets.

    Examples
    --------
    >>> get_band("W1").to_ujy == 3.631 * 10 ** (-0.4 * 2.699)
    True
    """
    if isinstance(name, Band):
        return name
    band = PRESETS.get(str(name).lower())
    if band is None:
        raise BandError(f"unknown band {name!r}; known bands: {', '.join(PRESETS)}")
    return band
