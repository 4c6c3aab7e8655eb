"""The engine's result container."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dask_phot.schema import Flag

__all__ = ["PhotometryResult"]


@dataclass
class PhotometryResult:
    """Forced photometry of every input source, in input order.

    Attributes
    ----------
    flux, flux_err : ndarray
        Flux (in image units summed over pixels, i.e. the PSF-weighted total)
        and its marginal 1-sigma uncertainty, which includes the covariance
        with blended neighbours and with the sky when it is fitted. NaN when
        the source could not be measured (see ``flags``).
    chi2 : ndarray
        Reduced chi2 of the final model over the source's footprint
        (``sum(w r^2) / (n_pixels - 1)`` over its usable stamp pixels).
    flags : ndarray of int32
        Bitwise OR of :class:`dask_phot.schema.Flag`.
    x, y : ndarray
        Positions used for the final fit (refined when positions were fitted).
    sky : ndarray
        Sky level under each source (the given sky, or the fitted one).
    n_pixels : ndarray of int
        Usable pixels in each source's footprint.
    model : ndarray or None
        Model image (sources plus sky) when asked for with ``return_model``.
    info : dict
        Run facts: mode, number of tiles, sky parameters, iterations.
    mismatch : ndarray
        Significance of the residual's projection on a broadening of each
        source's model (positive: the source is more extended than its model);
        see :mod:`dask_phot.engine.mismatch`.
    chosen_r_e : ndarray or None
        With ``choose_models``: the half-light radius (pixels) of the round
        exponential chosen for a source without a shape, 0 where it stayed a
        point source, NaN where no choice was tried (see :mod:`dask_phot.engine.choice`);
        ``chosen_n`` the chosen galaxy's Sersic index (1 or 4; NaN elsewhere).
    """

    flux: np.ndarray
    flux_err: np.ndarray
    chi2: np.ndarray
    flags: np.ndarray
    x: np.ndarray
    y: np.ndarray
    sky: np.ndarray
    n_pixels: np.ndarray
    model: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    mismatch: np.ndarray | None = None
    chosen_r_e: np.ndarray | None = None
    chosen_n: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mismatch is None:
            self.mismatch = np.full(self.flux.shape, np.nan)

    def __len__(self) -> int:
        return int(self.flux.shape[0])

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio ``flux / flux_err``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.flux / self.flux_err

    def has(self, flag: Flag) -> np.ndarray:
        """Boolean mask of the sources with ``flag`` set."""
        return (self.flags & int(flag)) != 0

    def to_pandas(self) -> pd.DataFrame:
        """The per-source columns as a DataFrame (one row per input source)."""
        return pd.DataFrame(
            {
                "x": self.x,
                "y": self.y,
                "flux": self.flux,
                "flux_err": self.flux_err,
                "chi2": self.chi2,
                "flags": self.flags.astype(np.int32),
                "sky": self.sky,
                "n_pixels": self.n_pixels,
                "mismatch": self.mismatch,
            }
        )

    @classmethod
    def empty(cls) -> PhotometryResult:
        """A result with no sources."""
        z = np.zeros(0)
        return cls(z, z.copy(), z.copy(), np.zeros(0, np.int32), z.copy(), z.copy(),
                   z.copy(), np.zeros(0, np.int64))
