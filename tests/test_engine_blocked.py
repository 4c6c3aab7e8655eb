"""The blocked tile solvers (:mod:`dask_phot.engine._blocked`) against the scalar ones.

:func:`factor_blocked` computes the factor of ``factor_rl`` a block of rows at a time
and :func:`variances_blocked` the marginal variances of many columns at once; only the
order of the sums differs. Banded (profile) normal matrices of sources along a line,
with dense sky columns, duplicates (degenerate) and columns without pixels, are factored
with many block sizes, the last block partial.
"""

from __future__ import annotations

import numpy as np
import pytest

from dask_phot.engine._blocked import factor_blocked, variances_blocked
from dask_phot.engine._solve import (
    ST_DEGENERATE,
    factor_rl,
    pack_factor,
    packed_size,
    substitute_packed,
    variances_packed,
)


def profile_matrix(rng, m, nsky, dup, empty):
    """Normal matrix of ``m`` sources along a line (each seeing the pixels near it: a
    profile) and ``nsky`` sky terms; ``dup``: the last source repeats the one before;
    ``empty``: a source without pixels."""
    npix = 4 * m + 20
    pos = np.sort(rng.uniform(0, npix - 10, m))
    pix = np.arange(npix)
    a = np.exp(-0.5 * ((pix[:, None] - pos[None, :]) / 1.5) ** 2)
    a[np.abs(pix[:, None] - pos[None, :]) > rng.integers(3, 12)] = 0.0
    if dup and m > 3:
        a[:, m - 1] = a[:, m - 2]
    if empty and m > 5:
        a[:, m // 2] = 0.0
    sky = np.hstack([np.ones((npix, min(nsky, 1))),
                     rng.normal(size=(npix, max(nsky - 1, 0)))])
    full = np.hstack([a, sky]) * rng.uniform(0.5, 2.0, npix)[:, None]
    return full.T @ full


@pytest.mark.parametrize("nb", [1, 4, 7, 32])
def test_blocked_factor_and_variances_match_the_scalar_kernels(nb):
    rng = np.random.default_rng(70 + nb)
    for trial in range(60):
        m = int(rng.integers(1, 150))
        nsky = int(rng.integers(0, 4))
        nmat = profile_matrix(rng, m, nsky, trial % 3 == 0, trial % 4 == 1)
        p = m + nsky
        tol = [1e-7, 1e-3][trial % 2]
        ref_up, ref_scale, ref_st = factor_rl(nmat.copy(), tol, m, True)
        work = nmat.copy()
        up, scale, st = factor_blocked(work, tol, m, nb)
        assert up is work
        np.testing.assert_array_equal(st, ref_st)
        np.testing.assert_array_equal(scale, ref_scale)
        if trial % 3 == 0 and m > 3:
            assert st[m - 1] == ST_DEGENERATE
        upper = np.triu(np.ones((p, p), dtype=bool))
        np.testing.assert_array_equal(work[~upper], nmat[~upper])  # N's lower triangle
        kept = (st == 0)[:, None] & (st == 0)[None, :] & upper
        np.testing.assert_allclose(up[kept], ref_up[kept], rtol=1e-7, atol=1e-9)
        # backward error: U^T U is the scaled matrix over the kept columns
        k = np.flatnonzero(st == 0)
        u = np.triu(up[np.ix_(k, k)])
        scaled = nmat[np.ix_(k, k)] * scale[k][:, None] * scale[k][None, :]
        np.testing.assert_allclose(u.T @ u, scaled, rtol=0, atol=1e-12)
        # the same solution and variances from the packed store
        want = rng.random(p) < 0.4
        packed, plen = np.empty(packed_size(p)), np.empty(p, dtype=np.int64)
        pack_factor(ref_up, m, packed, plen)
        ref_var = variances_packed(packed, plen, m, ref_scale, ref_st, want)
        var = variances_blocked(up, m, scale, st, want, nb)
        np.testing.assert_array_equal(np.isnan(var), np.isnan(ref_var))
        ok = ~np.isnan(ref_var)
        np.testing.assert_allclose(var[ok], ref_var[ok], rtol=1e-7)
        rhs = rng.normal(size=p)
        pack_factor(up, m, packed, plen)
        sol = substitute_packed(packed, plen, m, scale, st, rhs)
        pack_factor(ref_up, m, packed, plen)
        ref_sol = substitute_packed(packed, plen, m, ref_scale, ref_st, rhs)
        np.testing.assert_allclose(sol, ref_sol, rtol=1e-7, atol=1e-9 * np.abs(ref_sol).max())


def test_blocked_factor_allocates_its_work_buffer_or_uses_the_given_one():
    rng = np.random.default_rng(3)
    nmat = profile_matrix(rng, 60, 1, False, False)
    a = factor_blocked(nmat.copy(), 1e-7, 60, 8)[0]
    b = factor_blocked(nmat.copy(), 1e-7, 60, 8, np.full((8 + 61) * 61, np.nan))[0]
    np.testing.assert_array_equal(a, b)


def test_blas_held_to_one_thread_only_for_blocked_tiles():
    """Tiles big enough for the blocked factor are solved with BLAS on one thread (its
    spinning threads cost ~3x the CPU where nothing sets ``OPENBLAS_NUM_THREADS``);
    fits of small tiles leave BLAS as it is."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from dask_phot.engine._blocked import BLOCKED_MIN
    from dask_phot.engine.scene import Tiling, _one_blas_thread

    def tiling(sizes):
        ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return Tiling(ptr, np.arange(ptr[-1]), np.zeros(ptr[-1], bool), np.zeros((len(sizes), 4)),
                      np.zeros((len(sizes), 4)), 30, 17, 1, np.arange(len(sizes)))

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    if not blas_threads():
        pytest.skip("no BLAS library found by threadpoolctl")
    with threadpool_limits(limits=2, user_api="blas"):
        with _one_blas_thread(tiling([20, BLOCKED_MIN, 40])):
            assert blas_threads() == {1}
        assert blas_threads() == {2}
        with _one_blas_thread(tiling([20, BLOCKED_MIN - 1])):
            assert blas_threads() == {2}
