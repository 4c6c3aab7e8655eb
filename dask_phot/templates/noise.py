"""The sharp image's noise in the templates, propagated to the fitted fluxes.

A template is made from the sharp image's pixels, noise included, and is
normalised by their sum ``S``. Noise ``n_p`` in sharp pixel ``p`` of source
``j``'s segment changes that template's normalisation and shape, and through
the joint fit every flux it is blended with. To first order the fitted
fluxes ``A = C M^T W d`` (``M`` the unit-flux templates, ``W`` the weights,
``C = (M^T W M)^-1``) change by

    dA_i = sum_j (A_j / S_j) sum_{p in segment j} n_p (delta_ij - g_i(p)),

    g_i(p) = <G_i, K_p>,   G_i = sum_k C_ik W M_k,

where ``K_p`` is the blurred image of a unit point at ``p`` (the band's PSF
there) and ``G_i`` the image whose product with the data is ``A_i``. Noise
at a source's centre only rescales its template (``g ~ 1``: a point's
template is the same whatever its noise); noise far out in its segment adds
light the fit cannot see (``g ~ 0``); noise in a neighbour's segment where
the two overlap moves flux between them. For white sharp-image noise
``sigma_h`` per pixel and segments that do not overlap,

    var(A_i) = sigma_h^2 sum_j (A_j / S_j)^2 sum_{p in segment j} (delta_ij - g_i(p))^2.

:func:`template_variance` evaluates it with ``C`` restricted to each source
and the sources whose stamps overlap its stamp (their blend; the sky terms
are left out), ``g`` on the blurred pixel grid (it is as smooth as the PSF)
and each segment's pixels counted per blurred pixel they fall in; the blend
holds the neighbours whose models overlap the source's by more than 1% (their
normalised product), the PSF in ``g`` its central 9 x 9 pixels, evaluated
over each stamp's box around the blurred pixels where segments' pixels fall. The fit
adds it to the flux's variance (``flux_err``; the part is ``template_err``).
It matters for segments grown into their surroundings (``grow``) and for
sharp images that are shallow compared with the blurred one; a drizzled
image's correlated noise makes the pixel RMS too small (give ``hires_sigma``
measured in apertures).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.spatial import cKDTree

from dask_phot.models.stamps import Stamps
from dask_phot.templates.build import boxes
from dask_phot.templates.share import Shares, source_blocks

__all__ = ["confusion", "hires_rms", "segment_cells", "stamp_products", "template_variance"]


def hires_rms(image: np.ndarray, segmap: np.ndarray, max_pixels: int = 250_000
              ) -> float:
    """Robust RMS (1.4826 MAD) of the unlabelled finite sharp pixels (a regular
    subsample of at most ``max_pixels``)."""
    step = max(1, int(np.sqrt(image.size / max_pixels)))
    img, seg = image[::step, ::step], segmap[::step, ::step]
    v = img[(seg == 0) & np.isfinite(img)]
    if v.size < 16:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


@numba.njit(cache=True)
def _block_means(img: np.ndarray, seg: np.ndarray, block: int, step: int) -> np.ndarray:
    """Means of the unlabelled finite pixels of every ``step``-th block row and column
    (``block`` pixels a side) that has at least 80% of them; with their counts."""
    ny, nx = img.shape
    nb = (ny // block + step - 1) // step * ((nx // block + step - 1) // step)
    out = np.zeros((nb, 2))
    k = 0
    for br in range(0, ny // block, step):
        for bc in range(0, nx // block, step):
            tot, n = 0.0, 0
            for r in range(br * block, (br + 1) * block):
                for c in range(bc * block, (bc + 1) * block):
                    v = img[r, c]
                    if seg[r, c] == 0 and np.isfinite(v):
                        tot += v
                        n += 1
            if n >= 0.8 * block * block:
                out[k, 0], out[k, 1] = tot / n, n
                k += 1
    return out[:k]


def confusion(image: np.ndarray, segmap: np.ndarray, block: int, sigma: float,
              max_blocks: int = 20000) -> float:
    """Variance per pixel of the unlabelled light, smoothed over ``block`` pixels,
    beyond the noise (``sigma`` per pixel): the light of sources too faint to be
    segmented, which varies from place to place.

    Over blocks of ``block x block`` pixels (a blurred pixel) nearly free of
    segments (a regular subsample of at most ``max_blocks``), the variance of
    their means less the noise's share (``sigma^2 / n``); never negative. A
    shared pixel of a template holds that light as it holds the noise, but
    correlated over the block: see :func:`segment_cells`.
    """
    block = max(int(block), 1)
    nblocks = (image.shape[0] // block) * (image.shape[1] // block)
    step = max(1, int(np.sqrt(nblocks / max_blocks)))
    means = _block_means(image, segmap, block, step)
    if means.shape[0] < 16:
        return 0.0
    excess = np.var(means[:, 0]) - sigma ** 2 * np.mean(1.0 / means[:, 1])
    return float(max(excess, 0.0))


@numba.njit(cache=True)
def _cells(seg: np.ndarray, img: np.ndarray, label: np.ndarray, box: np.ndarray,
           cx: np.ndarray, cy: np.ndarray, jac: np.ndarray, rx: np.ndarray, ry: np.ndarray,
           ux0: np.ndarray, uy0: np.ndarray, uw: np.ndarray, uh: np.ndarray,
           out_x: np.ndarray, out_y: np.ndarray, out_n: np.ndarray,
           weights: np.ndarray, wptr: np.ndarray, blocks: np.ndarray, block: int,
           conf: float) -> np.ndarray:
    """Segment ``i``'s counts per blurred pixel (:func:`segment_cells`; its boxes
    ``box[i]`` as :func:`.build.boxes` gives them, its shared blocks as
    :func:`.build._deposit` reads them, each counted at its centre), segment after
    segment from the start of ``out_*``; returns where each segment's cells start."""
    ptr = np.zeros(label.shape[0] + 1, dtype=np.int64)
    shared = weights.shape[0] > 0
    k = 0
    for i in range(label.shape[0]):
        cnt = np.zeros((uh[i], uw[i]))
        shared_w = np.zeros((uh[i], uw[i]))
        j00, j01, j10, j11 = jac[i, 0, 0], jac[i, 0, 1], jac[i, 1, 0], jac[i, 1, 1]
        for r in range(box[i, 2], box[i, 3] + 1):
            dy = r - cy[i]
            for c in range(box[i, 0], box[i, 1] + 1):
                if seg[r, c] != label[i] or not np.isfinite(img[r, c]):
                    continue
                dx = c - cx[i]
                u = int(np.floor(rx[i] + j00 * dx + j01 * dy + 0.5)) - ux0[i]
                v = int(np.floor(ry[i] + j10 * dx + j11 * dy + 0.5)) - uy0[i]
                if 0 <= u < uw[i] and 0 <= v < uh[i]:
                    cnt[v, u] += 1.0
        if shared:
            ws, ns, _, ys, xs = source_blocks(box[i], block, weights, wptr[i], blocks,
                                              seg.shape)
            for q in range(ws.shape[0]):  # each block counted at its centre
                dx, dy = xs[q] - cx[i], ys[q] - cy[i]
                u = int(np.floor(rx[i] + j00 * dx + j01 * dy + 0.5)) - ux0[i]
                v = int(np.floor(ry[i] + j10 * dx + j11 * dy + 0.5)) - uy0[i]
                if 0 <= u < uw[i] and 0 <= v < uh[i]:
                    cnt[v, u] += ws[q] * ws[q] * ns[q]
                    shared_w[v, u] += ws[q] * ns[q]
        for v in range(uh[i]):
            for u in range(uw[i]):
                if cnt[v, u] > 0:
                    out_x[k], out_y[k] = ux0[i] + u, uy0[i] + v
                    out_n[k] = cnt[v, u] + conf * shared_w[v, u] ** 2
                    k += 1
        ptr[i + 1] = k
    return ptr


def segment_cells(hires: np.ndarray, segmap: np.ndarray, seg: dict, jac: np.ndarray,
                  x: np.ndarray, y: np.ndarray, share: Shares | None = None,
                  confusion: float = 0.0) -> tuple[np.ndarray, ...]:
    """Each segment's pixels counted per blurred pixel they fall in.

    With ``share`` (:func:`.share.share_outskirts`'s; ``seg`` then holds each box's
    start in it, ``wptr``), a shared pixel counts as its share squared (the share of its noise
    in the template, in variance). ``confusion`` (:func:`confusion`, over the
    pixel variance) adds, per blurred pixel, its square times the shares summed
    there: the light of sources too faint to have a segment, which the shared
    pixels hold as they hold the noise.

    ``seg`` holds ``id, x, y, xmin, xmax, ymin, ymax`` per segment, ``jac`` its
    sharp-to-blurred pixel Jacobian and ``x, y`` where its ``(x, y)`` lands on
    the blurred image. Returns ragged ``(ptr, bx, by, count)``: segment ``i``'s
    blurred pixels are ``bx[ptr[i]:ptr[i+1]]``, ``by[...]``.
    """
    n = len(seg["id"])
    corners = []
    for cxs, cys in (("xmin", "ymin"), ("xmax", "ymin"), ("xmin", "ymax"), ("xmax", "ymax")):
        dx, dy = seg[cxs] - seg["x"], seg[cys] - seg["y"]
        corners.append((x + jac[:, 0, 0] * dx + jac[:, 0, 1] * dy,
                        y + jac[:, 1, 0] * dx + jac[:, 1, 1] * dy))
    ux = np.array([c[0] for c in corners])
    uy = np.array([c[1] for c in corners])
    ux0 = np.floor(ux.min(axis=0) + 0.5).astype(np.int64) - 1
    uy0 = np.floor(uy.min(axis=0) + 0.5).astype(np.int64) - 1
    uw = np.floor(ux.max(axis=0) + 0.5).astype(np.int64) + 2 - ux0
    uh = np.floor(uy.max(axis=0) + 0.5).astype(np.int64) + 2 - uy0
    cap = int(np.sum(uw * uh))
    bx = np.zeros(cap, dtype=np.int64)
    by = np.zeros_like(bx)
    cnt = np.zeros(cap)
    ptr = _cells(segmap, hires, np.asarray(seg["id"], dtype=np.int64),
                 boxes(seg, np.arange(n)), np.asarray(seg["x"], dtype=np.float64),
                 np.asarray(seg["y"], np.float64), np.ascontiguousarray(jac, dtype=np.float64),
                 np.asarray(x, np.float64), np.asarray(y, np.float64), ux0, uy0, uw, uh,
                 bx, by, cnt, share.weights if share is not None else np.zeros(0),
                 np.asarray(seg["wptr"], np.int64) if share is not None
                 else np.zeros(n, np.int64),
                 share.blocks if share is not None else np.zeros((2, 1, 1)),
                 share.block if share is not None else 1, float(confusion))
    used = int(ptr[-1])
    return ptr, bx[:used].copy(), by[:used].copy(), cnt[:used].copy()


def _psf_core(psf: object, core: int = 9) -> np.ndarray:
    """The band PSF's central ``core x core`` pixels (a point at a pixel centre)."""
    from dask_phot.templates.kernel import point_stamps

    return np.ascontiguousarray(point_stamps(psf, np.zeros(1), np.zeros(1), core)[0][0],
                                dtype=np.float64)


@numba.njit(cache=True)
def _pair_products(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
                   x0: np.ndarray, y0: np.ndarray, weight: np.ndarray, a: np.ndarray,
                   b: np.ndarray) -> np.ndarray:
    """``<M_a, M_b>_W`` over the image for each pair (``a == b``: the squared norm)."""
    ny, nx = weight.shape
    out = np.zeros(a.shape[0])
    for t in range(a.shape[0]):
        i, k = a[t], b[t]
        xs, xe = max(x0[i], x0[k], 0), min(x0[i] + w[i], x0[k] + w[k], nx)
        ys, ye = max(y0[i], y0[k], 0), min(y0[i] + h[i], y0[k] + h[k], ny)
        acc = 0.0
        for yy in range(ys, ye):
            for xx in range(xs, xe):
                acc += (weight[yy, xx] * data[ptr[i] + (yy - y0[i]) * w[i] + xx - x0[i]]
                        * data[ptr[k] + (yy - y0[k]) * w[k] + xx - x0[k]])
        out[t] = acc
    return out


@numba.njit(cache=True)
def _cell_boxes(cptr: np.ndarray, cbx: np.ndarray, cby: np.ndarray) -> np.ndarray:
    """Each template's cells' bounding box ``(x0, x1, y0, y1)`` (inclusive; empty when
    ``x0 > x1``)."""
    big = 1 << 40
    tb = np.empty((cptr.shape[0] - 1, 4), dtype=np.int64)
    for t in range(tb.shape[0]):
        tb[t, 0], tb[t, 1], tb[t, 2], tb[t, 3] = big, -big, big, -big
        for q in range(cptr[t], cptr[t + 1]):
            tb[t, 0], tb[t, 1] = min(tb[t, 0], cbx[q]), max(tb[t, 1], cbx[q])
            tb[t, 2], tb[t, 3] = min(tb[t, 2], cby[q]), max(tb[t, 3], cby[q])
    return tb


@numba.njit(cache=True)
def _needed_boxes(nptr: np.ndarray, nbr: np.ndarray, diag: np.ndarray, w: np.ndarray,
                  h: np.ndarray, x0: np.ndarray, y0: np.ndarray, tpl_of: np.ndarray,
                  tb: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Per stamp ``k``, the box (``x0, x1, y0, y1``, image pixels; empty when ``x0 > x1``)
    of its pixels where :func:`_variances` needs ``(W M_k) * P``: the cells of the
    templates in the blends ``k`` belongs to (``tb``: :func:`_cell_boxes`), within its
    stamp."""
    big = 1 << 40
    out = np.empty((diag.shape[0], 4), dtype=np.int64)
    for k in range(diag.shape[0]):
        out[k, 0], out[k, 1], out[k, 2], out[k, 3] = big, -big, big, -big
    for i in range(diag.shape[0]):
        if not diag[i] > 0:
            continue
        for a in range(nptr[i], nptr[i + 1] + 1):
            j = i if a == nptr[i + 1] else nbr[a]
            tj = tpl_of[j]
            if tj < 0 or amp[j] == 0.0:
                continue
            for bb in range(nptr[i], nptr[i + 1] + 1):
                k = i if bb == nptr[i + 1] else nbr[bb]
                xa, xb = max(tb[tj, 0], x0[k]), min(tb[tj, 1], x0[k] + w[k] - 1)
                ya, yb = max(tb[tj, 2], y0[k]), min(tb[tj, 3], y0[k] + h[k] - 1)
                if xa <= xb and ya <= yb:
                    out[k, 0], out[k, 1] = min(out[k, 0], xa), max(out[k, 1], xb)
                    out[k, 2], out[k, 3] = min(out[k, 2], ya), max(out[k, 3], yb)
    return out


@numba.njit(cache=True)
def _correlations(box: np.ndarray, data: np.ndarray, ptr: np.ndarray, w: np.ndarray,
                  h: np.ndarray, x0: np.ndarray, y0: np.ndarray, weight: np.ndarray,
                  pc: np.ndarray) -> np.ndarray:
    """``(W M_k) * P`` (stamp ``k`` times the weights, correlated with the PSF core
    ``pc``) over each stamp's ``box`` (:func:`_needed_boxes`), in a buffer laid out as
    the stamps' ``data``; one whole box at a time."""
    ny, nx = weight.shape
    hc = pc.shape[0] // 2
    corr = np.zeros(data.shape[0])
    for k in range(w.shape[0]):
        if box[k, 0] > box[k, 1]:
            continue
        bx0, by0 = box[k, 0] - hc, box[k, 2] - hc
        ow, oh = box[k, 1] - box[k, 0] + 1, box[k, 3] - box[k, 2] + 1
        pad = np.zeros((oh + 2 * hc, ow + 2 * hc), dtype=np.float32)  # W M_k, zero off
        # the stamp and image
        for r in range(max(0, y0[k] - by0, -by0), min(oh + 2 * hc, y0[k] + h[k] - by0,
                                                       ny - by0)):
            yy = by0 + r
            at = ptr[k] + (yy - y0[k]) * w[k] - x0[k]
            for c in range(max(0, x0[k] - bx0, -bx0), min(ow + 2 * hc, x0[k] + w[k] - bx0,
                                                           nx - bx0)):
                pad[r, c] = weight[yy, bx0 + c] * data[at + bx0 + c]
        # on the padded rows laid end to end: one long loop per core pixel (row r's
        # output starts at r * pw; the 2 hc values between rows are not used)
        pw = ow + 2 * hc
        flat = pad.ravel()
        out = np.zeros((oh - 1) * pw + ow, dtype=np.float32)
        for a in range(2 * hc + 1):
            for b in range(2 * hc + 1):
                p = np.float32(pc[a, b])
                src = flat[a * pw + b:]
                for t in range(out.shape[0]):
                    out[t] += src[t] * p
        for r in range(oh):
            at = ptr[k] + (box[k, 2] + r - y0[k]) * w[k] + box[k, 0] - x0[k]
            corr[at:at + ow] = out[r * pw:r * pw + ow]
    return corr


@numba.njit(cache=True)
def _blend_matrix(i: int, nptr: np.ndarray, nbr: np.ndarray, nval: np.ndarray,
                  diag: np.ndarray, mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source ``i`` and its blend (``grp``, ``i`` first) and their normal matrix, less the
    sky, with a 1e-10 ridge; ``mark`` (all -1) is left as it was found."""
    m = nptr[i + 1] - nptr[i] + 1
    grp = np.empty(m, dtype=np.int64)
    grp[0] = i
    grp[1:] = nbr[nptr[i]:nptr[i + 1]]
    mat = np.zeros((m, m))
    for a in range(m):
        mat[a, a] = diag[grp[a]]
        mark[grp[a]] = a
    for a in range(1, m):  # i's pairs are in nval; neighbours' pairs among themselves
        mat[0, a] = mat[a, 0] = nval[nptr[i] + a - 1]
    for a in range(1, m):
        ka = grp[a]
        for t in range(nptr[ka], nptr[ka + 1]):
            bb = mark[nbr[t]]
            if bb >= 1:
                mat[a, bb] = nval[t]
    for a in range(m):
        mark[grp[a]] = -1
    ridge = 1e-10 * np.trace(mat) / m
    for a in range(m):
        mat[a, a] += ridge
    return grp, mat


@numba.njit(cache=True)
def _variances(nptr: np.ndarray, nbr: np.ndarray, nval: np.ndarray, diag: np.ndarray,
               data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
               x0: np.ndarray, y0: np.ndarray, weight: np.ndarray, pc: np.ndarray,
               tpl_of: np.ndarray, cptr: np.ndarray, cbx: np.ndarray, cby: np.ndarray,
               ccnt: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """The sum of the module docstring per source, over the sharp noise variance.

    Per source ``i``: ``c``, row ``i`` of its blend's inverse normal matrix (the blend:
    ``i`` and its neighbours ``nbr[nptr[i]:nptr[i + 1]]``, products ``nval``), and
    ``g_i = sum_k c_k (W M_k) * P`` (the stamps' correlations with the PSF core ``pc``,
    :func:`_correlations`, each within its stamp), summed stamp by stamp into an image
    over the box of the blend's templates' cells, then read at each cell."""
    n = diag.shape[0]
    out = np.zeros(n)
    tb = _cell_boxes(cptr, cbx, cby)
    box = _needed_boxes(nptr, nbr, diag, w, h, x0, y0, tpl_of, tb, amp)
    corr = _correlations(box, data, ptr, w, h, x0, y0, weight, pc)  # (W M_k) * P
    mark = np.full(n, -1, dtype=np.int64)
    big = 1 << 40
    for i in range(n):
        if not diag[i] > 0:
            continue
        grp, mat = _blend_matrix(i, nptr, nbr, nval, diag, mark)
        m = grp.shape[0]
        e = np.zeros(m)
        e[0] = 1.0
        c = np.linalg.solve(mat, e)
        gx0, gx1, gy0, gy1 = big, -big, big, -big  # the blend's templates' cells
        for a in range(m):
            tj = tpl_of[grp[a]]
            if tj < 0 or amp[grp[a]] == 0.0 or tb[tj, 0] > tb[tj, 1]:
                continue
            gx0, gx1 = min(gx0, tb[tj, 0]), max(gx1, tb[tj, 1])
            gy0, gy1 = min(gy0, tb[tj, 2]), max(gy1, tb[tj, 3])
        if gx0 > gx1:
            continue
        g = np.zeros((gy1 - gy0 + 1, gx1 - gx0 + 1))
        for bb in range(m):  # (in the blend's order: the sums of the cell by cell loop)
            k = grp[bb]
            ck = c[bb]
            xs, xe = max(x0[k], gx0), min(x0[k] + w[k], gx1 + 1)
            for yy in range(max(y0[k], gy0), min(y0[k] + h[k], gy1 + 1)):
                at = ptr[k] + (yy - y0[k]) * w[k] - x0[k]
                row = g[yy - gy0]
                for xx in range(xs, xe):
                    row[xx - gx0] += ck * corr[at + xx]
        acc = 0.0
        for a in range(m):
            j = grp[a]
            tj = tpl_of[j]
            if tj < 0 or amp[j] == 0.0:
                continue
            part = 0.0
            for q in range(cptr[tj], cptr[tj + 1]):
                d = (1.0 if a == 0 else 0.0) - g[cby[q] - gy0, cbx[q] - gx0]
                part += ccnt[q] * d * d
            acc += amp[j] * amp[j] * part
        out[i] = acc
    return out


def stamp_products(stamps: Stamps, weight: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The weighted products of the stamps that overlap, ``<M_a, M_b>_W`` for each pair
    ``a < b`` (returned as ``a, b, values``), and every stamp's squared norm: the
    normal matrix of a joint fit of the stamps, without the sky."""
    n = len(stamps)
    cx, cy = stamps.x0 + stamps.w / 2.0, stamps.y0 + stamps.h / 2.0
    # (two boxes overlap with their centres up to a side apart along each axis)
    reach = float(np.max(np.maximum(stamps.w, stamps.h))) * np.sqrt(2.0) if n else 0.0
    pairs = cKDTree(np.column_stack([cx, cy])).query_pairs(reach, output_type="ndarray")
    a, b = (pairs[:, 0], pairs[:, 1]) if len(pairs) else (np.zeros(0, int),) * 2
    over = ((np.abs(cx[a] - cx[b]) * 2 < stamps.w[a] + stamps.w[b])
            & (np.abs(cy[a] - cy[b]) * 2 < stamps.h[a] + stamps.h[b]))
    a, b = a[over].astype(np.int64), b[over].astype(np.int64)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    arrays = stamps.arrays
    vals = _pair_products(*arrays, weight, a, b)
    diag = _pair_products(*arrays, weight, np.arange(n), np.arange(n))
    return a, b, vals, diag


def template_variance(stamps: Stamps, weight: np.ndarray, psf: object, flux: np.ndarray,
                      tpl: np.ndarray, hires_flux: np.ndarray, cells: tuple[np.ndarray, ...],
                      sigma: float, min_correlation: float = 0.01,
                      products: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """Variance of every fitted flux from the sharp noise in the templates (see the
    module docstring).

    Parameters
    ----------
    stamps : Stamps
        Every fitted source's unit-flux model (templates and others), fit order.
    weight : ndarray
        The blurred image's inverse-variance weights.
    psf : PSF
        The band's PSF.
    flux : ndarray
        The fitted fluxes.
    tpl : ndarray of int
        The rows that are templates; ``hires_flux`` their segments' light and
        ``cells`` their pixels per blurred pixel (:func:`segment_cells`), in
        that order.
    sigma : float
        The sharp image's noise per pixel.
    min_correlation : float
        Neighbours whose models' normalised overlap with the source's is smaller
        are left out of its blend.
    products : tuple, optional
        :func:`stamp_products` of these stamps, when already taken (a fit of them sums
        them: :meth:`dask_phot.engine.scene.SceneState.products`).
    """
    n = len(stamps)
    if n == 0 or tpl.size == 0 or not sigma > 0:
        return np.zeros(n)
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    arrays = stamps.arrays
    a, b, vals, diag = products if products is not None else stamp_products(stamps, weight)
    # the blend: neighbours whose models are correlated with the source's by > 1%
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.abs(vals) / np.sqrt(diag[a] * diag[b])
    keep = rho > min_correlation
    a, b, vals = a[keep], b[keep], vals[keep]
    # neighbour lists (CSR), both directions
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    val = np.concatenate([vals, vals])
    order = np.lexsort((dst, src))
    nptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=nptr[1:])
    tpl_of = np.full(n, -1, dtype=np.int64)
    tpl_of[tpl] = np.arange(tpl.size)
    amp = np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        amp[tpl] = np.nan_to_num(np.maximum(flux[tpl], 0.0) / hires_flux, nan=0.0,
                                 posinf=0.0)
    var = _variances(nptr, dst[order], val[order], diag, *arrays, weight, _psf_core(psf),
                     tpl_of, *cells, amp)
    return sigma ** 2 * var
