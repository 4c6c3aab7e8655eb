"""Scene tiles whose solution misses its normal equations (a kept matrix singular to
rounding while every Cholesky pivot stays above the degeneracy tolerance, as in crowded
GALEX cells) and ill-conditioned tiles that are solved right (left alone)."""

from __future__ import annotations

import numpy as np
import pytest

import dask_phot.engine._kernels as K
from dask_phot.engine._blocked import BLOCKED_MIN
from dask_phot.engine._solve import MISFIT, misfit_column


def kahan(n: int, c: float) -> np.ndarray:
    """Kahan's matrix ``diag(s^k) (I - c * strict upper ones)``: the Cholesky factor of
    ``R^T R`` has pivots ``s^(2k)`` (all large) while its smallest eigenvalue is tiny."""
    s = np.sqrt(1.0 - c * c)
    return np.diag(s ** np.arange(n)) @ (np.eye(n) - c * np.triu(np.ones((n, n)), 1))


def solve_row_tile(cols: np.ndarray, image: np.ndarray) -> tuple:
    """:func:`K.solve_tiles` on one tile whose stamps are the columns of ``cols`` laid
    along one image row (so that the tile's normal matrix is ``cols^T cols``)."""
    npx, n = cols.shape
    arrays = (np.ascontiguousarray(cols.T).ravel(), np.arange(n + 1, dtype=np.int64) * npx,
              np.full(n, npx, dtype=np.int64), np.ones(n, dtype=np.int64),
              np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))
    members = np.arange(n, dtype=np.int64)
    regions = np.array([[0, npx, 0, 1]], dtype=np.int64)
    weight = np.ones((1, npx))
    prepared = K.tile_table(members, regions, *arrays, image[None, :], weight)
    return K.solve_tiles(np.array([0, n]), members, np.ones(n, dtype=bool), regions, *arrays,
                         image[None, :], weight, 0, 1e-7, prepared)


@pytest.mark.parametrize("n, c", [(80, 0.2), (2 * BLOCKED_MIN, 0.12)])  # scalar, blocked
def test_ill_conditioned_tile_solved_right_is_left_alone(n, c):
    """A tile ill-conditioned in earnest (smallest scaled eigenvalue ~1e-14) whose
    solution is right keeps every column: fluxes of bright sources within their (large,
    honest) errors of the truth. The misfit check only acts on wrong solutions."""
    r = kahan(n, c)
    truth = np.full(n, 1e4)
    image = r @ truth + np.random.default_rng(5).normal(size=n)
    flux, var, status, *_ = solve_row_tile(r, image)
    assert (status == K.ST_OK).all()
    pull = (flux - truth) / np.sqrt(var)
    assert np.abs(pull).max() < 5.0
    assert np.median(np.sqrt(var)) > 100.0  # the errors say how badly constrained


def test_misfit_column_finds_the_wrong_solution():
    """``misfit_column`` returns -1 for a solution of ``N x = b`` and, for one that misses
    an equation by more than MISFIT noise units, the source column carrying most of it."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(30, 6))
    nmat = a.T @ a
    diag = np.diag(nmat).copy()
    x = rng.normal(size=6)
    b = nmat @ x
    status = np.zeros(6, dtype=np.int64)
    assert misfit_column(nmat, diag, b, x, status, 6) == -1
    wrong = x.copy()
    wrong[4] += 1e3 * MISFIT / np.sqrt(diag[4])
    assert misfit_column(nmat, diag, b, wrong, status, 6) == int(
        np.argmax(np.abs(wrong) * np.sqrt(diag)))
    # only source columns (the first m) are returned, never the sky terms after them
    assert misfit_column(nmat, diag, b, wrong, status, 4) in (0, 1, 2, 3)
