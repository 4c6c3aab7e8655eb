"""The :class:`Band`: one band's PSF, pixel grid and flux calibration.

Fluxes are in microjansky: an image value ``v`` (in :attr:`Band.unit`, per
pixel) is ``v * to_ujy`` uJy, and AB magnitudes are ``23.9 - 2.5 log10(uJy)``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from dask_phot.bands.files import (
    BandError,
    file_stamp,
    load_band_psf,
    locate_source,
    read_psf_file,
)
from dask_phot.psf import Normalize, OversampledPSF, PixelPSF, PSFError

__all__ = ["AB_ZEROPOINT_UJY", "Band", "flux_to_mag", "mjysr_to_ujy"]

logger = logging.getLogger(__name__)

#: AB magnitude of a 1 uJy source: ``mag = 23.9 - 2.5 log10(flux_uJy)``.
AB_ZEROPOINT_UJY = 23.9
#: Square arcseconds per steradian, as the COSMOS notebook writes it.
_ARCSEC2_PER_SR = 4.254517e10
#: uJy of 1 nanomaggy (AB): unWISE images are in Vega nanomaggies.
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


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
        Pixel scale the PSF file is sampled at; default ``pixel_scale``.
    psf_normalize : {"sum", "peak", "none"}
        Normalisation of a PSF cut to ``psf_size`` (no wings); forced photometry
        needs ``"sum"``.
    psf_wing_size : int, optional
        Odd side, in mosaic pixels, of the box out to which the PSF's light is
        modelled. With it (or with an optical PSF finer than the mosaic) the
        whole file is the PSF, normalised over all of it: the fit uses
        ``psf_size`` stamps and subtracts the wings between ``psf_size`` and
        ``psf_wing_size`` (see :mod:`dask_phot.engine.wings`), so fluxes are
        total fluxes. Without it the PSF is cut to ``psf_size`` and normalised
        there (fluxes are then those within that box: the COSMOS notebook's way).
    psf_kind : {"prf", "optical"}
        ``"prf"``: the file is a pixel response (a mosaic pixel is a sample of
        it, as for PRFs and stars' effective PSFs); ``"optical"``: a PSF finer
        than the mosaic whose pixels sum the file's fine pixels they cover.
    psf_centre : {"file", "centroid"}
        The PSF's centre: the file's reference pixel (CRPIX) or geometric
        centre, or the centroid of its core.
    calibration : str
        Which flux calibration the band's PSF and conversion follow.
    aperture_correction : float or "auto"
        Factor from fitted to total fluxes (:meth:`flux_correction`). ``"auto"``:
        1 when the PSF's light is modelled in full (wings, or an oversampled PSF
        normalised over its file), else, for a PSF cut to ``psf_size`` and
        normalised there, the inverse of the fraction of the file's light in that
        stamp (:meth:`psf_flux_fraction`). A number: that factor (1.0 keeps
        fluxes within the stamp, as the COSMOS notebook reports them).
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
    psf_wing_size: int | None = None
    psf_kind: Literal["prf", "optical"] = "prf"
    psf_centre: Literal["file", "centroid"] = "file"
    depth_5sigma_ujy: float | None = None
    calibration: str = ""
    aperture_correction: float | Literal["auto"] = "auto"
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
            "calibration": _text(where, "calibration", self.calibration),
        }
        if self.psf_wing_size is not None:
            values["psf_wing_size"] = _odd_size(where, "psf_wing_size", self.psf_wing_size)
            if values["psf_wing_size"] < values["psf_size"]:
                raise BandError(f"{where}: psf_wing_size ({self.psf_wing_size}) must be >= "
                                f"psf_size ({self.psf_size})")
        for key, allowed in (("psf_kind", ("prf", "optical")),
                             ("psf_centre", ("file", "centroid"))):
            if getattr(self, key) not in allowed:
                raise BandError(f"{where}: {key} must be one of {allowed}, "
                                f"got {getattr(self, key)!r}")
        for key in ("cutout_width", "wavelength", "fwhm", "psf_pixel_scale", "depth_5sigma_ujy"):
            values[key] = _number(where, key, getattr(self, key), optional=True)
        if values["psf_pixel_scale"] is None:
            values["psf_pixel_scale"] = values["pixel_scale"]
        if values["cutout_width"] is None:
            values["cutout_width"] = values["psf_size"] * values["pixel_scale"]
        if self.aperture_correction != "auto":
            values["aperture_correction"] = _number(where, "aperture_correction (or \"auto\")",
                                                    self.aperture_correction)
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
    def load_psf(self) -> PixelPSF | OversampledPSF:
        """The band's PSF (read once per process and parameters).

        With ``psf_wing_size`` (or an optical PSF finer than the mosaic): an
        :class:`~dask_phot.psf.OversampledPSF` of the whole file, ``psf_size``
        stamps and wings out to ``psf_wing_size``. Otherwise a
        :class:`~dask_phot.psf.PixelPSF` of ``psf_size``, normalised: a file on
        the mosaic grid is cut to it around its peak, one at another scale is
        resampled with :meth:`PixelPSF.from_oversampled` (its geometric centre
        taken as the centre).

        Raises
        ------
        BandError
            The file is missing, unreadable or not a usable PSF.
        """
        where = f"bands.{self.name}"
        source = locate_source(self.psf_file, where)
        try:
            return load_band_psf(source, file_stamp(source), self.pixel_scale,
                                 self.psf_pixel_scale, self.psf_size, self.psf_normalize,
                                 self.psf_wing_size, self.psf_kind, self.psf_centre)
        except PSFError as exc:
            raise BandError(f"{where}: psf_file: {exc}") from exc

    def psf_flux_fraction(self) -> float:
        """Fraction of the PSF file's light in the stamps the fit uses (``psf_size``).

        A PSF cut to its stamp and normalised there makes fitted fluxes those
        within the stamp, lower than total fluxes by this fraction; a band with
        wings fits the same stamps but models the rest (its fluxes are total).
        """
        psf = self.load_psf()  # validates, with a clear error
        if isinstance(psf, OversampledPSF):
            return psf.encircled(psf.size)
        source = locate_source(self.psf_file, f"bands.{self.name}")
        stamp = file_stamp(source)
        raw = load_band_psf(source, stamp, self.pixel_scale, self.psf_pixel_scale,
                            self.psf_size, "none", None, self.psf_kind, self.psf_centre)
        return raw.sum / float(read_psf_file(source, stamp)[0].sum())

    def flux_correction(self) -> float:
        """The factor from fitted fluxes to the band's total fluxes (its aperture correction).

        See ``aperture_correction``; ``"auto"`` corrects a PSF cut to its stamp and
        normalised there (``psf_normalize = "sum"``, no wings) by the file's light
        beyond the stamp, and leaves every other PSF's fluxes as fitted.

        Examples
        --------
        >>> from dask_phot.bands import get_band
        >>> get_band("irac1").flux_correction(), get_band("irac1_notebook").flux_correction()
        (1.0, 1.0)
        >>> round(get_band("w4").flux_correction(), 3), get_band("nuv_notebook").flux_correction()
        (1.122, 1.0)
        """
        if self.aperture_correction != "auto":
            return float(self.aperture_correction)
        if isinstance(self.load_psf(), OversampledPSF) or self.psf_normalize != "sum":
            return 1.0
        return 1.0 / self.psf_flux_fraction()

    def calibration_record(self) -> dict[str, Any]:
        """What a catalog records of the band's calibration: the text, the factor from
        image units to uJy and the aperture correction applied to its fluxes."""
        return {"calibration": self.calibration, "unit": self.unit, "to_ujy": self.to_ujy,
                "aperture_correction": self.flux_correction(), "psf_file": self.psf_file}

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
        >>> wide = Band.from_psf_file("ch1", "irac_ch1_warm_psf.fits", pixel_scale=0.6,
        ...                           psf_size=21, psf_wing_size=49, psf_kind="optical")
        >>> wide.psf_pixel_scale, round(wide.psf_flux_fraction(), 3)
        (0.1, 0.931)
        """
        where = f"bands.{name}"
        psf_file = _text(where, "psf_file", os.fspath(path), empty=False)
        source = locate_source(psf_file, where, key="psf_file")
        scale = _number(where, "pixel_scale", pixel_scale)
        try:
            arr, header_scale, _ = read_psf_file(source, file_stamp(source))
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
        >>> from dask_phot.bands import get_band
        >>> get_band("w1").as_config()["psf_file"]
        'psf_model_w1.fits'
        """
        return {k: v for k, v in asdict(self).items() if k != "name" and v is not None}


