"""Scene tiles whose solution misses its normal equations (a kept matrix singular to
rounding while every Cholesky pivot stays above the degeneracy tolerance, as in crowded
GALEX cells) and ill-conditioned tiles that are solved right (left alone)."""

from __future__ import annotations

import numpy as np
import pytest

import dask_phot.engine._kernels as K
from dask_phot import forced_photometry
from dask_phot.bands import get_band
from dask_phot.engine._blocked import BLOCKED_MIN
from dask_phot.engine._solve import MISFIT, misfit_column
from dask_phot.pipeline.zones import within_reach
from dask_phot.testing import simulate_image


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


#: The GALEX edge scene: image side, noise and sky (image units), the cell's corner.
EDGE_N, EDGE_SIGMA, EDGE_SKY, EDGE_CELL = 124, 5e-4, 0.01, (99.0, 80.0)


@pytest.fixture(scope="module")
def edge_scene() -> dict:
    """A crowded nuv band task at the edge of its clean zone, like the COSMOS GALEX cell
    that blew up (s7; 124 px read box, ~1000 priors, 35 primaries in the lower right).

    The first fit's weight is the union of 73-px discs round the primaries less a
    masked disc on the zone's edge (the final fit's: 30-px discs), so the upper-left
    tiles hold hundreds of sources centred in zero weight whose stamps reach weighted
    pixels only with the PSF's flat wing. Truth is rendered through the PSF file's
    fine response (independent of the engine's stamps). Seed 9 was picked among 12
    layouts as the one whose tiles the pre-fix engine (846ffae) solved wrong at most
    weight scales: whether a pivot made of rounding clears the tolerance depends on
    the last bits, so the test tries ten scales.
    """
    n = EDGE_N
    rng = np.random.default_rng(9)
    x, y = rng.uniform(13.0, 110.0, (2, rng.poisson(0.1 * 97.0 ** 2)))
    primary = (x > EDGE_CELL[0]) & (y > EDGE_CELL[1])
    yy, xx = np.mgrid[:n, :n]
    covered = np.hypot(xx - 53.0, yy - 33.0) >= 10.0
    first = within_reach((n, n), x[primary], y[primary], 73.0) & covered
    final = within_reach((n, n), x[primary], y[primary], 30.0) & covered
    rng = np.random.default_rng(90)
    truth = 10 ** rng.uniform(-3.5, -0.5, x.size)  # S/N ~0.1 to ~100
    psf = get_band("nuv").load_psf()
    image = simulate_image((n, n), x, y, truth, psf, seed=rng, sigma=EDGE_SIGMA,
                           sky=EDGE_SKY).data
    return {"image": image, "psf": psf, "x": x, "y": y, "truth": truth,
            "primary": primary, "first": first, "final": final}


@pytest.mark.parametrize("scale", np.round(np.geomspace(0.8, 1.25, 10), 4).tolist())
def test_edge_of_zone_tiles_give_sound_primaries(edge_scene, scale):
    """Tiles at the edge of a GALEX cell's clean zone, whose kept normal matrix is
    singular to rounding while every unpivoted Cholesky pivot clears the tolerance,
    no longer hand garbage to the primaries: before the misfit check their fluxes
    came out at 2e3-4e8 sigma with ordinary errors at 6 of these 10 weight scales
    (the first fit's blow-up subtracted from the final fit's data)."""
    s = edge_scene
    weight = scale / EDGE_SIGMA ** 2
    res = forced_photometry(s["image"], s["psf"], s["x"], s["y"], mode="scene",
                            weight=s["first"] * weight, final_weight=s["final"] * weight,
                            fit_sky=False, sky=EDGE_SKY)
    p = s["primary"]
    pull = (res.flux[p] - s["truth"][p]) / res.flux_err[p]
    assert np.isfinite(pull).all()
    assert np.abs(pull).max() < 5.0
