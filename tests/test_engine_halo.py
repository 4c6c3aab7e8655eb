"""Scene tiles without their halo: a pipeline cell's fits (``final_weight``).

A tile frees only the sources centred in its region (``make_tiling(halo=False)``); the
light of the others is subtracted at fluxes measured where they are primary
(:func:`dask_phot.engine.fit._halo_free_fit`). The fluxes must keep their accuracy
against the truth, and stay close to the fit whose tiles free their whole halo.
"""

from __future__ import annotations

import numpy as np
import pytest

from dask_phot import forced_photometry
from dask_phot.engine import scene
from dask_phot.engine.scene import default_tiling, make_tiling
from dask_phot.psf import OversampledPSF
from dask_phot.testing.image import simulate_image


@pytest.fixture(scope="module")
def wing_psf():
    """An oversampled Moffat PSF (0.1" samples, 0.6" pixels, beta 2.5), whose wings
    reach past its 15-pixel core."""
    u = (np.arange(241) - 120.0) / 8.0
    arr = (1.0 + u[:, None] ** 2 + u[None, :] ** 2) ** -2.5
    return OversampledPSF(arr / arr.sum(), 0.1, 0.6, size=15, wing_size=33)


@pytest.fixture(scope="module")
def field(wing_psf):
    """A crowded field (~0.12 sources per pixel reach each tile) with independent truth,
    and its weights cut to an inner zone."""
    rng = np.random.default_rng(8)
    shape, n = (110, 140), 640
    x, y = rng.uniform(-3, shape[1] + 2, n), rng.uniform(-3, shape[0] + 2, n)
    flux = 10 ** rng.uniform(0.5, 3.0, n)
    im = simulate_image(shape, x, y, flux, wing_psf, seed=9, sigma=1.0, sky=0.3)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    zone = (xx >= 24) & (xx < 116) & (yy >= 22) & (yy < 88)
    return im, im.weight * zone


def test_halo_free_tiles_hold_the_sources_centred_in_their_regions():
    """Without ``halo``, a tile's members are exactly its usual members whose centre
    pixel lies in its (unclipped) region; primaries are unchanged."""
    rng = np.random.default_rng(3)
    shape, n, t, g = (90, 120), 300, 14, 9
    cx, cy = rng.integers(-6, 126, n), rng.integers(-6, 96, n)
    side = rng.choice([11, 15, 31], n)
    box = (cx - side // 2, cy - side // 2, side, side)
    fit = rng.random(n) > 0.1
    full = make_tiling(cx, cy, box, fit, shape, t, g, all_tiles=True)
    free = make_tiling(cx, cy, box, fit, shape, t, g, all_tiles=True, halo=False)
    assert np.array_equal(full.tile_ids, free.tile_ids)
    ntx = full.ntx
    fewer = 0
    for k, b in enumerate(full.tile_ids):
        tx, ty = b % ntx, b // ntx
        mem = full.members[full.ptr[k]:full.ptr[k + 1]]
        pri = full.primary[full.ptr[k]:full.ptr[k + 1]]
        inside = ((cx[mem] >= tx * t - g) & (cx[mem] < (tx + 1) * t + g)
                  & (cy[mem] >= ty * t - g) & (cy[mem] < (ty + 1) * t + g))
        got = free.members[free.ptr[k]:free.ptr[k + 1]]
        assert np.array_equal(got, mem[inside])  # same order
        assert np.array_equal(free.primary[free.ptr[k]:free.ptr[k + 1]], pri[inside])
        assert pri[~inside].sum() == 0
        fewer += (~inside).sum()
    assert fewer > 0.3 * full.members.size  # the halo is a large part of each tile


def _pulls(res, im, sel):
    p = (res.flux - im.flux)[sel] / res.flux_err[sel]
    return p[np.isfinite(p)]


@pytest.mark.parametrize("fit_sky", [False, True])
def test_halo_free_fits_keep_their_accuracy(wing_psf, field, monkeypatch, fit_sky):
    """With ``final_weight`` (halo-free fits): pulls against the truth as good as those
    of tiles that free their whole halo, and fluxes within a small part of sigma of
    theirs."""
    im, final = field
    kw = dict(weight=im.weight, final_weight=final, fit_sky=fit_sky,
              sky=None if fit_sky else 0.3)
    got = forced_photometry(im.data, wing_psf, im.x, im.y, **kw)
    whole = scene.make_tiling

    def with_halo(*args, **kwargs):
        kwargs["halo"] = True
        return whole(*args, **kwargs)

    monkeypatch.setattr(scene, "make_tiling", with_halo)
    ref = forced_photometry(im.data, wing_psf, im.x, im.y, **kw)
    t, g = default_tiling(wing_psf.size, wing_psf.fwhm)
    assert t < 40 and g < 20  # several tiles across the zone
    cx = np.floor(im.x + 0.5).astype(int)
    cy = np.floor(im.y + 0.5).astype(int)
    inner = ((cx >= 32) & (cx < 108) & (cy >= 30) & (cy < 80)
             & np.isfinite(got.flux) & np.isfinite(ref.flux))
    assert inner.sum() > 120
    pg, pr = _pulls(got, im, inner), _pulls(ref, im, inner)
    assert abs(np.median(pg)) < 0.15 and 0.8 < np.std(pg) < 1.25
    assert np.std(pg) < np.std(pr) + 0.05
    d = np.abs(got.flux - ref.flux)[inner] / ref.flux_err[inner]
    assert np.quantile(d, 0.9) < 0.2 and d.max() < 1.0
    r = got.flux_err[inner] / ref.flux_err[inner]
    assert np.all(r <= 1 + 1e-9) and np.median(r) > 0.97  # conditional on the halo: smaller
