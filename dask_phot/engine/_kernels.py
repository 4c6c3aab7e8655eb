"""Compiled kernels of the engine: normal equations from stamp overlaps, solves.

All functions are pure numba functions of arrays. Stamps are ragged
(:class:`dask_phot.models.stamps.Stamps`): stamp ``i`` is the ``h[i] x w[i]``
array ``data[ptr[i]:ptr[i+1]]`` whose first pixel sits at image column ``x0[i]``
and row ``y0[i]``; kernels take the six arrays ``data, ptr, w, h, x0, y0``
(``Stamps.arrays``). A *region* is a half-open pixel box ``(rx0, rx1, ry0, ry1)``.

This module gathers the kernels the engine uses (imported as ``K``); they live
in :mod:`~dask_phot.engine._normal` (normal equations, tile solves),
:mod:`~dask_phot.engine._solve` (the solvers and their status codes),
:mod:`~dask_phot.engine._pairs` (overlapping stamp pairs, block partial sums)
and :mod:`~dask_phot.engine._image` (model image, footprint statistics).
"""

from dask_phot.engine._image import (
    fill_sky,
    footprint_counts,
    footprint_stats,
    scatter_into,
    scatter_model,
)
from dask_phot.engine._normal import (
    ST_DEGENERATE,
    ST_FAILED,
    ST_OK,
    build_normal,
    build_normal_tile,
    refresh_data_sums,
    resolve_tiles,
    solve_normal,
    solve_normal_rl,
    solve_tiles,
    tile_table,
)
from dask_phot.engine._pairs import block_lines, pair_table

__all__ = [
    "ST_DEGENERATE",
    "ST_FAILED",
    "ST_OK",
    "block_lines",
    "build_normal",
    "build_normal_tile",
    "fill_sky",
    "footprint_counts",
    "footprint_stats",
    "pair_table",
    "refresh_data_sums",
    "resolve_tiles",
    "scatter_into",
    "scatter_model",
    "solve_normal",
    "solve_normal_rl",
    "solve_tiles",
    "tile_table",
]
