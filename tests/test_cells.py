"""Tests of dask_phot.cells: HEALPix cells, margins and Dask partitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_phot.cells import (
    Cell,
    assign_cells,
    choose_order,
    healpix_29,
    margin_sources,
    partition_priors,
    to_dask,
)

ARCSEC = 1 / 3600


def _xyz(ra, dec):
    a, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], axis=-1)


def _catalog(n: int, ra0: float, dec0: float, side: float, seed: int = 0) -> pd.DataFrame:
    """``n`` sources uniform in a ``side`` x ``side`` degree box (RA side scaled by cos dec)."""
    rng = np.random.default_rng(seed)
    ra = ra0 + (rng.random(n) - 0.5) * side / np.cos(np.radians(dec0))
    dec = dec0 + (rng.random(n) - 0.5) * side
    return pd.DataFrame({"source_id": np.arange(n, dtype=np.int64), "ra": np.mod(ra, 360),
                         "dec": dec, "flux": rng.random(n)})


def _brute_margin(df: pd.DataFrame, cell: Cell, margin: float) -> tuple[set, set]:
    """(sure, unsure) source ids within ``margin`` arcsec of the densely sampled boundary."""
    def boundary_dist(points, step):
        boundary = _xyz(*cell.vertices(step=step))
        return np.degrees(np.arccos(np.clip(points @ boundary.T, -1, 1))).min(axis=1) * 3600

    pts = _xyz(df["ra"].to_numpy(), df["dec"].to_numpy())
    outside = ~cell.contains(df["ra"], df["dec"])
    # coarse pass: every boundary point is within one coarse spacing of a coarse sample
    spacing = 4 * cell.radius_deg() * 3600 / 64
    outside[outside] = boundary_dist(pts[outside], 64) - spacing <= margin + 1
    dist = boundary_dist(pts[outside], 2048)  # dense pass: ~0.1" spacing at order 10
    ids = df["source_id"].to_numpy()[outside]
    tol = 0.01
    return set(ids[dist <= margin - tol]), set(ids[np.abs(dist - margin) < tol])


@pytest.fixture(scope="module")
def field() -> pd.DataFrame:
    # 20,000 sources over 0.2 deg^2
    return _catalog(20_000, 150.1, 2.2, np.sqrt(0.2), seed=1)


def test_healpix_29_matches_cell_membership(field):
    h = healpix_29(field["ra"], field["dec"])
    assert h.dtype == np.int64
    pix = assign_cells(field, 10)
    np.testing.assert_array_equal(pix.to_numpy(), h >> 38)
    cell = Cell(10, int(pix.iloc[0]))
    assert cell.contains(field["ra"].iloc[:1], field["dec"].iloc[:1])[0]


def test_every_source_primary_once(field):
    parts = partition_priors(field, order=10, margin_arcsec=5.0)
    primary = pd.concat([p.sources[p.sources["_primary"]] for p in parts])
    assert sorted(primary["source_id"]) == list(range(len(field)))
    assert all(p.n_primary > 0 for p in parts)
    for p in parts:
        pix = p.sources["_healpix_29"].to_numpy() >> 38
        primary = p.sources["_primary"].to_numpy()
        assert (pix[primary] == p.cell.pixel).all()
        assert (pix[~primary] != p.cell.pixel).all()
        assert p.sources["_primary"].is_monotonic_decreasing  # primary rows first
    assert [p.cell.pixel for p in parts] == sorted(p.cell.pixel for p in parts)


@pytest.mark.parametrize(("order", "margin"), [(10, 5.0), (12, 60.0), (8, 20.0)])
def test_margin_matches_brute_force(field, order, margin):
    parts = partition_priors(field, order=order, margin_arcsec=margin)
    rng = np.random.default_rng(order)
    n_margin = 0
    for i in rng.choice(len(parts), size=min(4, len(parts)), replace=False):
        part = parts[i]
        got = set(part.sources.loc[~part.sources["_primary"], "source_id"])
        sure, unsure = _brute_margin(field, part.cell, margin)
        assert sure <= got, f"missing margin sources in {part.cell}"
        assert got <= sure | unsure, f"extra margin sources in {part.cell}"
        alone = margin_sources(field, part.cell, margin)
        assert set(alone["source_id"]) == got
        n_margin += len(got)
    assert n_margin > 20


def test_choose_order_respects_rows(field):
    for rows in (200, 1000, 5000):
        order = choose_order(field["ra"], field["dec"], rows)
        counts = assign_cells(field, order).value_counts()
        assert counts.max() <= rows
        if order > 0:
            assert assign_cells(field, order - 1).value_counts().max() > rows
    assert choose_order(field["ra"], field["dec"], 10**6) == 0
    assert choose_order(field["ra"], field["dec"], 1, max_order=5) == 5
    with pytest.raises(ValueError, match="rows_per_partition"):
        choose_order(field["ra"], field["dec"], 0)


def test_pole_and_ra_wrap():
    df = pd.DataFrame({"source_id": [1, 2, 3, 4, 5],
                       "ra": [0.0005, 359.9995, 359.99, 10.0, 190.0],
                       "dec": [0.0, 0.0, 0.0, 90.0, 89.9999]})
    parts = partition_priors(df, order=8, margin_arcsec=5.0)
    by_id = {}
    for p in parts:
        for sid, prim in zip(p.sources["source_id"], p.sources["_primary"], strict=True):
            by_id.setdefault(sid, []).append(prim)
    assert all(flags.count(True) == 1 for flags in by_id.values())
    # sources 1 and 2 are 3.6" apart across RA = 0: each is in the other's margin
    assert by_id[1] == [True, False] or by_id[1] == [False, True]
    assert len(by_id[2]) == 2
    # the pole source (dec = 90) and one 0.36" from it, on the other side
    assert len(by_id[4]) >= 2 and len(by_id[5]) >= 2
    cell = next(p.cell for p in parts if 4 in set(p.sources.loc[p.sources["_primary"],
                                                                 "source_id"]))
    assert cell.contains([10.0], [90.0])[0]
    assert cell.radius_deg() < 1


def test_cell_paths_and_validation():
    cell = Cell(11, 123456)
    assert cell.path_parts() == ("Norder=11", "Dir=120000", "Npix=123456")
    ra, dec = cell.vertices()
    assert ra.shape == dec.shape == (4,)
    with pytest.raises(ValueError, match="pixel"):
        Cell(0, 12)
    with pytest.raises(ValueError, match="order"):
        Cell(30, 0)


def test_to_dask(field):
    parts = partition_priors(field.iloc[:3000], order=10, margin_arcsec=5.0)
    ddf = to_dask(parts)
    assert ddf.npartitions == len(parts)
    got = ddf.compute()
    expected = pd.concat([p.sources for p in parts])
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(ddf.get_partition(2).compute(), parts[2].sources)
    assert ddf._meta.dtypes.to_dict() == parts[0].sources.dtypes.to_dict()


def test_partition_of_a_15_arcmin_field_counts_every_prior():
    """A COSMOS-density 15'x15' catalog: the cells' primaries add up to the whole catalog (its
    speed is measured by benchmarks/bench_cosmos.py, not here)."""
    df = _catalog(37_000, 150.1, 2.2, 1.4, seed=2)
    parts = partition_priors(df, order=10, margin_arcsec=5.0)
    assert sum(p.n_primary for p in parts) == len(df)


@pytest.mark.parametrize(("order", "pixel", "margin"),
                         [(9, 1744530, 146.4), (9, 1744530, 20.0), (12, 100000, 200.0),
                          (6, 20000, 30.0), (3, 300, 3600.0)])
def test_margin_mask_bounds_match_boundary_distance(order, pixel, margin):
    """The bounds that spare the distance to the boundary decide as the distance does,
    also for points placed on those bounds (within rounding of them)."""
    from dask_phot.cells import _angle, _boundary_distance, _geometry, _margin_mask

    centers, verts, radius = _geometry(order, np.array([pixel]))
    c, v, m = centers[0], verts[0], margin * np.radians(ARCSEC)
    rng = np.random.default_rng(order)
    basis = np.linalg.svd(c[None, :])[2][1:]  # two unit vectors orthogonal to the centre
    r_in = float(_boundary_distance(c[None, :], v)[0])
    r_out = float(_angle(v, c).max())
    near = np.array([r_out - m, r_in + m, m, r_in + m + radius[0] * 0.1])
    near = np.repeat(near[near > 0], 500)  # on each bound, within ~20 microarcsec
    ang = np.r_[rng.uniform(0, radius[0] * 1.01 + m, 20000),
                near + rng.normal(0, 1e-10, near.size)]
    phi = rng.uniform(0, 2 * np.pi, ang.size)
    xyz = np.cos(ang)[:, None] * c + np.sin(ang)[:, None] * (
        np.cos(phi)[:, None] * basis[0] + np.sin(phi)[:, None] * basis[1])
    pix = healpix_29(np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360,
                     np.degrees(np.arcsin(np.clip(xyz[:, 2], -1, 1)))) >> (2 * (29 - order))
    got = _margin_mask(xyz, pix, pixel, v, m, c)
    other = pix != pixel
    want = other.copy()
    want[other] = _boundary_distance(xyz[other], v) <= m
    assert np.array_equal(got, want)
    assert 0 < want.sum() < other.sum()
