"""All aperture measurements of a set of sources in one call (what the detect pipeline uses)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.aperture._common import column_suffix, positions
from dask_phot.aperture.circular import aperture_photometry, radial_fwhm
from dask_phot.aperture.kron import kron_photometry
from dask_phot.aperture.psfcorr import aperture_corrections
from dask_phot.aperture.units import add_physical_fluxes
from dask_phot.psf import PixelPSF

__all__ = ["measure_sources"]


def measure_sources(
    data: Any,
    x: Any,
    y: Any,
    *,
    shape: tuple[Any, Any, Any] | None = None,
    segmap: np.ndarray | None = None,
    seg_id: Any = None,
    background: Any = None,
    rms: Any = None,
    weight: Any = None,
    mask: Any = None,
    gain: float | None = None,
    radii: Sequence[float] = (2.0, 4.0, 6.0, 8.0, 10.0),
    annulus: tuple[float, float] | None = (10.0, 15.0),
    psf: PixelPSF | None = None,
    to_ujy: float | None = None,
    kron_factor: float = 2.5,
    min_kron_radius: float = 3.5,
    min_diameter: float = 3.5,
) -> pd.DataFrame:
    """Aperture fluxes, FWHM, Kron fluxes, aperture corrections and physical units.

    Parameters
    ----------
    data : array_like
        2-D image.
    x, y : array_like
        0-based positions.
    shape : (a, b, theta), optional
        Source ellipses (e.g. from :func:`dask_phot.detect.detect_sources`); without
        them there are no Kron columns.
    segmap, seg_id : optional
        Segmentation map and each source's label: other sources are masked in
        Kron apertures, and every source in the background annuli.
    background, rms, weight, mask, gain, radii, annulus
        See :func:`~dask_phot.aperture.aperture_photometry`.
    psf : PixelPSF, optional
        The image's PSF: adds ``apcorr_<r>`` and point-source-corrected
        ``flux_apcorr_<r>``, ``flux_err_apcorr_<r>``.
    to_ujy : float, optional
        MicroJansky per (image unit x pixel) (:func:`~dask_phot.aperture.flux_conversion`):
        adds ``flux_ujy_*``, ``mag_*`` for every flux.
    kron_factor, min_kron_radius, min_diameter
        See :func:`~dask_phot.aperture.kron_photometry`.

    Returns
    -------
    pandas.DataFrame
        ``x``, ``y``, ``fwhm``, then the aperture, Kron, corrected and physical columns.

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> from dask_phot.testing import simulate_image
    >>> psf = gaussian_psf(3.0)
    >>> im = simulate_image((64, 64), [31.3], [30.6], [5000.0], psf, seed=0, sigma=0.5)
    >>> t = measure_sources(im.data, [31.3], [30.6], rms=0.5, psf=psf, to_ujy=0.01)
    >>> round(float(t["flux_apcorr_4"][0]) / 5000.0, 2), round(float(t["mag_apcorr_4"][0]), 2)
    (1.0, 19.65)
    """
    xa, ya = positions(x, y)
    ann_mask = None if segmap is None else np.asarray(segmap) > 0
    table = pd.DataFrame({"x": xa, "y": ya})
    bkg = 0.0 if background is None else background
    table["fwhm"] = radial_fwhm(data, xa, ya, background=bkg, mask=mask)
    aper = aperture_photometry(data, xa, ya, radii=radii, annulus=annulus, background=background,
                               rms=rms, weight=weight, mask=mask, annulus_mask=ann_mask,
                               gain=gain)
    table = pd.concat([table, aper], axis=1)
    radii = aper.attrs["aperture_radii"]
    if shape is not None:
        kron = kron_photometry(data, xa, ya, *shape, kron_factor=kron_factor,
                               min_kron_radius=min_kron_radius, min_diameter=min_diameter,
                               background=background, rms=rms, weight=weight, mask=mask,
                               gain=gain, segmap=segmap, seg_id=seg_id)
        table = pd.concat([table, kron], axis=1)
    if psf is not None:
        corr = aperture_corrections(psf, radii, xa, ya, annulus=annulus)
        for j, r in enumerate(radii):
            s = column_suffix(r)
            table[f"apcorr_{s}"] = corr[:, j]
            table[f"flux_apcorr_{s}"] = table[f"flux_aper_{s}"] * corr[:, j]
            table[f"flux_err_apcorr_{s}"] = table[f"flux_err_aper_{s}"] * corr[:, j]
    if to_ujy is not None:
        table = add_physical_fluxes(table, to_ujy)
    table.attrs["aperture_radii"] = list(radii)
    return table
