"""Source detection: smoothing kernel, threshold, minimum area, deblending, coverage cuts.

:func:`detect_sources` runs ``sep.extract`` (SExtractor's algorithm) on a
background-subtracted image with a per-pixel threshold ``thresh x noise``, then
applies what survey scripts add around it: a stricter minimum area where a
coverage (context) map says only one exposure covers the source, removal of
detections whose footprint touches zero coverage, and a flag for sources in
single-exposure areas with a cosmic ray nearby.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import ndimage

from dask_phot._optional import as_sep_array, ensure_pixstack, require
from dask_phot.detect.background import (
    BackgroundMap,
    bad_pixels,
    measure_background,
    noise_map,
)

__all__ = [
    "COSMIC_RAY",
    "SINGLE_EXPOSURE",
    "DetectionParams",
    "Detections",
    "detect_sources",
    "gaussian_kernel",
    "read_conv_file",
]

logger = logging.getLogger(__name__)

#: Flag bit: more than half of the source's footprint is covered by one exposure.
SINGLE_EXPOSURE = 1 << 8
#: Flag bit: single-exposure source with a cosmic-ray pixel within ``cr_radius``.
COSMIC_RAY = 1 << 9

_COLUMNS = ("x", "y", "npix", "xmin", "xmax", "ymin", "ymax", "x2", "y2", "xy", "a", "b",
            "theta", "flux", "cflux", "peak", "xpeak", "ypeak")


@dataclass(frozen=True)
class DetectionParams:
    """Detection settings (SExtractor's names in brackets).

    Parameters
    ----------
    thresh : float
        Threshold in units of the per-pixel noise (``DETECT_THRESH``).
    minarea : int
        Minimum connected pixels above threshold (``DETECT_MINAREA``).
    minarea_single : int
        Minimum area where a coverage map says one exposure (cosmic-ray-prone areas).
    kernel_fwhm : float
        FWHM (pixels) of the Gaussian smoothing kernel; 0 for no smoothing (``FILTER``).
    kernel_size : int
        Kernel side, odd; 0 picks ``2 * ceil(1.5 * kernel_fwhm) + 1``.
    filter_type : {"conv", "matched"}
        Plain convolution (SExtractor) or the noise-weighted matched filter.
    deblend_nthresh : int
        Deblending sub-thresholds (``DEBLEND_NTHRESH``).
    deblend_cont : float
        Minimum contrast (``DEBLEND_MINCONT``); 1 disables deblending.
    clean, clean_param : bool, float
        Remove spurious detections in the wings of bright ones (``CLEAN``, ``CLEAN_PARAM``).
    cr_radius : float
        Distance (pixels) from a footprint within which a cosmic ray flags a source.

    Examples
    --------
    >>> DetectionParams(thresh=3.0).minarea
    5
    >>> DetectionParams(kernel_size=4)
    Traceback (most recent call last):
    ...
    ValueError: kernel_size must be 0 (auto) or an odd integer >= 1, got 4
    """

    thresh: float = 1.5
    minarea: int = 5
    minarea_single: int = 10
    kernel_fwhm: float = 2.0
    kernel_size: int = 0
    filter_type: Literal["conv", "matched"] = "conv"
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    clean: bool = True
    clean_param: float = 1.0
    cr_radius: float = 2.0

    def __post_init__(self) -> None:
        for name in ("thresh", "clean_param"):
            if not (isinstance(getattr(self, name), int | float) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a number > 0, got {getattr(self, name)!r}")
        for name in ("minarea", "minarea_single", "deblend_nthresh"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(self.kernel_size, int) and
                (self.kernel_size == 0 or (self.kernel_size >= 1 and self.kernel_size % 2))):
            raise ValueError(f"kernel_size must be 0 (auto) or an odd integer >= 1, "
                             f"got {self.kernel_size!r}")
        if not (self.kernel_fwhm >= 0 and math.isfinite(self.kernel_fwhm)):
            raise ValueError(f"kernel_fwhm must be >= 0, got {self.kernel_fwhm!r}")
        if self.filter_type not in ("conv", "matched"):
            raise ValueError(f"filter_type must be 'conv' or 'matched', got {self.filter_type!r}")
        if not 0 <= self.deblend_cont <= 1:
            raise ValueError(f"deblend_cont must be in [0, 1], got {self.deblend_cont!r}")
        if not self.cr_radius >= 0:
            raise ValueError(f"cr_radius must be >= 0, got {self.cr_radius!r}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the settings (the keys of a ``[detect.params]`` table)."""
        return tuple(f.name for f in fields(cls))

    def kernel(self) -> np.ndarray | None:
        """The smoothing kernel, or None for no smoothing."""
        if self.kernel_fwhm == 0:
            return None
        return gaussian_kernel(self.kernel_fwhm, self.kernel_size or None)


def gaussian_kernel(fwhm: float, size: int | None = None) -> np.ndarray:
    """A peak-normalised Gaussian kernel sampled at pixel centres.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, pixels.
    size : int, optional
        Odd side; default ``2 * ceil(1.5 * fwhm) + 1``.

    Examples
    --------
    >>> k = gaussian_kernel(2.0, 3)
    >>> k.shape, float(k[1, 1]), round(float(k[0, 1]), 3)
    ((3, 3), 1.0, 0.5)
    """
    if not fwhm > 0:
        raise ValueError(f"fwhm must be > 0, got {fwhm!r}")
    size = size or 2 * math.ceil(1.5 * fwhm) + 1
    if size % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {size}")
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    r = np.arange(size) - size // 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    return np.outer(g, g)


def read_conv_file(path: str | Path) -> np.ndarray:
    """Read a SExtractor filter file (``CONV NORM`` / ``CONV NONORM``, ``#`` comments).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "k.conv"
    ...     _ = p.write_text("CONV NORM\\n# comment\\n1 2 1\\n2 4 2\\n1 2 1\\n")
    ...     read_conv_file(p).tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    rows = []
    for line in Path(path).read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.upper().startswith("CONV"):
            continue
        rows.append([float(v) for v in text.split()])
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"{path}: not a SExtractor filter file (ragged or empty rows)")
    return np.array(rows)


@dataclass(frozen=True, eq=False)
class Detections:
    """The result of :func:`detect_sources`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per kept detection: ``id`` (its label in ``segmap``), 0-based ``x``,
        ``y`` (column, row), ``npix``, bounding box, second moments ``x2, y2, xy``,
        ellipse ``a, b, theta``, isophotal ``flux``, ``peak``, ``flag`` (sep's bits
        plus :data:`SINGLE_EXPOSURE`, :data:`COSMIC_RAY`), ``coverage`` (median
        coverage over the footprint; NaN without a coverage map).
    segmap : ndarray of int32
        Segmentation map: ``id`` of the detection owning each pixel, 0 elsewhere
        (removed detections are zeroed).
    background : BackgroundMap
        The background used.
    noise : ndarray
        Per-pixel 1-sigma noise used for the threshold.
    n_removed : dict of str to int
        Detections dropped by the coverage rules, by reason.
    """

    table: pd.DataFrame
    segmap: np.ndarray
    background: BackgroundMap
    noise: np.ndarray
    n_removed: dict[str, int]

    def __len__(self) -> int:
        return len(self.table)


def _extract(sub: np.ndarray, noise: np.ndarray | float, bad: np.ndarray,
             params: DetectionParams, kernel: np.ndarray | None,
             gain: float | None) -> tuple[np.ndarray, np.ndarray]:
    sep = require("sep")
    clean = as_sep_array(np.where(bad, 0.0, sub))
    ensure_pixstack(clean.size)
    err = noise if np.ndim(noise) == 0 else as_sep_array(np.where(bad, np.inf, noise))
    kw: dict[str, Any] = {"filter_kernel": None if kernel is None else as_sep_array(kernel)}
    return sep.extract(
        clean, params.thresh, err=err, gain=gain, mask=as_sep_array(bad, np.uint8),
        minarea=params.minarea, filter_type=params.filter_type,
        deblend_nthresh=params.deblend_nthresh, deblend_cont=params.deblend_cont,
        clean=params.clean, clean_param=params.clean_param, segmentation_map=True, **kw)


def _coverage_rules(table: pd.DataFrame, segmap: np.ndarray, coverage: np.ndarray | None,
                    cosmic_rays: np.ndarray | None,
                    params: DetectionParams) -> tuple[pd.DataFrame, dict[str, int]]:
    """Flag/drop detections by coverage; returns the kept rows and counts dropped."""
    removed = {"zero_coverage": 0, "single_exposure_minarea": 0}
    if coverage is None or table.empty:
        table["coverage"] = np.nan
        return table, removed
    ids = table["id"].to_numpy()
    cov = np.asarray(coverage, dtype=np.float64)
    zero = ndimage.binary_dilation(~(cov > 0))
    touches = np.asarray(ndimage.maximum(zero, labels=segmap, index=ids), dtype=bool)
    single_frac = np.asarray(ndimage.mean(np.abs(cov - 1) < 0.5, labels=segmap, index=ids))
    table["coverage"] = np.asarray(ndimage.median(cov, labels=segmap, index=ids))
    single = single_frac > 0.5
    flags = table["flag"].to_numpy().copy()
    flags[single] |= SINGLE_EXPOSURE
    if cosmic_rays is not None and single.any():
        near = ndimage.binary_dilation(np.asarray(cosmic_rays, dtype=bool),
                                       iterations=max(round(params.cr_radius), 1))
        hit = np.asarray(ndimage.maximum(near, labels=segmap, index=ids), dtype=bool)
        flags[single & hit] |= COSMIC_RAY
    table["flag"] = flags
    small = single & (table["npix"].to_numpy() < params.minarea_single)
    removed["zero_coverage"] = int(touches.sum())
    removed["single_exposure_minarea"] = int((small & ~touches).sum())
    return table[~(touches | small)], removed


def _as_noise(data: np.ndarray, background: BackgroundMap, rms: Any,
              weight: Any) -> np.ndarray | float:
    if rms is not None:
        return float(rms) if np.ndim(rms) == 0 else np.asarray(rms, dtype=np.float64)
    return noise_map(background, weight)


def detect_sources(
    data: Any,
    *,
    params: DetectionParams | None = None,
    background: BackgroundMap | float | np.ndarray | None = None,
    rms: float | np.ndarray | None = None,
    weight: Any = None,
    mask: Any = None,
    coverage: Any = None,
    cosmic_rays: Any = None,
    kernel: np.ndarray | None = None,
    gain: float | None = None,
    background_kwargs: dict[str, Any] | None = None,
) -> Detections:
    """Detect and deblend sources on an image.

    Parameters
    ----------
    data : array_like
        2-D image (not background-subtracted).
    params : DetectionParams, optional
        Threshold, minimum areas, kernel, deblending (defaults: SExtractor's).
    background : BackgroundMap, float or ndarray, optional
        Background to subtract; default :func:`measure_background` with
        ``background_kwargs``. A number or map is used as given (its RMS then
        comes from ``rms`` or ``weight``).
    rms : float or ndarray, optional
        1-sigma noise for the threshold; default the background RMS map, or
        ``1/sqrt(weight)`` scaled to it (:func:`noise_map`) when ``weight`` is given.
    weight : array_like, optional
        Inverse-variance map; 0 marks bad pixels.
    mask : array_like of bool, optional
        True where pixels are bad (not detected on).
    coverage : array_like, optional
        Number of exposures per pixel (a context/coverage map). Detections whose
        footprint touches zero coverage are removed; where more than half a
        footprint has one exposure, the source is flagged :data:`SINGLE_EXPOSURE`
        and kept only with at least ``params.minarea_single`` pixels.
    cosmic_rays : array_like of bool, optional
        Cosmic-ray mask (:func:`~dask_phot.detect.cosmic_ray_mask`); single-exposure
        sources within ``params.cr_radius`` of one are flagged :data:`COSMIC_RAY`.
    kernel : ndarray, optional
        Smoothing kernel overriding ``params.kernel_fwhm`` (e.g. :func:`read_conv_file`).
    gain : float, optional
        Electrons per image unit, for sep's isophotal flux errors.
    background_kwargs : dict, optional
        Options of :func:`measure_background`.

    Returns
    -------
    Detections

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> from dask_phot.testing import simulate_image
    >>> im = simulate_image((96, 96), [30.0, 60.0], [40.0, 50.0], [500.0, 800.0],
    ...                     gaussian_psf(2.5), seed=1, sky=5.0)
    >>> det = detect_sources(im.data, params=DetectionParams(thresh=3.0),
    ...                      background_kwargs={"box_size": 32})
    >>> det.table[["x", "y"]].round().astype(int).values.tolist()
    [[30, 40], [60, 50]]
    """
    params = params or DetectionParams()
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"data must be a 2-D image, got shape {arr.shape}")
    cov = None if coverage is None else np.asarray(coverage, dtype=np.float64)
    extra_bad = None if cov is None else ~(cov > 0)
    if mask is not None:
        extra_bad = np.asarray(mask, bool) if extra_bad is None else extra_bad | mask
    bad = bad_pixels(arr, extra_bad, weight)
    if not isinstance(background, BackgroundMap):
        bkg = measure_background(arr, mask=bad, **(background_kwargs or {}))
        if background is not None:
            level = np.broadcast_to(np.asarray(background, dtype=np.float64), arr.shape)
            bkg = BackgroundMap(np.array(level), bkg.rms, float(np.median(level)),
                                bkg.global_rms, bkg.mask, bkg.box_size, bkg.filter_size)
    else:
        bkg = background
    noise = _as_noise(arr, bkg, rms, weight)
    kern = kernel if kernel is not None else params.kernel()
    objs, seg = _extract(arr - bkg.back, noise, bad, params, kern, gain)
    table = pd.DataFrame({c: objs[c] for c in _COLUMNS})
    table.insert(0, "id", np.arange(1, len(objs) + 1, dtype=np.int32))
    table["flag"] = objs["flag"].astype(np.int32)
    table, removed = _coverage_rules(table, seg, cov, cosmic_rays, params)
    if len(table) < len(objs):
        keep = np.zeros(len(objs) + 1, dtype=bool)
        keep[table["id"].to_numpy()] = True
        seg = np.where(keep[seg], seg, 0)
    logger.debug("detected %d sources (%s removed)", len(table), removed)
    return Detections(table=table.reset_index(drop=True), segmap=seg.astype(np.int32),
                      background=bkg, noise=np.broadcast_to(noise, arr.shape),
                      n_removed=removed)
