"""The Tractor backend (:mod:`dask_phot.engine.tractor`).

Everywhere: the one clear error where the astrophysical Tractor is absent, broken
or shadowed by PyPI's unrelated ``tractor``, and the input checks made before
the Tractor is imported. Where the Tractor is importable (built from source, see
``dask_phot.engine.tractor.INSTALL_HINT``): agreement with the default engine on
simulated fields (fluxes within 0.05 sigma, the same errors and flags), the
marginal errors of large groups, thread safety, and its galaxies against truth
rendered independently with GalSim.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import threading

import numpy as np
import pytest

from dask_phot import Flag, forced_photometry
from dask_phot.engine.tractor import (
    INSTALL_HINT,
    TractorUnavailableError,
    import_tractor,
    tractor_available,
    tractor_ellipse,
    tractor_photometry,
)
from dask_phot.psf import PixelPSF, gaussian_psf, moffat_psf
from dask_phot.testing import demo_bands, simulate_field, simulate_image

HAVE_TRACTOR = tractor_available()
needs_tractor = pytest.mark.skipif(
    not HAVE_TRACTOR,
    reason="the astrophysical Tractor is not importable here (it is built from source, "
           "github.com/dstndstn/tractor; PyPI's `tractor` is unrelated)",
)


def galsim_or_skip():
    return pytest.importorskip("galsim", reason="GalSim renders the galaxy truth (test extra)")


# ------------------------------------------------------------------ everywhere: the error path


def _fake_package(root, body: str) -> None:
    pkg = root / "tractor"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(body)


@pytest.fixture
def hide_tractor(monkeypatch):
    """Forget any imported ``tractor`` so that the next import searches sys.path again."""
    for name in [m for m in sys.modules if m == "tractor" or m.startswith("tractor.")]:
        monkeypatch.delitem(sys.modules, name)
    return monkeypatch


def test_absent_tractor_gives_one_clear_error(hide_tractor):
    hide_tractor.setitem(sys.modules, "tractor", None)  # what Python does for a missing module
    psf = gaussian_psf(3.0, size=15)
    with pytest.raises(TractorUnavailableError) as err:
        tractor_photometry(np.zeros((20, 20)), psf, [10.0], [10.0], sigma=1.0)
    msg = str(err.value)
    assert isinstance(err.value, ImportError)
    assert "\n" not in msg and "not installed" in msg
    assert "github.com/dstndstn/tractor" in msg and "unrelated" in msg
    assert INSTALL_HINT in msg
    assert not tractor_available()


def test_unrelated_pypi_tractor_is_refused(hide_tractor, tmp_path):
    _fake_package(tmp_path, '"""Structured concurrency for Python."""\n\n'
                            "async def run(fn):\n    return await fn()\n")
    hide_tractor.syspath_prepend(str(tmp_path))
    with pytest.raises(TractorUnavailableError) as err:
        import_tractor()
    msg = str(err.value)
    assert str(tmp_path / "tractor" / "__init__.py") in msg
    assert "not the astrophysical Tractor" in msg and "pip uninstall tractor" in msg
    assert "\n" not in msg
    with pytest.raises(TractorUnavailableError, match="unrelated async library"):
        tractor_photometry(np.zeros((20, 20)), gaussian_psf(3.0, size=15), [10.0], [10.0],
                           sigma=1.0)


def test_a_source_checkout_in_the_way_is_named(hide_tractor, tmp_path):
    (tmp_path / "tractor" / "tractor").mkdir(parents=True)  # a checkout: no __init__.py on top
    # an installed Tractor would win over a namespace directory: search only tmp_path
    hide_tractor.setattr(sys, "path", [str(tmp_path)])
    with pytest.raises(TractorUnavailableError, match="not an installed Tractor") as err:
        import_tractor()
    assert str(tmp_path / "tractor") in str(err.value)


def test_broken_tractor_install_names_the_missing_module(hide_tractor, tmp_path):
    _fake_package(tmp_path, "import astrometry_util_absent_for_this_test  # noqa\n")
    hide_tractor.syspath_prepend(str(tmp_path))
    with pytest.raises(TractorUnavailableError,
                       match=r"installed but cannot be imported.*astrometry_util_absent"):
        import_tractor()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shapes": {"r_e": [2.0], "q": [0.5], "theta": [0.0]}}, r"missing keys \['n'\]"),
        ({"shapes": {"r_e": [2.0], "q": [0.5], "theta": [0.0], "n": [1.0], "pa": [0.0]}},
         r"unknown keys \['pa'\]"),
        ({"shapes": {"r_e": [2.0], "q": [1.5], "theta": [0.0], "n": [1.0]}},
         r"shapes\['q'\]\[0\] = 1.5"),
        ({"shapes": {"r_e": [-1.0], "q": [0.5], "theta": [0.0], "n": [1.0]}},
         r"shapes\['r_e'\]\[0\]"),
        ({"shapes": {"r_e": [2.0, 1.0], "q": [0.5], "theta": [0.0], "n": [1.0]}},
         r"shapes\['r_e'\] has shape \(2,\)"),
        ({"sky_model": "plane", "fit_sky": True}, "constant sky only"),
        ({"fit_positions": True}, "positions frozen"),
    ],
)
def test_bad_inputs_are_refused_before_the_tractor_is_needed(kwargs, match):
    psf = gaussian_psf(3.0, size=15)
    with pytest.raises(ValueError, match=match):
        tractor_photometry(np.zeros((20, 20)), psf, [10.0], [10.0], sigma=1.0, **kwargs)


def test_psf_grid_is_refused():
    from dask_phot.psf import PSFGrid

    grid = PSFGrid([gaussian_psf(3.0, size=15)], [10.0], [10.0])
    with pytest.raises(ValueError, match="needs one PixelPSF"):
        tractor_photometry(np.zeros((20, 20)), grid, [10.0], [10.0], sigma=1.0)


def test_ellipse_parameters_of_round_and_aligned_shapes():
    re, e1, e2 = tractor_ellipse(np.array([3.0, 2.0, 2.0]), np.array([1.0, 0.5, 0.5]),
                                 np.array([17.0, 0.0, 90.0]), 0.25)
    np.testing.assert_allclose(re, [0.75, 0.5, 0.5])
    np.testing.assert_allclose(np.hypot(e1, e2), [0.0, 1 / 3, 1 / 3], atol=1e-15)
    # a quarter turn of the ellipse flips the sign of (e1, e2)
    np.testing.assert_allclose([e1[1], e2[1]], [-e1[2], -e2[2]], atol=1e-15)


# ------------------------------------------------------------------ where the Tractor is importable


def _padded(psf: PixelPSF, pad: int = 4) -> PixelPSF:
    """The PSF in a stamp wide enough to hold its Lanczos-3-shifted light."""
    return PixelPSF(np.pad(psf.array, pad), psf.pixel_scale, interp_order=3)


def _irac_like_field(psf: PixelPSF, *, seed: int, area: float = 1.5, mask: float = 0.01):
    band = dataclasses.replace(demo_bands()[0], psf=psf)
    return simulate_field(bands=[band], area_arcmin2=area, seed=seed, mask_fraction=mask)


def _sigma_diff(tr, ours) -> np.ndarray:
    both = np.isfinite(tr.flux) & np.isfinite(ours.flux)
    return np.abs(tr.flux - ours.flux)[both] / ours.flux_err[both]


@needs_tractor
def test_point_sources_agree_with_the_engine():
    psf = _padded(demo_bands()[0].psf)
    im = _irac_like_field(psf, seed=11).images["irac1"]
    data = im.data - im.sky
    ours = forced_photometry(data, psf, im.x, im.y, weight=im.weight)
    tr = tractor_photometry(data, psf, im.x, im.y, weight=im.weight)
    d = _sigma_diff(tr, ours)
    assert d.size > 100 and d.max() < 0.05, f"max {d.max():.3g} sigma"
    assert np.nanmax(np.abs(tr.flux_err / ours.flux_err - 1)) < 1e-3
    np.testing.assert_array_equal(tr.flags, ours.flags)
    np.testing.assert_array_equal(np.isnan(tr.flux), np.isnan(ours.flux))
    np.testing.assert_array_equal(tr.n_pixels, ours.n_pixels)
    ok = np.isfinite(ours.chi2) & (ours.chi2 > 0.1)
    np.testing.assert_allclose(tr.chi2[ok], ours.chi2[ok], rtol=0.02)
    assert tr.info["backend"] == "tractor" and tr.info["optimizer_runs"] == 1
    assert tr.to_pandas().columns.tolist() == ours.to_pandas().columns.tolist()


@needs_tractor
def test_fitted_constant_sky_agrees_with_the_engine():
    psf = _padded(demo_bands()[0].psf)
    im = _irac_like_field(psf, seed=12, mask=0.02).images["irac1"]
    side = max(im.data.shape)  # one scene tile: the engine fits one constant too
    ours = forced_photometry(im.data, psf, im.x, im.y, weight=im.weight, fit_sky=True,
                             tile_size=side)
    tr = tractor_photometry(im.data, psf, im.x, im.y, weight=im.weight, fit_sky=True,
                            return_model=True)
    d = _sigma_diff(tr, ours)
    assert d.max() < 0.05, f"max {d.max():.3g} sigma"
    # one tile: the engine's solution is the exact one, which lsq_distance measures
    assert tr.info["lsq_distance"] == pytest.approx(d.max(), abs=1e-3)
    np.testing.assert_allclose(tr.flux_err, ours.flux_err, rtol=1e-3)
    sky_sigma = np.sqrt(tr.info["sky_var"])
    assert abs(tr.info["sky"] - ours.sky[0]) < 0.05 * sky_sigma
    np.testing.assert_allclose(tr.sky, ours.sky, atol=0.05 * sky_sigma)
    np.testing.assert_array_equal(tr.flags, ours.flags)
    assert tr.model.shape == im.data.shape
    assert abs(np.median(tr.model) - float(im.sky)) < 0.1 * float(im.sky)


@needs_tractor
def test_truncated_psf_keeps_the_light_the_engine_rescales():
    """The Tractor does not rescale a shifted PSF stamp to unit sum, the engine does.

    With a PSF whose light reaches its stamp's edge, the Tractor fits exactly what
    the engine fits with the PSF in a wider stamp; against the engine on the
    same stamp it differs by the light shifted out (< 2.6e-4 of the flux here).
    """
    psf = PixelPSF(demo_bands()[0].psf.array, 0.6, interp_order=3)
    im = _irac_like_field(psf, seed=13, mask=0.0).images["irac1"]
    data = im.data - im.sky
    tr = tractor_photometry(data, psf, im.x, im.y, weight=im.weight)
    wide = forced_photometry(data, _padded(psf), im.x, im.y, weight=im.weight)
    same = forced_photometry(data, psf, im.x, im.y, weight=im.weight)
    assert _sigma_diff(tr, wide).max() < 0.05
    ok = np.isfinite(tr.flux) & (same.snr > 20)
    rel = tr.flux[ok] / same.flux[ok] - 1
    assert rel.max() < 2.6e-4 and np.median(rel) > 0


@needs_tractor
def test_flags_and_degenerate_sources_match_the_engine():
    psf = PixelPSF(gaussian_psf(3.0, size=15).array, 1.0, interp_order=3)
    x = np.array([20.0, 20.0, -5.0, 1.2, 40.3, 60.0, 52.0, 30.0, 32.0])
    y = np.array([20.0, 20.0, 10.0, 30.0, 25.6, 40.0, 10.0, 45.0, 46.4])
    im = simulate_image((50, 70), x, y, np.full(x.size, 300.0), psf, seed=4, sigma=1.0)
    weight = im.weight.copy()
    weight[24:28, 39:43] = 0  # masked centre
    weight[25:50, 50:70] = 0  # no data at all
    ours = forced_photometry(im.data, psf, x, y, weight=weight)
    tr = tractor_photometry(im.data, psf, x, y, weight=weight)
    np.testing.assert_array_equal(tr.flags, ours.flags)
    np.testing.assert_array_equal(tr.n_pixels, ours.n_pixels)
    assert tr.has(Flag.HAS_DEGENERATE)[0] and tr.has(Flag.DEGENERATE)[1]
    assert tr.has(Flag.OFF_IMAGE)[2] and tr.has(Flag.EDGE)[3]
    assert tr.has(Flag.CENTER_MASKED)[4] and tr.has(Flag.NO_DATA)[5]
    assert tr.has(Flag.BLENDED)[7] and tr.has(Flag.BLENDED)[8]
    assert _sigma_diff(tr, ours).max() < 0.05
    empty = tractor_photometry(im.data, psf, [], [], weight=weight)
    assert len(empty) == 0


@needs_tractor
@pytest.mark.parametrize("fit_sky", [False, True])
def test_large_groups_are_tiled_with_the_same_errors(fit_sky):
    psf = _padded(demo_bands()[0].psf)
    im = _irac_like_field(psf, seed=14, area=1.0, mask=0.0).images["irac1"]
    exact = tractor_photometry(im.data, psf, im.x, im.y, weight=im.weight, fit_sky=fit_sky)
    tiled = tractor_photometry(im.data, psf, im.x, im.y, weight=im.weight, fit_sky=fit_sky,
                               max_block=20)
    assert exact.info["tiled_groups"] == 0 and tiled.info["tiled_groups"] >= 1
    np.testing.assert_allclose(tiled.flux_err, exact.flux_err, rtol=2e-3)
    np.testing.assert_array_equal(tiled.flux, exact.flux)


@needs_tractor
def test_concurrent_calls_give_the_serial_results():
    psf = _padded(demo_bands()[0].psf)
    fields = [_irac_like_field(psf, seed=s, area=0.5).images["irac1"] for s in (21, 22)]
    serial = [tractor_photometry(f.data - f.sky, psf, f.x, f.y, weight=f.weight).flux
              for f in fields]
    out: dict[int, np.ndarray] = {}

    def run(k: int) -> None:
        f = fields[k]
        out[k] = tractor_photometry(f.data - f.sky, psf, f.x, f.y, weight=f.weight).flux

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 1):
        np.testing.assert_array_equal(out[k], serial[k])


# ------------------------------------------------------------------ galaxies, against GalSim


def _galsim_galaxies(shape, psf, x, y, flux, shapes, *, trunc=None):
    """Sersic galaxies (``r_e`` the half-light semi-major axis) convolved with ``psf``.

    ``trunc`` truncates the profiles at that many ``r_e`` (along the major axis).
    The PSF is a PRF, so the product is sampled without another pixel.
    """
    galsim = galsim_or_skip()
    gsp = galsim.GSParams(maximum_fft_size=16384, folding_threshold=1e-4,
                          kvalue_accuracy=1e-6)
    ny, nx = shape
    out = galsim.ImageD(nx, ny, scale=1.0)
    prf = galsim.InterpolatedImage(galsim.ImageD(np.asarray(psf.array), scale=1.0))
    for i in range(len(x)):
        r, q, n = shapes["r_e"][i], shapes["q"][i], shapes["n"][i]
        circ = r * np.sqrt(q)  # GalSim's radius of the round profile before the shear
        if trunc is None:
            gal = galsim.Sersic(n=n, half_light_radius=circ, flux=flux[i], gsparams=gsp)
        else:
            r0 = galsim.Sersic(n=n, half_light_radius=circ).scale_radius
            gal = galsim.Sersic(n=n, scale_radius=r0, trunc=trunc * circ, flux=flux[i],
                                gsparams=gsp)
        gal = gal.shear(q=q, beta=shapes["theta"][i] * galsim.degrees)
        stamp = galsim.Convolve(gal, prf, gsparams=gsp).drawImage(
            image=galsim.ImageD(nx, ny, scale=1.0), method="no_pixel",
            center=galsim.PositionD(x[i] + 1.0, y[i] + 1.0))  # GalSim pixels are 1-based
        out += stamp.array
    return out.array.copy()


def _one(r_e, q, theta, n):
    return {"r_e": [r_e], "q": [q], "theta": [theta], "n": [n]}


def _moments(img: np.ndarray) -> tuple[float, float, np.ndarray]:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    tot = img.sum()
    mx, my = (img * xx).sum() / tot, (img * yy).sum() / tot
    dx, dy = xx - mx, yy - my
    cov = np.array([[(img * dx * dx).sum(), (img * dx * dy).sum()],
                    [(img * dx * dy).sum(), (img * dy * dy).sum()]]) / tot
    return mx, my, cov


@needs_tractor
@pytest.mark.parametrize(("r_e", "q", "theta"), [(6.0, 0.5, 30.0), (5.0, 0.3, -70.0)])
def test_galaxy_shape_reaches_the_tractor_with_its_orientation(r_e, q, theta):
    """A noiseless Tractor rendering of a Sersic n = 0.5 (Gaussian) galaxy has the
    analytic centroid and second moments: ``sigma^2 = r_e^2 / (2 ln 2)`` along
    ``theta``, ``q^2`` times that across, plus the PSF's."""
    psf = PixelPSF(gaussian_psf(2.5, size=21).array, 0.4, interp_order=3)
    shape, x, y = (91, 101), 50.3, 44.8
    data = _galsim_galaxies(shape, psf, [x], [y], [1000.0], _one(r_e, q, theta, 0.5))
    res = tractor_photometry(data, psf, [x], [y], sigma=1.0, return_model=True,
                             shapes=_one(r_e, q, theta, 0.5))
    mx, my, cov = _moments(res.model)
    # Lanczos-3 sub-pixel shifts move a centroid by up to 0.02 pixel (PSFs too)
    assert abs(mx - x) < 0.03 and abs(my - y) < 0.03
    _, _, psf_cov = _moments(psf.array)
    t = np.deg2rad(theta)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    s2 = r_e**2 / (2 * np.log(2))
    want = rot @ np.diag([s2, q**2 * s2]) @ rot.T + psf_cov
    np.testing.assert_allclose(cov, want, atol=2e-3 * s2)
    evals, evecs = np.linalg.eigh(cov - psf_cov)
    angle = np.rad2deg(np.arctan2(evecs[1, 1], evecs[0, 1]))
    assert abs((angle - theta + 90) % 180 - 90) < 0.1
    assert np.sqrt(evals[0] / evals[1]) == pytest.approx(q, rel=2e-3)


@needs_tractor
@pytest.mark.parametrize(
    ("n", "trunc", "tol"),
    [
        (0.5, None, 3e-3),  # a Gaussian: the Tractor's mixture is exact
        (1.0, 4.0, 1e-2),  # ExpGalaxy: SDSS-like exponential, cut off near 4 r_e
        (4.0, 8.0, 1e-2),  # DevGalaxy: SDSS-like de Vaucouleurs, cut off near 8 r_e
        (2.5, 6.0, 1e-2),  # SersicGalaxy: its mixture matches a profile cut near 6 r_e
    ],
)
def test_galaxy_fluxes_against_galsim_truth(n, trunc, tol):
    """High-S/N (~10^4) total fluxes of galaxies at several sizes and orientations."""
    psf = _padded(demo_bands()[0].psf)
    shape = (81, 81)
    for r_e, q, theta in [(2.0, 0.6, 30.0), (4.0, 0.4, -50.0), (3.0, 1.0, 0.0)]:
        data = _galsim_galaxies(shape, psf, [40.2], [39.7], [1000.0], _one(r_e, q, theta, n),
                                trunc=trunc)
        res = tractor_photometry(data, psf, [40.2], [39.7], sigma=1e-2,
                                 shapes=_one(r_e, q, theta, n))
        assert res.flux[0] == pytest.approx(1000.0, rel=tol), (r_e, q, theta)
        mirrored = tractor_photometry(data, psf, [40.2], [39.7], sigma=1e-2,
                                      shapes=_one(r_e, q, -theta, n))
        if q < 1 and theta != 0:  # the wrong orientation fits far worse
            assert mirrored.chi2[0] > 20 * res.chi2[0]


@needs_tractor
def test_sersic_index_reaches_the_tractor():
    psf = _padded(demo_bands()[0].psf)
    shp = _one(3.0, 0.7, 10.0, 2.5)
    data = _galsim_galaxies((81, 81), psf, [40.0], [40.0], [1000.0], shp)
    right = tractor_photometry(data, psf, [40.0], [40.0], sigma=1e-2, shapes=shp)
    wrong = tractor_photometry(data, psf, [40.0], [40.0], sigma=1e-2,
                               shapes=dict(shp, n=[1.0]))
    assert right.chi2[0] < wrong.chi2[0] / 3
    with pytest.raises(ValueError, match="outside the Tractor's Sersic range"):
        tractor_photometry(data, psf, [40.0], [40.0], sigma=1e-2, shapes=dict(shp, n=[8.0]))


@needs_tractor
@pytest.mark.skipif("shapes" not in inspect.signature(forced_photometry).parameters,
                    reason="forced_photometry has no shapes= yet (galaxies, issue 11)")
def test_gaussian_galaxies_and_points_agree_with_the_engine():
    """Sersic n = 0.5 galaxies (exact in both renderers) among point sources."""
    psf = _padded(moffat_psf(1.7 / 0.6, 2.5, pixel_scale=0.6))
    rng = np.random.default_rng(5)
    n = 40
    x, y = rng.uniform(5, 115, n), rng.uniform(5, 95, n)
    shapes = {"r_e": np.where(rng.random(n) < 0.5, rng.uniform(1, 4, n), 0.0),
              "q": rng.uniform(0.3, 1, n), "theta": rng.uniform(-90, 90, n),
              "n": np.full(n, 0.5)}
    flux = 10 ** rng.uniform(1, 2.5, n)
    truth = _galsim_galaxies((100, 120), psf, x, y, flux, shapes)
    data = truth + rng.normal(0, 1.0, truth.shape)
    # the same estimator: every galaxy fitted on its whole stamp, as the Tractor does
    # (by default the engine fits a large galaxy on its core and subtracts the rest)
    ours = forced_photometry(data, psf, x, y, sigma=1.0, shapes=shapes, max_core=10_000)
    tr = tractor_photometry(data, psf, x, y, sigma=1.0, shapes=shapes)
    assert _sigma_diff(tr, ours).max() < 0.05
