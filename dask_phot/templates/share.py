"""Soft segment boundaries: the sharp light outside every segment shared between sources.

A detection threshold leaves a galaxy's faint outskirts (a diffuse disc, the
sharp PSF's wings) outside its segment. Growing segments by a fixed distance
(:func:`~.segments.grow_segments`, as T-PHOT and golfir do) gives those
pixels back, but draws a hard line half way between neighbours: a bright
neighbour's outskirts on the near side of the line land in the faint
source's template (its flux comes out high by that light), and a disc that
reaches past the line is cut (its flux comes out low). Deblenders
(SExtractor's, scarlet) share a pixel between the sources that overlap it
instead, in proportion to their models. Here:

* a pixel inside a segment is its source's alone (a detection without
  deblending has already merged sources that overlap above the threshold);
* a pixel outside every segment, within ``reach`` sharp pixels of the
  bounding boxes of one or more segments, is shared between those sources
  in proportion to a smooth model of each, ``s_i(p)``: an elliptical
  exponential with the segment's light, centroid and second moments (a
  floor of one pixel squared added), so its share falls off with distance
  in units of the source's own size and in proportion to its light;
  a pixel beyond every source's reach is nobody's.

Source ``i``'s template is then ``sum_p w_i(p) I(p)`` with ``w_i = s_i / sum_j
s_j`` (1 inside its segment): the shares of a pixel add up to one, so no
light is counted twice, and the template's total (the ``hires_flux``) is the
light it holds.

The models are smooth on the scale of a source, so the shares are taken on
blocks of ``block x block`` sharp pixels (4 by default, 0.24" at 0.06"/px,
well under the blurred image's pixel): every unlabelled pixel of a block
gets the shares of the block's centre, and a source reaches whole blocks.
That is ~16 model evaluations and sums fewer than pixel by pixel; on the
crowded 2'x2' pair (``benchmarks/bench_templates.py``) the accuracy is the
same or better (pull std 1.14 against 1.20, bias -0.1% against -0.2%).
:func:`share_outskirts` measures the models, their sum per block, each
source's shares over its box's blocks (kept: the template deposit,
:mod:`.build`, and the noise propagation, :mod:`.noise`, read them instead of
evaluating the models again) and each source's shared light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from dask_phot.templates.segments import SegmentTable

__all__ = ["BLOCK", "Shares", "share_outskirts", "shared_light", "weight_at"]

#: Side (sharp pixels) of the blocks the outskirts are shared on (module docstring).
BLOCK = 4


@dataclass
class Shares:
    """Smooth models of the segments and their sum outside every segment.

    Attributes
    ----------
    reach : int
        Sharp pixels beyond a segment's bounding box its source can share.
    block : int
        Side (sharp pixels) of the blocks the shares are taken on.
    denom : ndarray (ny / block x nx / block, rounded up)
        Per block with unlabelled pixels: ``sum_j s_j`` at its centre where two or
        more sources reach it, -1 where one does (all its: no model evaluated),
        else 0.
    params : dict of ndarray
        Per segment (rows of the :class:`~.segments.SegmentTable`): the model's
        centre ``pcx, pcy``, quadratic form ``a00, a01, a11`` and amplitude
        ``norm``; the sharing box ``sx0, sx1, sy0, sy1`` (pixels, whole blocks);
        and ``wptr``, where its box starts in ``weights``.
    weights : ndarray (float64)
        Every source's share ``w_i`` of the unlabelled pixels of each block of its
        sharing box (row by row, boxes one after the other); on its segment its
        weight is 1, on other segments 0.
    blocks : ndarray, shape (2, ny / block, nx / block)
        Per block some source reaches: the count and the sum of its finite
        unlabelled pixels.
    light, wsum : ndarray
        Per segment: light of the shared pixels given to it (background not
        subtracted) and the sum of its shares.
    """

    reach: int
    block: int
    denom: np.ndarray
    params: dict
    weights: np.ndarray
    blocks: np.ndarray
    light: np.ndarray
    wsum: np.ndarray


@numba.njit(cache=True, inline="always")
def weight_at(i: int, r: int, c: int, cx: np.ndarray, cy: np.ndarray, a00: np.ndarray,
              a01: np.ndarray, a11: np.ndarray, norm: np.ndarray) -> float:
    """Source ``i``'s smooth model at sharp pixel ``(c, r)``."""
    dx, dy = c - cx[i], r - cy[i]
    q = a00[i] * dx * dx + 2.0 * a01[i] * dx * dy + a11[i] * dy * dy
    return norm[i] * math.exp(-math.sqrt(max(q, 0.0)))


@numba.njit(cache=True)
def _cover(x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray,
           norm: np.ndarray, b: int, out: np.ndarray) -> None:
    """The number of sources whose box holds each ``b x b`` block, added to ``out``."""
    for i in range(x0.shape[0]):
        if not norm[i] > 0:
            continue
        for rb in range(y0[i] // b, y1[i] // b + 1):
            for cb in range(x0[i] // b, x1[i] // b + 1):
                out[rb, cb] += 1.0


@numba.njit(cache=True)
def _block_sums(img: np.ndarray, seg: np.ndarray, b: int) -> np.ndarray:
    """Per ``b x b`` block: the count and the sum of its finite unlabelled pixels
    (``[2, ny / b, nx / b]``, rounded up); as :func:`.segments.measure_segments` gives
    them with ``block=b``."""
    ny, nx = seg.shape
    nbx = (nx + b - 1) // b
    out = np.zeros((2, (ny + b - 1) // b, nbx))
    for r in range(ny):
        rb = r // b
        for cb in range(nbx):
            n, t = 0.0, 0.0
            for c in range(cb * b, min(cb * b + b, nx)):
                v = img[r, c]
                if seg[r, c] == 0 and np.isfinite(v):
                    n += 1.0
                    t += v
            out[0, rb, cb] += n
            out[1, rb, cb] += t
    return out


@numba.njit(cache=True, inline="always")
def block_centre(k: int, b: int, n: int) -> float:
    """Centre (pixels) of block ``k`` of side ``b`` along an axis of ``n`` pixels."""
    return 0.5 * (k * b + min(k * b + b, n) - 1)


@numba.njit(cache=True, inline="always")
def box_blocks(x0: int, x1: int, y0: int, y1: int, b: int) -> tuple[int, int, int, int]:
    """The blocks of a box (pixels, inclusive): first column and row, columns, rows."""
    return x0 // b, y0 // b, x1 // b - x0 // b + 1, y1 // b - y0 // b + 1


@numba.njit(cache=True)
def source_blocks(box: np.ndarray, b: int, weights: np.ndarray, wptr: int,
                  blocks: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """One source's shared blocks with light (sharing box ``box[4:]``, its weights from
    ``wptr`` in ``weights``, :attr:`Shares.blocks`): their shares, pixel counts,
    light and centres (row, column)."""
    bx0, by0, bw, bh = box_blocks(box[4], box[5], box[6], box[7], b)
    out = np.zeros((5, bw * bh))
    k = 0
    for rb in range(by0, by0 + bh):
        for cb in range(bx0, bx0 + bw):
            w = weights[wptr + (rb - by0) * bw + cb - bx0]
            n = blocks[0, rb, cb]
            if w > 0.0 and n > 0.0:
                out[0, k], out[1, k], out[2, k] = w, n, blocks[1, rb, cb]
                out[3, k] = block_centre(rb, b, shape[0])
                out[4, k] = block_centre(cb, b, shape[1])
                k += 1
    return out[0, :k], out[1, :k], out[2, :k], out[3, :k], out[4, :k]


@numba.njit(cache=True)
def _models_in_boxes(cnt: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray,
                     y1: np.ndarray, cx: np.ndarray, cy: np.ndarray, a00: np.ndarray,
                     a01: np.ndarray, a11: np.ndarray, norm: np.ndarray, b: int,
                     denom: np.ndarray, wptr: np.ndarray, weights: np.ndarray,
                     ny: int, nx: int) -> None:
    """Each source's blocks in ``weights``: 1 where it alone reaches, its model at the
    block's centre where several do (their sum goes in ``denom``, where :func:`_cover`
    left minus their number), 0 elsewhere."""
    for i in range(x0.shape[0]):
        bx0, by0, bw, bh = box_blocks(x0[i], x1[i], y0[i], y1[i], b)
        for rb in range(by0, by0 + bh if norm[i] > 0 else by0):
            at = wptr[i] + (rb - by0) * bw - bx0
            r = block_centre(rb, b, ny)
            for cb in range(bx0, bx0 + bw):
                if cnt[rb, cb] <= 0.0:
                    continue
                d = denom[rb, cb]
                if d == -1.0:
                    weights[at + cb] = 1.0
                    continue
                if d < 0.0:
                    denom[rb, cb] = 0.0
                s = weight_at(i, r, block_centre(cb, b, nx), cx, cy, a00, a01, a11, norm)
                denom[rb, cb] += s
                weights[at + cb] = s


@numba.njit(cache=True)
def _normalise(sums: np.ndarray, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray,
               y1: np.ndarray, norm: np.ndarray, b: int, denom: np.ndarray,
               wptr: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Models divided by their sum (shares, at most 1); each source's shared light and
    shares' sum, from the blocks' sums."""
    out = np.zeros((x0.shape[0], 2))
    for i in range(x0.shape[0]):
        bx0, by0, bw, bh = box_blocks(x0[i], x1[i], y0[i], y1[i], b)
        for k in range(bw * bh if norm[i] > 0 else 0):  # the box's blocks, row by row
            rb, cb = by0 + k // bw, bx0 + k % bw
            d = denom[rb, cb]
            w = weights[wptr[i] + k]
            if d > 0.0:
                w = min(w / d, 1.0)
                weights[wptr[i] + k] = w
            if w <= 0.0:
                continue
            out[i, 0] += w * sums[1, rb, cb]
            out[i, 1] += w * sums[0, rb, cb]
    return out


@numba.njit(cache=True)
def _light(img: np.ndarray, seg: np.ndarray, x0: np.ndarray,
           x1: np.ndarray, y0: np.ndarray, y1: np.ndarray, b: int, wptr: np.ndarray,
           weights: np.ndarray) -> np.ndarray:
    """Each source's shares of ``img``'s unlabelled pixels, summed."""
    out = np.zeros(x0.shape[0])
    for i in range(x0.shape[0]):
        bw = x1[i] // b - x0[i] // b + 1
        for r in range(y0[i], y1[i] + 1):
            at = wptr[i] + (r // b - y0[i] // b) * bw
            for c in range(x0[i], x1[i] + 1):
                w = weights[at + c // b - x0[i] // b]
                v = img[r, c]
                if seg[r, c] == 0 and w > 0.0 and np.isfinite(v):
                    out[i] += w * v
    return out


def _models(table: SegmentTable) -> dict:
    """Each segment's smooth model: light, centroid and second moments (+1 px^2)."""
    light = table.light
    cx, cy = table.x, table.y
    cxx, cxy, cyy = table.cov[:, 0] + 1.0, table.cov[:, 1], table.cov[:, 2] + 1.0
    cxx, cyy = np.maximum(cxx, 1.0), np.maximum(cyy, 1.0)
    det = np.maximum(cxx * cyy - cxy * cxy, 1e-6)
    # an exponential of covariance C is exp(-sqrt(d^T A d)) with A = 3 C^-1
    a00, a01, a11 = 3.0 * cyy / det, -3.0 * cxy / det, 3.0 * cxx / det
    # every segment ends at the detection isophote: each model is 1 at its segment's
    # edge (the ellipse of the segment's area, in scale lengths) and falls off beyond
    # it with the source's own scale length
    edge = np.sqrt(3.0 * table.npix / (np.pi * np.sqrt(det)))
    norm = np.where(light > 0, np.exp(np.minimum(edge, 600.0)), 0.0)
    return {"pcx": cx, "pcy": cy, "a00": a00, "a01": a01, "a11": a11, "norm": norm}


def share_outskirts(image: np.ndarray, segmap: np.ndarray, table: SegmentTable,
                    reach: int, block: int = BLOCK) -> Shares:
    """Smooth models, their sum and each source's shared light (module docstring).

    Examples
    --------
    Two sources 1 and 2; the gap pixel between them is shared, nearer the
    brighter one's share:

    >>> img = np.zeros((1, 9)); img[0, :3] = 4.0; img[0, 4] = 1.0; img[0, 6:] = 1.0
    >>> seg = np.zeros((1, 9), dtype=np.int32); seg[0, :3] = 1; seg[0, 6:] = 2
    >>> from dask_phot.templates.segments import measure_segments
    >>> sh = share_outskirts(img, seg, measure_segments(img, seg), reach=3, block=1)
    >>> bool(sh.light[0] > sh.light[1]), round(float(sh.light.sum()), 6)
    (True, 1.0)
    """
    if not (isinstance(reach, int | np.integer) and reach >= 0):
        raise ValueError(f"grow: must be an integer >= 0 (pixels), got {reach!r}")
    b = int(block)
    img = np.ascontiguousarray(image)
    seg = np.ascontiguousarray(segmap)
    params = _models(table)
    ny, nx = seg.shape
    # sharing boxes of whole blocks
    params["sx0"] = np.maximum(table.xmin - reach, 0) // b * b
    params["sx1"] = np.minimum(np.minimum(table.xmax + reach, nx - 1) // b * b + b - 1, nx - 1)
    params["sy0"] = np.maximum(table.ymin - reach, 0) // b * b
    params["sy1"] = np.minimum(np.minimum(table.ymax + reach, ny - 1) // b * b + b - 1, ny - 1)
    model = [params[k] for k in ("pcx", "pcy", "a00", "a01", "a11", "norm")]
    box = [params[k] for k in ("sx0", "sx1", "sy0", "sy1")]
    area = ((box[1] // b - box[0] // b + 1) * (box[3] // b - box[2] // b + 1) if reach > 0
            else 0 * box[0])
    params["wptr"] = np.concatenate([[0], np.cumsum(area)[:-1]]).astype(np.int64) \
        if len(table) else np.zeros(0, dtype=np.int64)
    weights = np.zeros(int(area.sum()))
    denom = np.zeros(((ny + b - 1) // b, (nx + b - 1) // b))
    blocks = np.zeros((2, *denom.shape))
    if len(table) and reach > 0:
        _cover(*box, model[-1], b, denom)
        blocks = (table.blocks if table.block == b and table.blocks is not None
                  else _block_sums(img, seg, b))
        denom = np.where(blocks[0] > 0, -denom, 0.0)
        _models_in_boxes(blocks[0], *box, *model, b, denom, params["wptr"], weights, ny, nx)
        sums = _normalise(blocks, *box, model[-1], b, denom, params["wptr"], weights)
    else:
        sums = np.zeros((len(table), 2))
    return Shares(int(reach), b, denom, params, weights, blocks, sums[:, 0], sums[:, 1])


def shared_light(image: np.ndarray, segmap: np.ndarray, shares: Shares) -> np.ndarray:
    """The light of another image (for example one source's, or a model) that the
    same shares give each source, from the pixels outside every segment."""
    p = shares.params
    if not p["norm"].size or shares.reach == 0:
        return np.zeros(p["norm"].shape[0])
    box = [p[k] for k in ("sx0", "sx1", "sy0", "sy1")]
    return _light(np.ascontiguousarray(image, dtype=np.float64), np.ascontiguousarray(segmap),
                  *box, shares.block, p["wptr"], shares.weights)
