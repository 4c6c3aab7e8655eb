"""Input checks shared by the aperture modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from dask_phot._optional import as_sep_array

__all__ = ["Prepared", "column_suffix", "positions", "prepare"]


class Prepared(NamedTuple):
    """An image ready for sep: finite data, a uint8 mask, and the noise."""

    data: np.ndarray
    mask: np.ndarray
    err: float | np.ndarray | None
    bad: np.ndarray


def positions(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """1-D float64 ``x, y`` of equal length, finite."""
    xa = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ya = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got {xa.shape} and {ya.shape}")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all()):
        raise ValueError("x and y must be finite")
    return xa, ya


def prepare(data: Any, *, background: Any = None, rms: Any = None, weight: Any = None,
            mask: Any = None) -> Prepared:
    """Subtract ``background``, zero and mask bad pixels, pick the noise.

    The noise is ``rms`` when given, else ``1/sqrt(weight)`` (weight 0: masked),
    else None (no errors).
    """
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"data must be a 2-D image, got shape {arr.shape}")
    if background is not None:
        arr = arr - np.asarray(background, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    err: float | np.ndarray | None = None
    if rms is not None:
        if np.ndim(rms) == 0:
            err = float(rms)
        else:
            e = np.asarray(rms, dtype=np.float64)
            bad |= ~(np.isfinite(e) & (e > 0))
            err = as_sep_array(np.where(bad, 0.0, e))
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        good = np.isfinite(w) & (w > 0)
        bad |= ~good
        if err is None:
            err = as_sep_array(np.where(good & ~bad, 1.0 / np.sqrt(np.where(good, w, 1.0)), 0.0))
    return Prepared(as_sep_array(np.where(bad, 0.0, arr)), as_sep_array(bad, np.uint8), err, bad)


def column_suffix(radius: float) -> str:
    """Column-name form of a radius: ``2`` for 2.0, ``2p5`` for 2.5.

    Examples
    --------
    >>> column_suffix(2.0), column_suffix(2.5)
    ('2', '2p5')
    """
    text = f"{float(radius):g}"
    return text.replace(".", "p")


def check_radii(radii: Sequence[float]) -> tuple[float, ...]:
    """Positive, finite radii as a tuple."""
    out = tuple(float(r) for r in np.atleast_1d(np.asarray(radii, dtype=np.float64)))
    if not out or not all(np.isfinite(r) and r > 0 for r in out):
        raise ValueError(f"radii must be finite and > 0, got {radii!r}")
    return out
