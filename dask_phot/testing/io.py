"""Write a simulated field as FITS mosaics and a Parquet prior catalog."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from astropy.io import fits

from dask_phot.testing.field import SimulatedField
from dask_phot.testing.image import SimulatedImage

__all__ = ["write_field"]

NoiseProduct = Literal["weight", "uncertainty"]


def _header(image: SimulatedImage, seed: int) -> fits.Header:
    header = image.wcs.to_header() if image.wcs is not None else fits.Header()
    sky = image.sky if np.ndim(image.sky) == 0 else float(np.mean(image.sky))
    header["BUNIT"] = (image.unit, "image unit")
    header["BAND"] = (image.band, "band name")
    header["PIXSCALE"] = (image.psf.pixel_scale, "[arcsec/pixel] pixel scale")
    header["SKYLEVEL"] = (float(sky), "mean sky level added, image units")
    header["TOUJY"] = (image.to_ujy, "microJansky per (image unit x pixel)")
    if "depth_5sigma_ujy" in image.meta:
        header["DEPTH5"] = (float(image.meta["depth_5sigma_ujy"]), "[uJy] 5-sigma point depth")
    header["SIMSEED"] = (str(seed), "dask_phot.testing root seed")
    header["ORIGIN"] = "dask_phot.testing"
    return header


def write_field(
    field: SimulatedField,
    outdir: str | os.PathLike[str],
    *,
    noise_product: NoiseProduct = "weight",
    write_psf: bool = True,
    dtype: type[np.floating] = np.float32,
    overwrite: bool = True,
) -> dict[str, Path]:
    """Write each band's image, noise product and PSF as FITS, and the priors as Parquet.

    Parameters
    ----------
    field : SimulatedField
        The simulation.
    outdir : path-like
        Directory (created if needed).
    noise_product : {"weight", "uncertainty"}
        ``<band>_wht.fits`` (inverse variance, 0 where masked) or ``<band>_unc.fits``
        (standard deviation, NaN where masked).
    write_psf : bool
        Also write ``<band>_psf.fits`` (with ``PIXSCALE``), readable by
        :meth:`dask_phot.psf.PixelPSF.from_fits`.
    dtype : numpy floating type
        Pixel type of the images (float32 like most mosaics).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict of str to Path
        ``"priors"`` and ``"<band>_sci"``, ``"<band>_wht"`` or ``"<band>_unc"``,
        ``"<band>_psf"``.
    """
    if noise_product not in ("weight", "uncertainty"):
        raise ValueError(f"noise_product must be 'weight' or 'uncertainty', got {noise_product!r}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, image in field.images.items():
        header = _header(image, field.seed)
        paths[f"{name}_sci"] = out / f"{name}_sci.fits"
        fits.PrimaryHDU(image.data.astype(dtype), header).writeto(
            paths[f"{name}_sci"], overwrite=overwrite
        )
        noise_header = header.copy()
        if noise_product == "weight":
            key, data = f"{name}_wht", image.weight
            unit = f"({image.unit})**-2" if image.unit else ""
            noise_header["BUNIT"] = (unit, "inverse variance")
        else:
            key, data = f"{name}_unc", image.sigma
            noise_header["BUNIT"] = (image.unit, "1-sigma uncertainty")
        paths[key] = out / f"{key}.fits"
        fits.PrimaryHDU(data.astype(dtype), noise_header).writeto(paths[key], overwrite=overwrite)
        if write_psf:
            psf_header = fits.Header()
            psf_header["PIXSCALE"] = (image.psf.pixel_scale, "[arcsec/pixel]")
            psf_header["BAND"] = name
            paths[f"{name}_psf"] = out / f"{name}_psf.fits"
            fits.PrimaryHDU(np.asarray(image.psf.array, np.float64), psf_header).writeto(
                paths[f"{name}_psf"], overwrite=overwrite
            )
    paths["priors"] = out / "priors.parquet"
    field.priors.to_parquet(paths["priors"], index=False)
    return paths
