"""Simulated images written in the file layouts of JWST ``i2d`` and HST ``drz`` products.

The layouts follow the pipelines' documented products (the JWST pipeline's
"Resampled 2-D data: i2d" product description; drizzlepac's SCI/WHT/CTX output):

* JWST ``i2d`` (``calwebb_image3``): an empty primary HDU holding the product's
  metadata (``TELESCOP``, ``INSTRUME``, ``FILTER``, ``PUPIL``, ``PROGRAM``...), then
  ``SCI`` (float32, MJy/sr, the WCS and ``PHOTMJSR``, ``PHOTUJA2``, ``PIXAR_SR``,
  ``PIXAR_A2``), ``ERR`` (float32, 1-sigma), ``CON`` (int32 context, one plane
  per 32 inputs: bit *i* set where input *i* contributes), ``WHT`` (float32,
  inverse-variance weight), ``VAR_POISSON``, ``VAR_RNOISE``, ``VAR_FLAT``
  (float32, (MJy/sr)^2), ``HDRTAB`` (a table of the inputs' keywords) and
  ``ASDF`` (the data model's tree as bytes in a one-cell table);
* HST ``drz`` (AstroDrizzle): primary (``TELESCOP = 'HST'``, ``INSTRUME``,
  ``FILTER1``/``FILTER2``, ``PHOTFLAM``/``PHOTPLAM`` for WFC3, in the ``SCI``
  header for ACS), ``SCI`` (ELECTRONS/S), ``WHT`` (float32) and ``CTX`` (int32
  context), ``HDRTAB``.

:func:`write_i2d` and :func:`write_drz` take the pixels of one band (a
:class:`~dask_phot.testing.SimulatedImage` or arrays) with the number of
exposures per pixel and write the file; ``drop_keywords`` and ``extensions``
leave parts out, to make the bad inputs that tests need.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["I2D_EXTENSIONS", "context_planes", "write_drz", "write_i2d"]

#: The image extensions of an i2d file, in the pipeline's order.
I2D_EXTENSIONS = ("SCI", "ERR", "CON", "WHT", "VAR_POISSON", "VAR_RNOISE", "VAR_FLAT")
_ARCSEC2_PER_SR = (180.0 / math.pi * 3600.0) ** 2
_CAL_VER = "1.14.0"


def context_planes(exposures: np.ndarray, n_inputs: int) -> np.ndarray:
    """An int32 context cube ``(ceil(n / 32), ny, nx)`` from a per-pixel input mask.

    Parameters
    ----------
    exposures : ndarray of bool, shape (n_inputs, ny, nx)
        Which input covers each pixel.
    n_inputs : int

    Examples
    --------
    >>> m = np.zeros((3, 1, 2), bool); m[[0, 2], 0, 0] = True
    >>> context_planes(m, 3)[0].tolist()
    [[5, 0]]
    """
    planes = max(1, math.ceil(n_inputs / 32))
    out = np.zeros((planes, *exposures.shape[1:]), dtype=np.uint32)
    for i in range(n_inputs):
        out[i // 32] |= exposures[i].astype(np.uint32) << np.uint32(i % 32)
    return out.view(np.int32)


def _wcs_cards(wcs: WCS) -> fits.Header:
    """The SCI header's WCS as the JWST pipeline writes it (PC matrix, CDELT, ICRS)."""
    h = wcs.to_header()
    for key in ("DATEREF", "MJDREFI", "MJDREFF", "MJD-OBS", "DATE-OBS"):
        h.remove(key, ignore_missing=True)
    h["RADESYS"] = "ICRS"
    return h


def _primary_jwst(filt: str, program: str, observation: str, n_inputs: int,
                  center: tuple[float, float], name: str) -> fits.Header:
    h = fits.Header()
    rows = [
        ("DATE", "2023-01-15T12:00:00.000", "UTC date file created"),
        ("ORIGIN", "STSCI", "Organization responsible for creating file"),
        ("TIMESYS", "UTC", "principal time system for time-related keywords"),
        ("FILENAME", name, "Name of the file"),
        ("FILETYPE", "image", "Type of data in the file"),
        ("DATAMODL", "ImageModel", "Type of data model"),
        ("TELESCOP", "JWST", "Telescope used to acquire the data"),
        ("CAL_VER", _CAL_VER, "Calibration software version number"),
        ("CRDS_CTX", "jwst_1130.pmap", "CRDS context used to select ref files"),
        ("PROGRAM", program, "JWST program number"),
        ("OBSERVTN", observation, "Observation number"),
        ("VISIT", "001", "Visit number"),
        ("TARGPROP", "SIMULATED", "Proposer's name for the target"),
        ("TARG_RA", center[0], "Target RA at mid time of exposure"),
        ("TARG_DEC", center[1], "Target Dec at mid time of exposure"),
        ("INSTRUME", "NIRCAM", "Instrument used to acquire the data"),
        ("DETECTOR", "MULTIPLE", "Name of detector used to acquire the data"),
        ("MODULE", "MULTIPLE", "NIRCam module: A, B, or MULTIPLE"),
        ("CHANNEL", "LONG" if int(filt[1:4]) > 250 else "SHORT", "Instrument channel"),
        ("FILTER", filt, "Name of the filter element used"),
        ("PUPIL", "CLEAR", "Name of the pupil element used"),
        ("EXP_TYPE", "NRC_IMAGE", "Type of data in the exposure"),
        ("NEXPOSUR", n_inputs, "Total number of exposures in this association"),
        ("EFFEXPTM", 2920.0 * n_inputs / 4, "[s] Effective exposure time"),
        ("S_RESAMP", "COMPLETE", "Resample step"),
        ("S_SKYMAT", "COMPLETE", "Sky Matching step"),
        ("S_OUTLIR", "COMPLETE", "Outlier Detection step"),
        ("S_TWKREG", "COMPLETE", "Tweakreg step"),
        ("ASNTABLE", f"jw{program}-o{observation}_image3_00001_asn.json", "association"),
    ]
    for key, value, comment in rows:
        h[key] = (value, comment)
    return h


def _i2d_sci_header(wcs: WCS, pixar_sr: float, photmjsr: float,
                    center: tuple[float, float]) -> fits.Header:
    h = fits.Header()
    h["EXTNAME"] = ("SCI", "extension name")
    h["BUNIT"] = ("MJy/sr", "physical units of the array values")
    h["PHOTMJSR"] = (photmjsr, "Flux density (MJy/sr) producing 1 cps")
    h["PHOTUJA2"] = (photmjsr * 1e12 / _ARCSEC2_PER_SR,
                     "Flux density (uJy/arcsec2) producing 1 cps")
    h["PIXAR_SR"] = (pixar_sr, "Nominal pixel area in steradians")
    h["PIXAR_A2"] = (pixar_sr * _ARCSEC2_PER_SR, "Nominal pixel area in arcsec^2")
    h["RA_REF"] = (center[0], "[deg] Right ascension of the reference point")
    h["DEC_REF"] = (center[1], "[deg] Declination of the reference point")
    h["ROLL_REF"] = (0.0, "[deg] V3 roll angle at the ref point (N over E)")
    h.extend(_wcs_cards(wcs), unique=True)
    ny, nx = wcs.pixel_shape[1], wcs.pixel_shape[0]
    ra, dec = wcs.pixel_to_world_values(np.array([-0.5, nx - 0.5, nx - 0.5, -0.5]),
                                        np.array([-0.5, -0.5, ny - 0.5, ny - 0.5]))
    poly = " ".join(f"{r:.9f} {d:.9f}" for r, d in zip(ra, dec, strict=True))
    h["S_REGION"] = (f"POLYGON ICRS  {poly}", "spatial extent of the observation")
    return h


def _image(data: np.ndarray, name: str, unit: str | None, dtype: Any) -> fits.ImageHDU:
    hdu = fits.ImageHDU(np.asarray(data).astype(dtype), name=name)
    if unit is not None:
        hdu.header["BUNIT"] = (unit, "physical units of the array values")
    return hdu


def _tables(names: Sequence[str], filt: str) -> list[fits.BinTableHDU]:
    hdrtab = fits.BinTableHDU.from_columns(
        [fits.Column("FILENAME", "40A", array=np.array(list(names))),
         fits.Column("FILTER", "8A", array=np.array([filt] * len(names))),
         fits.Column("EFFEXPTM", "D", array=np.full(len(names), 730.0))], name="HDRTAB")
    tree = (f"#ASDF 1.0.0\n%YAML 1.1\n--- !core/asdf-1.1.0\nmeta: {{filter: {{filter: {filt}"
            "}, instrument: {name: NIRCAM}, model_type: ImageModel}\n...\n").encode()
    asdf = fits.BinTableHDU.from_columns(
        [fits.Column("ASDF_METADATA", f"{len(tree)}B",
                     array=np.frombuffer(tree, np.uint8)[None, :])], name="ASDF")
    return [hdrtab, asdf]


def write_i2d(
    path: str | os.PathLike[str],
    data: np.ndarray,
    sigma: np.ndarray,
    exposures: np.ndarray,
    wcs: WCS,
    *,
    filter: str,
    program: str = "01345",
    observation: str = "001",
    photmjsr: float = 0.25,
    drop_keywords: Collection[str] = (),
    extensions: Collection[str] = I2D_EXTENSIONS,
) -> Path:
    """Write one band as a JWST NIRCam ``i2d`` file.

    Parameters
    ----------
    path : path-like
    data, sigma : ndarray (ny, nx)
        Surface brightness and its 1-sigma noise, MJy/sr; NaN where no input.
    exposures : ndarray of bool (n_inputs, ny, nx)
        Which input exposure covers each pixel (the context).
    wcs : astropy.wcs.WCS
        The mosaic's celestial WCS; ``PIXAR_SR`` is its pixel area.
    filter : str
        NIRCam filter, e.g. ``"F200W"``.
    program, observation : str
        ``PROGRAM`` (5 digits) and ``OBSERVTN`` (3 digits).
    photmjsr : float
        ``PHOTMJSR`` (MJy/sr per DN/s), recorded.
    drop_keywords : collection of str
        Keywords left out of every header (``PIXAR_SR``...).
    extensions : collection of str
        The image extensions to write (leave out ``WHT`` to make a product
        without its weight).

    Returns
    -------
    Path
    """
    ny, nx = data.shape
    wcs = wcs.deepcopy()
    wcs.pixel_shape = (nx, ny)
    scale = np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))
    pixar_sr = float(scale**2 * (math.pi / 180.0) ** 2)
    name = Path(path).name
    n_inputs = exposures.shape[0]
    center = tuple(float(v) for v in wcs.wcs.crval)
    primary = fits.PrimaryHDU(header=_primary_jwst(filter, program, observation, n_inputs,
                                                   center, name))  # type: ignore[arg-type]
    variance = np.square(sigma)
    arrays = {
        "SCI": (data, "MJy/sr", np.float32),
        "ERR": (sigma, "MJy/sr", np.float32),
        "CON": (context_planes(exposures, n_inputs), None, np.int32),
        "WHT": (np.where(np.isfinite(variance) & (variance > 0), 1.0 / variance, 0.0), None,
                np.float32),
        "VAR_POISSON": (0.3 * variance, "(MJy/sr)^2", np.float32),
        "VAR_RNOISE": (0.69 * variance, "(MJy/sr)^2", np.float32),
        "VAR_FLAT": (0.01 * variance, "(MJy/sr)^2", np.float32),
    }
    hdus: list[Any] = [primary]
    for ext in I2D_EXTENSIONS:
        if ext not in extensions:
            continue
        array, unit, dtype = arrays[ext]
        hdu = _image(array, ext, unit, dtype)
        if ext == "SCI":
            hdu.header.extend(_i2d_sci_header(wcs, pixar_sr, photmjsr, center), update=True)
        hdus.append(hdu)
    hdus += _tables([f"jw{program}{observation}001_0210{i % 9 + 1}_0000{i % 4 + 1}_nrca1_cal"
                     ".fits" for i in range(n_inputs)], filter)
    hdul = fits.HDUList(hdus)
    for hdu in hdul:
        for key in drop_keywords:
            hdu.header.remove(key, ignore_missing=True, remove_all=True)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    hdul.writeto(out, overwrite=True)
    return out


def write_drz(
    path: str | os.PathLike[str],
    data: np.ndarray,
    sigma: np.ndarray,
    exposures: np.ndarray,
    wcs: WCS,
    *,
    filter: str,
    instrument: str = "ACS",
    photflam: float = 7.0724e-20,
    photplam: float = 8045.0,
    drop_keywords: Collection[str] = (),
    extensions: Collection[str] = ("SCI", "WHT", "CTX"),
) -> Path:
    """Write one band as an HST AstroDrizzle ``drz`` file (SCI in ELECTRONS/S, WHT, CTX).

    ``PHOTFLAM``/``PHOTPLAM`` go into the SCI header for ACS and into the primary
    header for WFC3 (where the two instruments' products keep them).
    """
    ny, nx = data.shape
    wcs = wcs.deepcopy()
    wcs.pixel_shape = (nx, ny)
    prim = fits.Header()
    prim["TELESCOP"] = ("HST", "telescope used to acquire data")
    prim["INSTRUME"] = (instrument, "identifier for instrument used to acquire data")
    prim["DETECTOR"] = ("WFC" if instrument == "ACS" else "UVIS", "detector in use")
    prim["FILTER1"] = (filter if instrument == "ACS" else "CLEAR1L", "element selected")
    prim["FILTER2"] = ("CLEAR2L" if instrument == "ACS" else filter, "element selected")
    if instrument != "ACS":
        prim["FILTER"] = (filter, "element selected from filter wheel")
    prim["EXPTIME"] = (2028.0, "exposure duration (seconds)--calculated")
    prim["NDRIZIM"] = (exposures.shape[0], "Drizzle, number of images drizzled onto output")
    phot = fits.Header()
    phot["PHOTMODE"] = (f"{instrument} WFC1 {filter} MJD#57000.0", "observation configuration")
    phot["PHOTFLAM"] = (photflam, "inverse sensitivity, ergs/cm2/A/e-")
    phot["PHOTZPT"] = (-21.1, "ST magnitude zero point")
    phot["PHOTPLAM"] = (photplam, "Pivot wavelength (Angstroms)")
    phot["PHOTBW"] = (0.1 * photplam, "RMS bandwidth of filter plus detector")
    sci = fits.ImageHDU(data.astype(np.float32), name="SCI")
    sci.header["BUNIT"] = ("ELECTRONS/S", "brightness units")
    sci.header.extend(wcs.to_header(), update=True)
    (sci.header if instrument == "ACS" else prim).extend(phot, update=True)
    variance = np.square(sigma)
    wht = np.where(np.isfinite(variance) & (variance > 0), 1.0 / variance, 0.0)
    ctx = context_planes(exposures, exposures.shape[0])[0]
    parts = {"SCI": sci, "WHT": _image(wht, "WHT", None, np.float32),
             "CTX": _image(ctx, "CTX", None, np.int32)}
    for name in ("WHT", "CTX"):
        parts[name].header.extend(wcs.to_header(), update=True)
    hdul = fits.HDUList([fits.PrimaryHDU(header=prim),
                         *[parts[e] for e in ("SCI", "WHT", "CTX") if e in extensions]])
    for hdu in hdul:
        for key in drop_keywords:
            hdu.header.remove(key, ignore_missing=True, remove_all=True)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    hdul.writeto(out, overwrite=True)
    return out
