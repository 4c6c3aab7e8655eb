"""Mosaics whose WCS is not ICRS (issue 16, finding 10): Galactic, FK5 and FK4.

Each mosaic is rendered from ICRS priors whose pixel positions are computed
independently of the pipeline (an explicit frame transform, then the WCS's own
projection ``wcs_world2pix`` in its native coordinates); the pipeline, given the
ICRS priors, must measure every source with honest fluxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import FK4, FK5, Galactic, SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from dask_phot.bands import get_band
from dask_phot.config import load_config
from dask_phot.images import icrs_to_pixel, pixel_to_icrs
from dask_phot.pipeline import read_catalog, run_catalog
from dask_phot.schema import Flag
from dask_phot.testing import pixel_sigma, simulate_image, simulate_sources

#: A field in the Galactic plane, as Spitzer GLIMPSE covers it: (l, b) = (312.3, 0.4).
PLANE = SkyCoord(312.3 * u.deg, 0.4 * u.deg, frame="galactic").icrs
SCALE = 0.6  # arcsec per pixel
FRAMES = {
    "galactic": (Galactic(), ("GLON-CAR", "GLAT-CAR"), {}),
    "fk5": (FK5(equinox="J1980"), ("RA---TAN", "DEC--TAN"), {"RADESYS": "FK5",
                                                            "EQUINOX": 1980.0}),
    "fk4": (FK4(equinox="B1950"), ("RA---TAN", "DEC--TAN"), {"RADESYS": "FK4",
                                                            "EQUINOX": 1950.0}),
}


def _native(ra, dec, frame) -> tuple[np.ndarray, np.ndarray]:
    c = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs").transform_to(frame)
    return c.spherical.lon.deg, c.spherical.lat.deg


def glimpse_like_wcs(name: str, n: int) -> WCS:
    """A mosaic WCS in frame ``name`` centred on :data:`PLANE`, north (of the frame) up."""
    frame, ctype, keys = FRAMES[name]
    lon, lat = _native(np.array([PLANE.ra.deg]), np.array([PLANE.dec.deg]), frame)
    header = fits.Header({"NAXIS": 2, "NAXIS1": n, "NAXIS2": n, "CTYPE1": ctype[0],
                          "CTYPE2": ctype[1], "CRVAL1": float(lon[0]), "CRVAL2": float(lat[0]),
                          "CRPIX1": (n + 1) / 2, "CRPIX2": (n + 1) / 2,
                          "CDELT1": -SCALE / 3600, "CDELT2": SCALE / 3600,
                          "CUNIT1": "deg", "CUNIT2": "deg", "BUNIT": "MJy/sr", **keys})
    return WCS(header)


@pytest.fixture(scope="module")
def priors(tmp_path_factory) -> tuple[Path, object]:
    df = simulate_sources(area_arcmin2=1.5, bands=["irac1"], seed=21,
                          center=(PLANE.ra.deg, PLANE.dec.deg))
    path = tmp_path_factory.mktemp("frames") / "priors.parquet"
    df.to_parquet(path)
    return path, df


def _write_mosaic(name: str, df, out: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    band = get_band("irac1")
    psf = band.load_psf()
    n = int(np.ceil((np.sqrt(1.5) * 60 + 2 * 12) / SCALE))
    wcs = glimpse_like_wcs(name, n)
    lon, lat = _native(df["ra"].to_numpy(), df["dec"].to_numpy(), FRAMES[name][0])
    x, y = wcs.wcs_world2pix(lon, lat, 0)  # the native projection, independently
    sigma = pixel_sigma(band.depth_5sigma_ujy, band.to_ujy, psf)
    image = simulate_image((n, n), x, y, df["flux_true_irac1"].to_numpy() / band.to_ujy, psf,
                           seed=5, sigma=sigma, sky=0.05)
    header = wcs.to_header()
    header["BUNIT"] = "MJy/sr"
    sci, wht = out / f"{name}_sci.fits", out / f"{name}_wht.fits"
    fits.PrimaryHDU(image.data.astype(np.float32), header).writeto(sci)
    fits.PrimaryHDU(image.weight.astype(np.float32), header).writeto(wht)
    return sci, wht, x, y


@pytest.mark.parametrize("name", list(FRAMES))
def test_a_mosaic_in_another_frame_measures_every_source(name, priors, tmp_path):
    path, df = priors
    sci, wht, x, y = _write_mosaic(name, df, tmp_path)
    with fits.open(sci) as hdul:
        wcs = WCS(hdul[0].header)
    # the transform: the independent positions, and what the finding saw
    xp, yp = icrs_to_pixel(wcs, df["ra"], df["dec"])
    np.testing.assert_allclose(xp, x, atol=1e-6)
    np.testing.assert_allclose(yp, y, atol=1e-6)
    naive_x, naive_y = wcs.all_world2pix(df["ra"], df["dec"], 0)
    assert np.nanmin(np.hypot(naive_x - x, naive_y - y)) > 50  # RA/Dec as native: wrong
    ra, dec = pixel_to_icrs(wcs, x, y)
    np.testing.assert_allclose(ra, df["ra"], atol=1e-9)
    np.testing.assert_allclose(dec, df["dec"], atol=1e-9)
    cfg = load_config({"priors": {"path": str(path), "keep_columns": ["flux_true_irac1"]},
                       "bands": {"irac1": {"images": [str(sci)], "noise": [str(wht)]}},
                       "output": {"path": str(tmp_path / "cat")}})
    summary = run_catalog(cfg)
    assert not summary.failures and not summary.warnings
    cat = read_catalog(tmp_path / "cat")
    assert len(cat) == len(df) and not (cat["flags_irac1"] & int(Flag.NOT_COVERED)).any()
    pull = (cat["flux_irac1"] - cat["flux_true_irac1"]) / cat["flux_err_irac1"]
    snr = cat["flux_true_irac1"] / cat["flux_err_irac1"]
    p = pull[np.isfinite(pull) & (snr > 1) & (snr <= 100)].to_numpy()
    median = np.median(p)
    robust = 1.4826 * np.median(np.abs(p - median))
    assert len(p) > 100
    assert abs(median) < 3 * 1.2533 * robust / np.sqrt(len(p)), (median, len(p))
    # the MAD-based sigma of N normal pulls has a standard error of 1.166 / sqrt(N), 0.09
    # for these ~156 (0.85-1.15 was 1.6 of them: a 1-in-10 failure of a right fit)
    assert abs(robust - 1) < 2.5 * 1.166 / np.sqrt(len(p)), (robust, len(p))


@pytest.mark.parametrize(("ctype", "keys"), [
    (("RA---TAN", "DEC--TAN"), {"RADESYS": "ICRS"}),
    (("RA---TAN", "DEC--TAN"), {}),
    (("RA---TAN", "DEC--TAN"), {"EQUINOX": 2000.0}),
    (("RA---TAN", "DEC--TAN"), {"RADESYS": "FK5", "EQUINOX": 2000.0}),
    (("RA---TAN", "DEC--TAN"), {"RADESYS": "ICRS", "EQUINOX": 2000.0}),
    (("GLON-TAN", "GLAT-TAN"), {}),
    (("GLON-TAN", "GLAT-TAN"), {"RADESYS": "ICRS"}),
])
def test_is_icrs_agrees_with_astropy_frame(ctype, keys):
    """The shortcut for plain ICRS headers says what astropy's frame says."""
    from astropy.coordinates import ICRS
    from astropy.io import fits
    from astropy.wcs.utils import wcs_to_celestial_frame

    from dask_phot.images.frames import is_icrs

    header = fits.Header({"NAXIS": 2, "CTYPE1": ctype[0], "CTYPE2": ctype[1], "CRVAL1": 150.0,
                          "CRVAL2": 2.0, "CDELT1": -1e-4, "CDELT2": 1e-4, **keys})
    wcs = WCS(header)
    want = isinstance(wcs_to_celestial_frame(wcs), ICRS) and wcs.wcs.lng == 0
    assert is_icrs(wcs) == want
