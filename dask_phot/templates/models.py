"""Which model each source gets, and all models as one set of stamps.

A segment's source is fitted with its template, unless it is unresolved on
the sharp image (its concentration is a point source's) or its segment holds
no positive light: then with the band's point-source model, which is exact
for it and noiseless. Sources absent from the sharp image (``extra``) are
point sources or, with shapes, Sersic galaxies rendered by
:func:`dask_phot.models.render.render_sources`: the galaxies issue's models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd
from astropy.coordinates import SkyCoord

from dask_phot.models.render import render_sources
from dask_phot.models.shapes import Shapes, sky_to_pixel, wcs_jacobian
from dask_phot.models.stamps import Stamps
from dask_phot.schema import Flag
from dask_phot.templates.build import TemplateStamps, build_templates, stamp_sides
from dask_phot.templates.kernel import TemplateKernel, point_stamps
from dask_phot.templates.segments import SegmentTable

__all__ = ["Models", "assemble_models", "merge_stamps"]


@dataclass
class Models:
    """The fitted sources (in output order) and how to render each.

    ``x, y`` are positions on the blurred image before registration; ``tpl``,
    ``pts``, ``gal`` index the template, point and Sersic sources; ``seg``,
    ``jac``, ``extent`` are the templates' segment rows, Jacobians and reach;
    ``shapes`` the Sersic sources' pixel shapes; ``off`` the rows of sources off
    the image (not fitted).
    """

    ids: np.ndarray
    kinds: np.ndarray
    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    hires_flux: np.ndarray
    edge: np.ndarray
    tpl: np.ndarray
    pts: np.ndarray
    gal: np.ndarray
    seg: dict
    jac: np.ndarray
    extent: np.ndarray
    shapes: Shapes | None
    off: pd.DataFrame

    def reordered(self, order: np.ndarray) -> Models:
        """The same models listed in ``order`` (new row ``r`` is row ``order[r]``; the
        Sersic sources, when there are any, must stay last and in place)."""
        order = np.asarray(order, dtype=np.int64)
        nseg = self.x.shape[0] - self.gal.size
        if not np.array_equal(order[nseg:], np.arange(nseg, self.x.shape[0])):
            raise ValueError("the Sersic sources must keep their rows")
        kinds = self.kinds[order]
        tpl = np.flatnonzero(kinds[:nseg] == "template")
        k = np.searchsorted(self.tpl, order[tpl])  # rows of the template arrays
        return Models(
            ids=self.ids[order], kinds=kinds, x=self.x[order], y=self.y[order],
            ra=self.ra[order], dec=self.dec[order], hires_flux=self.hires_flux[order],
            edge=self.edge[order], tpl=tpl, pts=np.flatnonzero(kinds[:nseg] == "point"),
            gal=self.gal, seg={key: v[k] for key, v in self.seg.items()}, jac=self.jac[k],
            extent=self.extent[k], shapes=self.shapes, off=self.off)

    def build(self, inp: object, kernel: TemplateKernel, dx: np.ndarray, dy: np.ndarray, *,
              max_size: int, rows: np.ndarray | None = None, cache: dict | None = None,
              reuse: TemplateStamps | None = None) -> TemplateStamps:
        """Unit-flux stamps of sources ``rows`` (default all, in that order), shifted by
        ``(dx, dy)`` (arrays over all sources); ``cache``: the same dict for every build
        of the same rows (:func:`~.build.build_templates`); ``reuse``: an earlier build of
        the same rows, no longer needed, whose stamps are overwritten (without Sersic
        sources; the slots' sides do not depend on the shifts)."""
        psf = inp.psf  # type: ignore[attr-defined]
        rows = np.arange(self.x.shape[0]) if rows is None else np.asarray(rows)
        x, y = (self.x + dx)[rows], (self.y + dy)[rows]
        kinds = self.kinds[rows]
        t = np.flatnonzero(kinds == "template")
        gal = np.flatnonzero(rows >= self.gal[0]) if self.gal.size else np.zeros(0, int)
        pts = np.setdiff1d(np.flatnonzero(kinds == "point"), gal)
        k = np.searchsorted(self.tpl, rows[t])  # rows of the template arrays
        if t.size and not gal.size:  # templates and points: built in place, no merge
            return self._in_place(inp, kernel, x, y, t, k, pts, max_size, cache, reuse)
        parts: list[tuple[np.ndarray, TemplateStamps]] = []
        if t.size:
            seg = {key: v[k] for key, v in self.seg.items()}
            parts.append((t, build_templates(
                inp.hires, inp.segmap, seg, x[t], y[t], self.jac[k],  # type: ignore
                self.extent[k], psf, kernel, max_size=max_size,
                share=inp.share, wpsf=inp.wings, cache=cache)))  # type: ignore[attr-defined]
        if pts.size:
            parts.append((pts, _points(psf, x[pts], y[pts])))
        if gal.size:
            shapes = self.shapes
            sub = Shapes(*(getattr(shapes, f)[rows[gal] - self.gal[0]]  # type: ignore
                           for f in ("r_e", "q", "theta", "n")))
            rend = render_sources(psf, x[gal], y[gal], sub)
            parts.append((gal, TemplateStamps(rend.stamps, np.maximum(rend.stamps.w,
                                                                      rend.stamps.h),
                                              rend.capped)))
        n = rows.size
        capped = np.zeros(n, dtype=bool)
        for r, p in parts:
            capped[r] = p.capped
        st = merge_stamps(n, [(r, p.stamps) for r, p in parts])
        return TemplateStamps(st, np.maximum(st.w, st.h), capped)

    def _in_place(self, inp: object, kernel: TemplateKernel, x: np.ndarray, y: np.ndarray,
                  t: np.ndarray, k: np.ndarray, pts: np.ndarray, max_size: int,
                  cache: dict | None, reuse: TemplateStamps | None = None
                  ) -> TemplateStamps:
        """:meth:`build` without Sersic sources: the templates (``t``, template rows
        ``k``) and points (``pts``) put straight into one set of stamps (``reuse``'s,
        when given: every slot is written whole, so nothing of the old one is left)."""
        psf = inp.psf  # type: ignore[attr-defined]
        n = x.shape[0]
        ps = int(psf.size)
        sides = np.full(n, ps, dtype=np.int64)
        sides[t], capped_t = stamp_sides(self.extent[k], ps, max_size)
        if reuse is not None and np.array_equal(reuse.sides, sides):
            out = TemplateStamps(reuse.stamps, sides, np.zeros(n, dtype=bool))
        else:
            out = TemplateStamps(Stamps.empty(n, sides), sides, np.zeros(n, dtype=bool))
        seg = {key: v[k] for key, v in self.seg.items()}
        build_templates(inp.hires, inp.segmap, seg, x[t], y[t], self.jac[k],  # type: ignore
                        self.extent[k], psf, kernel, max_size=max_size,
                        share=inp.share, wpsf=inp.wings,  # type: ignore[attr-defined]
                        into=(out, t), cache=cache)
        out.capped[t] = capped_t
        if pts.size:
            p = _points(psf, x[pts], y[pts])
            out.stamps.put(pts, p.stamps.data.reshape(pts.size, ps, ps), p.stamps.x0,
                           p.stamps.y0)
        return out


def _points(psf: object, x: np.ndarray, y: np.ndarray) -> TemplateStamps:
    k = int(psf.size)  # type: ignore[attr-defined]
    st, x0, y0 = point_stamps(psf, x, y, k)
    return TemplateStamps(Stamps.from_square(st, x0, y0), np.full(x.size, k),
                          np.zeros(x.size, bool))


def merge_stamps(n: int, parts: list[tuple[np.ndarray, Stamps]]) -> Stamps:
    """One ragged Stamps of ``n`` sources from parts (``rows``, their stamps in order).

    Examples
    --------
    >>> a = Stamps.from_square(np.ones((1, 3, 3)), np.array([0]), np.array([0]))
    >>> b = Stamps.from_square(np.zeros((1, 5, 5)), np.array([9]), np.array([9]))
    >>> m = merge_stamps(2, [(np.array([1]), a), (np.array([0]), b)])
    >>> m.w.tolist(), m.x0.tolist(), float(m.stamp(1).sum())
    ([5, 3], [9, 0], 9.0)
    """
    w = np.zeros(n, dtype=np.int64)
    h = np.zeros(n, dtype=np.int64)
    x0 = np.zeros(n, dtype=np.int64)
    y0 = np.zeros(n, dtype=np.int64)
    for rows, st in parts:
        w[rows], h[rows], x0[rows], y0[rows] = st.w, st.h, st.x0, st.y0
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(w * h, out=ptr[1:])
    data = np.zeros(int(ptr[-1]))
    for rows, st in parts:
        _copy_stamps(data, ptr, np.asarray(rows, dtype=np.int64), st.data, st.ptr)
    return Stamps(data, ptr, w, h, x0, y0)


@numba.njit(cache=True)
def _copy_stamps(dst: np.ndarray, dptr: np.ndarray, rows: np.ndarray, src: np.ndarray,
                 sptr: np.ndarray) -> None:
    """Stamp ``k`` of ``src`` into the place of stamp ``rows[k]`` of ``dst``."""
    for k in range(rows.shape[0]):
        r = rows[k]
        dst[dptr[r]:dptr[r + 1]] = src[sptr[k]:sptr[k + 1]]


def assemble_models(seg: SegmentTable, segd: dict, sx: np.ndarray, sy: np.ndarray,
                    jac: np.ndarray, extent: np.ndarray, point: np.ndarray,
                    flux: np.ndarray, extra: pd.DataFrame | None, inp: object) -> Models:
    """Choose every source's model and gather what rendering it needs."""
    ny, nx = inp.image.shape  # type: ignore[attr-defined]
    inside = (sx > -0.5) & (sx < nx - 0.5) & (sy > -0.5) & (sy < ny - 0.5)
    sky = inp.hires_wcs.pixel_to_world(seg.x, seg.y).icrs  # type: ignore[attr-defined]
    ra, dec = sky.ra.deg, sky.dec.deg
    off = pd.DataFrame({"id": seg.id[~inside], "flux": np.nan, "flux_err": np.nan,
                        "chi2": np.nan, "flags": int(Flag.OFF_IMAGE),
                        "model": np.where(point[~inside], "point", "template"),
                        "x": sx[~inside], "y": sy[~inside], "ra": ra[~inside],
                        "dec": dec[~inside], "hires_flux": flux[~inside]})
    rows = np.flatnonzero(inside)
    kinds = np.where(point[rows], "point", "template").astype(object)
    ids, x, y = seg.id[rows], sx[rows], sy[rows]
    eras, edecs, shapes_px = np.zeros(0), np.zeros(0), None
    if extra is not None and len(extra):
        ex_ids, ex, ey, eras, edecs, shapes_px = _extra(extra, inp, set(seg.id.tolist()))
        ids = np.concatenate([ids, ex_ids])
        x, y = np.concatenate([x, ex]), np.concatenate([y, ey])
        kinds = np.concatenate([kinds, np.where(shapes_px.extended, "sersic", "point")])
    nseg = rows.size
    tpl = np.flatnonzero(kinds[:nseg] == "template")
    sub = {k: v[rows[tpl]] for k, v in segd.items()}
    return Models(
        ids=ids, kinds=kinds, x=x, y=y, ra=np.concatenate([ra[rows], eras]),
        dec=np.concatenate([dec[rows], edecs]),
        hires_flux=np.concatenate([flux[rows], np.full(x.size - nseg, np.nan)]),
        edge=np.concatenate([seg.edge[rows], np.zeros(x.size - nseg, bool)]), tpl=tpl,
        pts=np.flatnonzero(kinds[:nseg] == "point"), gal=np.arange(nseg, x.size),
        seg=sub, jac=jac[rows[tpl]], extent=extent[rows[tpl]], shapes=shapes_px, off=off)


def _extra(extra: pd.DataFrame, inp: object, labels: set[int]) -> tuple:
    """Positions and pixel shapes of the sources absent from the sharp image."""
    for col in ("id", "ra", "dec"):
        if col not in extra.columns:
            raise ValueError(f"extra: column {col!r} is required (id, ra, dec; optional "
                             "r_e, q, pa, n)")
    ids = extra["id"].to_numpy().astype(np.int64)
    clash = sorted(set(ids.tolist()) & labels)
    if clash:
        raise ValueError(f"extra: id {clash[0]} is also a segment label; ids must differ")
    coord = SkyCoord(extra["ra"].to_numpy(), extra["dec"].to_numpy(), unit="deg")
    x, y = inp.wcs.world_to_pixel(coord)  # type: ignore[attr-defined]
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = ids.size
    r_arc = extra["r_e"].to_numpy(float) if "r_e" in extra else np.zeros(n)
    q = extra["q"].to_numpy(float) if "q" in extra else np.ones(n)
    pa = extra["pa"].to_numpy(float) if "pa" in extra else np.zeros(n)
    sersic_n = extra["n"].to_numpy(float) if "n" in extra else np.ones(n)
    r_px, q_px, theta = sky_to_pixel(wcs_jacobian(inp.wcs, x, y),  # type: ignore[attr-defined]
                                     np.nan_to_num(r_arc), np.nan_to_num(q, nan=1.0),
                                     np.nan_to_num(pa))
    shapes = Shapes.from_mapping({"r_e": r_px, "q": np.clip(q_px, 1e-3, 1.0), "theta": theta,
                                  "n": sersic_n}, n)
    return ids, x, y, extra["ra"].to_numpy(float), extra["dec"].to_numpy(float), shapes
