"""Template fitting (dask_phot.templates): kernels, templates, fits, registration, errors.

Truth is made independently of the engine: analytic Gaussians integrated
over pixels for the unit tests, GalSim for the simulated HST/IRAC pair
(``slow``), and the real HST -> HSC COSMOS cutouts in
``../shared/data/scarlet-cosmos-hst-hsc`` (skipped when absent).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.wcs import WCS

import dask_phot
from dask_phot.psf import OversampledPSF, PixelPSF, PSFError, gaussian_psf
from dask_phot.templates import fit_templates, matching_kernel, run_templates
from dask_phot.templates.build import build_templates, segment_extent
from dask_phot.templates.geometry import map_sources
from dask_phot.templates.kernel import TemplateKernel, band_lattice_psf, sharp_psf_array
from dask_phot.templates.segments import grow_segments, measure_segments
from dask_phot.testing.pairs import tan_wcs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# the golfir 0.1" IRAC ch1 PSF, as packaged (a byte copy of ../shared/data/golfir-irac-psf's)
GOLFIR = Path(dask_phot.__file__).parent / "data" / "psf" / "irac_ch1_warm_psf.fits"
SCARLET = SHARED / "scarlet-cosmos-hst-hsc"
SHARP, BLUR = 0.06, 0.6


def _gauss(r2: np.ndarray, var: float) -> np.ndarray:
    return np.exp(-0.5 * r2 / var) / (2 * np.pi * var)


def _integrated(shape: tuple[int, int], x: float, y: float, sigma: float) -> np.ndarray:
    """A unit-flux Gaussian integrated over pixels (10 x 10 sub-samples)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    sub = (np.arange(10) + 0.5) / 10 - 0.5
    out = np.zeros(shape)
    for a in sub:
        for b in sub:
            out += _gauss((xx + a - x) ** 2 + (yy + b - y) ** 2, sigma**2)
    return out / 100


# ------------------------------------------------------------------------ kernels
def test_matching_kernel_gaussians() -> None:
    """Gaussian to Gaussian: the kernel is the Gaussian of the variance difference."""
    g = np.arange(-25, 26)
    r2 = np.add.outer(g**2, g**2).astype(float)
    for s1, s2 in ((1.0, 3.0), (1.5, 4.0), (0.7, 2.0)):
        k = matching_kernel(_gauss(r2, s1**2), _gauss(r2, s2**2))
        ref = _gauss(r2, s2**2 - s1**2)
        assert np.abs(k - ref).max() < 2e-3 * ref.max()
        assert k.sum() == pytest.approx(1.0)


def test_matching_kernel_against_photutils() -> None:
    """Golden comparison with photutils' create_matching_kernel (a windowed ratio)."""
    photutils = pytest.importorskip("photutils.psf_matching")
    g = np.arange(-25, 26)
    r2 = np.add.outer(g**2, g**2).astype(float)
    src, tgt = _gauss(r2, 1.2**2), _gauss(r2, 3.5**2)
    theirs = photutils.make_kernel(src, tgt, window=photutils.TopHatWindow(0.9))
    ours = matching_kernel(src, tgt, window=(0.9, 0.9))
    assert np.abs(ours - theirs).max() < 1e-3 * theirs.max()


def test_matching_kernel_rejects_bad_psfs() -> None:
    with pytest.raises(PSFError, match="share one odd"):
        matching_kernel(np.ones((5, 5)), np.ones((7, 7)))


def test_band_lattice_psf_samples_the_prf() -> None:
    psf = gaussian_psf(3.0, size=15)
    for m in (2, 3):
        lat = band_lattice_psf(psf, m)
        assert lat.shape == (14 * m + 1,) * 2
        np.testing.assert_allclose(lat[::m, ::m], psf.array, atol=1e-12)
        assert lat.sum() == pytest.approx(m * m, rel=1e-3)


def test_sharp_psf_resampled_to_the_sharp_grid() -> None:
    """A sharp PSF given at half the sharp pixel scale is resampled, flux conserving."""
    fine = gaussian_psf(4.0, size=61, pixel_scale=0.03)
    arr = sharp_psf_array(fine, 0.06)
    assert arr.sum() == pytest.approx(1.0)
    assert gaussian_psf(2.0, size=arr.shape[0]).fwhm == pytest.approx(
        gaussian_psf(2.0).fwhm, rel=0.05)
    assert abs(fine.fwhm / 2 - type(fine).fwhm_of(arr)) < 0.15


# ------------------------------------------------------------------------ templates
def _scene(rotation: float = 25.0):  # type: ignore[no-untyped-def]
    """A point source and a Gaussian galaxy on a rotated sharp grid."""
    hw = tan_wcs(SHARP, (400, 400), (150.0, 2.0), rotation=rotation)
    lw = tan_wcs(BLUR, (40, 40), (150.0, 2.0), crpix_offset=(0.3, -0.2))
    yy, xx = np.mgrid[:400, :400].astype(float)
    sig_h, sig_g = 0.1 / 2.3548 / SHARP, 0.4 / SHARP
    img = (100 * _gauss((xx - 150.3) ** 2 + (yy - 170.7) ** 2, sig_h**2)
           + 100 * _gauss((xx - 260.2) ** 2 + (yy - 230.9) ** 2, sig_h**2 + sig_g**2))
    seg = np.zeros(img.shape, np.int32)
    seg[(xx - 150) ** 2 + (yy - 170) ** 2 < 40**2] = 1
    seg[(xx - 260) ** 2 + (yy - 231) ** 2 < 60**2] = 2
    hpsf = gaussian_psf(0.1 / SHARP, size=41, pixel_scale=SHARP)
    return hw, lw, img, seg, hpsf


@pytest.mark.parametrize("kind", ["pixel", "oversampled"])
@pytest.mark.parametrize("m", [2, 3])
def test_templates_match_analytic_truth(kind: str, m: int) -> None:
    """Templates through rotation, scale change and sub-pixel offsets: a point source
    becomes the band's PSF, a Gaussian galaxy the Gaussian of the summed variances;
    both sum to 1 (flux conserving)."""
    hw, lw, img, seg, hpsf = _scene()
    if kind == "pixel":
        psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    else:
        psf = OversampledPSF(gaussian_psf(18.0, size=301, pixel_scale=0.1).array, 0.1, BLUR,
                             size=21)
    t = measure_segments(img, seg)
    X, Y, jac = map_sources(hw, lw, t.x, t.y)
    segd = {k: getattr(t, k) for k in ("id", "x", "y", "xmin", "xmax", "ymin", "ymax")}
    kern = TemplateKernel.build(psf, sharp_psf_array(hpsf, SHARP), jac.mean(0), m)
    ts = build_templates(img, seg, segd, X, Y, jac, segment_extent(segd, jac), psf, kern)
    sig_l = 1.8 / 2.3548 / BLUR
    for i, sigma in ((0, sig_l), (1, math.hypot(sig_l, 0.4 / BLUR))):
        st = ts.stamps.stamp(i)
        ref = _integrated(st.shape, X[i] - ts.stamps.x0[i], Y[i] - ts.stamps.y0[i], sigma)
        assert st.sum() == pytest.approx(1.0, abs=2e-4)
        assert np.abs(st - ref).max() < 0.015 * ref.max()


def test_template_of_a_sharp_psf_with_a_halo() -> None:
    """A sharp PSF with 15% of its light in a broad halo (as HST's Airy wings): the
    template's point part is a sharp point source through the kernel, so the halo is
    not counted twice and the template is the blurred galaxy, flux and shape."""
    hw = tan_wcs(SHARP, (400, 400), (150.0, 2.0), rotation=25.0)
    lw = tan_wcs(BLUR, (40, 40), (150.0, 2.0), crpix_offset=(0.3, -0.2))
    yy, xx = np.mgrid[:400, :400].astype(float)
    core, halo, gal = 0.1 / 2.3548 / SHARP, 0.4 / SHARP, 0.3 / SHARP
    r2 = (xx - 200.3) ** 2 + (yy - 190.6) ** 2
    img = 100 * (0.85 * _gauss(r2, core**2 + gal**2) + 0.15 * _gauss(r2, halo**2 + gal**2))
    seg = (r2 < 90**2).astype(np.int32)
    g = np.arange(-60, 61.0)
    pr2 = np.add.outer(g**2, g**2)
    hpsf = 0.85 * _gauss(pr2, core**2) + 0.15 * _gauss(pr2, halo**2)
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    t = measure_segments(img, seg)
    X, Y, jac = map_sources(hw, lw, t.x, t.y)
    segd = {k: getattr(t, k) for k in ("id", "x", "y", "xmin", "xmax", "ymin", "ymax")}
    kern = TemplateKernel.build(psf, hpsf / hpsf.sum(), jac.mean(0), 2)
    ts = build_templates(img, seg, segd, X, Y, jac, segment_extent(segd, jac), psf, kern)
    st = ts.stamps.stamp(0)
    ref = _integrated(st.shape, X[0] - ts.stamps.x0[0], Y[0] - ts.stamps.y0[0],
                      math.hypot(1.8 / 2.3548, 0.3) / BLUR)
    assert st.sum() == pytest.approx(1.0, abs=2e-3)
    assert np.abs(st - ref).max() < 0.01 * ref.max()
    # a fit of the noiseless blurred galaxy returns its flux
    data = 250.0 * _integrated((40, 40), X[0], Y[0], math.hypot(1.8 / 2.3548, 0.3) / BLUR)
    tab = fit_templates(data, lw, psf, img, hw, PixelPSF(hpsf, SHARP), seg, sigma=0.1,
                        register=False, unresolved=2.0, fit_sky=False,
                        hires_background="none")
    assert tab.flux.iloc[0] == pytest.approx(250.0, rel=0.003)


def test_grow_segments_stops_at_neighbours() -> None:
    seg = np.zeros((5, 9), dtype=np.int32)
    seg[2, 1], seg[2, 7] = 1, 2
    out = grow_segments(seg, 10)
    assert (out > 0).all()
    assert set(out[2, :4].tolist()) == {1} and set(out[2, 5:].tolist()) == {2}


def _exp_pair(near: float) -> tuple:  # type: ignore[type-arg]
    """A bright and a faint exponential disc ``near`` arcsec apart (sharp grid,
    unrotated; with each one's image), segments cut at a high isophote."""
    hw = tan_wcs(SHARP, (300, 300), (150.0, 2.0))
    lw = tan_wcs(BLUR, (30, 30), (150.0, 2.0), crpix_offset=(0.3, -0.2))
    yy, xx = np.mgrid[:300, :300].astype(float)
    h = 0.25 / SHARP  # scale length, sharp pixels
    centres = [(130.2, 150.4), (130.2 + near / SHARP, 150.4)]
    fluxes = [1000.0, 150.0]
    parts = [f * np.exp(-np.hypot(xx - cx, yy - cy) / h) / (2 * np.pi * h * h)
             for (cx, cy), f in zip(centres, fluxes, strict=True)]
    img = parts[0] + parts[1]
    from scipy import ndimage

    seg, _ = ndimage.label(img > 0.05 * img.max())  # the faint one's core and the bright's
    return hw, lw, img, seg.astype(np.int32), parts


def test_shared_outskirts_split_light_between_neighbours() -> None:
    """Outside every segment the light is shared in proportion to the sources'
    smooth models: the faint source's template holds about half the bright one's
    outskirts that a hard grown boundary gives it and most of its own, and no light
    is counted twice."""
    from dask_phot.templates.share import share_outskirts, shared_light

    hw, lw, img, seg, parts = _exp_pair(2.0)
    assert seg.max() == 2
    t = measure_segments(img, seg)
    reach = round(1.2 / SHARP)
    sh = share_outskirts(img, seg, t, reach)
    b = sh.block  # shares are taken on blocks of b x b pixels
    zone = (seg == 0) & (np.repeat(np.repeat(sh.denom, b, 0), b, 1)[:seg.shape[0],
                                                                      :seg.shape[1]] != 0)
    assert sh.light.sum() == pytest.approx(img[zone].sum(), rel=1e-6)  # shares add to 1
    bright, faint = parts
    grown = grow_segments(seg, reach)
    # the bright source's light in the faint one's template: a fraction of what the
    # hard boundary hands it; the faint one's own outskirts mostly kept
    foreign = shared_light(bright, seg, sh)[1] + bright[seg == 2].sum()
    assert foreign < 0.6 * bright[grown == 2].sum()
    assert shared_light(faint, seg, sh)[1] > 0.7 * faint[(grown == 2) & (seg == 0)].sum()
    hpsf = gaussian_psf(0.1 / SHARP, size=41, pixel_scale=SHARP)
    data = np.zeros((30, 30))
    with pytest.raises(ValueError, match="outskirts"):
        fit_templates(data, lw, hpsf, img, hw, hpsf, seg, grow=1.2, outskirts="soft")


def test_fit_templates_recovers_fluxes() -> None:
    """A point source (modelled as a point: unresolved) and a galaxy (its template)."""
    hw, lw, img, seg, hpsf = _scene()
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    t = measure_segments(img, seg)
    X, Y, _ = map_sources(hw, lw, t.x, t.y)
    sig_l = 1.8 / 2.3548 / BLUR
    clean = (500 * _integrated((40, 40), X[0], Y[0], sig_l)
             + 300 * _integrated((40, 40), X[1], Y[1], math.hypot(sig_l, 0.4 / BLUR)))
    data = clean + np.random.default_rng(1).normal(0, 0.5, clean.shape) + 2.0
    tab = fit_templates(data, lw, psf, img, hw, hpsf, seg, sigma=0.5)
    assert tab["id"].tolist() == [1, 2]
    assert tab["model"].tolist() == ["point", "template"]
    for flux, err, truth in zip(tab.flux, tab.flux_err, (500.0, 300.0), strict=True):
        assert abs(flux - truth) < 4 * err
    assert {"flux", "flux_err", "chi2", "flags", "shift_x", "shift_east"} <= set(tab.columns)
    assert (tab.chi2 < 1.5).all()
    # a bare PSF array (the image's pixel grid) and FITS headers for the WCSs
    same = fit_templates(data, lw.to_header(), psf.array, img, hw.to_header(), hpsf.array,
                         seg, sigma=0.5)
    np.testing.assert_allclose(same.flux, tab.flux, rtol=1e-6)


def test_extra_sources_fall_back_to_models() -> None:
    """Sources absent from the sharp image are fitted as points or Sersic galaxies."""
    hw, lw, img, seg, hpsf = _scene()
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    sky = lw.pixel_to_world(30.0, 8.0)
    t = measure_segments(img, seg)
    X, Y, _ = map_sources(hw, lw, t.x, t.y)
    sig_l = 1.8 / 2.3548 / BLUR
    clean = (500 * _integrated((40, 40), X[0], Y[0], sig_l)
             + 300 * _integrated((40, 40), X[1], Y[1], math.hypot(sig_l, 0.4 / BLUR))
             + 200 * _integrated((40, 40), 30.0, 8.0, sig_l))
    data = clean + np.random.default_rng(2).normal(0, 0.5, clean.shape)
    extra = pd.DataFrame({"id": [99], "ra": [sky.ra.deg], "dec": [sky.dec.deg]})
    tab = fit_templates(data, lw, psf, img, hw, hpsf, seg, sigma=0.5, extra=extra,
                        register=False)
    row = tab.set_index("id").loc[99]
    assert row.model == "point"
    assert abs(row.flux - 200.0) < 4 * row.flux_err


def test_decorrelate_gradient_is_orthogonal_to_the_stamps() -> None:
    """The joint registration's gradient: less its weighted fit by the stamps, it is
    orthogonal to each of them (to the CG's precision), and unchanged where no stamp
    reaches."""
    from dask_phot.models.stamps import Stamps
    from dask_phot.templates.register import decorrelate

    shape = (40, 50)
    xs, ys = np.array([12.3, 15.1, 33.0]), np.array([14.2, 16.0, 20.4])
    side = 15
    cube = np.stack([_integrated((side, side), x - np.floor(x) + 7, y - np.floor(y) + 7, 1.3)
                     for x, y in zip(xs, ys, strict=True)])
    stamps = Stamps.from_square(cube, np.floor(xs).astype(int) - 7,
                                np.floor(ys).astype(int) - 7)
    rng = np.random.default_rng(5)
    weight = rng.uniform(0.5, 2.0, shape)
    g = rng.normal(0.0, 1.0, shape)
    (out,) = decorrelate([g], weight, stamps)
    before = [float(np.sum(weight * g * _place(stamps, i, shape))) for i in range(3)]
    after = [float(np.sum(weight * out * _place(stamps, i, shape))) for i in range(3)]
    assert np.abs(after).max() < 1e-6 * np.abs(before).max()
    covered = sum(_place(stamps, i, shape) != 0 for i in range(3))
    np.testing.assert_array_equal(out[~covered.astype(bool)], g[~covered.astype(bool)])


def _place(stamps: object, i: int, shape: tuple[int, int]) -> np.ndarray:
    img = np.zeros(shape)
    x0, y0 = int(stamps.x0[i]), int(stamps.y0[i])  # type: ignore[attr-defined]
    st = stamps.stamp(i)  # type: ignore[attr-defined]
    img[y0:y0 + st.shape[0], x0:x0 + st.shape[1]] = st
    return img


def test_registration_recovers_an_offset() -> None:
    """The blurred image's WCS handed out 0.3" off: the shift is found and removed."""
    hw, lw, img, seg, hpsf = _scene()
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    t = measure_segments(img, seg)
    X, Y, _ = map_sources(hw, lw, t.x, t.y)
    sig_l = 1.8 / 2.3548 / BLUR
    clean = (5000 * _integrated((40, 40), X[0], Y[0], sig_l)
             + 3000 * _integrated((40, 40), X[1], Y[1], math.hypot(sig_l, 0.4 / BLUR)))
    data = clean + np.random.default_rng(3).normal(0, 0.5, clean.shape)
    given = lw.deepcopy()
    given.wcs.crval = [lw.wcs.crval[0], lw.wcs.crval[1] + 0.3 / 3600]  # 0.3" north
    tab = fit_templates(data, given, psf, img, hw, hpsf, seg, sigma=0.5)
    north = lw.world_to_pixel(hw.pixel_to_world(t.x, t.y))[1] \
        - given.world_to_pixel(hw.pixel_to_world(t.x, t.y))[1]
    assert np.allclose(tab.shift_y, north, atol=0.05 / BLUR)
    assert np.allclose(np.hypot(tab.shift_east, tab.shift_north), 0.3, atol=0.05)
    np.testing.assert_allclose(tab.flux, [5000.0, 3000.0], rtol=0.005)
    again = run_templates(data, given, psf, img, hw, hpsf, seg, sigma=0.5)
    reused = run_templates(data, given, psf, img, hw, hpsf, seg, sigma=0.5,
                           shifts=again.shifts)  # measured once, applied in one pass
    assert reused.info["iterations"] == 0
    np.testing.assert_allclose(reused.table.flux, again.table.flux, rtol=1e-6)
    off = fit_templates(data, given, psf, img, hw, hpsf, seg, sigma=0.5, register=False)
    assert (np.abs(off.flux / [5000.0, 3000.0] - 1) > np.abs(tab.flux / [5000.0, 3000.0] - 1)
            ).all()


# ------------------------------------------------------------------------ bad input
def test_errors_name_the_argument(tmp_path: Path) -> None:
    hw, lw, img, seg, hpsf = _scene()
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    data = np.zeros((40, 40))
    with pytest.raises(ValueError, match="segmap: shape"):
        fit_templates(data, lw, psf, img, hw, hpsf, seg[:-1], sigma=1.0)
    from astropy.io import fits

    path = tmp_path / "seg_wrong.fits"
    fits.writeto(path, seg[:, :-3])
    with pytest.raises(ValueError, match=r"seg_wrong\.fits: shape"):
        fit_templates(data, lw, psf, img, hw, hpsf, str(path), sigma=1.0)
    far = tan_wcs(BLUR, (40, 40), (151.0, 2.0))
    with pytest.raises(ValueError, match="do not overlap"):
        fit_templates(data, far, psf, img, hw, hpsf, seg, sigma=1.0)
    with pytest.raises(PSFError, match=r"psf: pixel scale 0.168"):
        fit_templates(data, lw, gaussian_psf(3.0, size=21, pixel_scale=0.168), img, hw,
                      hpsf, seg, sigma=1.0)
    wrong = gaussian_psf(1.7, size=41, pixel_scale=1.0)  # the default scale, left unset
    with pytest.raises(PSFError, match="hires_psf: pixel scale 1\"/px is coarser"):
        fit_templates(data, lw, psf, img, hw, wrong, seg, sigma=1.0)
    broad = gaussian_psf(40.0, size=121, pixel_scale=SHARP)  # 2.4": no sharper than psf
    with pytest.raises(PSFError, match="not sharper"):
        fit_templates(data, lw, psf, img, hw, broad, seg, sigma=1.0)
    with pytest.raises(ValueError, match="register_iterations"):
        fit_templates(data, lw, psf, img, hw, hpsf, seg, sigma=1.0, register_iterations=0)
    with pytest.raises(TypeError, match="wcs"):
        fit_templates(data, "not a wcs", psf, img, hw, hpsf, seg, sigma=1.0)
    assert isinstance(lw, WCS)


# ------------------------------------------------------------------------ simulated pair
def _pair_stats(sim, tab: pd.DataFrame, segmap: np.ndarray) -> dict:  # type: ignore[no-untyped-def]
    """Bias and pulls at S/N 5-100 over segments owned by one source."""
    from dask_phot.testing.pairs import pair_statistics

    row = pair_statistics(sim, tab, segmap).loc["all"]
    return {"n": int(row.n), "bias": row.bias, "std": row["std"], "mad": row.mad_std}


def _detect(sim):  # type: ignore[no-untyped-def]
    from dask_phot.detect import DetectionParams, detect_sources

    return detect_sources(sim.hires, params=DetectionParams(thresh=1.5, minarea=5,
                                                            deblend_cont=1.0),
                          rms=sim.hires_sigma, background=0.0).segmap


@pytest.mark.slow
@pytest.mark.skipif(not GOLFIR.exists(), reason=f"golfir IRAC PSF absent: {GOLFIR}")
def test_psf_wings_beyond_a_tight_segment_given_back() -> None:
    """A compact source cut by a tight segment (radius 0.6") loses the sharp PSF's halo
    beyond it (4.8% of the light): its template is too compact and its flux low
    (1.1%). With ``psf_wings`` the
    PSF's light beyond the segment is given back from the PSF (:mod:`.wings`): the
    template of a point source is the band's PSF again and its flux is exact."""
    hw = tan_wcs(SHARP, (400, 400), (150.0, 2.0), rotation=25.0)
    lw = tan_wcs(BLUR, (40, 40), (150.0, 2.0), crpix_offset=(0.3, -0.2))
    yy, xx = np.mgrid[:400, :400].astype(float)
    core, halo = 0.1 / 2.3548 / SHARP, 0.4 / SHARP
    r2 = (xx - 200.3) ** 2 + (yy - 190.6) ** 2
    img = 100 * (0.85 * _gauss(r2, core**2) + 0.15 * _gauss(r2, halo**2))
    seg = (r2 < 10**2).astype(np.int32)
    g = np.arange(-60, 61.0)
    pr2 = np.add.outer(g**2, g**2)
    hpsf = PixelPSF(0.85 * _gauss(pr2, core**2) + 0.15 * _gauss(pr2, halo**2), SHARP)
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    t = measure_segments(img, seg)
    X, Y, _ = map_sources(hw, lw, t.x, t.y)
    data = 250.0 * _integrated((40, 40), X[0], Y[0], 1.8 / 2.3548 / BLUR)
    flux = {}
    for wings in (False, True):
        tab = fit_templates(data, lw, psf, img, hw, hpsf, seg, sigma=0.1, grow=0.0,
                            psf_wings=wings, register=False, unresolved=2.0,
                            fit_sky=False)
        assert tab.model.iloc[0] == "template"
        flux[wings] = float(tab.flux.iloc[0])
    # 4.8% of the light is beyond the segment; the fit makes up for part of it
    assert flux[False] < 0.992 * 250.0
    assert flux[True] == pytest.approx(250.0, rel=0.001)


def test_simulated_hst_irac_pair_accuracy_and_registration() -> None:
    """HST-like 0.06" and IRAC-like 0.6" images of clumpy galaxies at COSMOS density
    (GalSim): total fluxes within 2%, pulls near 1; with the blurred WCS handed out
    0.3" off, the registration finds the offset within 0.05" and the accuracy is kept.

    The function's default options: segments grown 1.2" with the outskirts shared
    between neighbours (:mod:`dask_phot.templates.share`), and the errors hold the
    light of unsegmented sources in the shared pixels (``noise.confusion``): pull
    std ~1.14 (1.33 with hard grown boundaries and no confusion term, 1.75 with
    default segments)."""
    pytest.importorskip("galsim")
    from dask_phot.testing.pairs import simulate_pair

    psf = OversampledPSF.from_fits(GOLFIR, BLUR, size=21)
    stats = []
    for offset in ((0.0, 0.0), (0.3, 0.0)):
        sim = simulate_pair(psf, size_arcsec=120.0, offset=offset, seed=1)
        segmap = _detect(sim)
        tab = fit_templates(sim.image, sim.wcs, psf, sim.hires, sim.hires_wcs,
                            sim.hires_psf, segmap, sigma=1.0)
        s = _pair_stats(sim, tab, segmap)
        assert s["n"] > 150
        assert abs(s["bias"]) < 0.02
        assert 0.85 < s["std"] < 1.25 and 0.85 < s["mad"] < 1.25, s
        true_east = np.median(sim.truth.dx) * BLUR * -1  # east is -x on this grid
        assert abs(np.median(tab.shift_east) - true_east) < 0.05
        assert abs(np.median(tab.shift_north)) < 0.05
        stats.append(s)
    assert abs(stats[1]["bias"] - stats[0]["bias"]) < 0.01
    assert abs(stats[1]["std"] - stats[0]["std"]) < 0.1


@pytest.mark.slow
@pytest.mark.skipif(not GOLFIR.exists(), reason=f"golfir IRAC PSF absent: {GOLFIR}")
def test_simulated_pair_sparse_field_pulls() -> None:
    """The same galaxies at a tenth of COSMOS density, with the WCS 0.3" off: bias
    within 2%, pull std within 0.85-1.25 (the errors hold the sharp image's noise in
    the templates: :mod:`dask_phot.templates.noise`)."""
    pytest.importorskip("galsim")
    from dask_phot.testing.pairs import simulate_pair
    from dask_phot.testing.sources import COSMOS_DENSITY

    psf = OversampledPSF.from_fits(GOLFIR, BLUR, size=21)
    sim = simulate_pair(psf, size_arcsec=240.0, seed=2, offset=(0.3, 0.0),
                        density_per_deg2=COSMOS_DENSITY / 10)
    segmap = _detect(sim)
    tab = fit_templates(sim.image, sim.wcs, psf, sim.hires, sim.hires_wcs, sim.hires_psf,
                        segmap, sigma=1.0, grow=1.2, hires_background="none")
    s = _pair_stats(sim, tab, segmap)
    assert s["n"] > 80
    assert abs(s["bias"]) < 0.02 and 0.85 < s["std"] < 1.25, s
    true_east = np.median(sim.truth.dx) * BLUR * -1  # east is -x on this grid
    assert abs(np.median(tab.shift_east) - true_east) < 0.05 and abs(true_east) > 0.25


# ------------------------------------------------------------------------ real HST -> HSC
@pytest.mark.slow
@pytest.mark.skipif(not SCARLET.exists(), reason=f"HST/HSC cutouts absent: {SCARLET}")
def test_real_hst_hsc_residuals() -> None:
    """Real COSMOS HST -> HSC i band: Sersic (HST shapes) and template fits leave much
    smaller residuals than point-source fits (galaxies' median reduced chi2)."""
    from astropy.io import fits

    from dask_phot import forced_photometry
    from dask_phot.detect import DetectionParams, detect_sources
    from dask_phot.models.shapes import sky_to_pixel, wcs_jacobian
    from dask_phot.psf import PixelPSF
    from dask_phot.templates.shapes import sky_shapes

    with fits.open(SCARLET / "PSF_HST.fits") as h:
        hpsf = PixelPSF.from_array(np.array(h[0].data, dtype=float), 0.03, size=177)
    with fits.open(SCARLET / "PSF_HSC.fits") as h:
        psf = PixelPSF(np.array(h[0].data[2], dtype=float), 0.168, name="HSC i")
    for hst_file, hsc_file in (("Cut_HST.fits", "Cut_HSC.fits"),
                               ("Cut_HST1.fits", "Cut_HSC1.fits")):
        with fits.open(SCARLET / hst_file) as h:
            hst, hwcs = np.array(h[0].data, dtype=float), WCS(h[0].header).celestial
        with fits.open(SCARLET / hsc_file) as h:
            img, wcs = np.array(h[0].data[2], dtype=float), WCS(h[0].header).celestial
        det = detect_sources(hst, params=DetectionParams(thresh=2.0, minarea=10,
                                                         deblend_cont=0.01),
                             background_kwargs={"box_size": 64})
        sub = hst - det.background.back
        x, y = det.table.x.to_numpy(), det.table.y.to_numpy()
        X, Y, _ = map_sources(hwcs, wcs, x, y)
        sky = sky_shapes(sub, det.table, hpsf.array, hwcs, 0.03)
        r, q, theta = sky_to_pixel(wcs_jacobian(wcs, X, Y), sky.r_e.to_numpy(),
                                   sky.q.to_numpy(), sky.pa.to_numpy())
        shapes = {"r_e": r, "q": np.clip(q, 0.05, 1), "theta": theta, "n": sky.n.to_numpy()}
        tab = fit_templates(img, wcs, psf, sub, hwcs, hpsf, det.segmap)
        gal = (tab.model == "template").to_numpy()
        assert gal.sum() >= 3
        point = np.nanmedian(forced_photometry(img, psf, X, Y, fit_sky=True).chi2[gal])
        sersic = np.nanmedian(forced_photometry(img, psf, X, Y, shapes=shapes,
                                                fit_sky=True).chi2[gal])
        template = np.nanmedian(tab.chi2[gal])
        assert point > 4.0
        assert sersic < 0.5 * point and template < 0.6 * point


# ------------------------------------------------------------------------ a cell's box
def _write_scene(tmp_path: Path) -> tuple[dict, np.ndarray, WCS, np.ndarray]:
    """FITS files of the unit scene: sharp image, its map, a blurred mosaic."""
    from astropy.io import fits

    hw, lw, img, seg, hpsf = _scene()
    t = measure_segments(img, seg)
    X, Y, _ = map_sources(hw, lw, t.x, t.y)
    sig_l = 1.8 / 2.3548 / BLUR
    clean = (500 * _integrated((40, 40), X[0], Y[0], sig_l)
             + 300 * _integrated((40, 40), X[1], Y[1], math.hypot(sig_l, 0.4 / BLUR))
             + 200 * _integrated((40, 40), 30.0, 8.0, sig_l))
    data = clean + np.random.default_rng(5).normal(0, 0.5, clean.shape)
    paths = {"sharp": tmp_path / "sharp.fits", "seg": tmp_path / "sharp_seg.fits",
             "blur": tmp_path / "blur.fits"}
    fits.writeto(paths["sharp"], img.astype(np.float32), hw.to_header())
    fits.writeto(paths["seg"], seg, hw.to_header())
    fits.writeto(paths["blur"], data, lw.to_header())
    return paths, data, lw, hpsf


def _cell_sources(lw: WCS, hw_paths: dict) -> pd.DataFrame:
    from astropy.io import fits

    hw = WCS(fits.getheader(hw_paths["sharp"]))
    img = fits.getdata(hw_paths["sharp"]).astype(float)
    t = measure_segments(img, fits.getdata(hw_paths["seg"]))
    sky = hw.pixel_to_world(t.x, t.y)
    extra = lw.pixel_to_world(30.0, 8.0)
    return pd.DataFrame({"source_id": [1, 2, 99],
                         "ra": [*sky.ra.deg, extra.ra.deg], "dec": [*sky.dec.deg, extra.dec.deg]})


def test_fit_region_reads_the_sharp_box(tmp_path: Path) -> None:
    """A cell's band: the sharp mosaic and map read over the blurred box only; segment
    labels tie templates to priors; a prior without a segment is a point source."""
    from dask_phot.images import build_index, read_region
    from dask_phot.templates.cell import SharpImages, fit_region, read_sharp

    paths, data, lw, hpsf = _write_scene(tmp_path)
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    sharp = SharpImages.open(paths["sharp"], paths["seg"], hpsf)
    mosaic = build_index(str(paths["blur"]), band="irac1")[0]
    region = read_region(mosaic, (0, 40), (0, 40))
    img, seg = read_sharp(sharp, region, margin_arcsec=2.0)
    assert img.shape == seg.shape and img.shape[0] < 500
    sources = _cell_sources(lw, paths)
    out = fit_region(sources, region, psf, sharp, sigma=0.5, register=False)
    assert out.model.tolist() == ["point", "template", "point"]
    for flux, err, truth in zip(out.flux, out.flux_err, (500.0, 300.0, 200.0), strict=True):
        assert abs(flux - truth) < 4 * err
    whole = fit_templates(data, lw, psf, str(paths["sharp"]), WCS(img.wcs.to_header()),
                          hpsf, str(paths["seg"]), sigma=0.5, register=False,
                          extra=sources.iloc[2:].rename(columns={"source_id": "id"}))
    assert whole.flux.to_numpy() == pytest.approx(out.flux.to_numpy(), rel=1e-3)


def test_fit_region_from_s3(tmp_path: Path, s3_server) -> None:  # type: ignore[no-untyped-def]
    """The same through a real S3 endpoint (the sharp box read by byte ranges)."""
    from dask_phot.images import build_index, read_region
    from dask_phot.templates.cell import SharpImages, fit_region

    paths, _, lw, hpsf = _write_scene(tmp_path)
    s3_server.create_bucket("templates-cell")
    urls = {k: s3_server.upload(p, "templates-cell", p.name) for k, p in paths.items()}
    opts = s3_server.storage_options()
    sharp = SharpImages.open(urls["sharp"], urls["seg"], hpsf, storage_options=opts)
    region = read_region(build_index(urls["blur"], band="irac1", storage_options=opts)[0],
                         (0, 40), (0, 40), storage_options=opts)
    psf = gaussian_psf(1.8 / BLUR, size=21, pixel_scale=BLUR)
    out = fit_region(_cell_sources(lw, paths), region, psf, sharp, sigma=0.5,
                     register=False, storage_options=opts)
    assert np.allclose(out.flux, [500.0, 300.0, 200.0], atol=4 * out.flux_err.max())
    from astropy.io import fits

    with pytest.raises(ValueError, match=r"bad_seg\.fits: shape \(10, 10\) differs from"):
        fits.writeto(tmp_path / "bad_seg.fits", np.zeros((10, 10), np.int32),
                     fits.getheader(paths["sharp"]))
        SharpImages.open(paths["sharp"], tmp_path / "bad_seg.fits", hpsf)
