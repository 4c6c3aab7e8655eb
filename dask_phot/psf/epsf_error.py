"""How well an ePSF's stars pin it down: a bootstrap of the stars, as a flux error.

An ePSF stacked from a few dozen stars carries their noise and their neighbours'
residuals. A point source fitted with it inherits that error as a fraction of its
flux, the same at every S/N (the fit weights are the ePSF's shape, not the source's
brightness), so above S/N ~ 1 / error it dominates the statistical error: with 80
stars on a simulated IRAC field (``benchmarks/bench_epsf_flux.py``) the bootstrap
gave 0.11%, and the pulls of sources at S/N > 200 were -0.94 +- 2.74 without it,
-0.31 +- 0.99 with it in quadrature.

:func:`bootstrap_flux_error` measures it from the build itself: the final stack is
repeated on stars drawn with replacement (fluxes, positions and the shared sky as
fitted), each replica is completed and normalised as the ePSF was, and a point
source is fitted with the ePSF where each replica is the truth, at a grid of sub-pixel
phases. The spread of those flux ratios (rms over phases of the spread over replicas)
is the ePSF's fractional flux error: the pipeline adds it in quadrature to each
flux error (:func:`dask_phot.pipeline.psfs.band_psf`) and records it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dask_phot.psf._epsf_render import coefficients, decimate, node_values
from dask_phot.psf._epsf_stack import StarFit, stack_stars

if TYPE_CHECKING:
    from dask_phot.psf.empirical import EPSFOptions
    from dask_phot.psf.epsf_build import BuildState

__all__ = ["bootstrap_flux_error", "epsf_flux_error", "flux_ratios"]


def flux_ratios(values: np.ndarray, reference: np.ndarray, oversampling: int, size: int,
                phases: int = 4) -> np.ndarray:
    """Flux of a point source whose ePSF is ``values``, fitted with ``reference``.

    The fit is the engine's for an isolated source with constant pixel noise (flux =
    ``<V, R> / <R, R>`` over a ``size`` x ``size`` stamp), at ``phases x phases``
    sub-pixel positions.

    Parameters
    ----------
    values, reference : ndarray
        Node grids (same shape and oversampling), normalised to total flux.
    oversampling : int
        Nodes per pixel.
    size : int
        Odd side of the fitted stamp, pixels.
    phases : int
        Sub-pixel positions per axis, in ``[-0.5, 0.5)``.

    Returns
    -------
    ndarray
        ``(phases**2,)`` flux ratios (1 where both agree).

    Examples
    --------
    >>> u = (np.arange(41) - 20) / 2.0
    >>> g = np.exp(-0.5 * (u[:, None] ** 2 + u[None, :] ** 2) / 1.5**2)
    >>> g /= g.sum() / 4
    >>> bool(np.allclose(flux_ratios(1.01 * g, g, 2, 15), 1.01))
    True
    """
    q = np.arange(phases) / phases - 0.5
    fx, fy = (a.ravel() for a in np.meshgrid(q, q))
    v, _, _ = decimate(coefficients(values), oversampling, fx, fy, size)
    r, _, _ = decimate(coefficients(reference), oversampling, fx, fy, size)
    return np.einsum("nij,nij->n", v, r) / np.einsum("nij,nij->n", r, r)


def bootstrap_flux_error(state: BuildState, opts: EPSFOptions, complete, *, samples: int,
                         seed: int = 0, phases: int = 4) -> tuple[float, np.ndarray]:
    """Fractional flux error of the ePSF of ``state``, from a bootstrap of its stars.

    Parameters
    ----------
    state : BuildState
        A finished build (its stars' fits and sky are reused).
    opts : EPSFOptions
        The build's options (smoothing, error floor, clipping).
    complete : callable
        ``complete(core_values) -> values``: the build's own centring, wings and
        normalisation of a stacked core.
    samples : int
        Bootstrap replicas (0: no estimate, error 0).
    seed : int
        Seed of the draws (the estimate is reproducible).
    phases : int
        Sub-pixel positions per axis at which the flux is compared.

    Returns
    -------
    error : float
        rms over phases of the replicas' standard deviation of the flux ratio.
    ratios : ndarray
        ``(samples, phases**2)`` flux ratios (replica as truth, the ePSF fitted).
    """
    used = np.flatnonzero(state.used)
    if samples < 2 or used.size < 3:
        return 0.0, np.zeros((0, phases * phases))
    rng = np.random.default_rng(seed)
    o = (state.coef.shape[0] - 5) // (state.size - 1)
    nominal = node_values(state.coef)
    box = 2 * state.half + 1
    fit = state.fit
    basis = _basis(state)
    out = np.empty((samples, phases * phases))
    for b in range(samples):
        idx = rng.choice(used, size=used.size, replace=True)
        sfit = StarFit(fit.flux[idx], fit.x[idx], fit.y[idx], fit.sky[idx], fit.chi2[idx],
                       fit.ok[idx])
        stack = stack_stars(state.boxes.subset(idx), sfit, o, state.half,
                            model_coef=state.coef, smoothing=opts.smoothing,
                            error_floor=opts.error_floor, sky_basis=basis[idx], clip=opts.clip)
        values = complete(node_values(stack.coef))
        out[b] = flux_ratios(values, nominal, o, box, phases)
    return float(np.sqrt(np.mean(np.var(out, axis=0, ddof=1)))), out


def _basis(state: BuildState) -> np.ndarray:
    from dask_phot.psf.epsf_build import sky_basis

    return sky_basis(state, state.x_cat, state.y_cat)


def epsf_flux_error(state: BuildState, opts: EPSFOptions) -> float:
    """The fractional flux error of a finished build's ePSF (0 unless ``error_samples``
    is at least 2): :func:`bootstrap_flux_error` with the build's own finishing."""
    from dask_phot.psf.epsf_build import finished

    if opts.error_samples < 2:
        return 0.0
    err, _ = bootstrap_flux_error(state, opts, lambda core: finished(state, opts, core),
                                  samples=opts.error_samples)
    return err
