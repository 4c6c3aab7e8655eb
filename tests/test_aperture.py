"""Aperture photometry: apertures and annulus background, errors, FWHM, Kron, aperture
corrections against simulated truth, physical units."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sep", reason="the detect extra (sep) is not installed")

from dask_phot.aperture import (
    KRON_CIRCULAR,
    add_physical_fluxes,
    aperture_corrections,
    aperture_photometry,
    curve_of_growth,
    flux_conversion,
    kron_photometry,
    measure_sources,
    radial_fwhm,
)
from dask_phot.psf import gaussian_psf, moffat_psf
from dask_phot.testing import simulate_image

RADII = (2.0, 4.0, 6.0, 8.0, 10.0)


def _grid_sources(n_side: int, spacing: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Isolated sources on a grid, with random sub-pixel offsets."""
    rng = np.random.default_rng(seed)
    c = spacing * (np.arange(n_side) + 1.0)
    x, y = (v.ravel() for v in np.meshgrid(c, c))
    return x + rng.uniform(-0.5, 0.5, x.size), y + rng.uniform(-0.5, 0.5, y.size)


def test_aperture_corrected_fluxes_of_point_sources_within_one_percent():
    """Isolated Moffat point sources at S/N > 1000 (r=10 aperture) on sky 20 with noise 1:
    after the PSF curve-of-growth correction (which also accounts for the PSF's wings in
    the 10-15 px annulus) every aperture flux at every radius is within 1% of truth."""
    psf = moffat_psf(3.0, 2.5, size=41)
    x, y = _grid_sources(6, 40.0, seed=4)
    flux = np.geomspace(3e4, 3e5, x.size)
    im = simulate_image((280, 280), x, y, flux, psf, seed=5, sigma=1.0, sky=20.0)
    t = measure_sources(im.data, x, y, rms=1.0, psf=psf, radii=RADII, annulus=(10.0, 15.0))
    for r in RADII:
        ratio = t[f"flux_apcorr_{r:g}"] / flux
        assert np.all(np.abs(ratio - 1) < 0.01), (r, ratio.min(), ratio.max())
    raw = t["flux_aper_2"] / flux
    assert raw.max() < 0.6  # the correction is large at r=2 and still right


def test_aperture_errors_match_scatter_and_poisson_term():
    """Reported errors (noise map + annulus term) match the scatter of fluxes of blank
    positions within 10%; a gain adds the source's Poisson variance flux/gain."""
    rng = np.random.default_rng(0)
    img = rng.normal(5.0, 2.0, (400, 400))
    x, y = _grid_sources(9, 40.0, seed=1)
    t = aperture_photometry(img, x, y, radii=[4.0], annulus=(10, 15), rms=2.0)
    scatter = np.std(t["flux_aper_4"])
    assert t["flux_err_aper_4"].median() == pytest.approx(scatter, rel=0.15)
    assert t["bkg_annulus"].median() == pytest.approx(5.0, abs=0.05)
    src = np.zeros((60, 60))
    src[30, 30] = 1e4
    a = aperture_photometry(src, [30.0], [30.0], radii=[3.0], annulus=None, rms=1.0)
    b = aperture_photometry(src, [30.0], [30.0], radii=[3.0], annulus=None, rms=1.0, gain=2.0)
    area = np.pi * 9
    assert a["flux_err_aper_3"][0] == pytest.approx(np.sqrt(area))
    assert b["flux_err_aper_3"][0] == pytest.approx(np.sqrt(area + 1e4 / 2.0))


def test_annulus_ignores_masked_neighbour_and_nan():
    img = np.full((80, 80), 3.0)
    img[40, 52] = 1e6  # a bright neighbour in the annulus
    img[30, 40] = np.nan
    mask = np.zeros(img.shape, bool)
    mask[40, 52] = True
    t = aperture_photometry(img, [40.0], [40.0], radii=[3.0], annulus=(10, 15),
                            annulus_mask=mask, rms=1.0)
    assert t["bkg_annulus"][0] == pytest.approx(3.0)
    assert t["flux_aper_3"][0] == pytest.approx(0.0, abs=1e-9)


def test_weight_map_errors_and_masked_pixels_flagged():
    img = np.zeros((50, 50))
    w = np.full(img.shape, 0.25)  # sigma 2
    w[25, 26] = 0.0
    t = aperture_photometry(img, [25.0, 1.0, 10.0], [25.0, 25.0, 10.0], radii=[3.0],
                            annulus=None, weight=w)
    assert t["flux_err_aper_3"][2] == pytest.approx(2.0 * np.sqrt(np.pi * 9))
    assert t["flag_aper_3"][0] & 32 and t["flag_aper_3"][1] & 16  # masked pixel, edge
    assert t["flag_aper_3"][2] == 0


def test_radial_fwhm_of_point_sources():
    for fwhm in (2.5, 4.0, 6.0):
        psf = gaussian_psf(fwhm)
        im = simulate_image((61, 61), [30.2], [29.7], [1e5], psf, seed=2, sigma=0.1)
        measured = radial_fwhm(im.data, [30.2], [29.7])[0]
        assert measured == pytest.approx(psf.fwhm, rel=0.07)


def test_kron_minimum_diameter_rule_and_flux():
    yy, xx = np.mgrid[:80, :80]
    img = 1e3 * np.exp(-0.5 * ((xx - 40) ** 2 + (yy - 40) ** 2) / 3.0**2)
    t = kron_photometry(img, [40.0], [40.0], [3.0], [3.0], [0.0], rms=1.0, min_kron_radius=0)
    assert t["flux_auto"][0] / img.sum() > 0.98  # 2.5 r_kron holds ~all of a Gaussian
    tiny = kron_photometry(img * 0 + np.where((xx == 40) & (yy == 40), 1.0, 0.0),
                           [40.0], [40.0], [0.3], [0.3], [0.0], rms=1.0, min_kron_radius=0,
                           min_diameter=5.0)
    assert tiny["flag_auto"][0] & KRON_CIRCULAR and tiny["auto_radius"][0] == 2.5


def test_curve_of_growth_and_subpixel_position():
    psf = gaussian_psf(2.5, size=31)
    centred = curve_of_growth(psf, [1.0, 2.0, 15.0])
    corner = curve_of_growth(psf, [1.0, 2.0, 15.0], 10.5, 10.5)
    assert centred[2] == pytest.approx(1.0, abs=1e-6) and corner[2] == pytest.approx(1.0, abs=1e-6)
    assert abs(corner[0] / centred[0] - 1) > 0.05  # small apertures depend on the phase
    per_src = aperture_corrections(psf, [2.0], [3.0, 7.5, 9.0], [4.0, 2.5, 1.0])
    assert per_src.shape == (3, 1)
    assert per_src[0, 0] == pytest.approx(per_src[2, 0]) != pytest.approx(per_src[1, 0])


def test_physical_units_and_nan_magnitudes():
    assert flux_conversion({"PHOTFNU": 1e-7}) == pytest.approx(0.1)
    assert flux_conversion(band="nuv") == pytest.approx(33.73, rel=0.01)
    with pytest.raises(ValueError, match="no flux calibration"):
        flux_conversion({})
    import pandas as pd

    t = add_physical_fluxes(pd.DataFrame({"flux_aper_2": [100.0, 0.0, -5.0],
                                          "flux_err_aper_2": [1.0, 1.0, 1.0]}), 0.2)
    assert t["mag_aper_2"][0] == pytest.approx(23.9 - 2.5 * np.log10(20.0))
    assert np.isnan(t["mag_aper_2"][1]) and np.isnan(t["mag_aper_2"][2])
    assert not (t.select_dtypes("number") == -999).any().any()
