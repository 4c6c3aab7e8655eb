"""Quality figure of an empirical PSF: the ePSF, star residuals, profile and curve of growth.

:func:`epsf_qa_figure` draws, for an :class:`~dask_phot.psf.epsf_result.EmpiricalPSF`:

* the ePSF (log stretch, oversampled grid, in mosaic-pixel coordinates);
* the residuals / sigma of its brightest stars after subtracting it;
* its azimuthal profile beside the comparison PSFs (a preset, a PSF file);
* its curve of growth beside theirs, with the flux kept inside the stamp.

Comparison PSFs are :class:`~dask_phot.psf.PixelPSF` objects on the mosaic grid
(presets) or ``(label, node array, oversampling)`` triples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dask_phot.psf.pixel import PixelPSF
from dask_phot.psf.wings import curve_of_growth, radial_profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dask_phot.psf.epsf_result import EmpiricalPSF

__all__ = ["epsf_qa_figure"]

Comparison = PixelPSF | tuple[str, np.ndarray, int]


def _as_nodes(item: Comparison) -> tuple[str, np.ndarray, int]:
    if isinstance(item, PixelPSF):
        return item.name, item.array / item.array.sum(), 1
    label, arr, over = item
    return str(label), np.asarray(arr, dtype=np.float64), int(over)


def _montage(res: np.ndarray, ncol: int = 5) -> np.ndarray:
    k, m, _ = res.shape
    nrow = max(1, int(np.ceil(k / ncol)))
    out = np.full((nrow * (m + 1) - 1, ncol * (m + 1) - 1), np.nan)
    for i in range(k):
        r, c = divmod(i, ncol)
        out[r * (m + 1):r * (m + 1) + m, c * (m + 1):c * (m + 1) + m] = res[i]
    return out


def epsf_qa_figure(result: EmpiricalPSF, *, compare: Sequence[Comparison] = (),
                   title: str | None = None) -> Figure:
    """Four-panel quality figure of an ePSF.

    Parameters
    ----------
    result : EmpiricalPSF
        The ePSF (its residuals and star counts are shown).
    compare : sequence of PixelPSF or (label, array, oversampling)
        PSFs drawn beside it in the profile and curve-of-growth panels.
    title : str, optional
        Figure title; default the mosaic's name with the star counts.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 9.5), layout="constrained")
    axes = fig.subplots(2, 2)
    o = result.oversampling
    arr = result.array
    h = (arr.shape[0] - 1) / 2.0 / o
    peak = float(arr.max())
    ax = axes[0, 0]
    im = ax.imshow(np.clip(arr, peak * 1e-5, None), origin="lower", extent=(-h, h, -h, h),
                   norm=LogNorm(vmin=peak * 1e-5, vmax=peak), cmap="magma")
    fig.colorbar(im, ax=ax, label="pixel value per unit flux")
    ax.set_title(f"ePSF (x{o} oversampled, FWHM {result.fwhm:.2f} px, "
                 f"{result.fwhm * result.pixel_scale:.2f}\")")
    ax.set_xlabel("x offset [pixels]")
    ax.set_ylabel("y offset [pixels]")
    _residual_panel(fig, axes[0, 1], result)
    _profile_panels(axes[1, 0], axes[1, 1], result, [_as_nodes(c) for c in compare])
    fig.suptitle(title or f"{result.name}: ePSF from {result.n_stars} stars, {result.mode}"
                 f" ({result.grid_note}); wings: {result.wings.model}")
    return fig


def _residual_panel(fig: Any, ax: Any, result: EmpiricalPSF) -> None:
    res = result.residuals
    if res.size and res.shape[1] > 1:
        mont = _montage(res)
        im = ax.imshow(mont, origin="lower", cmap="RdBu_r", vmin=-5, vmax=5)
        fig.colorbar(im, ax=ax, label="(data - model) / sigma")
        finite = res[np.isfinite(res)]
        ax.set_title(f"{res.shape[0]} brightest stars minus ePSF: rms {np.std(finite):.2f} sigma")
    else:
        ax.text(0.5, 0.5, "no residuals kept", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(result.selection.summary(), fontsize=8, wrap=True)


def _profile_panels(ax_p: Any, ax_c: Any, result: EmpiricalPSF,
                    others: list[tuple[str, np.ndarray, int]]) -> None:
    o = result.oversampling
    rmax = (result.array.shape[0] - 1) / 2.0 / o
    radii = np.linspace(0.25, rmax, 120)
    rr, pp = radial_profile(result.array, o, step=0.25)
    ax_p.semilogy(rr, pp / pp.max(), "k-", lw=2, label="ePSF")
    ax_c.plot(radii, curve_of_growth(result.array, o, radii), "k-", lw=2,
              label=f"ePSF (box holds {result.flux_in_box:.3f})")
    for label, arr, over in others:
        r2, p2 = radial_profile(arr, over, step=0.25 if over > 1 else 1.0)
        ax_p.semilogy(r2, p2 / p2.max(), lw=1, label=label)
        ax_c.plot(radii, curve_of_growth(arr, over, radii) / arr.sum() * over**2, lw=1,
                  label=label)
    w = result.wings
    for ax in (ax_p, ax_c):
        ax.axvspan(w.r_inner, w.r_outer, color="0.9", label="wings matched")
        ax.set_xlabel("radius [pixels]")
        ax.legend(fontsize=8)
    ax_c.axhline(1.0, color="0.5", lw=0.5)
    ax_p.set_ylim(1e-6, 2.0)
    ax_p.set_ylabel("azimuthal mean / peak")
    ax_p.set_title("radial profile")
    ax_c.set_ylabel("enclosed flux (of total)")
    ax_c.set_title("curve of growth")
