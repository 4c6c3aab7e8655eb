"""HEALPix sky cells with margins: how the priors catalog is cut into Dask partitions.

The sky is cut into nested HEALPix cells of one order (the HATS ``Norder``).
Every prior source is *primary* in exactly one cell, the one containing it;
a cell's partition also carries the *margin*: the sources of other cells that
lie within ``margin_arcsec`` of its boundary, so that a neighbour's light is
modelled when the cell's sources are fitted. Only primary rows are written out.

The margin is exact up to the boundary model: a cell's edges are sampled at
short intervals (about 30 arcsec, see :func:`boundary_step`) and joined by
great-circle arcs, and a source outside the cell is in the margin when its
angular distance to that polygon is at most the margin. Candidate sources come
from a KD-tree over unit vectors (everything within the cell's circumscribed
radius plus the margin), so margins wider than a cell, the poles and the
RA = 0/360 seam need no special case.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"source_id": [1, 2, 3], "ra": [150.0, 150.01, 150.3],
...                    "dec": [2.0, 2.0, 2.2]})
>>> parts = partition_priors(df, order=6, margin_arcsec=5.0)
>>> [(p.cell.pixel, p.sources["source_id"].tolist(), p.n_primary) for p in parts]
[(27256, [3, 2], 1), (27258, [1, 2], 2)]
>>> parts[0].cell.path_parts()
('Norder=6', 'Dir=20000', 'Npix=27256')

Source 2 is primary in cell 27258 and, 4.6" from the edge of cell 27256, in
that cell's margin too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "HEALPIX_COLUMN",
    "MAX_ORDER",
    "PRIMARY_COLUMN",
    "Cell",
    "CellSources",
    "assign_cells",
    "boundary_step",
    "choose_order",
    "healpix_29",
    "margin_sources",
    "partition_priors",
    "split_cell",
    "to_dask",
]

logger = logging.getLogger(__name__)

#: Deepest HEALPix order (the HATS spatial index order).
MAX_ORDER = 29
#: Column holding the order-29 nested index (HATS spatial index).
HEALPIX_COLUMN = "_healpix_29"
#: Boolean column: True for a cell's own sources, False for its margin.
PRIMARY_COLUMN = "_primary"
_SEGMENT_ARCSEC = 30.0
_MAX_STEP = 256
_ARCSEC = math.pi / 180.0 / 3600.0


# ---------------------------------------------------------------------- helpers
def _lonlat(ra: Any, dec: Any) -> tuple[Any, Any]:
    from astropy import units as u
    from astropy.coordinates import Latitude, Longitude

    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    return Longitude(ra, unit=u.deg), Latitude(dec, unit=u.deg)


def _xyz(ra: Any, dec: Any) -> np.ndarray:
    """Unit vectors, shape ``(..., 3)``, of positions in degrees."""
    a = np.radians(np.asarray(ra, dtype=np.float64))
    d = np.radians(np.asarray(dec, dtype=np.float64))
    cd = np.cos(d)
    return np.stack([cd * np.cos(a), cd * np.sin(a), np.sin(d)], axis=-1)


def _check_order(order: Any, name: str = "order") -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) \
            or not 0 <= int(order) <= MAX_ORDER:
        raise ValueError(f"{name} must be an integer 0..{MAX_ORDER}, got {order!r}")
    return int(order)


def _coords(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("ra", "dec") if c not in df.columns]
    if missing:
        raise ValueError(f"priors frame has no column {missing[0]!r}; columns: "
                         f"{', '.join(map(str, df.columns))}")
    return df["ra"].to_numpy(np.float64), df["dec"].to_numpy(np.float64)


def healpix_29(ra: Any, dec: Any) -> np.ndarray:
    """Order-29 nested HEALPix index of each position (the HATS ``_healpix_29``).

    Parameters
    ----------
    ra, dec : array_like
        ICRS coordinates in degrees.

    Returns
    -------
    ndarray of int64

    Examples
    --------
    >>> int(healpix_29([150.0], [2.0])[0] >> 2 * (29 - 6))
    27258
    """
    from cdshealpix import nested

    lon, lat = _lonlat(np.atleast_1d(ra), np.atleast_1d(dec))
    if lon.size == 0:
        return np.zeros(0, dtype=np.int64)
    return nested.lonlat_to_healpix(lon, lat, MAX_ORDER).astype(np.int64)


def boundary_step(order: int) -> int:
    """Boundary points per cell edge used for margins: edges cut into ~30" arcs.

    Examples
    --------
    >>> boundary_step(10), boundary_step(13), boundary_step(0)
    (8, 4, 256)
    """
    edge = math.degrees(math.sqrt(math.pi / 3.0)) * 3600.0 / 2 ** _check_order(order)
    want = max(4, math.ceil(edge / _SEGMENT_ARCSEC))
    return min(_MAX_STEP, 1 << (want - 1).bit_length())


# ---------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One nested HEALPix cell: an output partition of the catalog.

    Parameters
    ----------
    order : int
        HEALPix order (HATS ``Norder``), 0..29.
    pixel : int
        Nested pixel index at that order (HATS ``Npix``).

    Examples
    --------
    >>> cell = Cell(10, 1234)
    >>> cell.dir, cell.path_parts()
    (0, ('Norder=10', 'Dir=0', 'Npix=1234'))
    >>> ra, dec = cell.center()
    >>> round(ra, 4), round(dec, 4)
    (46.5381, 2.0147)
    >>> round(cell.radius_deg() * 60, 2)
    2.64
    """

    order: int
    pixel: int

    def __post_init__(self) -> None:
        order = _check_order(self.order, "Cell order")
        npix = 12 * 4**order
        if isinstance(self.pixel, bool) or not isinstance(self.pixel, int | np.integer) \
                or not 0 <= int(self.pixel) < npix:
            raise ValueError(f"Cell pixel must be an integer 0..{npix - 1} at order {order}, "
                             f"got {self.pixel!r}")
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "pixel", int(self.pixel))

    @property
    def dir(self) -> int:
        """HATS ``Dir`` number: ``(pixel // 10000) * 10000``."""
        return (self.pixel // 10000) * 10000

    def path_parts(self) -> tuple[str, str, str]:
        """HATS path components ``("Norder=K", "Dir=D", "Npix=P")``."""
        return (f"Norder={self.order}", f"Dir={self.dir}", f"Npix={self.pixel}")

    def center(self) -> tuple[float, float]:
        """``(ra, dec)`` of the cell centre, degrees."""
        from cdshealpix import nested

        lon, lat = nested.healpix_to_lonlat(np.array([self.pixel], dtype=np.uint64), self.order)
        return float(lon.deg[0]), float(lat.deg[0])

    def vertices(self, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(ra, dec)`` arrays of ``4 * step`` boundary points in order, degrees."""
        from cdshealpix import nested

        lon, lat = nested.vertices(np.array([self.pixel], dtype=np.uint64), self.order,
                                   step=int(step))
        return np.asarray(lon.deg[0], dtype=np.float64), np.asarray(lat.deg[0], dtype=np.float64)

    def radius_deg(self) -> float:
        """Circumscribed radius: largest angular distance from the centre to the boundary."""
        return float(np.degrees(_geometry(self.order, np.array([self.pixel]))[2][0]))

    def contains(self, ra: Any, dec: Any) -> np.ndarray:
        """Boolean array: which positions fall in this cell."""
        shift = 2 * (MAX_ORDER - self.order)
        return (healpix_29(ra, dec) >> shift) == self.pixel


@dataclass(frozen=True)
class CellSources:
    """The rows of one cell's partition: its primary sources, then its margin.

    Attributes
    ----------
    cell : Cell
    sources : pandas.DataFrame
        Input columns plus ``_healpix_29`` and ``_primary``; primary rows
        first, each group sorted by ``_healpix_29``; the input index is kept.
    """

    cell: Cell
    sources: pd.DataFrame

    @property
    def n_primary(self) -> int:
        """Number of the cell's own sources."""
        return int(self.sources[PRIMARY_COLUMN].sum())


# ---------------------------------------------------------------------- orders
def choose_order(
    ra: Any, dec: Any, rows_per_partition: int, *, max_order: int = 13
) -> int:
    """Lowest order whose most populated cell holds at most ``rows_per_partition`` sources.

    Parameters
    ----------
    ra, dec : array_like
        Positions in degrees.
    rows_per_partition : int
        Target maximum of primary rows per cell (>= 1).
    max_order : int
        Deepest order considered; returned (with a log line) when even that
        order has a cell above the target.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ra, dec = 150 + rng.random(5000) * 0.5, 2 + rng.random(5000) * 0.5
    >>> choose_order(ra, dec, 1000), choose_order(ra, dec, 5000)
    (9, 0)
    """
    if isinstance(rows_per_partition, bool) or not isinstance(rows_per_partition,
                                                              int | np.integer) \
            or rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be an integer >= 1, got {rows_per_partition!r}")
    max_order = _check_order(max_order, "max_order")
    h = np.sort(healpix_29(ra, dec))
    if h.size <= rows_per_partition:
        return 0
    for order in range(max_order + 1):
        pix = h >> (2 * (MAX_ORDER - order))
        starts = np.flatnonzero(np.r_[True, pix[1:] != pix[:-1], True])
        if int(np.diff(starts).max()) <= rows_per_partition:
            return order
    logger.warning("the most populated order-%d cell holds %d > %d rows per partition; "
                   "using order %d", max_order, int(np.diff(starts).max()),
                   rows_per_partition, max_order)
    return max_order


def assign_cells(df: pd.DataFrame, order: int) -> pd.Series:
    """Nested pixel number at ``order`` of each row (from its ``ra``/``dec``).

    Examples
    --------
    >>> df = pd.DataFrame({"ra": [0.0, 359.99], "dec": [0.0, 0.0]})
    >>> assign_cells(df, 3).tolist()
    [304, 293]
    """
    order = _check_order(order)
    pix = healpix_29(*_coords(df)) >> (2 * (MAX_ORDER - order))
    return pd.Series(pix, index=df.index, name="Npix", dtype=np.int64)


# ---------------------------------------------------------------------- margins
def _geometry(order: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres ``(n, 3)``, boundary points ``(n, 4 * step, 3)`` and circumscribed radii (rad)."""
    from cdshealpix import nested

    ipix = np.asarray(pixels, dtype=np.uint64)
    lon, lat = nested.healpix_to_lonlat(ipix, order)
    centers = _xyz(lon.deg, lat.deg)
    lon, lat = nested.vertices(ipix, order, step=boundary_step(order))
    verts = _xyz(lon.deg, lat.deg)
    cos = np.clip(np.einsum("nkj,nj->nk", verts, centers), -1.0, 1.0)
    return centers, verts, np.arccos(cos.min(axis=1))


def _boundary_distance(xyz: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Angular distance (rad) of unit vectors to a polygon of great-circle arcs: to its
    nearest arc (:func:`_arc_distance`) or vertex (:func:`_vertex_distance`)."""
    return np.minimum(_arc_distance(xyz, verts), _vertex_distance(xyz, verts))


def _arc_distance(xyz: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Angular distance (rad) of unit vectors to the nearest arc of a polygon whose
    interior holds their foot (inf: none does). The minimum is taken before ``arcsin``
    (monotonic): one call per point."""
    nxt = np.roll(verts, -1, axis=0)
    n = np.cross(verts, nxt)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    inside = (xyz @ np.cross(n, verts).T >= 0) & (xyz @ np.cross(nxt, n).T >= 0)
    sin_d = np.abs(xyz @ n.T)
    sin_d[~inside] = np.inf
    nearest = sin_d.min(axis=1)
    arc = np.full(len(xyz), np.inf)
    on_arc = np.isfinite(nearest)
    arc[on_arc] = np.arcsin(np.minimum(nearest[on_arc], 1.0))
    return arc


def _vertex_distance(xyz: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Angular distance (rad) of unit vectors to the nearest of the vertices (from the
    chord to the vertex of greatest dot product: ``sqrt`` is monotonic)."""
    chord = np.sqrt(np.maximum(2.0 - 2.0 * (xyz @ verts.T).max(axis=1), 0.0))
    return 2.0 * np.arcsin(np.minimum(chord / 2.0, 1.0))


def _angle(xyz: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Angular distance (rad) of unit vectors to one, from their chord (accurate when small)."""
    return 2.0 * np.arcsin(np.minimum(np.linalg.norm(xyz - center, axis=-1) / 2.0, 1.0))


def _candidate_lists(
    xyz: np.ndarray, centers: np.ndarray, radius: np.ndarray, margin_rad: float
) -> Any:
    """Per cell, indices of sources within the circumscribed radius plus the margin."""
    from scipy.spatial import cKDTree

    ang = np.minimum(radius * 1.01 + margin_rad + 1e-9, math.pi)
    return cKDTree(xyz).query_ball_point(centers, 2.0 * np.sin(ang / 2.0))


#: Slack (rad, ~20 microarcsec) of the bounds that spare :func:`_boundary_distance`: far
#: above the rounding of the angles, far below any margin's meaning.
_BOUND_SLACK = 1e-10


def _margin_mask(
    xyz: np.ndarray, pix: np.ndarray, pixel: int, verts: np.ndarray, margin_rad: float,
    center: np.ndarray,
) -> np.ndarray:
    """Sources of other cells within ``margin_rad`` of the cell's boundary polygon.

    A source at angle ``D`` from the centre is within ``D - r_in`` of the boundary when
    outside the polygon and within ``R - D`` when inside it (``r_in``, ``R``: the least and
    greatest distances from the centre to the boundary, which the great-circle arc from
    the centre through the source crosses), so one with ``R - margin <= D <= r_in +
    margin`` is in the margin whichever side it lies. Of the others, those within the
    margin of a vertex are in it, and those farther than the margin plus half the
    longest arc from every vertex are not; only the rest need the distance to the arcs
    (the result is that of :func:`_boundary_distance` for all).
    """
    out = pix != pixel
    if not out.any():
        return out
    r_in = float(_boundary_distance(center[None, :], verts)[0])
    r_out = float(_angle(verts, center).max())
    dist = _angle(xyz[out], center)
    sure = (dist >= r_out - margin_rad + _BOUND_SLACK) \
        & (dist <= r_in + margin_rad - _BOUND_SLACK)
    check = np.flatnonzero(out)[~sure]
    to_vertex = _vertex_distance(xyz[check], verts)
    half_arc = float(_angle(verts, np.roll(verts, -1, axis=0)).max()) / 2.0
    out[check] = to_vertex <= margin_rad
    check = check[(to_vertex > margin_rad) & (to_vertex <= margin_rad + half_arc + _BOUND_SLACK)]
    out[check] = _arc_distance(xyz[check], verts) <= margin_rad
    return out


def _check_margin(margin_arcsec: Any) -> float:
    ok = isinstance(margin_arcsec, int | float | np.integer | np.floating) \
        and not isinstance(margin_arcsec, bool)
    if not ok or not math.isfinite(float(margin_arcsec)) or margin_arcsec < 0:
        raise ValueError(f"margin_arcsec must be a finite number >= 0, got {margin_arcsec!r}")
    return float(margin_arcsec)


def margin_sources(df: pd.DataFrame, cell: Cell, margin_arcsec: float) -> pd.DataFrame:
    """Rows of ``df`` outside ``cell`` within ``margin_arcsec`` of its boundary.

    Parameters
    ----------
    df : pandas.DataFrame
        Sources with ``ra`` and ``dec`` columns (degrees).
    cell : Cell
    margin_arcsec : float
        Margin width, arcsec (>= 0).

    Returns
    -------
    pandas.DataFrame
        The selected rows of ``df``, in input order.

    Examples
    --------
    >>> cell = Cell(10, 1234)
    >>> ra, dec = cell.vertices()
    >>> df = pd.DataFrame({"ra": [ra[0], ra[0]], "dec": [dec[0] - 3 / 3600, dec[0] - 9 / 3600]})
    >>> margin_sources(df, cell, 5.0).index.tolist()
    [0]
    """
    margin = _check_margin(margin_arcsec) * _ARCSEC
    ra, dec = _coords(df)
    if margin == 0 or len(df) == 0:
        return df.iloc[:0]
    xyz = _xyz(ra, dec)
    centers, verts, radius = _geometry(cell.order, np.array([cell.pixel]))
    cand = np.asarray(_candidate_lists(xyz, centers, radius, margin)[0], dtype=np.int64)
    pix = healpix_29(ra[cand], dec[cand]) >> (2 * (MAX_ORDER - cell.order))
    keep = np.sort(cand[_margin_mask(xyz[cand], pix, cell.pixel, verts[0], margin,
                                     centers[0])])
    return df.iloc[keep]


# ---------------------------------------------------------------------- partitions
def _cell_rows(
    ra: np.ndarray, dec: np.ndarray, h29: np.ndarray, pix: np.ndarray, order: int,
    margin: float,
) -> tuple[np.ndarray, list[np.ndarray], list[tuple[int, int]]]:
    """Cell pixels, and per cell its row numbers (own, then margin) and the two counts."""
    primary_order = np.lexsort((h29, pix))
    cell_pix, starts = np.unique(pix[primary_order], return_index=True)
    bounds = np.r_[starts, len(pix)]
    xyz = _xyz(ra, dec)
    if margin > 0 and cell_pix.size:
        centers, verts, radius = _geometry(order, cell_pix)
        cand_lists = _candidate_lists(xyz, centers, radius, margin)
    else:
        cand_lists = [[]] * cell_pix.size
    rows: list[np.ndarray] = []
    sizes: list[tuple[int, int]] = []
    for i, pixel in enumerate(cell_pix):
        own = primary_order[bounds[i]:bounds[i + 1]]
        cand = np.asarray(cand_lists[i], dtype=np.int64)
        if cand.size:
            cand = cand[_margin_mask(xyz[cand], pix[cand], int(pixel), verts[i], margin,
                                        centers[i])]
            cand = cand[np.argsort(h29[cand], kind="stable")]
        rows.append(np.concatenate([own, cand]))
        sizes.append((own.size, cand.size))
    return cell_pix, rows, sizes


def partition_priors(
    df: pd.DataFrame, *, order: int, margin_arcsec: float
) -> list[CellSources]:
    """Cut a priors frame into HEALPix cells, each with its margin.

    Parameters
    ----------
    df : pandas.DataFrame
        Priors with ``ra``/``dec`` columns in degrees (see
        :func:`dask_phot.priors.read_priors`).
    order : int
        HEALPix order of the cells (see :func:`choose_order`).
    margin_arcsec : float
        Margin width around each cell, arcsec; 0 for none.

    Returns
    -------
    list of CellSources
        One per cell holding at least one source, sorted by pixel. Every input
        row is primary (``_primary=True``) in exactly one cell; ``_healpix_29``
        is (re)computed from ``ra``/``dec``.

    Examples
    --------
    >>> df = pd.DataFrame({"ra": [10.0, 10.0], "dec": [0.0, 30.0]})
    >>> [p.cell.pixel for p in partition_priors(df, order=2, margin_arcsec=0)]
    [70, 79]
    """
    order = _check_order(order)
    margin = _check_margin(margin_arcsec) * _ARCSEC
    ra, dec = _coords(df)
    h29 = healpix_29(ra, dec)
    frame = df.assign(**{HEALPIX_COLUMN: h29})
    if PRIMARY_COLUMN in frame.columns:
        frame = frame.drop(columns=PRIMARY_COLUMN)
    pix = h29 >> (2 * (MAX_ORDER - order))
    cell_pix, rows, sizes = _cell_rows(ra, dec, h29, pix, order, margin)
    if not sizes:
        return []
    cells = [Cell(order, int(p)) for p in cell_pix]
    flags = [np.r_[np.ones(n_own, bool), np.zeros(n_margin, bool)] for n_own, n_margin in sizes]
    taken = frame.take(np.concatenate(rows))
    taken[PRIMARY_COLUMN] = np.concatenate(flags)
    edges = np.r_[0, np.cumsum([sum(n) for n in sizes])]
    parts = [CellSources(cell, taken.iloc[edges[i]:edges[i + 1]])
             for i, cell in enumerate(cells)]
    logger.debug("partitioned %d sources into %d order-%d cells (%d margin rows)",
                 len(df), len(cells), order, int(edges[-1]) - len(df))
    return parts


def split_cell(part: CellSources, margin_arcsec: float) -> list[CellSources]:
    """A cell's four HEALPix children (those holding sources), each with its margin.

    A child's margin lies within its parent's cell and margin, so the parent's rows
    hold every source of it: the children are what :func:`partition_priors` makes of
    the whole catalog at the next order, for the parent's primary sources.

    Parameters
    ----------
    part : CellSources
        From :func:`partition_priors` (or an earlier split), with the margin
        ``margin_arcsec``.
    margin_arcsec : float
        The margin the cell was cut with.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> df = pd.DataFrame({"source_id": np.arange(400), "ra": 150 + rng.random(400) * 0.4,
    ...                    "dec": 2 + rng.random(400) * 0.4})
    >>> big = max(partition_priors(df, order=7, margin_arcsec=20.0), key=lambda p: p.n_primary)
    >>> kids = split_cell(big, 20.0)
    >>> direct = {p.cell: p for p in partition_priors(df, order=8, margin_arcsec=20.0)}
    >>> all(sorted(k.sources["source_id"]) == sorted(direct[k.cell].sources["source_id"])
    ...     for k in kids), sum(k.n_primary for k in kids) == big.n_primary
    (True, True)
    """
    cell = part.cell
    if cell.order >= MAX_ORDER:
        raise ValueError(f"cannot split cell {cell}: already at order {MAX_ORDER}")
    margin = _check_margin(margin_arcsec) * _ARCSEC
    src = part.sources.drop(columns=PRIMARY_COLUMN)
    ra, dec = _coords(src)
    h29 = src[HEALPIX_COLUMN].to_numpy(np.int64)
    order = cell.order + 1
    pix = h29 >> (2 * (MAX_ORDER - order))
    cell_pix, rows, sizes = _cell_rows(ra, dec, h29, pix, order, margin)
    kids = []
    for pixel, idx, (n_own, n_margin) in zip(cell_pix, rows, sizes, strict=True):
        if int(pixel) >> 2 != cell.pixel:  # a margin source's own cell: not a child
            continue
        taken = src.take(idx)
        taken[PRIMARY_COLUMN] = np.r_[np.ones(n_own, bool), np.zeros(n_margin, bool)]
        kids.append(CellSources(Cell(order, int(pixel)), taken))
    return kids


def _partition_frame(part: pd.DataFrame) -> pd.DataFrame:
    return part


def to_dask(parts: list[CellSources], *, meta: pd.DataFrame | None = None) -> Any:
    """A Dask DataFrame with one partition per cell, in the order of ``parts``.

    Parameters
    ----------
    parts : list of CellSources
        From :func:`partition_priors`.
    meta : pandas.DataFrame, optional
        Empty frame with the partitions' columns and dtypes; default the
        first part's, zero rows. Required when ``parts`` is empty.

    Returns
    -------
    dask.dataframe.DataFrame
        Partition ``i`` is ``parts[i].sources``. Divisions are unknown: margin
        rows belong to other cells, so no index range can bound a partition.

    Examples
    --------
    >>> df = pd.DataFrame({"ra": [10.0, 10.0], "dec": [0.0, 30.0]})
    >>> ddf = to_dask(partition_priors(df, order=2, margin_arcsec=0))
    >>> ddf.npartitions, len(ddf.compute())
    (2, 2)
    """
    import dask.dataframe as dd

    if meta is None:
        if not parts:
            raise ValueError("to_dask: no cells given and no meta to describe the columns")
        meta = parts[0].sources.iloc[:0]
    if not parts:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(_partition_frame, [p.sources for p in parts], meta=meta,
                       label="priors-cells", enforce_metadata=False)
