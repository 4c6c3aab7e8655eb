"""The engine seams the template fit uses: a fit's own stamp products, and a fit of
stamps used where they are stored (no copy into tile order)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dask_phot.engine.fit import fit_stamps, scatter_stamps
from dask_phot.models.stamps import Stamps
from dask_phot.templates.noise import stamp_products


def _field(seed: int = 4, n: int = 60, side: int = 13, shape: tuple[int, int] = (80, 90)
           ) -> tuple[np.ndarray, Stamps, np.ndarray, np.ndarray]:
    """Blended Gaussian sources of random widths (unit-flux stamps) and their noisy image."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(4, shape[1] - 5, n)
    y = rng.uniform(4, shape[0] - 5, n)
    x0 = np.floor(x + 0.5).astype(np.int64) - side // 2
    y0 = np.floor(y + 0.5).astype(np.int64) - side // 2
    yy, xx = np.mgrid[:side, :side]
    sig = rng.uniform(1.0, 2.5, n)
    st = np.exp(-0.5 * (((xx[None] + x0[:, None, None] - x[:, None, None]) ** 2
                         + (yy[None] + y0[:, None, None] - y[:, None, None]) ** 2)
                        / sig[:, None, None] ** 2))
    st /= st.sum(axis=(1, 2), keepdims=True)
    stamps = Stamps.from_square(st, x0, y0)
    image = rng.normal(0.0, 1.0, shape)
    flux = rng.uniform(20, 200, n)
    for i in range(n):
        ys, xs = max(y0[i], 0), max(x0[i], 0)
        ye, xe = min(y0[i] + side, shape[0]), min(x0[i] + side, shape[1])
        image[ys:ye, xs:xe] += flux[i] * st[i, ys - y0[i]:ye - y0[i], xs - x0[i]:xe - x0[i]]
    return image, stamps, x, y


def stamps_image(stamps: Stamps, i: int, shape: tuple[int, int]) -> np.ndarray:
    """Stamp ``i`` alone on an image of ``shape``."""
    amp = np.zeros(len(stamps))
    amp[i] = 1.0
    return scatter_stamps(stamps, amp, shape)


def test_fit_products_are_the_stamps_products() -> None:
    image, stamps, x, y = _field()
    res = fit_stamps(image, stamps, x, y, fwhm=3.0, sigma=1.0, fit_sky=True, keep_state=True)
    a, b, vals, diag = res.info["state"].products()
    ra, rb, rvals, rdiag = stamp_products(stamps, np.ones(image.shape))
    np.testing.assert_allclose(diag, rdiag, rtol=1e-12)
    assert rdiag.min() > 0
    got = {(min(i, j), max(i, j)): v for i, j, v in zip(a, b, vals, strict=True)}
    ref = {(min(i, j), max(i, j)): v for i, j, v in zip(ra, rb, rvals, strict=True) if v != 0}
    # every pair, by brute force on images
    full = [np.zeros(image.shape) for _ in x]
    for i, f in enumerate(full):
        f[:] = stamps_image(stamps, i, image.shape)
    brute = {(i, j): float(np.sum(full[i] * full[j])) for i in range(len(x))
             for j in range(i + 1, len(x)) if np.sum(full[i] * full[j]) != 0}
    assert ref == pytest.approx(brute, rel=1e-12)
    assert len(ref) > 2 * len(x)  # a blended field: each stamp overlaps several
    assert got.keys() == ref.keys()
    np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), rtol=1e-12)
    assert "state" not in fit_stamps(image, stamps, x, y, fwhm=3.0, sigma=1.0).info


def test_fit_in_place_agrees_with_the_copy_in_tile_order() -> None:
    image, stamps, x, y = _field(seed=7)
    copied = fit_stamps(image, stamps, x, y, fwhm=3.0, sigma=1.0, fit_sky=True)
    used = fit_stamps(image, stamps, x, y, fwhm=3.0, sigma=1.0, fit_sky=True, in_place=True)
    assert np.isfinite(copied.flux).all()
    np.testing.assert_allclose(used.flux, copied.flux, rtol=0, atol=1e-9 * copied.flux_err.min())
    np.testing.assert_allclose(used.flux_err, copied.flux_err, rtol=1e-9)
    np.testing.assert_array_equal(used.flags, copied.flags)


def test_fit_without_errors_gives_the_same_fluxes_and_model() -> None:
    image, stamps, x, y = _field(seed=9)
    full = fit_stamps(image, stamps, x, y, fwhm=3.0, sigma=1.0, fit_sky=True,
                      return_model=True, keep_state=True, in_place=True)
    quick = fit_stamps(image, stamps, x, y, fwhm=3.0, sigma=1.0, fit_sky=True,
                       return_model=True, keep_state=True, in_place=True, errors=False)
    assert np.isfinite(full.flux).all() and np.isfinite(full.flux_err).all()
    np.testing.assert_array_equal(quick.flux, full.flux)
    np.testing.assert_array_equal(quick.model, full.model)
    assert np.isnan(quick.flux_err).all() and np.isnan(quick.chi2).all()
    # the same pair table: the products the registration reads
    for got, ref in zip(quick.info["state"].products(), full.info["state"].products(),
                        strict=True):
        np.testing.assert_array_equal(got, ref)
    wide = SimpleNamespace(size=13, wing_size=31)  # a PSF with wings beyond the stamps
    with pytest.raises(ValueError, match="errors=False"):
        fit_stamps(image, stamps, x, y, fwhm=3.0, sigma=1.0, psf=wide, errors=False)
