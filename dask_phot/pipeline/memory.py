"""Memory-aware cells: a cell whose band task would need more than a budget is split.

A band task (:mod:`dask_phot.pipeline.graph`) holds the band's pixel box of the cell
(image, noise map, the weights of its two fits, model and residual) and the stamps of
the sources it models. :func:`band_memory` estimates it from the box the task will
read (the same boxes as :func:`~dask_phot.pipeline.kernel.read_cell`: one per mosaic
holding primary sources, padded by the band's margin and half a stamp) and from the
sources' stamps; :func:`split_cells` replaces a cell whose largest band exceeds
``[cells] memory_budget`` by its HEALPix children (:func:`~dask_phot.cells.split_cell`,
again if need be) before anything is submitted. The children's margins are those of
the whole catalog at their order, so each source is measured as in an unsplit cell up
to what the margins already allow (a cell's fit is the whole mosaic's within the
margins' tolerance).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from dask_phot.cells import MAX_ORDER, CellSources, split_cell
from dask_phot.config import BandImages, RunConfig
from dask_phot.images import Mosaic, sky_to_box
from dask_phot.pipeline.resume import owners

__all__ = ["BYTES_PER_PIXEL", "BYTES_PER_STAMP_PIXEL", "OwnerMemo", "band_memory",
           "cell_memory", "split_cells"]

log = logging.getLogger(__name__)

#: Bytes a band task holds per pixel of its box (image and noise map as read and as
#: float64, the two fits' weights, model, residual and masks). With
#: :data:`BYTES_PER_STAMP_PIXEL`, set so that the estimate bounds the peak that
#: tracemalloc measured in irac1 and nuv tasks of cells of 4,400-5,700 sources at COSMOS
#: density (47-176 MB; the estimates were 0.8-1.3 times that with 96 and 32 bytes).
BYTES_PER_PIXEL = 128
#: Bytes a band task holds per pixel of a modelled source's stamp (its model stamp and
#: the scene solver's products of stamps).
BYTES_PER_STAMP_PIXEL = 40


#: Cell key ``(order, pixel)`` -> band -> :func:`~dask_phot.pipeline.resume.owners`.
OwnerMemo = dict[tuple[int, int], dict[str, np.ndarray]]


def band_memory(part: CellSources, index: Sequence[Mosaic], band: BandImages,
                margin_arcsec: float, memo: OwnerMemo | None = None) -> int:
    """Estimated peak bytes of one band task of a cell.

    Parameters
    ----------
    part : CellSources
    index : sequence of Mosaic
        The band's mosaics.
    band : BandImages
    margin_arcsec : float
        The band's margin (:meth:`~dask_phot.config.RunConfig.band_margins`).
    memo : dict, optional
        The mosaic owners found (taken from it, or added to it), so that the run's
        plan does not assign the cell's sources again (~6 s of CPU on 1.2M priors).
    """
    src = part.sources
    primary = src["_primary"].to_numpy(dtype=bool)
    ra, dec = src["ra"].to_numpy()[primary], src["dec"].to_numpy()[primary]
    if not primary.any() or not index:
        return 0
    found = {} if memo is None else memo.setdefault((part.cell.order, part.cell.pixel), {})
    owner = found.get(band.name)
    if owner is None:
        owner = found[band.name] = owners(part, index, band, margin_arcsec)
    pixels = 0
    for k in np.unique(owner[owner >= 0]):
        mosaic = index[int(k)]
        pad = margin_arcsec / mosaic.pixel_scale_arcsec + band.band.psf_size // 2 + 2
        (x0, x1), (y0, y1) = sky_to_box(mosaic, ra[owner == k], dec[owner == k], pad)
        pixels = max(pixels, (x1 - x0) * (y1 - y0))
    stamps = len(src) * band.band.psf_size ** 2
    return pixels * BYTES_PER_PIXEL + stamps * BYTES_PER_STAMP_PIXEL


def cell_memory(part: CellSources, indexes: Mapping[str, Sequence[Mosaic]],
                config: RunConfig, memo: OwnerMemo | None = None) -> dict[str, int]:
    """Band -> estimated peak bytes of the cell's band task (:func:`band_memory`)."""
    margins = config.band_margins()
    return {b.name: band_memory(part, indexes[b.name], b, margins[b.name], memo)
            for b in config.bands}


def _need(part: CellSources, indexes: Mapping[str, Sequence[Mosaic]],
          config: RunConfig, memo: OwnerMemo | None) -> int:
    return max(cell_memory(part, indexes, config, memo).values(), default=0)


def split_cells(parts: Sequence[CellSources], indexes: Mapping[str, Sequence[Mosaic]],
                config: RunConfig, memo: OwnerMemo | None = None) -> list[CellSources]:
    """The cells, those whose largest band task would exceed ``[cells] memory_budget``
    replaced by their HEALPix children (split again while a child exceeds it).
    ``memo`` receives the mosaic owners found on the way (:func:`band_memory`).

    A cell is kept whatever its estimate (with a log line) when it holds one source, is
    at the deepest order, or when its children would need as much (their margins, which
    every child carries, dominate: a cell not much wider than the margin).
    """
    budget = config.cells.memory_budget_bytes()
    out: list[CellSources] = []
    todo = [(p, _need(p, indexes, config, memo)) for p in parts][::-1]
    n_split = 0
    while todo:
        part, need = todo.pop()
        if need <= budget:
            out.append(part)
            continue
        kids = ([] if part.n_primary <= 1 or part.cell.order >= MAX_ORDER
                else split_cell(part, config.margin_arcsec))
        kids_need = [_need(k, indexes, config, memo) for k in kids]
        if not kids or (len(kids) > 1 and max(kids_need) >= need):
            log.warning("cell %s: its band tasks need ~%.2f GiB, above [cells] memory_budget "
                        "(%.2f GiB), and its children would need as much (its margin "
                        "dominates): kept whole", part.cell, need / 2**30, budget / 2**30)
            out.append(part)
            continue
        n_split += 1
        todo.extend(list(zip(kids, kids_need, strict=True))[::-1])
    if n_split:
        log.info("%d cell(s) split to keep each band task within %.2f GiB: %d cells",
                 n_split, budget / 2**30, len(out))
    return sorted(out, key=lambda p: (p.cell.pixel << 2 * (MAX_ORDER - p.cell.order)))
