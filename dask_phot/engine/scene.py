"""Scene mode: every source in the image fitted jointly.

The image is cut into square *core* tiles. Each tile's sub-problem uses the
pixels of the core grown by a *margin* (the pixel region) and models every
source whose stamp reaches that region (stamps differ in size: a galaxy's is
larger than a point source's), with its own sky terms when the sky is fitted. Every pixel
that enters a tile's fit is therefore completely modelled: no light from an
unmodelled source leaks into the sky or into the fluxes. A source's flux and
marginal variance come from the tile whose core holds it. With a margin of at
least half a stamp, the core sources' footprints lie inside the region and the
tile solution agrees with the global joint least-squares solution far below
the noise, at a cost linear in the number of sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dask_phot.engine import _kernels as K
from dask_phot.engine.prepare import Prepared
from dask_phot.models.stamps import Stamps

__all__ = ["SceneState", "Tiling", "make_tiling", "sky_at", "solve_scene", "spatial_order"]


@dataclass
class Tiling:
    """Tiles of a scene fit, in the CSR layout the kernels read."""

    ptr: np.ndarray
    members: np.ndarray
    primary: np.ndarray
    regions: np.ndarray  # (ntiles, 4): rx0, rx1, ry0, ry1
    cores: np.ndarray  # (ntiles, 4)
    tile_size: int
    margin: int
    ntx: int
    tile_ids: np.ndarray  # flat tile id (ty * ntx + tx) of each kept tile


def default_tiling(psf_size: int, fwhm: float) -> tuple[int, int]:
    """Default ``(tile_size, margin)`` in pixels for a PSF stamp size and FWHM."""
    margin = int(psf_size) // 2 + math.ceil(fwhm)
    tile = max(int(psf_size), 2 * math.ceil(4 * fwhm), 16)
    return tile, margin


def make_tiling(
    cx: np.ndarray, cy: np.ndarray, boxes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    fit: np.ndarray, shape: tuple[int, int], tile_size: int, margin: int,
    all_tiles: bool = False,
) -> Tiling:
    """Assign fitted sources (centre pixels ``cx, cy``) to tiles.

    Tile ``t`` fits the pixels of its core grown by ``margin`` (its region) and
    models every source whose stamp box ``boxes = (x0, y0, w, h)`` meets the
    region; a source is primary in the tile whose core holds its centre pixel.
    A tile lists its sources by the column of their boxes' centres, then input
    order (two sources at one place: the first listed is kept, the other found
    degenerate). Tiles without primary sources are dropped unless ``all_tiles`` (needed
    when the sky is fitted, so that every pixel has a sky).
    """
    ny, nx = shape
    t, g = int(tile_size), int(margin)
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
    tx = tx_lo[src] + off % nxs[src]
    ty = ty_lo[src] + off // nxs[src]
    tile = ty * ntx + tx
    sx, sy = cx[idx], cy[idx]
    prim_tile = (sy // t) * ntx + sx // t
    # a tile lists its sources by the columns of their stamps' centres (then input
    # order): each overlaps only the few listed near it, a narrow profile to factor
    order = np.lexsort((idx[src], (2 * bx0 + bw)[src], tile))
    tile, src = tile[order], src[order]
    members = idx[src]
    primary = tile == prim_tile[src]
    uniq = np.arange(ntx * nty) if all_tiles else np.unique(tile[primary])
    keep = np.isin(tile, uniq)
    tile, members, primary = tile[keep], members[keep], primary[keep]
    ptr = np.append(np.searchsorted(tile, uniq), tile.size).astype(np.int64)
    utx, uty = uniq % ntx, uniq // ntx
    cores = np.column_stack([utx * t, np.minimum((utx + 1) * t, nx),
                             uty * t, np.minimum((uty + 1) * t, ny)]).astype(np.int64)
    regions = np.column_stack([np.maximum(cores[:, 0] - g, 0), np.minimum(cores[:, 1] + g, nx),
                               np.maximum(cores[:, 2] - g, 0), np.minimum(cores[:, 3] + g, ny)])
    return Tiling(ptr, members.astype(np.int64), primary, regions.astype(np.int64), cores,
                  t, g, ntx, uniq)


def spatial_order(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], tile_size: int
                  ) -> np.ndarray:
    """Permutation of the sources that groups them by scene tile (input order within).

    Stamps rendered in this order put each tile's sources, and their
    neighbours', close together in memory, which the kernels read far faster
    than stamps scattered in catalogue order.
    """
    ny, nx = shape
    t = max(int(tile_size), 1)
    cx = np.clip(np.floor(np.nan_to_num(x) + 0.5), 0, nx - 1).astype(np.int64)
    cy = np.clip(np.floor(np.nan_to_num(y) + 0.5), 0, ny - 1).astype(np.int64)
    ntx = max(1, -(-nx // t))
    return np.argsort((cy // t) * ntx + cx // t, kind="stable")


def sky_at(tiling: Tiling, sky: np.ndarray, nsky: int, x: np.ndarray, y: np.ndarray
           ) -> np.ndarray:
    """Fitted sky at positions, from the tile whose core holds each position."""
    out = np.zeros(np.shape(x))
    if nsky == 0 or tiling.tile_ids.size == 0:
        return out
    t = tiling.tile_size
    cx, cy = np.floor(np.asarray(x) + 0.5).astype(np.int64), np.floor(np.asarray(y) + 0.5)
    flat = (cy.astype(np.int64) // t) * tiling.ntx + cx // t
    pos = np.searchsorted(tiling.tile_ids, flat)
    pos = np.clip(pos, 0, tiling.tile_ids.size - 1)
    found = tiling.tile_ids[pos] == flat
    reg = tiling.regions[pos]
    xc = 0.5 * (reg[:, 0] + reg[:, 1] - 1)
    yc = 0.5 * (reg[:, 2] + reg[:, 3] - 1)
    half = np.maximum(np.maximum(0.5 * (reg[:, 1] - reg[:, 0]), 0.5 * (reg[:, 3] - reg[:, 2])),
                      1.0)
    val = sky[pos, 0].copy()
    if nsky > 1:
        val += sky[pos, 1] * (cx - xc) / half + sky[pos, 2] * (cy - yc) / half
    out[found] = val[found]
    return out


def sky_image(tiling: Tiling, sky: np.ndarray, nsky: int, shape: tuple[int, int]
              ) -> np.ndarray:
    """Image of the fitted sky, each pixel taken from the tile whose core holds it.

    The values of :func:`sky_at` at every pixel, filled tile core by tile core.
    """
    if nsky == 0 or tiling.tile_ids.size == 0:
        return np.zeros(shape)
    return K.fill_sky(tiling.cores, tiling.regions, sky, nsky, shape)


@dataclass
class SceneState:
    """What a scene fit of given stamps can reuse for another image (the tiling and the
    pair table; only the data sums change) and, when kept, every tile's factorisation
    with the fit's variances, status and degeneracies (the new fit then only
    substitutes its right-hand sides)."""

    tiling: Tiling
    pos: np.ndarray
    members: np.ndarray
    prepared: tuple
    factors: tuple | None = None
    settled: tuple | None = None  # (var, status, hasdeg) of the fit that kept the factors
    has_variances: bool = False  # whether that fit computed the variances


def solve_scene(
    prep: Prepared,
    stamps: Stamps,
    *,
    nsky: int,
    tile_size: int,
    margin: int,
    tol: float,
    order: np.ndarray | None = None,
    state: SceneState | None = None,
    variances: bool = True,
    keep_factors: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, SceneState]:
    """Joint fit of all sources marked ``prep.fit``.

    ``stamps[k]`` is the stamp of source ``order[k]`` (input order without
    ``order``; a permutation such as :func:`spatial_order` keeps each tile's
    stamps close in memory). Returns ``flux, var, status, has_degenerate,
    sky_at_sources`` in input order and the :class:`SceneState`, whose tiling
    holds the tile sky parameters (``tiling.sky``). Given the ``state`` of a fit
    of the same stamps and weights, only the data sums are recomputed, and with
    that fit's factors (``keep_factors``) the tiles' matrices are not factored
    again; without ``variances`` they are not computed (NaN).
    """
    if state is None:
        n = prep.x.shape[0]
        pos = np.arange(n) if order is None else np.argsort(order)
        cx = np.floor(prep.x + 0.5).astype(np.int64)
        cy = np.floor(prep.y + 0.5).astype(np.int64)
        boxes = (stamps.x0[pos], stamps.y0[pos], stamps.w[pos], stamps.h[pos])
        tiling = make_tiling(cx, cy, boxes, prep.fit, prep.data.shape, tile_size, margin,
                             all_tiles=nsky > 0)
        members = pos[tiling.members]  # rows of the stamps, in each tile's order
        prepared = K.tile_table(members, tiling.regions, *stamps.arrays, prep.data, prep.weight)
        state = SceneState(tiling, pos, members, prepared)
    else:
        K.refresh_data_sums(state.prepared, *stamps.arrays, prep.data, prep.weight)
    tiling, pos = state.tiling, state.pos
    if state.factors is not None and (state.has_variances or not variances):
        flux, sky = K.resolve_tiles(tiling.ptr, state.members, tiling.primary, tiling.regions,
                                    *stamps.arrays, prep.data, prep.weight, nsky,
                                    state.prepared, state.factors)
        var, status, hasdeg = state.settled  # type: ignore[misc]
        if not variances:
            var = np.full(var.shape, np.nan)
    else:
        flux, var, status, hasdeg, sky, factors = K.solve_tiles(
            tiling.ptr, state.members, tiling.primary, tiling.regions, *stamps.arrays,
            prep.data, prep.weight, nsky, tol, state.prepared, variances, keep_factors,
        )
        if keep_factors:
            state.factors, state.settled = factors, (var, status, hasdeg)
            state.has_variances = variances
    flux, var, status, hasdeg = flux[pos], var[pos], status[pos], hasdeg[pos]
    tiling.sky = sky  # type: ignore[attr-defined]
    local_sky = sky_at(tiling, sky, nsky, prep.x, prep.y)
    return flux, var, status, hasdeg, local_sky, state
