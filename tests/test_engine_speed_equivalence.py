"""The engine's fast paths against simple reference implementations.

Scene mode builds its normal matrices from block partial sums of a whole-image
pair table, factorises them right-looking, renders stamps grouped by tile, and
counts footprints from a summed-area table; the PSF renders with whole-plane
tap sums. Each is compared here, on small fields, with the direct computation
it replaces (the kernels kept for cutout mode, or a few lines of numpy). The
fields mix point sources with galaxies, whose stamps are larger (ragged stamps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dask_phot import forced_photometry, gaussian_psf
from dask_phot.engine import _kernels as K
from dask_phot.engine.prepare import footprint_flags, prepare_inputs
from dask_phot.engine.scene import (
    default_tiling,
    make_tiling,
    sky_at,
    sky_image,
    solve_scene,
    spatial_order,
)
from dask_phot.models.render import render_sources
from dask_phot.models.shapes import Shapes
from dask_phot.models.stamps import Stamps
from dask_phot.psf import OversampledPSF, PSFGrid, lanczos_stamps
from dask_phot.schema import Flag


@pytest.fixture(scope="module")
def psf():
    return gaussian_psf(2.5, size=13)


def field_shapes(n, seed):
    """Every third source a galaxy, some with stamps larger than the PSF's."""
    rng = np.random.default_rng(seed + 100)
    r_e = np.where(np.arange(n) % 3 == 2, rng.uniform(0.3, 4.0, n), 0.0)
    return Shapes.from_mapping({"r_e": r_e, "q": rng.uniform(0.4, 1, n),
                                "theta": rng.uniform(0, 180, n), "n": rng.uniform(0.5, 4, n)}, n)


def stamps_of(psf, x, y, seed=0, order=None):
    """Ragged stamps (input order) of the mixed field's sources."""
    return render_sources(psf, x, y, field_shapes(x.size, seed), order=order).stamps


def boxes(st):
    return st.x0, st.y0, st.w, st.h


def field(psf, seed=0, shape=(90, 120), n=90, masked=True):
    """Noisy image of ``n`` sources (a few off the edges) with masked patches."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    x = rng.uniform(-4, nx + 3, n)
    y = rng.uniform(-4, ny + 3, n)
    x[:2], y[:2] = [40.0, 40.0], [30.0, 30.0]  # an identical pair (both points)
    st = stamps_of(psf, x, y, seed)
    assert len(set(st.w.tolist())) > 1
    img = K.scatter_model(*st.arrays, rng.uniform(5, 400, n), shape)
    img += rng.normal(0, 1, shape)
    weight = rng.uniform(0.5, 2.0, shape)
    if masked:
        weight[10:14, 50:70] = 0.0
        weight[rng.random(shape) < 0.02] = 0.0
    return img, weight, x, y


# ------------------------------------------------------------------------ rendering
def lanczos_reference(base, dx, dy, a):
    """The separable Lanczos shift written out tap by tap (the original loops)."""

    def taps(frac):
        t = np.arange(-a, a + 1) + frac
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.array([1.0 if v == 0 else (0.0 if abs(v) >= a else
                          a * math.sin(math.pi * v) * math.sin(math.pi * v / a)
                          / (math.pi * v) ** 2) for v in t])
        return w / w.sum()

    k = base.shape[0]
    kx, ky = taps(dx), taps(dy)
    tmp = np.zeros((k, k))
    out = np.zeros((k, k))
    for r in range(k):
        for c in range(k):
            tmp[r, c] = sum(kx[2 * a - j] * base[r, c - (j - a)]
                            for j in range(2 * a + 1) if 0 <= c - (j - a) < k)
    for r in range(k):
        for c in range(k):
            out[r, c] = sum(ky[2 * a - j] * tmp[r - (j - a), c]
                            for j in range(2 * a + 1) if 0 <= r - (j - a) < k)
    return out * (base.sum() / out.sum())


@pytest.mark.parametrize("order", [2, 3, 8])
def test_lanczos_stamps_match_direct_taps(order):
    rng = np.random.default_rng(order)
    bases = rng.random((3, 9, 9))
    dx = np.array([0.0, 0.5, -0.5, 0.31, -0.12, 1e-17, 0.4999999])
    dy = np.array([0.0, -0.5, 0.5, -0.27, 0.44, 0.0, -1e-9])
    idx = rng.integers(0, 3, dx.size)
    shared = lanczos_stamps(bases, idx, dx, dy, order)  # bases shared by sources
    own = lanczos_stamps(bases[idx], np.arange(dx.size), dx, dy, order)  # one each
    for i in range(dx.size):
        ref = lanczos_reference(bases[idx[i]], dx[i], dy[i], order)
        np.testing.assert_allclose(shared[i], ref, rtol=0, atol=1e-13)
        np.testing.assert_allclose(own[i], ref, rtol=0, atol=1e-13)


def test_psf_grid_stamps_use_the_per_source_path(psf):
    grid = PSFGrid([psf, gaussian_psf(3.0, size=13)], [0.0, 100.0], [0.0, 0.0])
    x, y = np.array([10.3, 60.7]), np.array([5.2, 7.9])
    st, _, _ = grid.stamps(x, y)
    for i in range(2):
        local = grid.at(x[i], y[i])
        ref = lanczos_reference(local.array, x[i] - round(x[i]), y[i] - round(y[i]),
                                grid.interp_order)
        np.testing.assert_allclose(st[i], ref, rtol=0, atol=1e-13)


# ------------------------------------------------------------------------ kernels
def test_footprint_counts_and_chi2_match_footprint_stats(psf):
    img, weight, x, y = field(psf, seed=1)
    st = stamps_of(psf, x, y, 1)
    resid = np.random.default_rng(2).normal(size=img.shape)
    nuse, nmask, nout, chi = K.footprint_stats(*boxes(st), weight, resid)
    assert all(np.array_equal(a, b) for a, b in
               zip((nuse, nmask, nout), K.footprint_counts(*boxes(st), weight), strict=True))
    # the chi-square sums come from the pass of the model-mismatch statistic (vectorised
    # along stamp rows: the same terms, summed in another order)
    from dask_phot.engine.mismatch import mismatch_and_chi2

    np.testing.assert_allclose(mismatch_and_chi2(st, weight, resid)[1], chi, rtol=1e-12)


def test_scatter_model_matches_numpy(psf):
    _, _, x, y = field(psf, seed=3)
    st = stamps_of(psf, x, y, 3)
    flux = np.random.default_rng(3).uniform(1, 10, x.size)
    flux[5] = np.nan
    shape = (90, 120)
    pad = st.max_side
    ref = np.zeros((shape[0] + 2 * pad, shape[1] + 2 * pad))
    for i in np.flatnonzero(np.isfinite(flux)):
        y0, x0 = st.y0[i] + pad, st.x0[i] + pad
        ref[y0 : y0 + st.h[i], x0 : x0 + st.w[i]] += flux[i] * st.stamp(i)
    ref = ref[pad : pad + shape[0], pad : pad + shape[1]]
    np.testing.assert_allclose(K.scatter_model(*st.arrays, flux, shape), ref,
                               rtol=1e-13, atol=1e-13)


def test_right_looking_solve_is_identical_to_solve_normal():
    rng = np.random.default_rng(5)
    for trial in range(400):
        p = int(rng.integers(1, 30))
        a = rng.normal(size=(50, p)) * (rng.random((50, p)) < 0.3)
        if p > 2:
            a[:, p - 1] = a[:, 0]  # a duplicate of an earlier column
        if p > 4 and trial % 2:
            a[:, 3] = a[:, 1] - 2 * a[:, 2]  # a combination of earlier ones
        nmat = a.T @ a
        nmat = 0.5 * (nmat + nmat.T)
        rhs = rng.normal(size=p)
        want = rng.random(p) < 0.5
        tol = [1e-7, 1e-3][trial % 2]
        ref = K.solve_normal(nmat, rhs, want, tol)
        out = K.solve_normal_rl(nmat, rhs, want, tol)
        np.testing.assert_array_equal(out[2], ref[2])
        np.testing.assert_array_equal(out[0], ref[0])
        np.testing.assert_array_equal(out[1], ref[1])


def test_profile_factor_is_identical_to_dense_factor():
    """factor_rl over a profile (banded sources, dense sky columns) skips only zeros: the
    same factor, bit for bit, as with every column dense (and in place)."""
    from dask_phot.engine._solve import factor_rl

    rng = np.random.default_rng(55)
    for trial in range(200):
        m = int(rng.integers(1, 40))
        nsky = int(rng.integers(0, 4))
        # sources along a line, each seeing the pixels near it: a banded normal matrix
        pos = np.sort(rng.uniform(0, 60, m))
        pix = np.arange(70)
        a = np.exp(-0.5 * ((pix[:, None] - pos[None, :]) / 1.5) ** 2)
        a[np.abs(pix[:, None] - pos[None, :]) > rng.integers(2, 8)] = 0.0
        if m > 3 and trial % 3 == 0:
            a[:, m - 1] = a[:, m - 2]  # a duplicate: degenerate
        sky = rng.normal(size=(70, nsky)) if nsky else np.zeros((70, 0))
        full = np.hstack([a, np.ones((70, min(nsky, 1))), sky[:, 1:]])
        nmat = full.T @ full
        tol = [1e-7, 1e-3][trial % 2]
        ref = factor_rl(nmat, tol)
        out = factor_rl(nmat, tol, m)
        for got, want in zip(out, ref, strict=True):
            np.testing.assert_array_equal(got, want)
        # in place: the factor in the upper triangle, N's lower triangle kept
        work = nmat.copy()
        up, scale, status = factor_rl(work, tol, m, True)
        assert up is work
        upper = np.triu(np.ones(nmat.shape, dtype=bool))
        np.testing.assert_array_equal(work[upper], ref[0][upper])
        np.testing.assert_array_equal(work[~upper], nmat[~upper])
        np.testing.assert_array_equal(scale, ref[1])
        np.testing.assert_array_equal(status, ref[2])


def tiling_of(prep, st, t, g, nsky=0):
    cx, cy = np.floor(prep.x + 0.5).astype(int), np.floor(prep.y + 0.5).astype(int)
    return make_tiling(cx, cy, boxes(st), prep.fit, prep.data.shape, t, g, all_tiles=nsky > 0)


@pytest.mark.parametrize("nsky", [0, 1, 3])
@pytest.mark.parametrize("tiling", [None, (23, 9), (40, 20)])
def test_tile_normal_matrices_match_direct_build(psf, nsky, tiling):
    img, weight, x, y = field(psf, seed=6)
    prep = prepare_inputs(img, psf, x, y, sigma=None, weight=weight, sky=None)
    st = stamps_of(psf, prep.x, prep.y, 6)
    footprint_flags(prep, *boxes(st))
    t, g = tiling or default_tiling(psf.size, psf.fwhm)
    tl = tiling_of(prep, st, t, g, nsky)
    ny, nx = prep.data.shape
    xl, xb = K.block_lines(tl.regions, nx, 0)
    _, yb = K.block_lines(tl.regions, ny, 1)
    use = np.zeros(x.size, dtype=bool)
    use[tl.members] = True
    table = K.pair_table(*st.arrays, prep.data, prep.weight, use, xl, xb, yb)
    loc = np.full(x.size, -1)
    for tt in range(tl.ptr.size - 1):
        mem = tl.members[tl.ptr[tt] : tl.ptr[tt + 1]]
        ref = K.build_normal(mem, *st.arrays, prep.data, prep.weight, tl.regions[tt], nsky)
        out = K.build_normal_tile(mem, *st.arrays, prep.data, prep.weight, tl.regions[tt],
                                  nsky, table, xb, yb, loc)
        scale = np.abs(ref[0]).max() + 1e-300
        np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(out[1], ref[1], rtol=0,
                                   atol=1e-12 * (np.abs(ref[1]).max() + 1e-300))
        assert np.array_equal(out[0] != 0, ref[0] != 0)
        assert (loc == -1).all()


def reference_solve_tiles(tl, st, data, weight, nsky, tol):
    """:func:`K.solve_tiles` written with the direct build and the left-looking solve."""
    n = len(st)
    flux, var = np.full(n, np.nan), np.full(n, np.nan)
    status, hasdeg = np.full(n, K.ST_FAILED), np.zeros(n, dtype=bool)
    for t in range(tl.ptr.size - 1):
        lo, hi = tl.ptr[t], tl.ptr[t + 1]
        mem, prim = tl.members[lo:hi], tl.primary[lo:hi]
        nmat, rhs = K.build_normal(mem, *st.arrays, data, weight, tl.regions[t], nsky)
        want = np.concatenate([prim, np.zeros(nsky, dtype=bool)])
        sol, v, s = K.solve_normal(nmat, rhs, want, tol)
        for a in np.flatnonzero(prim):
            i = mem[a]
            status[i] = s[a]
            if s[a] == K.ST_OK:
                flux[i], var[i] = sol[a], v[a]
                for b in range(a + 1, mem.size):
                    if s[b] == K.ST_DEGENERATE and nmat[b, b] > 0:
                        if nmat[a, b] / math.sqrt(nmat[a, a] * nmat[b, b]) > 0.999:
                            hasdeg[i] = True
    return flux, var, status, hasdeg


@pytest.mark.parametrize("tiling", [None, (5, 3)])  # (5, 3): narrow blocks, direct build
@pytest.mark.parametrize("nsky", [0, 1])
def test_solve_tiles_matches_reference(psf, tiling, nsky):
    _, ref = check_solve_tiles(psf, 7, 90, tiling, nsky, 1e-8, 1e-9)
    assert ref[3].any() and (ref[2] == K.ST_DEGENERATE).any()


def check_solve_tiles(psf, seed, n, tiling, nsky, flux_tol, var_rtol):
    """:func:`K.solve_tiles` on a field of ``n`` sources against the reference: the same
    status and merged partners, fluxes within ``flux_tol`` sigma, variances within
    ``var_rtol``. Returns the tiling and the reference's results."""
    img, weight, x, y = field(psf, seed=seed, n=n)
    prep = prepare_inputs(img, psf, x, y, sigma=None, weight=weight, sky=None)
    st = stamps_of(psf, prep.x, prep.y, seed)
    footprint_flags(prep, *boxes(st))
    t, g = tiling or default_tiling(psf.size, psf.fwhm)
    tl = tiling_of(prep, st, t, g, nsky)
    ref = reference_solve_tiles(tl, st, prep.data, prep.weight, nsky, 1e-7)
    prepared = K.tile_table(tl.members, tl.regions, *st.arrays, prep.data, prep.weight)
    out = K.solve_tiles(tl.ptr, tl.members, tl.primary, tl.regions, *st.arrays,
                        prep.data, prep.weight, nsky, 1e-7, prepared)
    np.testing.assert_array_equal(out[2], ref[2])
    np.testing.assert_array_equal(out[3], ref[3])
    ok = np.isfinite(ref[0])
    np.testing.assert_array_equal(np.isfinite(out[0]), ok)
    err = np.sqrt(ref[1][ok])
    assert np.max(np.abs(out[0][ok] - ref[0][ok]) / err) < flux_tol
    np.testing.assert_allclose(out[1][ok], ref[1][ok], rtol=var_rtol)
    return tl, ref


@pytest.mark.parametrize("nsky", [0, 1, 3])
def test_large_tiles_use_the_blocked_solvers_and_match_reference(psf, nsky):
    """Tiles of a crowded field (hundreds of members, as GALEX's) are factored and their
    variances computed by the blocked kernels: the reference's results to rounding."""
    from dask_phot.engine._blocked import BLOCKED_MIN

    tl, ref = check_solve_tiles(psf, 17, 700, (40, 12), nsky, 1e-6, 1e-6)
    assert np.diff(tl.ptr).max() >= 2 * BLOCKED_MIN
    assert (ref[2] == K.ST_DEGENERATE).any()


@pytest.mark.parametrize("nsky", [0, 1, 3])
def test_scene_in_tile_order_matches_input_order(psf, nsky):
    img, weight, x, y = field(psf, seed=8)
    prep = prepare_inputs(img, psf, x, y, sigma=None, weight=weight, sky=None)
    st = stamps_of(psf, prep.x, prep.y, 8)
    footprint_flags(prep, *boxes(st))
    t, g = default_tiling(psf.size, psf.fwhm)
    opts = dict(nsky=nsky, tile_size=t, margin=g, tol=1e-7)
    ref = solve_scene(prep, st, **opts)
    order = spatial_order(prep.x, prep.y, prep.data.shape, t)
    assert not np.array_equal(order, np.arange(order.size))
    sst = stamps_of(psf, prep.x, prep.y, 8, order=order)
    out = solve_scene(prep, sst, order=order, **opts)
    for a, b in zip(out[:5], ref[:5], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_sky_image_matches_sky_at_every_pixel(psf):
    rng = np.random.default_rng(9)
    shape = (47, 61)
    cx, cy = rng.integers(0, 61, 40), rng.integers(0, 47, 40)
    box = (cx - 3, cy - 3, np.full(40, 7), np.full(40, 7))
    for all_tiles in (True, False):
        tl = make_tiling(cx, cy, box, np.ones(40, bool), shape, 11, 4, all_tiles=all_tiles)
        sky = rng.normal(size=(tl.tile_ids.size, 3))
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        for nsky in (0, 1, 3):
            ref = sky_at(tl, sky, nsky, xx.ravel().astype(float), yy.ravel().astype(float))
            assert np.array_equal(sky_image(tl, sky, nsky, shape), ref.reshape(shape))


def test_forced_photometry_scene_matches_reference_pipeline(psf):
    """End to end: the default path against input-order stamps, the direct tile
    build and solve, and footprint_stats for the chi2, with galaxies among the sources."""
    img, weight, x, y = field(psf, seed=10, shape=(70, 80), n=60)
    shapes = field_shapes(x.size, 10)
    res = forced_photometry(img, psf, x, y, weight=weight, shapes=shapes, max_core=10_000)
    prep = prepare_inputs(img, psf, x, y, sigma=None, weight=weight, sky=None)
    density = np.count_nonzero(prep.fit) / prep.data.size  # as forced_photometry's tiles
    st = stamps_of(psf, prep.x, prep.y, 10)
    nuse, _ = footprint_flags(prep, *boxes(st))
    t, g = default_tiling(psf.size, psf.fwhm, density)
    tl = tiling_of(prep, st, t, g)
    flux, var, status, _ = reference_solve_tiles(tl, st, prep.data, prep.weight, 0, 1e-7)
    ok = np.isfinite(res.flux)
    assert np.array_equal(ok, prep.fit & (status == K.ST_OK) & np.isfinite(flux))
    assert np.max(np.abs(res.flux[ok] - flux[ok]) / np.sqrt(var[ok])) < 1e-8
    np.testing.assert_allclose(res.flux_err[ok], np.sqrt(var[ok]), rtol=1e-9)
    model = K.scatter_model(*st.arrays, np.where(ok, flux, np.nan), img.shape)
    chisum = K.footprint_stats(*boxes(st), prep.weight, prep.data - model)[3]
    np.testing.assert_allclose(res.chi2[ok], chisum[ok] / np.maximum(nuse[ok] - 1, 1),
                               rtol=1e-8)


@pytest.mark.parametrize("nsky", [0, 1, 3])
def test_second_pass_reuses_the_tiles_for_new_data(psf, nsky):
    """A scene fit of other data with the state of a first fit (tiling and pair table
    kept, data sums refreshed) equals a fresh fit of that data."""
    img, weight, x, y = field(psf, seed=13)
    other = img + np.random.default_rng(14).normal(0, 3.0, img.shape)
    prep = prepare_inputs(img, psf, x, y, sigma=None, weight=weight, sky=None)
    st = stamps_of(psf, prep.x, prep.y, 13)
    footprint_flags(prep, *boxes(st))
    t, g = default_tiling(psf.size, psf.fwhm)
    opts = dict(nsky=nsky, tile_size=t, margin=g, tol=1e-7)
    first = solve_scene(prep, st, variances=False, **opts)
    assert np.isnan(first[1]).all()
    prep2 = prepare_inputs(other, psf, x, y, sigma=None, weight=weight, sky=None)
    prep2.fit[:] = prep.fit
    fresh = solve_scene(prep2, st, **opts)
    again = solve_scene(prep2, st, state=first[5], **opts)
    for a, b in zip(again[:5], fresh[:5], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tiling", [None, (5, 3)])  # (5, 3): narrow blocks, direct build
@pytest.mark.parametrize("nsky", [0, 1, 3])
def test_second_pass_with_kept_factors_equals_a_fresh_fit(psf, nsky, tiling):
    """The wing pass's second fit substitutes new data into the first fit's kept tile
    factorisations: the same fluxes, variances, status and sky as factoring again."""
    img, weight, x, y = field(psf, seed=15)
    other = img - np.random.default_rng(16).normal(0, 2.0, img.shape)
    prep = prepare_inputs(img, psf, x, y, sigma=None, weight=weight, sky=None)
    st = stamps_of(psf, prep.x, prep.y, 15)
    footprint_flags(prep, *boxes(st))
    t, g = tiling or default_tiling(psf.size, psf.fwhm)
    opts = dict(nsky=nsky, tile_size=t, margin=g, tol=1e-7)
    first = solve_scene(prep, st, keep_factors=True, **opts)
    assert first[5].factors is not None and first[5].factors[0].size > 0
    prep2 = prepare_inputs(other, psf, x, y, sigma=None, weight=weight, sky=None)
    prep2.fit[:] = prep.fit
    fresh = solve_scene(prep2, st, **opts)
    again = solve_scene(prep2, st, state=first[5], **opts)
    assert not np.allclose(np.nan_to_num(again[0]), np.nan_to_num(first[0]))
    for a, b in zip(again[:5], fresh[:5], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(first[5].tiling.sky, fresh[5].tiling.sky, rtol=1e-10,
                               atol=1e-12)


def test_stamps_from_square_and_put_round_trip(psf):
    rng = np.random.default_rng(12)
    sq = rng.normal(size=(5, 7, 7))
    st = Stamps.empty(5, np.full(5, 7))
    st.put(np.array([4, 0, 2, 1, 3]), sq, np.arange(5), np.arange(5) + 1)
    np.testing.assert_array_equal(st.stamp(4), sq[0])
    np.testing.assert_array_equal(st.stamp(3), sq[4])
    assert st.x0.tolist() == [1, 3, 2, 4, 0]
    with pytest.raises(ValueError, match="sides"):
        st.put(np.array([0]), np.zeros((1, 9, 9)), np.zeros(1), np.zeros(1))


def test_reorder_matches_numpy_gather():
    """fit_stamps stores stamps in tile order with a compiled gather: the same ragged
    stamps, corners and sides as indexing by numpy."""
    from dask_phot.engine.fit import _reorder

    rng = np.random.default_rng(13)
    sides = rng.choice([3, 5, 9], 40)
    st = Stamps.empty(40, sides)
    st.data[:] = rng.normal(size=st.data.size)
    st.x0[:], st.y0[:] = rng.integers(-5, 50, 40), rng.integers(-5, 50, 40)
    order = rng.permutation(40)
    got = _reorder(st, order)
    for k, i in enumerate(order):
        np.testing.assert_array_equal(got.stamp(k), st.stamp(i))
    assert got.x0.tolist() == st.x0[order].tolist() and got.w.tolist() == sides[order].tolist()
    assert got.ptr[-1] == st.ptr[-1]


def test_phased_wings_skip_only_zeros(fine_psf):
    """Bright sources' wings at their own phase (added around the zero core box) equal
    a scatter of the whole wing stamps with that box zeroed."""
    from dask_phot.engine.wings import wing_image

    rng = np.random.default_rng(23)
    n, shape = 30, (60, 70)
    x, y = rng.uniform(-8, 78, n), rng.uniform(-8, 68, n)
    flux = rng.uniform(1, 100, n)
    rendered = render_sources(fine_psf, x, y, None, core=fine_psf.size)
    got = wing_image(fine_psf, rendered, x, y, flux, shape, exact=np.ones(n, dtype=bool))
    st, x0, y0 = fine_psf.stamps(x, y, size=fine_psf.wing_size)
    o = (fine_psf.wing_size - fine_psf.size) // 2
    st[:, o:o + fine_psf.size, o:o + fine_psf.size] = 0.0
    ref = K.scatter_model(*Stamps.from_square(st, x0, y0).arrays, flux, shape)
    np.testing.assert_array_equal(got, ref)


@pytest.fixture(scope="module")
def fine_psf():
    """An oversampled (0.1" for 0.6" pixels) Gaussian-pair PSF with wings past its core."""
    u = np.arange(241) - 120.0
    r2 = u[:, None] ** 2 + u[None, :] ** 2
    arr = np.exp(-0.5 * r2 / 7.2**2) + 0.003 * np.exp(-0.5 * r2 / 40.0**2)
    return OversampledPSF(arr, 0.1, 0.6, size=15, wing_size=33)


def test_fast_log_matches_math_log():
    from dask_phot.models import _spectra

    rng = np.random.default_rng(17)
    v = np.exp(rng.uniform(-40, 40, 2000))
    v = np.concatenate([v, [1.0, 2.0, 0.5, np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 2.0)]])
    got = np.array([_spectra.fast_ln(float(t)) for t in v])
    np.testing.assert_allclose(got, np.log(v), rtol=0, atol=1e-12)


def _reference_spectra(psf, k, x, y, shapes, grp, point):
    """Half spectra of the galaxies ``grp`` summed directly over the transfer's frequencies
    in double precision (numpy: math.log-exact t, the table interpolated by
    :meth:`SersicTable.evaluate`, phases from ``exp``), centred on the stamp."""
    from dask_phot.models import render as R

    tr = psf.transfer(int(k)).half()
    table = R.fourier_table()
    hw = k // 2 + 1
    bidx, bw = R._basis_weights(psf, x[grp], y[grp])
    out = np.zeros((grp.size, k * hw), dtype=np.complex128)
    for g, i in enumerate(grp):
        th = np.deg2rad(shapes.theta[i])
        c, s = np.cos(th), np.sin(th)
        kx, ky = tr.ux / k, tr.uy / k
        t = shapes.r_e[i] * np.hypot(kx * c + ky * s, shapes.q[i] * (-kx * s + ky * c))
        f = table.evaluate(float(shapes.n[i]), t)
        rhat = (bw[g][:, None] * tr.rhat[bidx[g]]).sum(axis=0)
        d = np.array([x[i], y[i]]) - np.floor(np.array([x[i], y[i]]) + 0.5) + k // 2
        phase = np.exp(-2j * np.pi * (tr.ux * d[0] + tr.uy * d[1]) / k)
        np.add.at(out[g], tr.jy * hw + tr.jx, (f - point) * rhat * phase)
    return out.reshape(grp.size, k, hw)


def test_single_precision_galaxy_stamps_match_double(fine_psf):
    """Galaxy stamps from single-precision spectra and FFTs against the same rendering in
    double precision: equal to within 1e-6 of their peaks and of their light, far below
    any image's noise."""
    import scipy.fft

    from dask_phot.models import render as R

    x, y, shapes = _random_galaxies(18, 40, (30, 70), (0.5, 6))
    got = render_sources(fine_psf, x, y, shapes)
    sides = R.stamp_sizes(fine_psf, shapes)[0]
    for k in np.unique(sides):
        grp = np.flatnonzero(sides == k)
        spec, x0, y0 = R._galaxy_spectra(fine_psf, x[grp], y[grp], shapes, grp, int(k))
        assert spec.dtype == np.complex64
        point = fine_psf.stamps(x[grp], y[grp], size=min(int(k), fine_psf.light_side))[0]
        # the same spectra summed directly in double precision
        spec64 = _reference_spectra(fine_psf, int(k), x, y, shapes, grp, 1.0)
        ref = scipy.fft.irfft2(spec64, s=(int(k), int(k)), axes=(1, 2))
        o = k // 2 - point.shape[1] // 2  # the point part is rendered where the PSF has light
        ref[:, o:o + point.shape[1], o:o + point.shape[2]] += point
        _assert_stamps_match(got.stamps, grp, ref)
        assert np.array_equal(got.stamps.x0[grp], x0) and np.array_equal(got.stamps.y0[grp], y0)


def _random_galaxies(seed, n, box, radii):
    """``n`` Sersic galaxies at random in ``box`` (pixels, both axes), ``r_e`` in ``radii``."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(*box, n), rng.uniform(*box, n)
    return x, y, Shapes.from_mapping({"r_e": rng.uniform(*radii, n), "q": rng.uniform(0.3, 1, n),
                                      "theta": rng.uniform(0, 180, n),
                                      "n": rng.uniform(0.5, 5, n)}, n)


def _assert_stamps_match(stamps, grp, ref):
    """Stamps ``grp`` equal ``ref`` to within 1e-6 of their peaks and of their light."""
    for g, i in enumerate(grp):
        st = stamps.stamp(i)
        assert np.abs(st - ref[g]).max() < 1e-6 * np.abs(ref[g]).max()
        assert abs(st.sum() - ref[g].sum()) < 1e-6 * ref[g].sum()


@pytest.mark.parametrize("kind", ["pixel", "grid"])
def test_grid_psf_galaxy_stamps_match_direct_sum(kind):
    """Through a PSF on the image grid (one PSF, or a PSF grid whose transfers are blended
    per source) the whole galaxy comes from its transform: the stamps against the direct
    double-precision sum over the transfer's frequencies."""
    import scipy.fft

    from dask_phot.models import render as R

    one = gaussian_psf(2.5, size=13)
    psf = one if kind == "pixel" else PSFGrid(
        [one, gaussian_psf(3.2, size=13), gaussian_psf(2.0, size=13)],
        [0.0, 100.0, 0.0], [0.0, 0.0, 100.0])
    x, y, shapes = _random_galaxies(21, 30, (5, 95), (0.3, 5))
    got = render_sources(psf, x, y, shapes)
    sides = R.stamp_sizes(psf, shapes)[0]
    for k in np.unique(sides):
        grp = np.flatnonzero(sides == k)
        spec64 = _reference_spectra(psf, int(k), x, y, shapes, grp, 0.0)
        ref = scipy.fft.irfft2(spec64, s=(int(k), int(k)), axes=(1, 2))
        _assert_stamps_match(got.stamps, grp, ref)


def test_wing_image_matches_fft_convolution(fine_psf):
    """The wings, placed directly at each source's nearest pixel, against an FFT
    convolution of the flux map with the wing kernel (points and a large galaxy)."""
    from scipy import signal

    from dask_phot.engine.wings import wing_image

    rng = np.random.default_rng(19)
    n, shape = 60, (70, 90)
    x, y = rng.uniform(-5, 94, n), rng.uniform(-5, 74, n)
    flux = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(-5, 100, n))
    r_e = np.zeros(n)
    r_e[0] = 4.0
    rendered = render_sources(fine_psf, x, y, Shapes.from_mapping({"r_e": r_e}, n),
                              core=fine_psf.size)
    got = wing_image(fine_psf, rendered, x, y, flux, shape)
    ref = np.zeros(shape)
    f = np.nan_to_num(flux)
    for k in np.unique(rendered.sides[rendered.sides < fine_psf.wing_size]):
        sel = rendered.sides == k
        kern = fine_psf.wing_kernel(int(k))
        h = kern.shape[0] // 2
        fmap = np.zeros((shape[0] + 2 * h, shape[1] + 2 * h))
        np.add.at(fmap, (np.floor(y[sel] + 0.5).astype(int) + h,
                         np.floor(x[sel] + 0.5).astype(int) + h), f[sel])
        ref += signal.fftconvolve(fmap, kern, mode="same")[h:-h, h:-h]
    outer = rendered.outer_index
    ref += K.scatter_model(*rendered.outer.arrays, f[outer], shape)
    assert rendered.sides[0] > fine_psf.size and outer.tolist() == [0]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_sky_sums_give_region_sums_of_positive_weights():
    """A tile's constant-sky entries from the summed-area tables equal direct sums
    over its region of the pixels with positive weight (zero and negative skipped)."""
    from dask_phot.engine._pairs import region_sum, sky_sums

    rng = np.random.default_rng(21)
    image = rng.normal(5.0, 2.0, (37, 53))
    weight = rng.uniform(0.5, 2.0, image.shape)
    weight[rng.random(image.shape) < 0.1] = 0.0
    weight[3, 4] = -1.0
    image[weight == 0.0] = np.nan  # masked pixels may hold anything
    sums = np.empty((2, 38, 54))
    sky_sums(image, weight, sums)
    for rx0, rx1, ry0, ry1 in [(0, 53, 0, 37), (4, 20, 2, 30), (52, 53, 36, 37), (7, 7, 1, 9)]:
        w = weight[ry0:ry1, rx0:rx1]
        d = image[ry0:ry1, rx0:rx1]
        good = w > 0
        assert region_sum(sums, 0, rx0, rx1, ry0, ry1) == pytest.approx(w[good].sum(),
                                                                        rel=1e-12, abs=1e-12)
        assert region_sum(sums, 1, rx0, rx1, ry0, ry1) == pytest.approx(
            (w * d)[good].sum(), rel=1e-12, abs=1e-9)


def test_mismatch_of_stamps_over_the_edge_equals_a_zero_weight_border():
    """Stamps hanging over the image edges give the mismatch statistic of the same
    stamps inside an image padded with zero-weight pixels (the loop's bounds)."""
    from dask_phot.engine.mismatch import mismatch_significance
    from dask_phot.models.stamps import Stamps

    rng = np.random.default_rng(23)
    yy, xx = np.mgrid[-4:5, -4:5]
    blobs = np.array([np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * s**2))
                      for dx, dy, s in rng.uniform([-1, -1, 1], [1, 1, 3], (6, 3))])
    x0 = np.array([-4, 10, 26, -8, 3, 20])
    y0 = np.array([-3, -5, 22, 12, 8, 30])  # 30: wholly outside (NaN)
    stamps = Stamps.from_square(blobs, x0, y0)
    weight = rng.uniform(0.5, 2.0, (30, 33))
    resid = rng.normal(0.0, 1.0, weight.shape)
    got = mismatch_significance(stamps, weight, resid)
    pad = 10
    wpad = np.pad(weight, pad)
    rpad = np.pad(resid, pad)
    ref = mismatch_significance(Stamps.from_square(blobs, x0 + pad, y0 + pad), wpad, rpad)
    assert np.isnan(got[5]) and np.isfinite(got[:5]).all()
    np.testing.assert_array_equal(got, ref)


def _make_tiling_numpy(cx, cy, boxes, fit, shape, tile_size, margin, all_tiles):
    """make_tiling's lists as numpy computed them before the compiled kernel."""
    ny, nx = shape
    t, g = tile_size, margin
    ntx, nty = max(1, -(-nx // t)), max(1, -(-ny // t))
    idx = np.flatnonzero(fit)
    bx0, by0, bw, bh = (np.asarray(v, dtype=np.int64)[idx] for v in boxes)
    tx_lo = np.clip((bx0 - g) // t, 0, ntx - 1)
    tx_hi = np.clip((bx0 + bw + g - 1) // t, 0, ntx - 1)
    ty_lo = np.clip((by0 - g) // t, 0, nty - 1)
    ty_hi = np.clip((by0 + bh + g - 1) // t, 0, nty - 1)
    nxs, nys = tx_hi - tx_lo + 1, ty_hi - ty_lo + 1
    count = nxs * nys
    src = np.repeat(np.arange(idx.size), count)
    off = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    tile = (ty_lo[src] + off // nxs[src]) * ntx + tx_lo[src] + off % nxs[src]
    prim_tile = (cy[idx] // t) * ntx + cx[idx] // t
    order = np.lexsort((idx[src], (2 * bx0 + bw)[src], tile))
    tile, src = tile[order], src[order]
    members = idx[src]
    primary = tile == prim_tile[src]
    uniq = np.arange(ntx * nty) if all_tiles else np.unique(tile[primary])
    keep = np.isin(tile, uniq)
    tile, members, primary = tile[keep], members[keep], primary[keep]
    ptr = np.append(np.searchsorted(tile, uniq), tile.size)
    return ptr, members, primary, uniq


@pytest.mark.parametrize("all_tiles", [False, True])
def test_tile_lists_match_the_numpy_construction(all_tiles):
    """The compiled tile lists: the same tiles, members, order and primaries as the sorts
    and searches of numpy (boxes of several sizes, over the edges, unfitted sources)."""
    rng = np.random.default_rng(8)
    shape = (97, 130)
    n = 400
    cx = rng.integers(0, shape[1], n)
    cy = rng.integers(0, shape[0], n)
    cx[:5] = cx[5]  # sources at one place: input order decides
    cy[:5] = cy[5]
    side = rng.choice([5, 9, 15, 31], n)
    boxes = (cx - side // 2, cy - side // 2, side, side)
    fit = rng.random(n) < 0.9
    for t, g in ((11, 4), (24, 9), (200, 3)):
        got = make_tiling(cx, cy, boxes, fit, shape, t, g, all_tiles=all_tiles)
        want = _make_tiling_numpy(cx, cy, boxes, fit, shape, t, g, all_tiles)
        for a, b in zip((got.ptr, got.members, got.primary, got.tile_ids), want, strict=True):
            np.testing.assert_array_equal(a, b)
        assert got.primary.sum() == fit.sum()


@pytest.mark.parametrize("fit_sky", [False, True])
def test_final_fit_leaves_out_sources_without_final_pixels(fine_psf, monkeypatch, fit_sky):
    """With ``final_weight`` (a pipeline cell's inner zone), sources whose stamps have no
    pixel in it are not fitted again: the others' results are those of a final fit of
    every source; the left-out keep their first fit (measured, not flagged
    degenerate, as a fit with no pixel would make them)."""
    import dask_phot.engine.fit as fit_mod

    img, weight, x, y = field(fine_psf, seed=4, shape=(110, 130), n=120)
    final = weight.copy()
    final[:, :30] = 0.0  # the zone the final fit uses: a cell without its margins
    final[:, 100:] = 0.0
    final[85:, :] = 0.0
    kw = dict(weight=weight, final_weight=final, fit_sky=fit_sky)
    got = forced_photometry(img, fine_psf, x, y, **kw)
    monkeypatch.setattr(fit_mod, "second_fit_sources",
                        lambda stamps, pos, fw: np.ones(pos.size, dtype=bool))
    every = forced_photometry(img, fine_psf, x, y, **kw)
    st = render_sources(fine_psf, x, y).stamps
    nuse = K.footprint_counts(*boxes(st), final)[0]
    again = nuse > 0
    left = ~again & ((got.flags & int(Flag.OFF_IMAGE | Flag.NO_DATA)) == 0)
    assert again.sum() > 40 and left.sum() > 20
    np.testing.assert_array_equal(got.flags[again], every.flags[again])
    for name in ("flux", "flux_err", "sky"):
        # (identical with a fitted sky; without, tiles left with no primary source are
        # dropped, and the block edges of the pair sums, their order of sums, change)
        np.testing.assert_allclose(getattr(got, name)[again], getattr(every, name)[again],
                                   rtol=0 if fit_sky else 1e-12, atol=0)
    degenerate = int(Flag.DEGENERATE)
    assert (every.flags[left] & degenerate).all()
    assert not (got.flags[left] & degenerate).any()
    assert np.isfinite(got.flux[left]).mean() > 0.9
