"""Galaxies: Sersic models against truth rendered independently of the engine.

Truth comes from GalSim (an independent renderer, test extra) or from the
simulator's real-space fine-grid renderer (:mod:`dask_phot.testing.galaxies`),
never from the engine's Fourier-space models. The IRAC-like PSF is the golfir
0.1" empirical IRAC ch1 PSF (real data; tests that need it skip without it),
else an analytic one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dask_phot import Flag, forced_photometry
from dask_phot.models.render import render_sources
from dask_phot.models.sersic import fourier_table, radius_fraction, sersic_b
from dask_phot.models.shapes import Shapes, sky_to_pixel, wcs_jacobian
from dask_phot.psf import OversampledPSF, gaussian_psf
from dask_phot.testing import simulate_image
from dask_phot.testing.galaxies import FineKernel, render_fine

GOLFIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "golfir-irac-psf"


@pytest.fixture(scope="module")
def golfir():
    path = GOLFIR / "irac_ch1_warm_psf.fits"
    if not path.exists():
        pytest.skip(f"golfir IRAC PSF not found at {path} (shared reference data)")
    return OversampledPSF.from_fits(path, 0.6, size=21)


@pytest.fixture(scope="module")
def fine_gaussian():
    """An analytic optical PSF at 0.1"/px: a 1.7" FWHM core and broad wings (a Gaussian
    pair; ~20% of the light beyond the 21-pixel stamp, like a strong IRAC-like halo)."""
    u = np.arange(361) - 180.0
    r2 = u[:, None] ** 2 + u[None, :] ** 2
    arr = np.exp(-0.5 * r2 / 7.2**2) + 0.003 * np.exp(-0.5 * r2 / 60.0**2)
    return OversampledPSF(arr, 0.1, 0.6, size=21)


def galsim_truth(psf, n, r_e_arcsec, q, theta, dx, dy, k):
    """GalSim: Sersic x the fine PSF, point-sampled on 0.1" pixels, summed into 0.6"."""
    galsim = pytest.importorskip("galsim")
    gsp = galsim.GSParams(folding_threshold=1e-4, maxk_threshold=1e-5, kvalue_accuracy=1e-6,
                          xvalue_accuracy=1e-6, maximum_fft_size=16384)
    arr = np.ascontiguousarray(psf.array)
    ny, nx = arr.shape
    gpsf = galsim.InterpolatedImage(
        galsim.Image(arr, scale=0.1), scale=0.1, gsparams=gsp, normalization="flux",
        offset=galsim.PositionD(psf.center[0] - (nx - 1) / 2, psf.center[1] - (ny - 1) / 2))
    gal = galsim.Sersic(n=n, half_light_radius=r_e_arcsec * np.sqrt(q), flux=1.0,
                        gsparams=gsp).shear(q=q, beta=theta * galsim.degrees)
    s = psf.oversampling
    img = galsim.Convolve(gal, gpsf, gsparams=gsp).drawImage(
        nx=k * s, ny=k * s, scale=0.1, method="no_pixel", offset=(s * dx, s * dy)).array
    return img.reshape(k, s, k, s).sum(axis=(1, 3))


# ------------------------------------------------------------------ profile and models
def test_sersic_transform_matches_closed_forms():
    t = np.logspace(-3, 2.3, 300)
    table = fourier_table()
    exp = (1 + (2 * np.pi * t / sersic_b(1.0)) ** 2) ** -1.5
    gauss = np.exp(-np.pi**2 * t**2 / sersic_b(0.5))
    assert np.max(np.abs(table.evaluate(1.0, t) - exp)) < 1e-4
    assert np.max(np.abs(table.evaluate(0.5, t) - gauss)) < 1e-4
    assert table.evaluate(3.7, 0.0)[0] == 1.0


@pytest.mark.parametrize("n", [0.5, 1.0, 2.5, 4.0, 6.0])
def test_rendering_matches_galsim(golfir, n):
    """Model vs GalSim truth at random phases, sizes 0-5": the fitted amplitude of the
    truth with the model (the flux a noiseless fit returns) within 0.5%."""
    rng = np.random.default_rng(int(10 * n))
    # GalSim's own FFT grows beyond memory for large, very cuspy profiles
    sizes = [0.0, 0.05, 0.3, 1.0, 2.0, 5.0] if n <= 4 else [0.0, 0.05, 0.3, 1.0]
    for r_e in sizes:
        q, theta = rng.uniform(0.3, 1.0), rng.uniform(0, 180)
        dx, dy = rng.uniform(-0.5, 0.5, 2)
        shapes = Shapes.from_mapping({"r_e": [r_e / 0.6], "q": [q], "theta": [theta],
                                      "n": [n]}, 1)
        st = render_sources(golfir, np.array([200 + dx]), np.array([200 + dy]), shapes,
                            max_size=151).stamps
        model = st.stamp(0)
        k = model.shape[0]
        assert st.x0[0] == 200 - k // 2
        truth = (golfir.stamps(np.array([dx]), np.array([dy]), size=k)[0][0] if r_e == 0
                 else galsim_truth(golfir, n, r_e, q, theta, dx, dy, k))
        amp = (model * truth).sum() / (model * model).sum()
        assert amp == pytest.approx(1.0, abs=5e-3), (n, r_e, k, amp)


def test_simulator_renderer_matches_galsim(golfir):
    """The simulator's real-space truth agrees with GalSim (both independent of the engine)."""
    rng = np.random.default_rng(4)
    kern = FineKernel.from_psf(golfir)
    for n, r_e in [(1.0, 0.3), (4.0, 0.3), (4.0, 1.0), (0.5, 0.7)]:
        q, theta, dx, dy = rng.uniform(0.4, 1), rng.uniform(0, 180), *rng.uniform(-0.5, 0.5, 2)
        k = 61
        sim = render_fine((k, k), np.array([30 + dx]), np.array([30 + dy]), np.ones(1), kern,
                          {"r_e": np.array([r_e / 0.6]), "q": np.array([q]),
                           "theta": np.array([theta]), "n": np.array([n])}, chunk=64)
        truth = galsim_truth(golfir, n, r_e, q, theta, dx, dy, k)
        amp = (sim * truth).sum() / (truth * truth).sum()
        assert amp == pytest.approx(1.0, abs=5e-4), (n, r_e, amp)


def test_stamp_sizes_follow_the_galaxies(fine_gaussian):
    sh = Shapes.from_mapping({"r_e": [0.0, 0.5, 1.5, 10.0], "n": [1, 1, 4, 4]}, 4)
    rd = render_sources(fine_gaussian, np.full(4, 100.0), np.full(4, 100.0), sh, max_size=101,
                        core=fine_gaussian.size)
    assert rd.sides[0] == rd.sides[1] == fine_gaussian.size
    need = 1.5 * radius_fraction(4.0, 0.99) * 2
    assert rd.sides[2] >= need and rd.sides[3] == 101 and rd.capped.tolist() == [0, 0, 0, 1]
    # the fit uses cores no larger than the PSF's; the rest is kept to be subtracted
    assert set(rd.stamps.w.tolist()) == {fine_gaussian.size}
    assert rd.outer_index.tolist() == [2, 3]
    total = [rd.stamps.stamp(2).sum() + rd.outer.stamp(0).sum(), rd.stamps.stamp(0).sum()]
    assert total[0] > total[1] - 0.01


# ------------------------------------------------------------------ fits with noise
def isolated_galaxies(psf, n, r_e_arcsec, snr, count, seed):
    rng = np.random.default_rng(seed)
    shapes = {"r_e": np.full(count, r_e_arcsec / 0.6), "q": rng.uniform(0.5, 1.0, count),
              "theta": rng.uniform(0, 180, count), "n": np.full(count, float(n))}
    probe = render_sources(psf, np.zeros(1), np.zeros(1),
                           Shapes.from_mapping({k: v[:1] for k, v in shapes.items()}, 1)).stamps
    st = probe.stamp(0)
    spacing = max(st.shape[0], psf.wing_size) + 4
    side = int(np.ceil(np.sqrt(count)))
    g = np.arange(count)
    x = (g % side + 0.5) * spacing + rng.uniform(-0.5, 0.5, count)
    y = (g // side + 0.5) * spacing + rng.uniform(-0.5, 0.5, count)
    flux = np.full(count, 1000.0)
    sigma = 1000.0 / snr * np.sqrt(np.sum(st**2))
    return simulate_image((side * spacing, side * spacing), x, y, flux, psf, seed=rng,
                          sigma=sigma, shapes=shapes if r_e_arcsec > 0 else None)


@pytest.mark.slow
def test_isolated_galaxies_unbiased_with_shapes(golfir):
    """S/N 50 in an IRAC ch1-like image with the golfir PSF, shapes given: median bias
    within 2% for each (n, r_e), pulls N(0, 1) (pooled: the per-row figures with more
    sources are printed by benchmarks/bench_galaxies.py); a point-source fit of the
    same galaxies is biased low and flagged."""
    pulls = []
    for n, r_e in [(1, 0.0), (1, 0.3), (1, 0.7), (1, 1.5), (4, 0.3), (4, 0.7), (4, 1.5)]:
        im = isolated_galaxies(golfir, n, r_e, 50.0, 49, seed=int(100 * r_e) + n)
        fit = forced_photometry(im.data, golfir, im.x, im.y, sigma=im.sigma, shapes=im.shapes)
        pull = (fit.flux - im.flux) / fit.flux_err
        pulls.append(pull)
        assert abs(np.median(fit.flux / im.flux - 1)) < 0.02, (n, r_e)
        assert 0.7 < np.std(pull) < 1.3, (n, r_e)
        assert np.mean(fit.has(Flag.MODEL_MISMATCH)) < 0.05
        if r_e >= 0.7:
            point = forced_photometry(im.data, golfir, im.x, im.y, sigma=im.sigma)
            assert np.median(point.flux / im.flux - 1) < -0.15
            assert np.mean(point.has(Flag.MODEL_MISMATCH)) > 0.9
    pooled = np.concatenate(pulls)
    assert abs(np.median(pooled)) < 0.15 and 0.9 < np.std(pooled) < 1.1


@pytest.mark.slow
def test_crowded_field_with_galaxies(golfir):
    """COSMOS density, 70% galaxies: pulls N(0, 1) at S/N 5-100, small bias to S/N 1000,
    with the PSF's wings beyond the 21-pixel stamps subtracted between two fits."""
    from dask_phot.testing import SimBand, mjysr_to_ujy, simulate_field

    band = SimBand("irac1", golfir, mjysr_to_ujy(0.6), 0.5, unit="MJy/sr")
    fld = simulate_field(bands=[band], seed=11, area_arcmin2=6.0, galaxies=0.7)
    im = fld.images["irac1"]
    res = forced_photometry(im.data, golfir, im.x, im.y, weight=im.weight, shapes=im.shapes,
                            fit_sky=True)
    assert res.info["wings"]
    snr = im.flux / res.flux_err
    pull = (res.flux - im.flux) / res.flux_err
    mid = np.isfinite(pull) & (snr > 5) & (snr < 100)
    assert mid.sum() > 150
    # the median within three of its standard errors (0.27 sigma for these ~200 sources;
    # the issue's +-0.1 is checked on the pipeline benchmark's ~2,200, standard error 0.03)
    p = pull[mid]
    assert abs(np.median(p)) < 3 * 1.2533 * np.std(p) / np.sqrt(p.size)
    assert 0.9 < np.std(p) < 1.2
    bright = np.isfinite(pull) & (snr >= 100) & (snr < 1000)
    assert abs(np.median(res.flux[bright] / im.flux[bright] - 1)) < 0.02
    # MODEL_MISMATCH: rare for right models; on most galaxies fitted as point sources whose
    # flux that makes wrong (at S/N > 50, where the residual can show it)
    mismatch = int(Flag.MODEL_MISMATCH)
    good = np.isfinite(pull) & (snr > 20)
    assert np.mean((res.flags[good] & mismatch) != 0) < 0.05
    point = forced_photometry(im.data, golfir, im.x, im.y, weight=im.weight, fit_sky=True)
    gal = im.shapes["r_e"] > 0
    off = gal & (im.flux / point.flux_err > 50) & (
        np.abs(point.flux - im.flux) > 3 * point.flux_err)
    assert off.sum() > 20 and np.mean((point.flags[off] & mismatch) != 0) > 0.85


def test_wings_are_subtracted_not_fitted(fine_gaussian):
    """Two bright sources whose wings overlap the other's core: with the wing pass the
    noiseless fluxes are exact to the first fit's wing error (second order); with the
    wings switched off they are biased by the wing light."""
    x, y = np.array([40.0, 53.3]), np.array([40.0, 41.2])
    flux = np.array([1e4, 3e2])
    im = simulate_image((80, 96), x, y, flux, fine_gaussian, seed=0, sigma=1e-6)
    res = forced_photometry(im.model, fine_gaussian, x, y, sigma=1.0)
    assert res.info["wings"]
    np.testing.assert_allclose(res.flux, flux, rtol=3e-3)
    cut = OversampledPSF(fine_gaussian.array, 0.1, 0.6, size=21, wing_size=21)
    plain = forced_photometry(im.model, cut, x, y, sigma=1.0)
    assert not plain.info["wings"] and plain.flux[1] > flux[1] * 1.02


def test_mismatch_sign_and_shape_validation(fine_gaussian):
    shapes = {"r_e": [3.0], "q": [0.7], "theta": [20.0], "n": [1.0]}
    im = simulate_image((60, 60), [30.2], [29.7], [5000.0], fine_gaussian, seed=1, sigma=1.0,
                        shapes={k: np.array(v) for k, v in shapes.items()})
    as_point = forced_photometry(im.data, fine_gaussian, [30.2], [29.7], sigma=1.0)
    right = forced_photometry(im.data, fine_gaussian, [30.2], [29.7], sigma=1.0, shapes=shapes)
    assert as_point.mismatch[0] > 5 and as_point.has(Flag.MODEL_MISMATCH)[0]
    assert abs(right.mismatch[0]) < 4 and not right.has(Flag.MODEL_MISMATCH)[0]
    too_big = forced_photometry(im.data, fine_gaussian, [30.2], [29.7], sigma=1.0,
                                shapes={**shapes, "r_e": [6.0]})
    assert too_big.mismatch[0] < -5
    with pytest.raises(ValueError, match=r"shapes\['n'\] must be in \[0.5, 6.0\]"):
        forced_photometry(im.data, fine_gaussian, [30.0], [30.0], sigma=1.0,
                          shapes={"r_e": [2.0], "n": [9.0]})
    with pytest.raises(ValueError, match="unknown key"):
        forced_photometry(im.data, fine_gaussian, [30.0], [30.0], sigma=1.0,
                          shapes={"r_e": [2.0], "axis_ratio": [0.5]})


def test_psf_given_as_array_or_finer_pixel_psf(fine_gaussian):
    psf = gaussian_psf(3.0, size=15)
    img = np.zeros((40, 40))
    st, x0, y0 = psf.stamps(np.array([20.0]), np.array([20.0]))
    img[y0[0]:y0[0] + 15, x0[0]:x0[0] + 15] = 100 * st[0]
    res = forced_photometry(img, psf.array, [20.0], [20.0], sigma=1.0)
    assert res.flux[0] == pytest.approx(100.0, rel=1e-9)
    with pytest.raises(TypeError, match="psf must be"):
        forced_photometry(img, "irac1", [20.0], [20.0], sigma=1.0)
    fine = gaussian_psf(18.0, size=181, pixel_scale=0.1)
    a = forced_photometry(img, fine, [20.0], [20.0], sigma=1.0, pixel_scale=0.6)
    b = forced_photometry(img, OversampledPSF(fine.array, 0.1, 0.6), [20.0], [20.0], sigma=1.0)
    assert a.flux[0] == b.flux[0]


# ------------------------------------------------------------------ shapes on the sky
def wcs_rotated(angle_deg, flip=False, scale=0.5):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.2]
    w.wcs.crpix = [50.0, 50.0]
    a = np.deg2rad(angle_deg)
    s = scale / 3600.0
    cd = np.array([[-s * np.cos(a), s * np.sin(a)], [s * np.sin(a), s * np.cos(a)]])
    if flip:
        cd[:, 0] *= -1
    w.wcs.cd = cd
    return w


@pytest.mark.parametrize("angle,flip", [(0.0, False), (30.0, False), (-70.0, True)])
def test_sky_shapes_map_through_rotation_and_flip(angle, flip):
    """An elliptical source drawn on the sky (east/north offsets) and the pixel-grid ellipse
    from sky_to_pixel describe the same pixels."""
    w = wcs_rotated(angle, flip)
    x, y = np.array([50.0]), np.array([49.0])
    jac = wcs_jacobian(w, x, y)
    r_e, q, th = sky_to_pixel(jac, np.array([1.5]), np.array([0.4]), np.array([35.0]))
    # pixel offsets of points on the sky ellipse's major axis must lie on the pixel major axis
    pa = np.deg2rad(35.0)
    east, north = 1.5 * np.sin(pa), 1.5 * np.cos(pa)
    dpix = np.linalg.solve(jac[0], [east, north])
    assert np.hypot(*dpix) == pytest.approx(r_e[0], rel=1e-6)
    ang = np.rad2deg(np.arctan2(dpix[1], dpix[0])) % 180
    assert min(abs(ang - th[0]), 180 - abs(ang - th[0])) < 1e-4
    assert q[0] == pytest.approx(0.4, rel=1e-6)
