"""Preset bands: Spitzer/IRAC, GALEX and unWISE, with their PSF files.

The presets model each PSF out to its wings (``psf_wing_size``), normalised
over the whole file, so their fluxes are total fluxes; the PSF files are
packaged (``dask_phot/data/psf``, provenance in its README.md):

* ``irac1``-``irac4``: golfir's empirical IRAC PSFs (G. Brammer), drizzled at
  0.1"/px from ~500 AORs around Gaia stars (warm mission for ch1/ch2, as
  SPLASH's COSMOS mosaics; cold for ch3/ch4, which flew only then), optical
  PSFs that mosaic pixels sum, centred on the Gaia position (CRPIX);
* ``nuv``, ``fuv``: GALEX's 120x120 PSFs at 1.5"/px, centred on their core's centroid;
* ``w1``-``w3``: the unWISE full-depth PSF models at 2.75"/px; ``w4`` (5.5"/px,
  interpolated onto the 2.75" grid) keeps a cut, normalised stamp, its fluxes
  aperture-corrected (x1.12) to the whole model's light.

The COSMOS notebook's own PSFs (17x17 IRAC PRFs at 0.6"/px, 0.27"/0.45" off
centre for ch1/ch2, holding ~92% of the light; GALEX PSFs cut to 27 pixels
and normalised there) stay available, for parity studies, as the presets
``irac1_notebook`` ... ``fuv_notebook``.

Examples
--------
>>> band = get_band("IRAC1")
>>> band.name, band.pixel_scale, band.psf_size, band.psf_wing_size, round(band.to_ujy, 4)
('irac1', 0.6, 21, 49, 8.4616)
>>> psf = band.load_psf()
>>> psf.size, psf.oversampling, round(psf.encircled(21), 3), round(psf.encircled(49), 3)
(21, 6, 0.931, 0.999)
>>> old = get_band("irac1_notebook").load_psf()
>>> old.size, round(old.sum, 12)
(17, 1.0)
>>> round(get_band("nuv").ab_zeropoint, 2)
20.08
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dask_phot.bands.band import Band, mjysr_to_ujy
from dask_phot.bands.files import BandError

__all__ = ["NOTEBOOK_BANDS", "PRESETS", "get_band"]

#: uJy of 1 nanomaggy (AB): unWISE images are in Vega nanomaggies.
_UJY_PER_NANOMAGGY = 3.631
_SIM_NOTE = "; depth_5sigma_ujy is only a simulator default."


def _irac(ch: int, wavelength: float, fwhm: float, depth: float) -> Band:
    epoch = "warm" if ch <= 2 else "cold"
    return Band(
        name=f"irac{ch}", psf_file=f"irac_ch{ch}_{epoch}_psf.fits", pixel_scale=0.6,
        to_ujy=mjysr_to_ujy(0.6), unit="MJy/sr", cutout_width=10.0, psf_size=21,
        psf_wing_size=49, psf_kind="optical", psf_pixel_scale=0.1, wavelength=wavelength,
        fwhm=fwhm, depth_5sigma_ujy=depth,
        calibration=(f"total flux within golfir's 30\" {epoch}-mission IRAC ch{ch} PSF (the "
                     "PSF is normalised over its 30\" box; the mosaic's MJy/sr is taken as "
                     "IRAC's point-source calibration)"),
        description=(f"Spitzer/IRAC channel {ch} mosaics at 0.6\"/px (COSMOS), with golfir's "
                     f"empirical 0.1\"/px {epoch}-mission PSF: 21-pixel stamps, wings to "
                     f"49 pixels" + _SIM_NOTE),
    )


def _irac_notebook(ch: int, wavelength: float, fwhm: float, depth: float) -> Band:
    return Band(
        name=f"irac{ch}_notebook", psf_file=f"PRF_IRAC_ch{ch}.fits", pixel_scale=0.6,
        to_ujy=mjysr_to_ujy(0.6), unit="MJy/sr", cutout_width=10.0, psf_size=17,
        wavelength=wavelength, fwhm=fwhm, psf_pixel_scale=0.6, depth_5sigma_ujy=depth,
        calibration="flux within the notebook's 17x17 PRF box (~92% of the light for ch1)",
        aperture_correction=1.0,
        description=(f"Spitzer/IRAC channel {ch} with the 17x17 PRF the COSMOS "
                     "forced-photometry notebook uses (parity studies)" + _SIM_NOTE),
    )


def _galex(band: str, psf_file: str, to_ujy: float, wavelength: float, fwhm: float,
           depth: float, *, notebook: bool) -> Band:
    common = dict(psf_file=psf_file, pixel_scale=1.5, to_ujy=to_ujy, unit="count/s",
                  cutout_width=40.0, psf_size=27, wavelength=wavelength, fwhm=fwhm,
                  psf_pixel_scale=1.5, depth_5sigma_ujy=depth)
    if notebook:
        return Band(name=f"{band}_notebook", **common,
                    calibration="flux within the notebook's 40\" (27-pixel) PSF box",
                    aperture_correction=1.0,
                    description=(f"GALEX {band.upper()} with the 120x120 PSF cut to the "
                                 "notebook's 27-pixel cutout around its peak and normalised "
                                 "there (parity studies)" + _SIM_NOTE))
    return Band(
        name=band, **common, psf_wing_size=61, psf_kind="prf", psf_centre="centroid",
        calibration=f"total flux within GALEX's 180\" {band.upper()} PSF image",
        description=(f"GALEX {band.upper()} intensity maps at 1.5\"/px with the 120x120 PSF "
                     "centred on its core: 27-pixel stamps, wings to 61 pixels" + _SIM_NOTE),
    )


#: unWISE W1-W4: (Vega-to-AB offset, wavelength, FWHM, psf_size, wing size, psf scale, depth)
_UNWISE: Mapping[int, tuple[float, float, float, int, int | None, float, float]] = \
    MappingProxyType({
        1: (2.699, 3.4, 6.1, 41, 101, 2.75, 20.0),
        2: (3.339, 4.6, 6.4, 41, 101, 2.75, 30.0),
        3: (5.174, 12.0, 6.5, 61, 161, 2.75, 700.0),
        4: (6.620, 22.0, 12.0, 61, None, 5.5, 5000.0),
    })


def _unwise(w: int) -> Band:
    offset, wavelength, fwhm, size, wing, psf_scale, depth = _UNWISE[w]
    how = (f"cut to {size} px" if wing is None else
           f"{size}-pixel stamps, wings to {wing} pixels")
    return Band(
        name=f"w{w}", psf_file=f"psf_model_w{w}.fits", pixel_scale=2.75,
        to_ujy=_UJY_PER_NANOMAGGY * 10 ** (-0.4 * offset), unit="nanomaggy (Vega)",
        cutout_width=size * 2.75, psf_size=size, psf_wing_size=wing, wavelength=wavelength,
        fwhm=fwhm, psf_pixel_scale=psf_scale, depth_5sigma_ujy=depth,
        calibration=("unWISE Vega nanomaggies, converted to AB uJy with a "
                     f"{offset} mag offset; "
                     + ("the stamp's flux, aperture-corrected to the model's total "
                        "(aperture_correction)" if wing is None else
                        "total flux within the PSF model's 894\" box")),
        description=(f"unWISE W{w} coadds at 2.75\"/px with the Meisner & Schlafly "
                     f"full-depth PSF model, {how}"
                     + (" (the W4 model is at the native 5.5\"/px and is interpolated onto "
                        "the 2.75\" grid)" if w == 4 else "") + _SIM_NOTE),
    )


_IRAC = ((1, 3.6, 1.95, 0.5), (2, 4.5, 2.02, 0.6), (3, 5.8, 1.88, 11.0), (4, 8.0, 1.98, 15.0))
_GALEX = (("nuv", "PSFnuv_faint.fits", 33.73, 0.2267, 5.3, 0.5),
          ("fuv", "PSFfuv.fits", 107.6, 0.1516, 4.2, 0.6))


def _presets() -> dict[str, Band]:
    bands = [
        *(_irac(*a) for a in _IRAC),
        *(_galex(*a, notebook=False) for a in _GALEX),
        *(_unwise(w) for w in (1, 2, 3, 4)),
        *(_irac_notebook(*a) for a in _IRAC),
        *(_galex(*a, notebook=True) for a in _GALEX),
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
