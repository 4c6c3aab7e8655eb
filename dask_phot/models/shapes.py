"""Source shapes on an image's pixel grid: validation and conversion from the sky.

A shape is a Sersic profile's half-light semi-major axis ``r_e`` (pixels of the
image; 0 or NaN for a point source), axis ratio ``q = b / a`` in (0, 1], the
major axis's angle ``theta`` (degrees counter-clockwise from the image's +x
axis, i.e. from the column axis towards the row axis) and Sersic index ``n``.
Catalogues give shapes on the sky (radius in arcsec, position angle east of
north): :func:`sky_to_pixel` maps them through each mosaic's WCS, rotation and
flip included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dask_phot.models.sersic import N_MAX, N_MIN

__all__ = ["SHAPE_KEYS", "Shapes", "sky_to_pixel", "wcs_jacobian"]

#: Keys of a shapes mapping and their defaults (``r_e`` is required).
SHAPE_KEYS: dict[str, float | None] = {"r_e": None, "q": 1.0, "theta": 0.0, "n": 1.0}


@dataclass(frozen=True)
class Shapes:
    """Validated per-source shapes (arrays of the sources' length).

    Examples
    --------
    >>> sh = Shapes.from_mapping({"r_e": [0.0, 2.0, np.nan], "n": [1, 4, 1]}, 3)
    >>> sh.extended.tolist(), sh.q.tolist()
    ([False, True, False], [1.0, 1.0, 1.0])
    >>> Shapes.from_mapping({"r_e": [1.0], "q": [1.5]}, 1)
    Traceback (most recent call last):
    ...
    ValueError: shapes['q'] must be in (0, 1] (b/a), got 1.5 for source 0
    """

    r_e: np.ndarray
    q: np.ndarray
    theta: np.ndarray
    n: np.ndarray

    @property
    def extended(self) -> np.ndarray:
        """Sources with an extended (Sersic) model; the others are point sources."""
        return np.isfinite(self.r_e) & (self.r_e > 0)

    @classmethod
    def points(cls, n: int) -> Shapes:
        """All point sources."""
        return cls(np.zeros(n), np.ones(n), np.zeros(n), np.ones(n))

    @classmethod
    def from_mapping(cls, shapes: Mapping[str, object] | Shapes | None, n: int) -> Shapes:
        """Validate a mapping of shape arrays for ``n`` sources (None: point sources).

        Raises
        ------
        ValueError
            An unknown key, a missing ``r_e``, an array of the wrong length, or a
            value out of range; the message names the key and the first bad source.
        """
        if shapes is None:
            return cls.points(n)
        if isinstance(shapes, Shapes):
            if shapes.r_e.shape != (n,):
                raise ValueError(f"shapes are for {shapes.r_e.shape[0]} sources, not {n}")
            return shapes
        if not isinstance(shapes, Mapping):
            raise TypeError(f"shapes must be a mapping of arrays (keys {', '.join(SHAPE_KEYS)}),"
                            f" got {type(shapes).__name__}")
        unknown = sorted(set(shapes) - set(SHAPE_KEYS))
        if unknown:
            raise ValueError(f"shapes: unknown key(s) {unknown}; known: {', '.join(SHAPE_KEYS)}")
        if "r_e" not in shapes:
            raise ValueError("shapes must give 'r_e' (half-light semi-major axis, pixels)")
        vals = {}
        for key, default in SHAPE_KEYS.items():
            v = shapes.get(key, default)
            arr = np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) if np.ndim(v) == 0 \
                else np.asarray(v, dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"shapes[{key!r}] has shape {arr.shape}, expected ({n},)")
            vals[key] = np.array(arr)
        ext = np.isfinite(vals["r_e"]) & (vals["r_e"] > 0)
        _check(vals["r_e"], ~np.isnan(vals["r_e"]) & (vals["r_e"] < 0), "r_e",
               "must be >= 0 (0 or NaN: a point source)")
        _check(vals["r_e"], np.isinf(vals["r_e"]), "r_e", "must be finite")
        _check(vals["q"], ext & ~((vals["q"] > 0) & (vals["q"] <= 1)), "q",
               "must be in (0, 1] (b/a)")
        _check(vals["theta"], ext & ~np.isfinite(vals["theta"]), "theta", "must be finite")
        _check(vals["n"], ext & ~((vals["n"] >= N_MIN) & (vals["n"] <= N_MAX)), "n",
               f"must be in [{N_MIN}, {N_MAX}]")
        return cls(vals["r_e"], vals["q"], vals["theta"], vals["n"])


def _check(values: np.ndarray, bad: np.ndarray, key: str, what: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"shapes[{key!r}] {what}, got {float(values[i])!r} for source {i}")


def sky_to_pixel(jacobian: np.ndarray, radius: np.ndarray, q: np.ndarray,
                 pa: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes on the sky to shapes on an image grid.

    Parameters
    ----------
    jacobian : ndarray, shape (n, 2, 2) or (2, 2)
        ``d(east, north) / d(x, y)`` in arcsec per pixel at each source (east
        and north offsets on the tangent plane; see
        :func:`dask_phot.images.local_jacobian`).
    radius : ndarray
        Half-light semi-major axis, arcsec.
    q : ndarray
        Axis ratio b/a.
    pa : ndarray
        Position angle of the major axis, degrees east of north.

    Returns
    -------
    r_e, q, theta : ndarray
        Semi-major axis in pixels, axis ratio and angle (degrees counter-clockwise
        from +x) of the ellipse on the pixel grid.

    Examples
    --------
    A north-up, east-left grid of 0.5"/px: a 1" source elongated north-south
    becomes 2 px along +y (theta 90):

    >>> jac = np.array([[-0.5, 0.0], [0.0, 0.5]])
    >>> r, qq, th = sky_to_pixel(jac, np.array([1.0]), np.array([0.5]), np.array([0.0]))
    >>> round(float(r[0]), 6), round(float(qq[0]), 6), round(float(th[0]) % 180, 6)
    (2.0, 0.5, 90.0)
    """
    radius = np.asarray(radius, dtype=np.float64)
    n = radius.shape[0]
    jac = np.broadcast_to(np.asarray(jacobian, dtype=np.float64), (n, 2, 2))
    q = np.asarray(q, dtype=np.float64)
    t = np.deg2rad(np.asarray(pa, dtype=np.float64))
    # major axis unit vector (east, north) for a PA east of north
    u = np.stack([np.sin(t), np.cos(t)], axis=-1)
    v = np.stack([-np.cos(t), np.sin(t)], axis=-1)
    a2, b2 = radius**2, (q * radius) ** 2
    cov_sky = (a2[:, None, None] * u[:, :, None] * u[:, None, :]
               + b2[:, None, None] * v[:, :, None] * v[:, None, :])
    inv = np.linalg.inv(jac)
    cov = inv @ cov_sky @ np.swapaxes(inv, 1, 2)
    evals, evecs = np.linalg.eigh(cov)
    major = np.sqrt(np.clip(evals[:, 1], 0.0, None))
    minor = np.sqrt(np.clip(evals[:, 0], 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        q_pix = np.where(major > 0, minor / major, 1.0)
    theta = np.rad2deg(np.arctan2(evecs[:, 1, 1], evecs[:, 0, 1])) % 180.0
    return major, np.clip(q_pix, 0.0, 1.0), theta


def wcs_jacobian(wcs: object, x: np.ndarray, y: np.ndarray, step: float = 0.5) -> np.ndarray:
    """``d(east, north) / d(x, y)`` in arcsec per pixel at pixel positions ``(x, y)``.

    East and north are those of ICRS (catalogues give position angles east of
    north in equatorial coordinates), whatever the mosaic's celestial frame:
    the offsets are measured between ICRS positions of neighbouring pixels.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2)
    >>> w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.cdelt = [-0.6 / 3600, 0.6 / 3600]
    >>> w.wcs.crval = [150.0, 2.0]; w.wcs.crpix = [50, 50]
    >>> np.round(wcs_jacobian(w, np.array([49.0]), np.array([49.0]))[0], 4).tolist()
    [[-0.6, 0.0], [0.0, 0.6]]
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    pts = [(x, y), (x + step, y), (x - step, y), (x, y + step), (x, y - step)]
    sky = [wcs.pixel_to_world(px, py).icrs for px, py in pts]  # type: ignore[attr-defined]
    dec0 = np.deg2rad(sky[0].dec.deg)
    jac = np.empty((x.size, 2, 2))
    for col, (plus, minus) in enumerate(((sky[1], sky[2]), (sky[3], sky[4]))):
        dra = ((plus.ra.deg - minus.ra.deg + 180.0) % 360.0) - 180.0
        jac[:, 0, col] = dra * np.cos(dec0) * 3600.0 / (2 * step)
        jac[:, 1, col] = (plus.dec.deg - minus.dec.deg) * 3600.0 / (2 * step)
    return jac
