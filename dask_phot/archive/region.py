"""The sky region an archive query covers: a cone, or a box in RA and Dec.

A :class:`SkyRegion` writes itself as an ADQL constraint, as an SIA ``POS``
value, and tests positions client-side with the same meaning, so that rows a
service returns for a larger area can be cut back exactly.

A box is ``width`` degrees across (on the sky, at the centre's declination) and
``height`` degrees in declination; its edges are lines of constant RA and Dec.

Examples
--------
>>> cone = SkyRegion.cone(150.01, 2.2, 0.5 / 60)
>>> cone.adql("ra", "dec")
"CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.01, 2.2, 0.008333333333)) = 1"
>>> cone.contains([150.01, 150.03], [2.2, 2.2]).tolist()
[True, False]
>>> box = SkyRegion.box(0.1, -30.0, 1.0, 0.5)
>>> box.adql("ra", "dec")
'dec BETWEEN -30.25 AND -29.75 AND (ra >= 359.5226497 OR ra <= 0.6773502692)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SkyRegion"]


def _num(x: float) -> str:
    """A number as ADQL/SIA text: 10 significant digits, no exponent for usual values."""
    text = format(float(x), ".10g")
    return "0" if text == "-0" else text


def _separation(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    """Angular distance in degrees (haversine)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


@dataclass(frozen=True)
class SkyRegion:
    """A cone (``radius``) or an RA/Dec box (``width`` x ``height``), ICRS degrees.

    Use :meth:`cone` or :meth:`box` to make one.
    """

    ra: float
    dec: float
    radius: float = 0.0
    width: float = 0.0
    height: float = 0.0

    def __post_init__(self) -> None:
        values = (self.ra, self.dec, self.radius, self.width, self.height)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError(f"SkyRegion: centre and sizes must be finite numbers, got {values}")
        if not -90.0 <= self.dec <= 90.0:
            raise ValueError(f"SkyRegion: dec must be in [-90, 90], got {self.dec}")
        cone = self.radius > 0
        box = self.width > 0 and self.height > 0
        if cone == box or min(self.radius, self.width, self.height) < 0:
            raise ValueError("SkyRegion: give a radius > 0 (cone) or width and height > 0 "
                             f"(box), not radius={self.radius}, width={self.width}, "
                             f"height={self.height}")
        if cone and self.radius > 90:
            raise ValueError(f"SkyRegion: radius must be <= 90 degrees, got {self.radius}")
        object.__setattr__(self, "ra", float(self.ra) % 360.0)
        for name in ("dec", "radius", "width", "height"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def cone(cls, ra: float, dec: float, radius: float) -> SkyRegion:
        """All positions within ``radius`` degrees of ``(ra, dec)``."""
        return cls(ra, dec, radius=radius)

    @classmethod
    def box(cls, ra: float, dec: float, width: float, height: float) -> SkyRegion:
        """A box centred on ``(ra, dec)``: ``width`` degrees across, ``height`` in Dec."""
        return cls(ra, dec, width=width, height=height)

    @property
    def kind(self) -> str:
        """``"cone"`` or ``"box"``."""
        return "cone" if self.radius > 0 else "box"

    def describe(self) -> str:
        """Short text for messages.

        Examples
        --------
        >>> SkyRegion.cone(150.01, 2.2, 0.8).describe()
        'cone of radius 48 arcmin around (150.01, 2.2)'
        """
        where = f"around ({_num(self.ra)}, {_num(self.dec)})"
        if self.kind == "cone":
            return f"cone of radius {_num(self.radius * 60)} arcmin {where}"
        return f"box of {_num(self.width * 60)} x {_num(self.height * 60)} arcmin {where}"

    # ------------------------------------------------------------------ box geometry
    def dec_range(self) -> tuple[float, float]:
        """Lowest and highest declination covered."""
        half = self.radius if self.kind == "cone" else self.height / 2
        return max(-90.0, self.dec - half), min(90.0, self.dec + half)

    def ra_half_width(self, margin: float = 0.0) -> float:
        """Half the RA range of a box (degrees of RA), >= 180 when it spans all RA."""
        lo, hi = self.dec_range()
        extreme = max(abs(lo), abs(hi)) + margin
        if extreme >= 89.999:
            return 180.0
        half = self.width / 2 / math.cos(math.radians(self.dec))
        return half + margin / math.cos(math.radians(extreme))

    def bounding_radius(self) -> float:
        """Radius (degrees) of a cone round the centre that holds the whole region."""
        if self.kind == "cone":
            return self.radius
        lo, hi = self.dec_range()
        half = min(self.ra_half_width(), 180.0)
        return float(np.max(_separation(self.ra, self.dec, [self.ra + half] * 2, [lo, hi])))

    def contains(self, ra: Any, dec: Any, *, margin: float = 0.0) -> np.ndarray:
        """Which positions lie in the region (grown by ``margin`` degrees)."""
        ra = np.asarray(ra, dtype=np.float64)
        dec = np.asarray(dec, dtype=np.float64)
        if self.kind == "cone":
            return _separation(self.ra, self.dec, ra, dec) <= self.radius + margin
        lo, hi = self.dec_range()
        dra = np.abs((ra - self.ra + 180.0) % 360.0 - 180.0)
        return (dec >= lo - margin) & (dec <= hi + margin) & (dra <= self.ra_half_width(margin))

    # ------------------------------------------------------------------ service syntax
    def adql(self, ra_column: str, dec_column: str) -> str:
        """The region as an ADQL ``WHERE`` condition on two coordinate columns."""
        if self.kind == "cone":
            return (f"CONTAINS(POINT('ICRS', {ra_column}, {dec_column}), CIRCLE('ICRS', "
                    f"{_num(self.ra)}, {_num(self.dec)}, {_num(self.radius)})) = 1")
        lo, hi = self.dec_range()
        text = f"{dec_column} BETWEEN {_num(lo)} AND {_num(hi)}"
        half = self.ra_half_width()
        if half >= 180.0:
            return text
        ra_lo, ra_hi = (self.ra - half) % 360.0, (self.ra + half) % 360.0
        if ra_lo <= ra_hi:
            return f"{text} AND {ra_column} BETWEEN {_num(ra_lo)} AND {_num(ra_hi)}"
        return f"{text} AND ({ra_column} >= {_num(ra_lo)} OR {ra_column} <= {_num(ra_hi)})"

    def sia_pos(self) -> tuple[float, ...]:
        """The SIA2 ``POS`` value: ``(ra, dec, radius)`` or ``(ra1, ra2, dec1, dec2)``.

        A box across RA = 0 or a pole is searched by its bounding circle.

        Examples
        --------
        >>> SkyRegion.box(150.0, 0.0, 0.2, 0.1).sia_pos()
        (149.9, 150.1, -0.05, 0.05)
        """
        if self.kind == "box":
            half = self.ra_half_width()
            lo, hi = self.dec_range()
            if half < 180.0 and 0.0 <= self.ra - half and self.ra + half <= 360.0:
                return (round(self.ra - half, 10), round(self.ra + half, 10),
                        round(lo, 10), round(hi, 10))
        return (self.ra, self.dec, self.bounding_radius())

    def cells(self, order: int) -> list[int]:
        """Nested HEALPix cells of ``order`` that may hold a position of the region."""
        from astropy import units as u
        from astropy.coordinates import Latitude, Longitude
        from cdshealpix import nested

        from dask_phot.cells import Cell

        ipix, _, _ = nested.cone_search(Longitude(self.ra * u.deg), Latitude(self.dec * u.deg),
                                        self.bounding_radius() * u.deg, int(order), flat=True)
        pixels = sorted(int(p) for p in np.asarray(ipix))
        if self.kind == "cone":
            return pixels
        keep = []
        for p in pixels:
            cell = Cell(int(order), p)
            if self.contains(*cell.center(), margin=cell.radius_deg())[()]:
                keep.append(p)
        return keep
