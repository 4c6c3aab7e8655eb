"""Pixel-level diagnostics: data, model, residual / sigma and chi2, band by band.

A :class:`BandPanel` holds one band's pixels for a cell or a cutout; it is made
from an engine fit (:func:`panel_from_fit`) or, for a finished catalogue, by
:mod:`dask_phot.report` (catalogue fluxes rendered with the band's PSF).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BandPanel", "cell_diagnostics", "draw_images", "panel_from_fit"]


@dataclass
class BandPanel:
    """One band's pixels and fit quality.

    Attributes
    ----------
    band : str
    data, model : ndarray
        Image and model (sources plus sky), same shape, image units.
    sigma : ndarray or None
        Per-pixel 1-sigma noise (NaN or inf where masked); None: the residual is
        scaled by a robust estimate of its own spread.
    chi2 : ndarray
        Reduced chi2 of each source measured in it (for the histogram).
    x, y : ndarray
        0-based pixel positions of the sources to mark (may be empty).
    """

    band: str
    data: np.ndarray
    model: np.ndarray
    sigma: np.ndarray | None = None
    chi2: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float64)
        self.model = np.asarray(self.model, dtype=np.float64)
        if self.data.ndim != 2 or self.model.shape != self.data.shape:
            raise ValueError(f"{self.band}: data {self.data.shape} and model "
                             f"{self.model.shape} must be the same 2-D shape")
        if self.sigma is not None and np.shape(self.sigma) != self.data.shape:
            raise ValueError(f"{self.band}: sigma must have the data's shape")

    def normalized_residual(self) -> np.ndarray:
        """``(data - model) / sigma``; NaN where the pixel is masked."""
        res = self.data - self.model
        if self.sigma is None:
            finite = res[np.isfinite(res)]
            spread = 1.4826 * np.median(np.abs(finite - np.median(finite))) if finite.size else 0
            sigma = np.full(res.shape, spread if spread > 0 else 1.0)
        else:
            sigma = np.asarray(self.sigma, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = res / sigma
        out[~np.isfinite(out)] = np.nan
        return out


def panel_from_fit(band: str, image: np.ndarray, psf: Any, x: Any, y: Any, *,
                   weight: np.ndarray | None = None, **kwargs: Any) -> tuple[BandPanel, Any]:
    """Fit an image with the engine and keep its model for plotting.

    Parameters
    ----------
    band : str
    image, psf, x, y, weight, **kwargs
        As for :func:`dask_phot.forced_photometry` (``return_model`` is set).

    Returns
    -------
    BandPanel, PhotometryResult
    """
    from dask_phot.engine import forced_photometry

    res = forced_photometry(image, psf, x, y, weight=weight, return_model=True, **kwargs)
    sigma = None
    if weight is not None:
        with np.errstate(divide="ignore"):
            sigma = np.where(weight > 0, 1.0 / np.sqrt(np.maximum(weight, 1e-300)), np.nan)
    return BandPanel(band, image, res.model, sigma, res.chi2, res.x, res.y), res


def _limits(data: np.ndarray) -> tuple[float, float]:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1.0, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def draw_images(axes: Sequence[Any], panel: BandPanel, *, marks: bool = True,
                label: bool = True) -> None:
    """Draw data, model and residual / sigma of a panel into three axes.

    Data and model share one asinh-stretched grey scale; the residual is shown
    from -5 to +5 sigma.
    """
    from matplotlib.colors import AsinhNorm

    lo, hi = _limits(panel.data)
    norm = AsinhNorm(linear_width=max((hi - lo) * 0.05, 1e-12), vmin=lo, vmax=hi)
    images = ((panel.data, "data", {"cmap": "gray_r", "norm": norm}),
              (panel.model, "model", {"cmap": "gray_r", "norm": norm}),
              (panel.normalized_residual(), "residual / sigma",
               {"cmap": "RdBu_r", "vmin": -5, "vmax": 5}))
    for ax, (arr, title, kw) in zip(axes, images, strict=True):
        im = ax.imshow(arr, origin="lower", interpolation="nearest", **kw)
        if marks and panel.x.size and title != "residual / sigma":
            ax.plot(panel.x, panel.y, "+", color="tab:orange", ms=4 if panel.x.size < 50 else 2,
                    mew=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
        if label:
            ax.set_title(f"{panel.band}: {title}", fontsize=8)
        if title == "residual / sigma":
            ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)


def cell_diagnostics(panels: Sequence[BandPanel], *, chi2_max: float = 5.0) -> Any:
    """Per band: data, model, residual / sigma and the sources' chi2 histogram.

    Parameters
    ----------
    panels : sequence of BandPanel
        One per band (one row each).
    chi2_max : float
        Upper edge of the histogram; larger values go into the last bin.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(panels)`` rows x 4 axes; each histogram counts the finite chi2
        values of its band and marks the median.
    """
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("cell_diagnostics: no band panels given")
    fig = Figure(figsize=(13.0, 3.1 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 4, squeeze=False)
    for row, panel in zip(axes, panels, strict=True):
        draw_images(row[:3], panel)
        chi2 = np.asarray(panel.chi2, dtype=np.float64)
        chi2 = chi2[np.isfinite(chi2)]
        row[3].hist(np.clip(chi2, 0, chi2_max), bins=np.linspace(0, chi2_max, 41),
                    color="tab:blue")
        if chi2.size:
            row[3].axvline(float(np.median(chi2)), color="k", ls="--", lw=1,
                           label=f"median {np.median(chi2):.2f}")
            row[3].legend(fontsize=8)
        row[3].set_xlabel("reduced chi2")
        row[3].set_ylabel("sources")
        row[3].set_title(f"{panel.band}: chi2 ({chi2.size} sources)", fontsize=8)
    return fig
