"""Templates: each source's sharp light, convolved and resampled onto the blurred grid.

Source ``i``'s template is built on a *lattice* ``1/m`` of a blurred pixel
apart that holds the blurred pixel centres of its stamp (``k x k`` pixels,
``N = m k`` lattice points a side):

1. every finite pixel of its segment (and, with shared outskirts, its share
   of each unlabelled pixel around it: :mod:`.share`) is mapped through the local affine map
   of the two WCSs (:mod:`.geometry`; rotation, pixel scales, sub-pixel
   offsets and any registration shift) and its value split bilinearly between
   the four lattice points around it;
2. that is convolved (FFT, periodic over the lattice) with the matching
   kernel (:class:`~dask_phot.templates.kernel.TemplateKernel`), which turns
   the sharp PSF, as deposited, into the band's pixel response, and the same
   light as a sharp *point source* at the reference position (the sharp PSF
   deposited and convolved: :meth:`~.kernel.TemplateKernel.point_spectrum`)
   is taken away, so what is left has no net light;
3. the lattice is sampled at the pixel centres and divided by the segment's
   light, then the band's own point-source stamp at the reference position is
   added back (rendered exactly by the PSF, with its wings).

The point taken away must be a sharp point source, not a lattice delta: the
kernel turns the sharp PSF into the band's, but a delta into the band's PSF
*without* the sharp PSF's wings (an HST PSF holds a few percent of its light
beyond 0.5"), and the difference would stay in every template, making it
more peaked than the data and its flux ~1.5% too high.

Splitting off the point part this way is what the galaxy renderer does
(:mod:`dask_phot.models.render`): the FFT only carries the difference between
the source and a point, which has the source's extent, so little light wraps
around the lattice, and the PSF's far wings come from the PSF itself. A
template is flux-conserving: it sums to the point stamp's enclosed light
(the PSF beyond the stamp is the engine's wing pass), so its fitted amplitude
is the source's total flux in the blurred image's units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft

from dask_phot.models.stamps import Stamps
from dask_phot.templates.kernel import TemplateKernel, point_stamps, splat
from dask_phot.templates.share import Shares, source_blocks
from dask_phot.templates.wings import psf_at

__all__ = ["TemplateStamps", "build_templates", "stamp_sides"]

#: Extra half-widths (blurred pixels) stamps grow by, so few sizes are used.
_LADDER = np.array([0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256])


@dataclass
class TemplateStamps:
    """Unit-flux models of sources (input order).

    Attributes
    ----------
    stamps : Stamps
        The models.
    sides : ndarray of int
        Stamp side per source.
    capped : ndarray of bool
        The segment did not fit in the largest allowed stamp (light cut).
    """

    stamps: Stamps
    sides: np.ndarray
    capped: np.ndarray


def stamp_sides(extent: np.ndarray, psf_size: int, max_size: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Stamp side for sources whose light reaches ``extent`` blurred pixels from
    their reference position: the PSF's stamp plus that on each side, on a ladder
    of sizes; capped at ``max_size`` (returned as a flag)."""
    # light within half a pixel of the centre stays in the PSF's own box; beyond it the
    # model's extension (source minus point, convolved) needs that much more room
    need = np.maximum(np.ceil(np.nan_to_num(extent, nan=0.0) - 0.5), 0).astype(np.int64)
    j = np.searchsorted(_LADDER, need)
    grow = np.where(j < _LADDER.size, _LADDER[np.minimum(j, _LADDER.size - 1)], need)
    k = psf_size + 2 * grow
    capped = k > max_size
    return np.minimum(k, max(max_size | 1, psf_size)), capped


@numba.njit(cache=True)
def _deposit(img: np.ndarray, seg: np.ndarray, label: np.ndarray, box: np.ndarray,
             cx: np.ndarray, cy: np.ndarray, bkg: np.ndarray, jac: np.ndarray,
             fx0: np.ndarray, fy0: np.ndarray, m: int, out: np.ndarray, total: np.ndarray,
             weights: np.ndarray, wptr: np.ndarray, blocks: np.ndarray, block: int,
             wpsf: np.ndarray, lp: np.ndarray) -> None:
    """Deposit segment ``label[i]`` (less the background ``bkg[i]`` per pixel; its
    bounding box ``box[i, :4]``: x0, x1, y0, y1) and, when ``weights`` is not empty,
    its shares of the unlabelled pixels of the blocks of its sharing box ``box[i,
    4:]`` (:mod:`.share`: they start at ``wptr[i]`` in ``weights``), each block's light
    (``blocks[1]``, its pixel count ``blocks[0]``) at its centre; its light goes in
    ``total[i]``.

    With ``wpsf`` (the sharp PSF, not empty) the segment's pixels less ``lp[i]`` times
    the sharp PSF at the centroid are deposited, and ``total[i]`` is ``lp[i]``
    (:mod:`.wings`).

    Lattice coordinates of sharp pixel ``(c, r)``: ``m * (jac @ (c - cx, r - cy)) +
    (fx0, fy0)``, where ``(fx0, fy0)`` is the reference point on the lattice.
    """
    shared = weights.shape[0] > 0
    wings = wpsf.shape[0] > 0
    for i in range(label.shape[0]):
        o = out[i]
        tot = 0.0
        j00, j01, j10, j11 = jac[i, 0, 0], jac[i, 0, 1], jac[i, 1, 0], jac[i, 1, 1]
        for r in range(box[i, 2], box[i, 3] + 1):
            dy = r - cy[i]
            for c in range(box[i, 0], box[i, 1] + 1):
                if seg[r, c] != label[i]:
                    continue
                v = img[r, c] - bkg[i]
                if not np.isfinite(v):
                    continue
                dx = c - cx[i]
                if wings:
                    v -= lp[i] * psf_at(wpsf, dx, dy)
                splat(o, fx0[i] + m * (j00 * dx + j01 * dy),
                      fy0[i] + m * (j10 * dx + j11 * dy), v)
                tot += v
        if shared:
            ws, ns, ls, ys, xs = source_blocks(box[i], block, weights, wptr[i], blocks,
                                               seg.shape)
            for q in range(ws.shape[0]):  # each block's light at its centre
                v = ws[q] * (ls[q] - bkg[i] * ns[q])
                dx, dy = xs[q] - cx[i], ys[q] - cy[i]
                splat(o, fx0[i] + m * (j00 * dx + j01 * dy),
                      fy0[i] + m * (j10 * dx + j11 * dy), v)
                tot += v
        total[i] = lp[i] if wings else tot


@numba.njit(cache=True)
def _fold_less_point(spec: np.ndarray, sx: np.ndarray, sy: np.ndarray, kspec: np.ndarray,
                     pspec: np.ndarray, rx: np.ndarray, ry: np.ndarray, m: int,
                     out: np.ndarray) -> None:
    """``spec[b] * kspec - outer(ry[b], rx[b]) * pspec`` (the deposited light convolved
    with the kernel, less the same light as a sharp point at the reference position:
    phase ramps ``ry``, ``rx``, the light included in ``rx``), translated by the
    phase ramps ``sx``, ``sy`` when they are not empty, and folded into ``out``.

    ``spec`` is a half spectrum (``rfft2``) of an ``n x n`` lattice; ``out`` gets the
    half spectrum of the ``L x L`` lattice of every ``m``-th point (``n = m L``), up
    to a factor ``m^2``: every frequency's aliases summed (its conjugate mirror for
    the half not stored), so one inverse transform of ``L x L`` points gives the
    samples at the pixel centres.
    """
    n, nu = spec.shape[1], spec.shape[2]
    nl = out.shape[1]
    half = nl // 2
    # where each stored frequency lands, and its conjugate mirror (columns 1 .. (n - 1) // 2
    # stand for n - u too); -1: on the half not stored
    col = np.full(nu, -1)
    mcol = np.full(nu, -1)
    for u in range(nu):
        if u % nl <= half:
            col[u] = u % nl
        if 1 <= u <= (n - 1) // 2 and (n - u) % nl <= half:
            mcol[u] = (n - u) % nl
    shifted = sx.shape[1] > 0
    val = np.empty(nu, dtype=spec.dtype)
    for b in range(spec.shape[0]):
        o = out[b]
        for v in range(n):
            ryv = ry[b, v]
            if shifted:
                syv = sy[b, v]
                for u in range(nu):
                    val[u] = (spec[b, v, u] * kspec[v, u] * syv * sx[b, u]
                              - ryv * rx[b, u] * pspec[v, u])
            else:
                for u in range(nu):
                    val[u] = spec[b, v, u] * kspec[v, u] - ryv * rx[b, u] * pspec[v, u]
            orow = o[v % nl]
            mrow = o[(n - v) % n % nl]
            for u in range(nu):
                if col[u] >= 0:
                    orow[col[u]] += val[u]
                if mcol[u] >= 0:
                    mrow[mcol[u]] += np.conj(val[u])


@numba.njit(cache=True)
def _put_sampled(data: np.ndarray, ptr: np.ndarray, rows: np.ndarray, model: np.ndarray,
                 ext: np.ndarray, scale: np.ndarray) -> None:
    """Stamp ``rows[b]`` of the ragged ``data`` (from ``ptr``) set to ``model[b] + ext[b] *
    scale[b]`` (``ext`` in single precision): the sum written where it is stored, with no
    copy of it in between."""
    k = model.shape[1]
    for b in range(model.shape[0]):
        o = ptr[rows[b]]
        for v in range(k):
            for u in range(k):
                data[o + v * k + u] = model[b, v, u] + np.float64(ext[b, v, u] * scale[b])


def _put(out: Stamps, rows: np.ndarray, parts: tuple[np.ndarray, ...]) -> None:
    """:func:`_finish`'s templates (``parts``) into ``out``'s slots ``rows`` (their side)."""
    model, ext, scale, ax0, ay0 = parts
    _put_sampled(out.data, out.ptr, out.place(rows, model.shape[1], ax0, ay0), model, ext,
                 scale)


def _sampled_inverse(folded: np.ndarray, m: int, k: int) -> np.ndarray:
    """The lattice at the ``k x k`` pixel centres (every ``m``-th point) from its folded
    half spectrum (:func:`_fold_less_point`)."""
    nl = folded.shape[1]
    return scipy.fft.irfft2(folded, s=(nl, nl), axes=(1, 2), workers=1)[:, :k, :k]


def boxes(seg: dict, rows: np.ndarray) -> np.ndarray:
    """Per source ``rows``: its segment's bounding box and its sharing box (the same
    without shared outskirts), ``x0, x1, y0, y1`` each (inclusive)."""
    own = [seg.get("seg_" + k, seg[k]) for k in ("xmin", "xmax", "ymin", "ymax")]
    return np.ascontiguousarray(np.stack(
        [a[rows] for a in own] + [seg[k][rows] for k in ("xmin", "xmax", "ymin", "ymax")],
        axis=1).astype(np.int64))


def _group(hires: np.ndarray, segmap: np.ndarray, rows: np.ndarray, seg: dict,
           x: np.ndarray, y: np.ndarray, jac: np.ndarray, psf: object,
           kernel: TemplateKernel, k: int, share: Shares | None,
           wpsf: np.ndarray | None, cache: dict | None = None,
           scratch: dict | None = None) -> tuple[np.ndarray, ...]:
    """Templates of sources ``rows``, all of stamp side ``k``; with ``cache``, the
    deposits' spectra are kept there the first time and translated (Fourier phase
    ramps) to the new positions after (registration shifts move templates rigidly)."""
    m = kernel.m
    wings = wpsf is not None and share is None
    # the lattice is periodic: pad freely, to a multiple of m (the pixel centres are every
    # m-th point: the inverse transform is of those alone, :func:`_fold_less_point`)
    n = m * scipy.fft.next_fast_len(k, real=True)
    xs, ys = x[rows], y[rows]
    ax0 = np.floor(xs + 0.5).astype(np.int64) - k // 2
    ay0 = np.floor(ys + 0.5).astype(np.int64) - k // 2
    cx, cy = m * (xs - ax0), m * (ys - ay0)  # the reference point on the lattice
    key = (k, int(rows[0]), rows.size)
    if cache is not None and key in cache:
        src, total, cx0, cy0 = cache[key]
        return _finish(src, total, cx, cy, cx - cx0, cy - cy0, xs, ys, ax0, ay0, n, m, k,
                       psf, kernel, wings)
    lat = _zeroed(scratch, (rows.size, n, n))
    total = np.zeros(rows.size)
    _deposit(hires, segmap, seg["id"][rows], boxes(seg, rows), seg["x"][rows],
             seg["y"][rows], seg["bkg"][rows] if "bkg" in seg else np.zeros(rows.size),
             jac[rows], m * (xs - ax0), m * (ys - ay0), m, lat, total,
             share.weights if share is not None else np.zeros(0),
             seg["wptr"][rows] if share is not None else np.zeros(rows.size, np.int64),
             share.blocks if share is not None else np.zeros((2, 1, 1)),
             share.block if share is not None else 1,
             wpsf if wings else np.zeros((0, 0)),
             seg["lp"][rows] if wings else np.zeros(rows.size))
    # single precision: the FFTs dominate the cost, and 1e-7 of a template is noise-free
    spec = scipy.fft.rfft2(lat, axes=(1, 2), workers=1)
    if cache is not None:  # (the spectra are not changed: they are read only)
        cache[key] = (spec, total, cx, cy)
    return _finish(spec, total, cx, cy, None, None, xs, ys, ax0, ay0, n, m, k, psf, kernel,
                   wings)


def _zeroed(scratch: dict | None, shape: tuple[int, int, int]) -> np.ndarray:
    """A zeroed single-precision array of ``shape``: ``scratch``'s, kept from an earlier
    batch of that shape, when there is one (a new array's pages are faulted in and
    zeroed by the system at first touch, 2.4 MB a batch of 256 lattices of 48^2)."""
    if scratch is None:
        return np.zeros(shape, dtype=np.float32)
    lat = scratch.get(shape)
    if lat is None:
        lat = scratch[shape] = np.zeros(shape, dtype=np.float32)
    else:
        lat.fill(0.0)
    return lat


def _finish(spec: np.ndarray, total: np.ndarray, cx: np.ndarray, cy: np.ndarray,
            dx: np.ndarray | None, dy: np.ndarray | None, xs: np.ndarray, ys: np.ndarray,
            ax0: np.ndarray, ay0: np.ndarray, n: int, m: int, k: int, psf: object,
            kernel: TemplateKernel, wings: bool) -> tuple[np.ndarray, ...]:
    """The deposits' spectra ``spec`` (translated by ``dx, dy`` lattice points unless
    None) convolved, less the point part, sampled and normalised, plus the band's point
    stamps: returns the point stamps, the sampled rest and its scale per source (their
    sum is the template: :func:`_put`) and the stamps' corners."""
    fx, fy = scipy.fft.rfftfreq(n), scipy.fft.fftfreq(n)
    # the point part taken away is a sharp point source (the sharp PSF, kernel-convolved),
    # not a lattice delta: then the band's point stamp added back replaces it exactly;
    # its phase ramp is separable, an outer product of one ramp per axis (with the
    # PSF's wings given back, the deposit has no net light already: nothing taken away)
    rx = np.exp(-2j * np.pi * fx[None, :] * cx[:, None]) * (0.0 if wings else total[:, None])
    ry = np.exp(-2j * np.pi * fy[None, :] * cy[:, None])
    kspec = kernel.spectrum(n).astype(np.complex64)
    pspec = kernel.point_spectrum(n).astype(np.complex64)
    rx, ry = rx.astype(np.complex64), ry.astype(np.complex64)
    if dx is None or dy is None:
        sx = sy = np.zeros((spec.shape[0], 0), dtype=np.complex64)
    else:
        sx = np.exp(-2j * np.pi * fx[None, :] * dx[:, None]).astype(np.complex64)
        sy = np.exp(-2j * np.pi * fy[None, :] * dy[:, None]).astype(np.complex64)
    nl = n // m
    folded = np.zeros((spec.shape[0], nl, nl // 2 + 1), dtype=np.complex64)
    _fold_less_point(spec, sx, sy, kspec, pspec, rx, ry, m, folded)
    # the folded inverse is m^2 times the samples (its normalisation is 1 / L^2, not 1 / n^2)
    scale = np.where(total != 0, 1.0 / np.where(total != 0, total, 1.0), 0.0) / m ** 2
    scale = scale.astype(np.float32)
    model, _, _ = point_stamps(psf, xs, ys, k)
    return model, _sampled_inverse(folded, m, k), scale, ax0, ay0


def build_templates(hires: np.ndarray, segmap: np.ndarray, seg: dict, x: np.ndarray,
                    y: np.ndarray, jac: np.ndarray, extent: np.ndarray, psf: object,
                    kernel: TemplateKernel, *,
                    max_size: int = 255, batch: int = 256,
                    share: Shares | None = None, wpsf: np.ndarray | None = None,
                    into: tuple[TemplateStamps, np.ndarray] | None = None,
                    cache: dict | None = None) -> TemplateStamps:
    """Build the templates of the segments in ``seg`` (see the module docstring).

    Parameters
    ----------
    hires, segmap : ndarray
        The sharp image (background subtracted) and its segmentation map.
    seg : dict of ndarray
        Per source: ``id``, centroid ``x, y`` and bounding box ``xmin, xmax,
        ymin, ymax`` on the sharp image (:class:`~.segments.SegmentTable` rows),
        optionally ``bkg``, a background per pixel to subtract, and with
        ``share`` ``wptr``, where its box starts in ``share``.
    x, y : ndarray
        Each source's reference position (its centroid mapped, plus any
        registration shift) on the blurred image.
    jac : ndarray, shape (n, 2, 2)
        Blurred pixels per sharp pixel around each source.
    extent : ndarray
        How far (blurred pixels) each segment reaches from its centroid.
    psf : PSF
        The band's PSF.
    kernel : TemplateKernel
        Matching kernel on the lattice.
    max_size : int
        Largest stamp side; larger segments are cut (``capped``).
    batch : int
        Sources transformed at once.
    share : Shares, optional
        :func:`.share.share_outskirts`'s: the unlabelled pixels in each source's box
        are shared (:mod:`.share`; the boxes are then the sharing boxes).
    wpsf : ndarray, optional
        The sharp PSF (sharp grid, unit sum): without ``share``, each template's
        light beyond its segment is the PSF's (:mod:`.wings`; ``seg["lp"]`` is
        each source's light, the segment's over the PSF's share on it).
    into : (TemplateStamps, ndarray), optional
        Stamps of more sources, whose slots ``rows`` (one per source here, of the
        sides :func:`stamp_sides` gives) these templates go in, instead of new ones.
    cache : dict, optional
        The same dict for every build of the same sources at other positions (the
        registration's): the deposits are made and transformed once, then translated.

    Returns
    -------
    TemplateStamps
        ``into``'s stamps when given.
    """
    nsrc = x.shape[0]
    sides, capped = stamp_sides(extent, int(psf.size), max_size)  # type: ignore[attr-defined]
    if into is None:
        dest = np.arange(nsrc)
        out = Stamps.empty(nsrc, sides)
    else:
        dest = into[1]
        out = into[0].stamps
    scratch: dict = {}  # (one lattice buffer per shape, zeroed for each batch)
    for k in np.unique(sides):
        idx = np.flatnonzero(sides == k)
        for start in range(0, idx.size, batch):
            rows = idx[start:start + batch]
            _put(out, dest[rows], _group(hires, segmap, rows, seg, x, y, jac, psf, kernel,
                                         int(k), share, wpsf, cache, scratch))
    return TemplateStamps(out, sides, capped)


def segment_extent(seg: dict, jac: np.ndarray) -> np.ndarray:
    """How far (blurred pixels, along either axis) each segment's bounding box reaches
    from its centroid."""
    best = np.zeros(seg["x"].shape[0])
    for cx, cy in ((seg["xmin"] - 0.5, seg["ymin"] - 0.5), (seg["xmax"] + 0.5,
                                                            seg["ymin"] - 0.5),
                   (seg["xmin"] - 0.5, seg["ymax"] + 0.5), (seg["xmax"] + 0.5,
                                                            seg["ymax"] + 0.5)):
        dx, dy = cx - seg["x"], cy - seg["y"]
        ex = np.abs(jac[:, 0, 0] * dx + jac[:, 0, 1] * dy)
        ey = np.abs(jac[:, 1, 0] * dx + jac[:, 1, 1] * dy)
        best = np.maximum(best, np.maximum(ex, ey))
    return best
