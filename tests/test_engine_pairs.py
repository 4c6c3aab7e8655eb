"""The final fit's pair table, made from the first fit's where the weights agree.

A pipeline cell's final fit uses fewer pixels than its first (the weights are cut to
an inner zone). Its pair table copies the first's sums of the pairs whose overlap
keeps its weights, leaves out those with no pixel left, and sums only the others
again (:func:`dask_phot.engine._pairs.reused_pair_table`). Each tile's normal
equations, and so every result, must be those of a table summed from scratch.
"""

from __future__ import annotations

import numpy as np
import pytest

from dask_phot import forced_photometry
from dask_phot.engine import _kernels as K
from dask_phot.engine import _normal
from dask_phot.engine._pairs import reused_pair_table
from dask_phot.engine.prepare import footprint_flags, prepare_inputs
from dask_phot.engine.scene import default_tiling, make_tiling
from dask_phot.models.render import render_sources
from dask_phot.psf import OversampledPSF


@pytest.fixture(scope="module")
def wing_psf():
    """An oversampled Moffat PSF (0.1" samples, 0.6" pixels, beta 2.5), whose wings
    reach past its 15-pixel core."""
    u = (np.arange(241) - 120.0) / 8.0
    arr = (1.0 + u[:, None] ** 2 + u[None, :] ** 2) ** -2.5
    return OversampledPSF(arr, 0.1, 0.6, size=15, wing_size=33)


def crowded(psf, seed, shape=(100, 130), n=160):
    """A noisy crowded image, its weights (with masked patches) and the weights cut to
    an inner zone with a round corner (``final``)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    x, y = rng.uniform(-4, nx + 3, n), rng.uniform(-4, ny + 3, n)
    st = render_sources(psf, x, y).stamps
    img = K.scatter_model(*st.arrays, rng.uniform(5, 400, n), shape) + rng.normal(0, 1, shape)
    weight = rng.uniform(0.5, 2.0, shape)
    weight[rng.random(shape) < 0.02] = 0.0
    weight[40:44, 60:80] = 0.0
    yy, xx = np.mgrid[:ny, :nx]
    zone = (xx >= 25) & (xx < 105) & (yy >= 20) & (yy < 80)
    zone &= (xx - 25) ** 2 + (yy - 20) ** 2 > 15**2
    zone[45:65, 50:80] = False  # a hole: pairs in it have no pixel left
    return img, weight, weight * zone, x, y


def tables(psf, seed, nsky):
    """The first fit's tile table, and the final fit's made with and without it."""
    img, weight, final, x, y = crowded(psf, seed)
    prep = prepare_inputs(img, psf, x, y, sigma=None, weight=weight, sky=None)
    st = render_sources(psf, prep.x, prep.y).stamps
    footprint_flags(prep, st.x0, st.y0, st.w, st.h)
    t, g = default_tiling(psf.size, psf.fwhm)
    cx, cy = np.floor(prep.x + 0.5).astype(int), np.floor(prep.y + 0.5).astype(int)
    box = (st.x0, st.y0, st.w, st.h)
    first_tl = make_tiling(cx, cy, box, prep.fit, img.shape, t, g, all_tiles=nsky > 0)
    first = K.tile_table(first_tl.members, first_tl.regions, *st.arrays, img, weight)
    fit = prep.fit & (K.footprint_counts(*box, final)[0] > 0)
    tl = make_tiling(cx, cy, box, fit, img.shape, t, g, all_tiles=nsky > 0)
    other = img - 0.5  # the final fit's data differ too
    fresh = K.tile_table(tl.members, tl.regions, *st.arrays, other, final)
    lent = K.tile_table(tl.members, tl.regions, *st.arrays, other, final,
                        prior=(first, weight))
    return st, tl, other, final, first, fresh, lent


@pytest.mark.parametrize("nsky", [0, 1, 3])
def test_final_pair_table_from_the_first_builds_the_same_tiles(wing_psf, nsky):
    """With a fitted sky every tile is kept: the same block lines, and the lent table
    gives the fresh one's matrices bit for bit. Without, the final fit keeps fewer
    tiles, and the lent table keeps the first's finer blocks: only the order of sums
    differs."""
    st, tl, img, final, first, fresh, lent = tables(wing_psf, 3, nsky)
    assert lent[0][1].size < fresh[0][1].size < first[0][1].size  # pairs left out
    assert (lent[1].size > fresh[1].size) == (nsky == 0)
    loc = np.full(len(st), -1)
    for t in range(tl.ptr.size - 1):
        mem = tl.members[tl.ptr[t]:tl.ptr[t + 1]]
        want = K.build_normal_tile(mem, *st.arrays, img, final, tl.regions[t], nsky,
                                   fresh[0], fresh[2], fresh[3], loc)
        got = K.build_normal_tile(mem, *st.arrays, img, final, tl.regions[t], nsky, lent[0],
                                  lent[2], lent[3], loc)
        for a, b in zip(got, want, strict=True):
            if nsky:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13 * np.abs(b).max())
                np.testing.assert_array_equal(a != 0, b != 0)
    np.testing.assert_array_equal(lent[0][6], fresh[0][6])  # the sky's tables
    if nsky:  # the stamps' own sums, on the same blocks
        for k in (4, 5):
            np.testing.assert_array_equal(lent[0][k], fresh[0][k])


def test_pairs_lent_copied_and_summed_again(wing_psf):
    """Kept pairs whose overlap keeps its weights carry the first fit's sums; the others
    are summed with the new weights (they differ from the first's)."""
    st, _, _, _, first, _, lent = tables(wing_psf, 5, 1)
    old = {(i, j): q for i in range(len(st)) for q, j in
           enumerate(first[0][1][first[0][0][i]:first[0][0][i + 1]], first[0][0][i])}
    same = changed = 0
    pp, nbr, pcell, pvals = lent[0][:4]
    for i in range(len(st)):
        for q in range(pp[i], pp[i + 1]):
            o = old[(i, nbr[q])]
            a = pvals[pcell[q, 4]:pcell[q, 4] + pcell[q, 1] * pcell[q, 3]]
            b = first[0][3][first[0][2][o, 4]:][:a.size]
            same += np.array_equal(a, b)
            changed += not np.array_equal(a, b)
    assert same > 100 and changed > 20


def test_reuse_refused_for_stamps_the_first_table_left_out(wing_psf):
    st, tl, img, final, first, _, _ = tables(wing_psf, 7, 1)
    use = np.zeros(len(st), dtype=bool)
    use[tl.members] = True
    unused = (first[0][4][:, 1] == 0) & (st.x0 > 0) & (st.x0 + st.w < img.shape[1]) \
        & (st.y0 > 0) & (st.y0 + st.h < img.shape[0])
    assert not unused.any()  # every stamp on the image is in the first table
    prior = list(first[0])
    prior[4] = prior[4].copy()
    prior[4][tl.members[0], 1] = 0  # as if the first fit had not used it
    assert reused_pair_table(tuple(prior), final, *st.arrays, img, final, use, first[1],
                             first[2], first[3]) is None


@pytest.mark.parametrize("fit_sky", [False, True])
def test_final_fit_with_lent_pair_sums_is_identical(wing_psf, monkeypatch, fit_sky):
    """A cell's two fits (``final_weight``): fluxes, errors, flags and sky those of a
    final pair table summed from scratch (bit for bit with a fitted sky)."""
    img, weight, final, x, y = crowded(wing_psf, 11)
    kw = dict(weight=weight, final_weight=final, fit_sky=fit_sky)
    got = forced_photometry(img, wing_psf, x, y, **kw)
    calls = []

    def refuse(*args):
        calls.append(1)
        return None

    monkeypatch.setattr(_normal, "reused_pair_table", refuse)
    ref = forced_photometry(img, wing_psf, x, y, **kw)
    assert calls == [1]
    assert np.isfinite(got.flux).sum() > 100
    for name in ("flags", "flux", "flux_err", "chi2", "sky"):
        # (without a fitted sky, the lent table's finer blocks change the order of sums)
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name),
                                   rtol=0 if fit_sky else 1e-11, atol=0)
