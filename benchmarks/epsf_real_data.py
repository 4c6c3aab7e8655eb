"""ePSFs of the real cutouts in shared/data beside the PSFs that come with them.

* tractor-phot-irac-uds: Spitzer IRAC ch1, 85x85 at 0.6"; given: the upstream 525x525
  oversampled PSF (scale not recorded), the golfir ch1 warm PSF (the ``irac1`` preset,
  its pixel response at 0.6") and the ``irac1_notebook`` preset (17x17 PRF);
* scarlet-cosmos-hst-hsc: HSC grizy cutouts, 50x50 at 0.168"; given: PSF_HSC.fits.

Candidates are the cutouts' own local maxima (no reference catalog comes with them);
the build is tried with options relaxed for a tiny image (1 star, small boxes, no
wings). Prints what was possible: the ePSF's FWHM and curve of growth, or the one-line
reason it could not be built, beside the given PSFs' FWHM and curve of growth.
Run: ``python benchmarks/epsf_real_data.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from scipy.ndimage import maximum_filter

from dask_phot.bands import get_band
from dask_phot.psf import PixelPSF
from dask_phot.psf.empirical import EmpiricalPSFError, EPSFOptions, build_epsf
from dask_phot.psf.wings import curve_of_growth

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
RADII = np.array([1.0, 2.0, 3.0, 5.0])


def peaks(image: np.ndarray, nsigma: float = 10.0) -> pd.DataFrame:
    """Local maxima above ``nsigma`` robust sigmas (the candidates)."""
    med = np.nanmedian(image)
    sig = 1.4826 * np.nanmedian(np.abs(image - med))
    pk = (image == maximum_filter(image, size=5)) & (image > med + nsigma * sig)
    y, x = np.nonzero(pk)
    return pd.DataFrame({"x": x.astype(float), "y": y.astype(float)})


def describe(label: str, arr: np.ndarray, over: int, scale: float) -> str:
    fwhm = PixelPSF.fwhm_of(arr) / over
    cog = curve_of_growth(arr / arr.sum() * over**2, over, RADII)
    return (f"  {label:<34} FWHM {fwhm:5.2f} px = {fwhm * scale:4.2f}\"   EE(r=1,2,3,5 px) "
            + " ".join(f"{v:.3f}" for v in cog))


def try_build(image: np.ndarray, wcs: WCS, name: str, scale: float) -> list[str]:
    cand = peaks(image)
    opts = EPSFOptions(min_stars=1, snr_min=20, core_size=15, sky_width=2, wings="none",
                       grid="none", compact_nsigma=10.0)
    try:
        res = build_epsf(image, wcs=wcs, priors=cand, options=opts, name=name,
                         pixel_scale=scale)
    except EmpiricalPSFError as exc:
        return [f"  ePSF: not built: {exc}"]
    return [describe(f"ePSF ({res.n_stars} star(s))", res.array, res.oversampling, scale),
            f"  ({res.selection.summary()})"]


def irac() -> None:
    d = os.path.join(DATA, "tractor-phot-irac-uds")
    with fits.open(os.path.join(d, "example_image.fits")) as h:
        image, wcs = h[0].data.astype(float), WCS(h[0].header)
    print(f"IRAC ch1 UDS cutout {image.shape}, {len(peaks(image))} peaks above 10 sigma")
    for line in try_build(image, wcs, "example_image.fits", 0.6):
        print(line)
    golfir = get_band("irac1").load_psf()
    print(describe("irac1 preset (golfir ch1 warm, PRF)", golfir.prf, golfir.oversampling, 0.6))
    print(describe("irac1_notebook preset (17x17)", get_band("irac1_notebook").load_psf().array,
                   1, 0.6))
    up = fits.getdata(os.path.join(d, "example_psf.fits")).astype(float)
    print(describe("tractor_phot PSF (scale unknown)", up, 1, 1.0) + "  [its own pixels]")


def hsc() -> None:
    d = os.path.join(DATA, "scarlet-cosmos-hst-hsc")
    psfs = fits.getdata(os.path.join(d, "PSF_HSC.fits")).astype(float)
    for fname in ("Cut_HSC.fits", "Cut_HSC1.fits"):
        with fits.open(os.path.join(d, fname)) as h:
            cube, wcs = h[0].data.astype(float), WCS(h[0].header).celestial
        for b, band in enumerate("grizy"):
            print(f"HSC {fname} {band}: {len(peaks(cube[b]))} peaks above 10 sigma")
            for line in try_build(cube[b], wcs, f"{fname}[{band}]", 0.168):
                print(line)
            print(describe(f"PSF_HSC.fits[{band}]", psfs[b], 1, 0.168))


if __name__ == "__main__":
    irac()
    hsc()
