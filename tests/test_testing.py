"""Tests of the seeded field simulator, dask_phot.testing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dask_phot.psf import PixelPSF, gaussian_psf, moffat_psf
from dask_phot.testing import (
    GaussianPRF,
    SimBand,
    SplinePRF,
    demo_bands,
    depth_map,
    mjysr_to_ujy,
    noise_equivalent_area,
    prf_model,
    simulate_field,
    simulate_image,
    simulate_sources,
    write_field,
)

DATA = Path(__file__).parents[2] / "shared" / "data"
IRAC_PRF = DATA / "fornax-cosmos" / "PRF_IRAC_ch1.fits"


def _centroid(img: np.ndarray) -> tuple[float, float]:
    yy, xx = np.indices(img.shape)
    return float((img * xx).sum() / img.sum()), float((img * yy).sum() / img.sum())


@pytest.fixture(scope="module")
def small_field():
    bands = [b for b in demo_bands() if b.name in ("irac1", "nuv")]
    return simulate_field(bands=bands, area_arcmin2=1.0, seed=5, mask_fraction=0.01)


# ---------------------------------------------------------------------- sources
def test_same_seed_same_field_and_different_seed_differs(small_field):
    again = simulate_field(
        bands=list(small_field.bands.values()), area_arcmin2=1.0, seed=5, mask_fraction=0.01
    )
    pd.testing.assert_frame_equal(small_field.priors, again.priors)
    for band, image in small_field.images.items():
        for attr in ("data", "sigma", "weight", "model"):
            np.testing.assert_array_equal(getattr(image, attr), getattr(again.images[band], attr))
    other = simulate_field(bands=list(small_field.bands.values()), area_arcmin2=1.0, seed=6)
    assert len(other.priors) != len(again.priors) or not np.array_equal(
        other.priors["ra"], again.priors["ra"]
    )


def test_band_fluxes_do_not_depend_on_other_bands():
    both = simulate_sources(area_arcmin2=1.0, bands=["irac1", "nuv"], seed=11)
    one = simulate_sources(area_arcmin2=1.0, bands=["nuv"], seed=11)
    np.testing.assert_array_equal(both["flux_true_nuv"], one["flux_true_nuv"])
    np.testing.assert_array_equal(both["ra"], one["ra"])


@pytest.mark.parametrize("clustering", [0.0, 0.5])
def test_number_matches_density_within_poisson_error(clustering):
    area, density = 4.0, 6e5
    cat = simulate_sources(
        area_arcmin2=area, density_per_deg2=density, bands=["irac1"], seed=2,
        clustering=clustering,
    )
    expected = density * area / 3600.0
    assert abs(len(cat) - expected) < 4 * math.sqrt(expected)
    assert cat["source_id"].dtype == np.int64
    np.testing.assert_array_equal(cat["source_id"], np.arange(len(cat)))
    # every source inside the requested square (2' side) around the centre
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.01, 2.2]
    wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    wcs.wcs.crpix = [1.0, 1.0]  # 0-based pixel 0 at the centre
    x, y = wcs.wcs_world2pix(cat["ra"], cat["dec"], 0)
    assert np.abs(x).max() <= 60.0 + 1e-6 and np.abs(y).max() <= 60.0 + 1e-6


def test_counts_slope_and_colours():
    cat = simulate_sources(area_arcmin2=20.0, bands=["irac1", "nuv"], seed=3)
    lo, hi, a = 0.05, 2000.0, 0.7
    flux = cat["flux_ref"].to_numpy()
    assert flux.min() >= lo and flux.max() <= hi
    p = (1.0 - hi**-a) / (lo**-a - hi**-a)  # P(S > 1 uJy)
    n = len(flux)
    assert abs(np.mean(flux > 1.0) - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert np.median(cat["flux_true_nuv"] / flux) < 0.2  # UV much fainter
    assert np.median(cat["flux_true_irac1"] / flux) > 1.0


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="clustering"):
        simulate_sources(area_arcmin2=1.0, bands=["a"], seed=0, clustering=1.5)
    with pytest.raises(ValueError, match="flux_range"):
        simulate_sources(area_arcmin2=1.0, bands=["a"], seed=0, flux_range_ujy=(2.0, 1.0))
    with pytest.raises(ValueError, match="distinct"):
        simulate_sources(area_arcmin2=1.0, bands=["a", "a"], seed=0)
    with pytest.raises(ValueError, match="sigma"):
        simulate_image((5, 5), [2.0], [2.0], [1.0], gaussian_psf(1.5), seed=0, sigma=0.0)


# ---------------------------------------------------------------------- rendering
@pytest.mark.parametrize(
    "psf", [gaussian_psf(3.0), moffat_psf(2.5, 2.5)], ids=["gaussian", "moffat"]
)
def test_model_sums_to_flux_away_from_edges(psf):
    rng = np.random.default_rng(0)
    n = 20
    x, y = rng.uniform(20, 80, n), rng.uniform(20, 80, n)
    flux = rng.uniform(1, 100, n)
    im = simulate_image((100, 100), x, y, flux, psf, seed=1)
    assert abs(im.model.sum() - flux.sum()) < 1e-3 * flux.sum()
    single = simulate_image((100, 100), x[:1], y[:1], flux[:1], psf, seed=1)
    assert abs(single.model.sum() - flux[0]) < 1e-3 * flux[0]


@pytest.mark.parametrize("renderer", ["auto", "spline"])
def test_centroid_matches_subpixel_position(renderer):
    psf = gaussian_psf(3.0)
    for x, y in [(20.3, 17.65), (19.5, 21.0), (20.0, 20.0), (18.77, 22.41)]:
        im = simulate_image((41, 41), [x], [y], [10.0], psf, seed=0, renderer=renderer)
        cx, cy = _centroid(im.model)
        assert abs(cx - x) < 0.02 and abs(cy - y) < 0.02, (renderer, x, y, cx, cy)


def test_source_at_row7_col5_peaks_there():
    im = simulate_image((15, 12), [5.0], [7.0], [100.0], gaussian_psf(2.0), seed=0)
    assert np.unravel_index(np.argmax(im.model), im.shape) == (7, 5)
    assert isinstance(prf_model(gaussian_psf(2.0)), GaussianPRF)
    assert isinstance(prf_model(moffat_psf(2.0)), SplinePRF)


def test_spline_renderer_agrees_with_exact_gaussian():
    psf = gaussian_psf(2.5)
    exact = simulate_image((31, 31), [15.37], [14.81], [1.0], psf, seed=0).model
    spline = simulate_image(
        (31, 31), [15.37], [14.81], [1.0], psf, seed=0, renderer="spline"
    ).model
    assert np.abs(exact - spline).max() < 0.01 * exact.max()
    zero = SplinePRF(psf).stamps(np.zeros(1), np.zeros(1))[0]
    np.testing.assert_allclose(zero, psf.array, atol=1e-15)


# ---------------------------------------------------------------------- noise and masks
def test_noise_std_matches_sigma_map():
    shape = (200, 200)
    sigma = np.full(shape, 1.0)
    sigma[:, 100:] = 3.0
    im = simulate_image(shape, [], [], [], gaussian_psf(2.0), seed=4, sigma=sigma, sky=10.0)
    resid = im.data - im.sky
    assert abs(resid[:, :100].std() / 1.0 - 1) < 0.03
    assert abs(resid[:, 100:].std() / 3.0 - 1) < 0.03
    np.testing.assert_allclose(im.weight, 1 / sigma**2)


def test_field_noise_follows_depth(small_field):
    im = small_field.images["irac1"]
    good = im.weight > 0
    pull = ((im.data - im.model - im.sky) / im.sigma)[good]
    assert abs(pull.std() - 1) < 0.03 and abs(pull.mean()) < 0.03
    band = small_field.bands["irac1"]
    assert abs(np.nanmedian(im.sigma) / band.sigma_pix - 1) < 0.3
    factor = depth_map((50, 60), np.random.default_rng(0), variation=0.3)
    assert factor.min() >= 0.7 and factor.max() <= 1.3 and factor.std() > 0.01


def test_masked_pixels_are_nan_with_zero_weight():
    psf = gaussian_psf(2.0)
    im = simulate_image((120, 150), [60.0], [60.0], [5.0], psf, seed=9, mask_fraction=0.05)
    bad = np.isnan(im.data)
    assert 0.05 <= bad.mean() < 0.07
    np.testing.assert_array_equal(bad, im.weight == 0)
    assert np.all(np.isnan(im.sigma[bad])) and np.all(im.weight[~bad] > 0)


def test_sky_gradient_is_a_plane():
    band = SimBand("g", gaussian_psf(2.0, pixel_scale=1.0), 1.0, 1.0, sky=5.0, sky_gradient=2.0)
    fld = simulate_field(bands=[band], area_arcmin2=0.2, seed=1, depth_variation=0.0)
    sky = fld.images["g"].sky
    assert isinstance(sky, np.ndarray)
    assert abs(sky.max() - sky.min() - 2.0) < 1e-9 and abs(sky.mean() - 5.0) < 1e-9


# ---------------------------------------------------------------------- FITS output
@pytest.mark.parametrize("noise_product", ["weight", "uncertainty"])
def test_write_field_fits_wcs_lands_on_sources(small_field, tmp_path, noise_product):
    paths = write_field(small_field, tmp_path, noise_product=noise_product)
    priors = pd.read_parquet(paths["priors"])
    pd.testing.assert_frame_equal(priors, small_field.priors)
    suffix = "wht" if noise_product == "weight" else "unc"
    for band, image in small_field.images.items():
        with fits.open(paths[f"{band}_sci"]) as hdul:
            header, data = hdul[0].header, hdul[0].data.astype(np.float64)
        with fits.open(paths[f"{band}_{suffix}"]) as hdul:
            noise = hdul[0].data
        assert header["BAND"] == band and header["BUNIT"] == image.unit
        assert header["PIXSCALE"] == pytest.approx(image.psf.pixel_scale)
        assert header["SKYLEVEL"] == pytest.approx(image.sky)
        wcs = WCS(header)
        assert wcs.has_celestial and wcs.wcs.ctype[0] == "RA---TAN"
        x, y = wcs.world_to_pixel_values(priors["ra"], priors["dec"])
        np.testing.assert_allclose(x, image.x, atol=1e-6)
        np.testing.assert_allclose(y, image.y, atol=1e-6)
        _check_bright_peaks(data, image, x, y, band)
        if noise_product == "weight":
            np.testing.assert_array_equal(noise == 0, np.isnan(data))
        else:
            np.testing.assert_array_equal(np.isnan(noise), np.isnan(data))
        psf = PixelPSF.from_fits(paths[f"{band}_psf"])
        assert psf.pixel_scale == image.psf.pixel_scale


def _check_bright_peaks(data, image, x, y, band):
    """Bright (S/N > 30), isolated, unmasked sources peak within a pixel of their WCS position."""
    ny, nx = data.shape
    flux_err = image.meta["sigma_pix"] * math.sqrt(noise_equivalent_area(image.psf))
    checked = 0
    for i in np.flatnonzero(image.flux > 30 * flux_err):
        cx, cy = round(float(x[i])), round(float(y[i]))
        if not (2 <= cx < nx - 2 and 2 <= cy < ny - 2):
            continue
        near = np.hypot(x - x[i], y - y[i]) < 2 * image.psf.fwhm
        if (image.flux[near] > 0.2 * image.flux[i]).sum() > 1:
            continue
        box = data[cy - 2 : cy + 3, cx - 2 : cx + 3]
        if np.isnan(box).any():
            continue
        py, px = np.unravel_index(np.argmax(box), box.shape)
        assert abs(px - 2) <= 1 and abs(py - 2) <= 1, (band, i)
        checked += 1
    assert checked >= 1, band


# ---------------------------------------------------------------------- real PRF
@pytest.mark.skipif(not IRAC_PRF.exists(), reason=f"real data not found at {IRAC_PRF}")
def test_real_irac_prf_field():
    psf = PixelPSF.from_fits(IRAC_PRF, pixel_scale=0.6)
    shifted = simulate_image((41, 41), [20.3], [19.8], [1.0], psf, seed=0).model
    centred = simulate_image((41, 41), [20.0], [20.0], [1.0], psf, seed=0).model
    np.testing.assert_allclose(centred[12:29, 12:29], psf.array, atol=1e-12)
    (cx1, cy1), (cx0, cy0) = _centroid(shifted), _centroid(centred)
    assert abs(cx1 - cx0 - 0.3) < 0.02 and abs(cy1 - cy0 + 0.2) < 0.02
    assert abs(shifted.sum() - 1.0) < 1e-9
    band = SimBand("irac1", psf, mjysr_to_ujy(0.6), 0.3, sky=0.02, unit="MJy/sr")
    fld = simulate_field(bands=[band], area_arcmin2=0.5, seed=1)
    im = fld.images["irac1"]
    ny, nx = im.shape
    h = psf.half  # default pad: every stamp lies wholly inside the image
    cx, cy = np.floor(im.x + 0.5), np.floor(im.y + 0.5)
    assert (cx >= h).all() and (cx <= nx - 1 - h).all()
    assert (cy >= h).all() and (cy <= ny - 1 - h).all()
    expected = (fld.priors["flux_true_irac1"] / band.to_ujy).sum()
    assert abs(im.model.sum() - expected) < 1e-3 * expected
