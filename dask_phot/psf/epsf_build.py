"""The iterations of an ePSF build: neighbours, sky, star fits, stack, wings, centring.

:class:`BuildState` holds the stars' boxes and the current ePSF; :func:`iterate_epsf`
runs the fit/stack loop of :func:`dask_phot.psf.empirical.build_epsf` on it, for the
global ePSF and for each grid cell.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from dask_phot.psf._epsf_render import EPSFStamps, coefficients, decimate, node_values
from dask_phot.psf._epsf_stack import (
    StarBoxes,
    StarFit,
    cut_stars,
    evaluate,
    fit_stars,
    stack_stars,
)
from dask_phot.psf.stars import StarSelection
from dask_phot.psf.wings import WingMatch, complete_wings, node_radii

if TYPE_CHECKING:
    from dask_phot.psf.empirical import EPSFOptions

__all__ = ["BuildState", "finished", "iterate_epsf", "phase_normalised", "sky_basis",
           "star_residuals", "wing_radii"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class BuildState:
    """Everything one ePSF build iterates on.

    ``raw`` are the stars' boxes as cut from the mosaic, ``boxes`` the same with the
    neighbours subtracted; ``rows`` are the stars' rows in ``selection.table`` and
    ``src`` their rows in ``everyone`` (all sources, for the neighbour fits).
    """

    image: np.ndarray
    weight: np.ndarray
    everyone: pd.DataFrame
    selection: StarSelection
    rows: np.ndarray
    src: np.ndarray
    raw: StarBoxes
    boxes: StarBoxes
    x_cat: np.ndarray
    y_cat: np.ndarray
    fit: StarFit
    used: np.ndarray
    coef: np.ndarray
    match: WingMatch | None
    half: int
    fwhm: float
    pixel_scale: float
    size: int
    offset: tuple[float, float] = (0.0, 0.0)
    iteration: int = 0
    subtracted: bool = False
    sky_coef: np.ndarray | None = None

    @classmethod
    def start(cls, image: np.ndarray, weight: np.ndarray, cand: pd.DataFrame,
              everyone: pd.DataFrame, selection: StarSelection, opts: EPSFOptions, *,
              half: int, box_half: int, fwhm: float, coef: np.ndarray,
              pixel_scale: float) -> BuildState:
        """Cut the kept stars' boxes and set up the first iteration."""
        rows = np.flatnonzero(selection.kept)
        x = cand["x"].to_numpy()[rows]
        y = cand["y"].to_numpy()[rows]
        raw = cut_stars(image, weight, x, y, box_half)
        n = rows.size
        fit = StarFit(cand["flux"].to_numpy()[rows].astype(float), x.copy(), y.copy(),
                      np.zeros(n), np.zeros(n), np.ones(n, bool))
        size = (coef.shape[0] - 5) // opts.oversampling + 1
        return cls(image, weight, everyone, selection, rows, cand["src"].to_numpy()[rows],
                   raw, copy.copy(raw), x, y, fit, np.ones(n, bool), coef, None, half, fwhm,
                   pixel_scale, size)

    def restricted(self, members: np.ndarray) -> BuildState:
        """A copy that uses only the stars ``members`` (indices into this state's stars)."""
        used = np.zeros_like(self.used)
        used[members] = True
        return replace(self, used=used & self.used, selection=copy.deepcopy(self.selection),
                       iteration=0)


def _ring_level(state: BuildState) -> float:
    """Mean of the current ePSF (per unit flux) over the sky ring around a star's box."""
    m = state.boxes.data.shape[1]
    g = np.arange(m) - m // 2
    ring = np.maximum(np.abs(g)[:, None], np.abs(g)[None, :]) > state.half
    e, _, _ = decimate(state.coef, _oversampling(state), np.zeros(1), np.zeros(1), m)
    return float(e[0][ring].mean())


def sky_basis(state: BuildState, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sky terms (1, x, y) at the stars, x and y scaled to [-1, 1] over the image."""
    ny, nx = state.image.shape
    return np.column_stack([np.ones_like(x), 2 * x / max(nx - 1, 1) - 1,
                            2 * y / max(ny - 1, 1) - 1])


def _sky(state: BuildState, opts: EPSFOptions) -> np.ndarray:
    if state.sky_coef is not None:
        return sky_basis(state, state.x_cat, state.y_cat) @ state.sky_coef
    m = state.boxes.data.shape[1]
    g = np.arange(m) - m // 2
    ring = np.maximum(np.abs(g)[:, None], np.abs(g)[None, :]) > state.half
    d = np.where(ring[None] & (state.boxes.weight > 0), state.boxes.data, np.nan)
    with np.errstate(all="ignore"):
        med = np.nanmedian(d.reshape(d.shape[0], -1), axis=1)
    level = _ring_level(state)
    return np.where(np.isfinite(med), med, 0.0) - np.clip(state.fit.flux, 0, None) * level


def _subtract_neighbours(state: BuildState) -> None:
    """Fit every source near the stars with the current ePSF; subtract all but each star."""
    from dask_phot.engine import forced_photometry

    o = _oversampling(state)
    hb = state.raw.half
    # neighbours are fitted and rendered on stamps as wide as the stars' boxes: light
    # further out does not reach a box's pixels
    size = min(state.size, 2 * hb + 1)
    model = EPSFStamps([node_values(state.coef)], o, state.pixel_scale, size=size)
    ex, ey = state.everyone["x"].to_numpy(), state.everyone["y"].to_numpy()
    near = cKDTree(np.column_stack([state.x_cat, state.y_cat])).query(
        np.column_stack([ex, ey]), p=np.inf, distance_upper_bound=hb + size // 2 + 1.5)[0]
    sel = np.flatnonzero(np.isfinite(near))
    img = np.where(state.weight > 0, state.image, np.nan)
    ny, nx = state.image.shape
    if state.sky_coef is None:
        good = state.image[state.weight > 0]
        sky: float | np.ndarray = float(np.median(good[good < np.median(good) + 3 * np.std(good)]))
    else:
        # the sky shared with the stack: a local sky would soak up the neighbours' wings
        yy, xx = np.mgrid[0:ny, 0:nx]
        sky = (state.sky_coef[0] + state.sky_coef[1] * (2 * xx / max(nx - 1, 1) - 1)
               + state.sky_coef[2] * (2 * yy / max(ny - 1, 1) - 1))
    res = forced_photometry(img, model, ex[sel], ey[sel], weight=state.weight, sky=sky,
                            return_model=True)
    flux = np.where(np.isfinite(res.flux), res.flux, 0.0)
    full = np.where(np.isfinite(res.model), res.model - sky, 0.0)
    nbr = cut_stars(full, np.ones_like(full), state.raw.cx, state.raw.cy, hb)
    pos = {int(s): k for k, s in enumerate(sel)}
    own_flux = np.array([flux[pos[int(s)]] if int(s) in pos else 0.0 for s in state.src])
    own, _, _ = decimate(state.coef, o, state.x_cat - state.raw.cx, state.y_cat - state.raw.cy,
                         2 * hb + 1)
    own *= own_flux[:, None, None]
    # the star's own stamp only covers `size`; outside it the full model has none of it
    g = np.arange(2 * hb + 1) - hb
    inside = (np.abs(g)[:, None] <= size // 2) & (np.abs(g)[None, :] <= size // 2)
    others = nbr.data - np.where(inside[None], own, 0.0)
    w = state.raw.weight
    var = np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), np.inf) + (0.05 * others) ** 2
    sig = np.sqrt(var)
    # pixels where the neighbours' light is more than a tenth of the star's (or above
    # the noise) are left out: there the neighbours' fits soak up the misfit of the
    # star's wings with the current ePSF, which then stays too narrow. Masked at
    # 0.5 x the star + 5 sigma, ePSFs from simulated COSMOS-density IRAC fields gave
    # point-source fluxes 0.2-0.8% low (three seeds); at 0.1 x + 1 sigma, 0.03-0.09%.
    dominated = others > 0.1 * np.clip(own, 0, None) + 1.0 * sig
    neww = np.where((w > 0) & ~dominated, 1.0 / var, 0.0)
    state.boxes = StarBoxes(state.raw.data - others, neww, state.raw.cx, state.raw.cy)
    state.subtracted = True


def _oversampling(state: BuildState) -> int:
    return (state.coef.shape[0] - 5) // (state.size - 1)


def _reject(state: BuildState, bad: np.ndarray, reason: str) -> None:
    if bad.any():
        state.selection.reject(state.rows[bad], reason)
        state.used &= ~bad


def phase_normalised(values: np.ndarray, oversampling: int) -> np.ndarray:
    """The node grid with each of its ``O x O`` phase sub-lattices scaled to one sum.

    The nodes ``(i, j)`` with ``(i - c, j - c) = (ry, rx) mod O`` are the ePSF at the
    pixel centres around a source at phase ``(-ry / O, -rx / O)``: their sum is the
    flux in the box, the same at every phase. A stack leaves that sum free where the
    stars sit at the sub-lattice's own phase (a sub-lattice scaled up and those stars'
    fluxes down fit them as well): on a simulated IRAC field with 64 stars at ``O = 2``,
    sources' fluxes then erred by +-1.5% with their phase (rms 1.3% at S/N > 50; 0.4%
    once the finished ePSF's sub-lattices are scaled to one sum, keeping the total).
    Scaling at each iteration instead feeds back through the stars' fluxes and diverges.

    Examples
    --------
    >>> v = np.zeros((9, 9)); v[2:7, 2:7] = 1.0; v[::2, ::2] *= 1.5
    >>> w = phase_normalised(v, 2)
    >>> [round(float(w[(4 + a) % 2::2, (4 + b) % 2::2].sum()), 4) for a in (0, 1)
    ...  for b in (0, 1)], bool(np.isclose(w.sum(), v.sum()))
    ([7.375, 7.375, 7.375, 7.375], True)
    """
    o = int(oversampling)
    if o < 2:
        return values
    out = np.array(values, dtype=np.float64)
    c = out.shape[0] // 2
    subs = [(slice((c + ry) % o, None, o), slice((c + rx) % o, None, o))
            for ry in range(o) for rx in range(o)]
    sums = np.array([out[sl].sum() for sl in subs])
    if not np.all(sums > 0):
        return out
    for sl, total in zip(subs, sums, strict=True):
        out[sl] *= sums.mean() / total
    return out * (float(np.sum(values)) / float(out.sum()))


def _embed(core: np.ndarray, n: int) -> np.ndarray:
    """The core node grid in the middle of an ``n x n`` grid of zeros."""
    out = np.zeros((n, n))
    k = (n - core.shape[0]) // 2
    out[k:k + core.shape[0], k:k + core.shape[0]] = core
    return out


def _centre(state: BuildState, core: np.ndarray, o: int, center: str) -> np.ndarray:
    """Shift the core so that its centroid (within 1.5 FWHM) is the origin (``centroid`` mode)."""
    if center != "centroid":
        return core
    r = node_radii(core.shape[0], o)
    u = (np.arange(core.shape[0]) - (core.shape[0] - 1) / 2.0) / o
    disc = np.clip(core, 0, None) * (r <= max(1.0, 1.5 * state.fwhm))
    cx = float((disc.sum(axis=0) * u).sum() / disc.sum())
    cy = float((disc.sum(axis=1) * u).sum() / disc.sum())
    n = core.shape[0]
    jj, ii = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float), indexing="ij")
    vals = evaluate(coefficients(core), (ii + cx * o).ravel(), (jj + cy * o).ravel())
    return vals.reshape(n, n)


def wing_radii(state: BuildState, opts: EPSFOptions) -> tuple[float, float]:
    """Annulus (pixels) where the stack is joined to the wing model."""
    if opts.wing_radii is not None:
        r1, r2 = (float(v) for v in opts.wing_radii)
        return r1, r2
    return max(2.0 * state.fwhm, state.half / 2.0), state.half - 1.0


def finished(state: BuildState, opts: EPSFOptions, core: np.ndarray) -> np.ndarray:
    """A stacked core's node values made into an ePSF as the build makes it: centred,
    joined to the wings, normalised to total flux, phases scaled to one sum."""
    o = _oversampling(state)
    core = _centre(state, _embed(core, state.coef.shape[0]), o, opts.center)
    values, _ = complete_wings(core, o, state.pixel_scale, opts.wings, *wing_radii(state, opts))
    return phase_normalised(values, o)


def iterate_epsf(state: BuildState, opts: EPSFOptions, iterations: int, name: str, *,
                 neighbour_passes: tuple[int, ...] = (0, 2)) -> BuildState:
    """Alternate star fits and stacks ``iterations`` times (fewer once converged).

    The neighbours are fitted and subtracted before the iterations in ``neighbour_passes``
    (a grid cell keeps the global build's subtraction).
    """
    o = _oversampling(state)
    r1, r2 = wing_radii(state, opts)
    fit_radius = opts.fit_radius or max(2.0, 1.5 * state.fwhm)
    prev = node_values(state.coef)
    # poor fits are judged afresh at each iteration against the current ePSF: judged
    # once against a first ePSF that is still wrong, the bright stars that pin down
    # the wings went for good and the ePSF stayed too narrow (0.3-0.8% in flux)
    base = state.used.copy()
    for it in range(iterations):
        if it in neighbour_passes and len(state.everyone) > 1:
            _subtract_neighbours(state)
        sky = _sky(state, opts)
        fit = fit_stars(state.coef, o, state.boxes, state.fit.x, state.fit.y, sky,
                        radius=fit_radius, error_floor=opts.error_floor)
        dx = fit.x - state.x_cat
        dy = fit.y - state.y_cat
        ok = base & fit.ok
        if opts.center == "catalog" and ok.any():
            # registered to the catalog: the stars sit at their catalog positions plus
            # one offset shared by all (fitting each position would sharpen the stack
            # on the noise); the fitted positions only weed out stars that moved
            mx, my = float(np.median(dx[ok])), float(np.median(dy[ok]))
            state.offset = (mx, my)
            moved = np.hypot(dx - mx, dy - my) > opts.max_shift
            fit = fit_stars(state.coef, o, state.boxes, state.x_cat + mx, state.y_cat + my,
                            sky, radius=fit_radius, fit_position=False,
                            error_floor=opts.error_floor)
            fit.x -= mx
            fit.y -= my
        else:
            moved = np.hypot(dx, dy) > opts.max_shift
        bad = ~fit.ok | moved
        if it > 0 and (base & ~bad).any():
            c = fit.chi2[base & ~bad]
            med = np.median(c)
            mad = 1.4826 * np.median(np.abs(c - med))
            # only clear outliers go (the chi-square includes the error floor)
            bad |= fit.chi2 > max(med + 10.0 * mad, 3.0 * med)
        state.used = base & ~bad
        state.fit = fit
        sub = np.flatnonzero(state.used)
        if sub.size < 3:
            break
        sfit = StarFit(fit.flux[sub], fit.x[sub], fit.y[sub], fit.sky[sub], fit.chi2[sub],
                       fit.ok[sub])
        basis = sky_basis(state, state.x_cat, state.y_cat)
        stack = stack_stars(state.boxes.subset(sub), sfit, o, state.half,
                            model_coef=state.coef if it else None, smoothing=opts.smoothing,
                            error_floor=opts.error_floor, sky_basis=basis[sub],
                            clip=opts.clip)
        state.sky_coef = stack.sky
        core = _centre(state, _embed(node_values(stack.coef), state.coef.shape[0]), o,
                       opts.center)
        values, state.match = complete_wings(core, o, state.pixel_scale, opts.wings, r1, r2)
        state.coef = coefficients(values)
        state.iteration += 1
        change = float(np.abs(values - prev).max() / values.max())
        prev = values
        log.debug("%s: iteration %d, %d stars, change %.2e, sky %.5g, wings %s", name, it,
                  sub.size, change, float(np.median(sky[sub])), state.match)
        if it >= 2 and change < 1e-3:
            break
    _reject(state, base & ~state.used, "poor_fit")
    return state


def star_residuals(state: BuildState, limit: int = 25) -> np.ndarray:
    """(data - sky - flux x ePSF) / sigma over the boxes of up to ``limit`` used stars."""
    o = _oversampling(state)
    idx = np.flatnonzero(state.used)
    idx = idx[np.argsort(-state.fit.flux[idx])][:limit]
    b = state.boxes.subset(idx)
    m = b.data.shape[1]
    e, _, _ = decimate(state.coef, o, state.fit.x[idx] - b.cx, state.fit.y[idx] - b.cy, m)
    res = b.data - state.fit.sky[idx, None, None] - state.fit.flux[idx, None, None] * e
    return np.where(b.weight > 0, res * np.sqrt(b.weight), np.nan)
