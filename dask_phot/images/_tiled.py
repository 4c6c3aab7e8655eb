"""Boxes of tile-compressed FITS images, fetching and decompressing only the tiles they meet.

The FITS standard's tiled image compression (section 10 of FITS 4.0; what ``fpack`` and
astropy's ``CompImageHDU`` write) stores an image as a binary table, ``ZIMAGE = T``: one
row per rectangular tile (``ZTILE1`` x ``ZTILE2`` pixels, the last ones cut at the image
edge; fpack's default is one image row per tile), whose ``COMPRESSED_DATA`` column points
into the table's heap where the tile's compressed bytes are. Unlike a plain image, whose
rows are contiguous, a box of a tiled image is a few heap ranges whatever the image's
width: to read a box we fetch the table (a few bytes per tile: :func:`parse_tiled` at
index time), then the heap bytes of the tiles that meet the box (:func:`plan_tiles`,
ranges merged where that is quicker under :class:`~dask_phot.images.read.ReadCosts`),
and decompress them (:func:`assemble_boxes`).

Supported: ``GZIP_1``, ``GZIP_2`` (bytes shuffled), ``RICE_1`` and ``NOCOMPRESS``, integer
and floating-point images, floats stored losslessly (``ZQUANTIZ = 'NONE'``) or quantized
(``NO_DITHER``, ``SUBTRACTIVE_DITHER_1`` and ``_2`` with ``ZDITHER0``; ``ZSCALE``/``ZZERO``
per tile; quantized ``ZBLANK`` becomes NaN; tiles that could not be quantized, in the
``GZIP_COMPRESSED_DATA`` or ``UNCOMPRESSED_DATA`` column). Other algorithms
(``HCOMPRESS_1``, ``PLIO_1``) raise one :class:`~dask_phot.images.MosaicError` line.
GZIP is decoded with the standard library; RICE_1 with astropy's codec (:func:`_rice_decoder`,
the one place that imports astropy's private compression module).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits

from dask_phot.images import _io
from dask_phot.images._errors import MosaicError

__all__ = ["SUPPORTED", "TilePlan", "TiledImage", "assemble_boxes", "image_header",
           "parse_tiled", "plan_tiles", "table_size"]

#: Compression algorithms read (``RICE_ONE`` is an old name of RICE_1).
SUPPORTED = ("GZIP_1", "GZIP_2", "RICE_1", "RICE_ONE", "NOCOMPRESS")
_QUANTIZE = ("NONE", "NO_DITHER", "SUBTRACTIVE_DITHER_1", "SUBTRACTIVE_DITHER_2")
_N_RANDOM = 10000
_ZERO_VALUE = -2147483646  # SUBTRACTIVE_DITHER_2's exact zero
_TFORM_RE = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])([BIJKED])?")
_ITEM = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16,
         "P": 8, "Q": 16}
_CODE_DTYPE = {"B": ">u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8"}
_BITPIX_DTYPE = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32,
                 -64: np.float64}
#: Cards of the compressed table's structure, dropped from the image header.
_TABLE_KEYS = re.compile(r"^(XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|TFIELDS|THEAP|T(TYPE|FORM|UNIT|"
                         r"SCAL|ZERO|NULL|DIM|DISP)\d+|Z(IMAGE|CMPTYPE|BITPIX|NAXIS\d*|TILE\d+|"
                         r"NAME\d+|VAL\d+|MASKCMP|QUANTIZ|DITHER0|SIMPLE|TENSION|EXTEND|BLOCKED|"
                         r"PCOUNT|GCOUNT|HECKSUM|DATASUM|BLANK)|CHECKSUM|DATASUM)$")


class _Column(NamedTuple):
    """A table column: byte offset in a row and its TFORM's parts."""

    offset: int
    repeat: int
    code: str
    element: str | None


@dataclass(frozen=True, eq=False)
class TiledImage:
    """How a tile-compressed image is stored: its tiles, their heap ranges and parameters.

    Attributes
    ----------
    shape, tile : tuple of int
        ``(ny, nx)`` of the image and of a whole tile.
    zbitpix : int
        BITPIX of the image.
    algorithm : str
        ``ZCMPTYPE``.
    blocksize, bytepix : int
        RICE_1 parameters.
    quantize : str
        ``ZQUANTIZ`` of a float image (``"NONE"`` when stored losslessly).
    dither0 : int
        ``ZDITHER0``.
    heap : int
        Byte offset of the heap in the file.
    ranges : dict of str to numpy.ndarray
        ``(n tiles, 2)`` ``(bytes, heap offset)`` of each tile in the ``COMPRESSED_DATA``,
        ``GZIP_COMPRESSED_DATA`` and ``UNCOMPRESSED_DATA`` columns the table has.
    raw_dtype : str or None
        Element type of ``UNCOMPRESSED_DATA``.
    zscale, zzero, zblank : numpy.ndarray or None
        Per-tile columns.
    blank : int or None
        ``ZBLANK`` keyword (or the image's ``BLANK``).
    """

    shape: tuple[int, int]
    tile: tuple[int, int]
    zbitpix: int
    algorithm: str
    blocksize: int
    bytepix: int
    quantize: str
    dither0: int
    heap: int
    ranges: dict[str, np.ndarray] = field(repr=False)
    raw_dtype: str | None = None
    zscale: np.ndarray | None = field(default=None, repr=False)
    zzero: np.ndarray | None = field(default=None, repr=False)
    zblank: np.ndarray | None = field(default=None, repr=False)
    blank: int | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """Tiles along y and x."""
        return -(-self.shape[0] // self.tile[0]), -(-self.shape[1] // self.tile[1])

    def tile_box(self, k: int) -> tuple[int, int, int, int]:
        """``(x0, x1, y0, y1)`` of tile ``k`` (row-major, x fastest)."""
        ty, tx = divmod(int(k), self.grid[1])
        y0, x0 = ty * self.tile[0], tx * self.tile[1]
        return x0, min(x0 + self.tile[1], self.shape[1]), y0, min(y0 + self.tile[0], self.shape[0])

    def tiles_meeting(self, box: Sequence[int]) -> np.ndarray:
        """Indices of the tiles that meet an in-bounds box ``(x0, x1, y0, y1)``."""
        x0, x1, y0, y1 = box
        tys = np.arange(y0 // self.tile[0], (y1 - 1) // self.tile[0] + 1)
        txs = np.arange(x0 // self.tile[1], (x1 - 1) // self.tile[1] + 1)
        return (tys[:, None] * self.grid[1] + txs[None, :]).ravel()


def _parse_tform(tform: str, url: str, n: int) -> tuple[int, str, str | None]:
    match = _TFORM_RE.match(str(tform))
    if match is None:
        raise MosaicError(f"{url}: cannot parse TFORM{n} = {tform!r} of a compressed image")
    return int(match[1] or 1), match[2], match[3]


def _columns(header: fits.Header, url: str) -> dict[str, _Column]:
    """Every column of the table by TTYPE, with its byte offset in a row."""
    columns, offset = {}, 0
    for n in range(1, int(header.get("TFIELDS", 0)) + 1):
        repeat, code, element = _parse_tform(header.get(f"TFORM{n}", ""), url, n)
        name = str(header.get(f"TTYPE{n}", "")).strip().upper()
        columns[name] = _Column(offset, repeat, code, element)
        offset += -(-repeat // 8) if code == "X" else repeat * _ITEM[code]
    if offset != int(header["NAXIS1"]):
        raise MosaicError(f"{url}: the compressed image's columns take {offset} bytes a row, "
                          f"NAXIS1 says {header['NAXIS1']}")
    return columns


def _column(table: np.ndarray, col: _Column, dtype: str, count: int = 1) -> np.ndarray:
    """Values of a fixed-size column from the raw table (``(n rows, row bytes)`` uint8)."""
    size = np.dtype(dtype).itemsize * count
    raw = np.ascontiguousarray(table[:, col.offset:col.offset + size])
    return raw.view(dtype).reshape(len(table), count).astype(np.dtype(dtype).newbyteorder("="))


def _descriptors(table: np.ndarray, col: _Column) -> np.ndarray:
    """``(bytes, heap offset)`` of a variable-length array column."""
    pairs = _column(table, col, ">i4" if col.code == "P" else ">i8", 2).astype(np.int64)
    pairs[:, 0] *= _ITEM[col.element or "B"]
    return pairs


def _setting(header: fits.Header, name: str, default: int) -> int:
    for n in range(1, 1000):
        if f"ZNAME{n}" not in header:
            break
        if str(header[f"ZNAME{n}"]).strip().upper() == name:
            return int(header[f"ZVAL{n}"])
    return default


def _check(header: fits.Header, url: str) -> tuple[str, int]:
    """The algorithm and ZBITPIX, or a MosaicError naming what cannot be read."""
    algorithm = str(header.get("ZCMPTYPE", "")).strip().upper()
    if algorithm not in SUPPORTED:
        raise MosaicError(f"{url}: tile compression {algorithm or '(no ZCMPTYPE)'} is not "
                          f"supported (only {', '.join(SUPPORTED[:3])} and NOCOMPRESS); "
                          "recompress it (e.g. fpack -g2) or decompress it (funpack)")
    zbitpix = int(header.get("ZBITPIX", 0))
    if zbitpix not in _BITPIX_DTYPE:
        raise MosaicError(f"{url}: compressed image with invalid ZBITPIX {zbitpix}")
    dims = [int(header.get(f"ZNAXIS{i}", 0)) for i in range(1, int(header.get("ZNAXIS", 0)) + 1)]
    if len(dims) < 2 or min(dims[:2]) < 1 or any(d != 1 for d in dims[2:]):
        raise MosaicError(f"{url}: the compressed image is not 2-D (ZNAXISn = {dims})")
    if any(int(header.get(f"ZTILE{i}", 1)) != 1 for i in range(3, len(dims) + 1)):
        raise MosaicError(f"{url}: tiles span more than one plane of the compressed image")
    quantize = str(header.get("ZQUANTIZ", "NO_DITHER")).strip().upper()
    if quantize not in _QUANTIZE:
        raise MosaicError(f"{url}: ZQUANTIZ = {quantize!r} is not one of {', '.join(_QUANTIZE)}")
    return algorithm, zbitpix


def table_size(header: fits.Header) -> int:
    """Bytes of a compressed image's table (its tile descriptors), before the heap."""
    return int(header["NAXIS1"]) * int(header["NAXIS2"])


def parse_tiled(header: fits.Header, table: bytes, data_offset: int, url: str) -> TiledImage:
    """The storage of a tile-compressed image from its table header and table bytes.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The compressed image's BINTABLE header (``ZIMAGE = T``).
    table : bytes
        Its table, :func:`table_size` bytes from ``data_offset``.
    data_offset : int
        Byte offset of the table in the file.
    url : str
        The file, for error messages.

    Raises
    ------
    MosaicError
        An algorithm or layout that cannot be read, or a table that does not match the header.
    """
    algorithm, zbitpix = _check(header, url)
    nx, ny = int(header["ZNAXIS1"]), int(header["ZNAXIS2"])
    tile = (int(header.get("ZTILE2", 1)), int(header.get("ZTILE1", nx)))
    columns = _columns(header, url)
    n_tiles = -(-ny // tile[0]) * -(-nx // tile[1])
    if int(header["NAXIS2"]) != n_tiles or len(table) != table_size(header):
        raise MosaicError(f"{url}: the compressed image's table has {header['NAXIS2']} rows "
                          f"({len(table)} bytes read) for {n_tiles} tiles")
    rows = np.frombuffer(table, np.uint8).reshape(n_tiles, int(header["NAXIS1"]))
    ranges = {name: _descriptors(rows, col) for name, col in columns.items()
              if name.endswith("COMPRESSED_DATA") or name == "UNCOMPRESSED_DATA"}
    if "COMPRESSED_DATA" not in ranges:
        raise MosaicError(f"{url}: the compressed image has no COMPRESSED_DATA column")
    per_tile = {name: _column(rows, columns[name], _CODE_DTYPE[columns[name].code]).ravel()
                for name in ("ZSCALE", "ZZERO", "ZBLANK") if name in columns}
    raw = columns.get("UNCOMPRESSED_DATA")
    quantize = str(header.get("ZQUANTIZ", "NO_DITHER")).strip().upper()
    blank = header.get("ZBLANK", header.get("BLANK"))
    return TiledImage(
        shape=(ny, nx), tile=tile, zbitpix=zbitpix, algorithm=algorithm,
        blocksize=_setting(header, "BLOCKSIZE", 32), bytepix=_setting(header, "BYTEPIX", 4),
        quantize=quantize if "ZSCALE" in per_tile else "NONE",
        dither0=int(header.get("ZDITHER0", 0)),
        heap=data_offset + int(header.get("THEAP", table_size(header))), ranges=ranges,
        raw_dtype=None if raw is None else _CODE_DTYPE[raw.element or "B"],
        zscale=per_tile.get("ZSCALE"), zzero=per_tile.get("ZZERO"), zblank=per_tile.get("ZBLANK"),
        blank=None if blank is None else int(blank))


def image_header(header: fits.Header) -> fits.Header:
    """The header of the image a compressed table holds (BITPIX, NAXISn, its own keywords).

    Examples
    --------
    >>> h = fits.Header({"XTENSION": "BINTABLE", "BITPIX": 8, "NAXIS": 2, "NAXIS1": 8,
    ...                  "NAXIS2": 2, "ZIMAGE": True, "ZBITPIX": -32, "ZNAXIS": 2,
    ...                  "ZNAXIS1": 30, "ZNAXIS2": 20, "BUNIT": "MJy/sr"})
    >>> out = image_header(h)
    >>> out["BITPIX"], out["NAXIS1"], out["NAXIS2"], out["BUNIT"], "ZIMAGE" in out
    (-32, 30, 20, 'MJy/sr', False)
    """
    zn = int(header["ZNAXIS"])
    cards = [("XTENSION", "IMAGE"), ("BITPIX", int(header["ZBITPIX"])), ("NAXIS", zn)]
    cards += [(f"NAXIS{i}", int(header[f"ZNAXIS{i}"])) for i in range(1, zn + 1)]
    cards += [("PCOUNT", 0), ("GCOUNT", 1)]
    if int(header["ZBITPIX"]) > 0 and "ZBLANK" in header and "BLANK" not in header:
        cards.append(("BLANK", int(header["ZBLANK"])))
    out = fits.Header(cards)
    for card in header.cards:
        if not _TABLE_KEYS.match(card.keyword):
            out.append(card, end=True)
    return out


class TilePlan(NamedTuple):
    """The heap ranges to fetch for some tiles of a tiled image.

    Attributes
    ----------
    tiles : numpy.ndarray
        The tiles' indices, ascending.
    starts, ends : list of int
        Half-open byte ranges of the file, one request each.
    pieces : dict
        Per tile: ``(column, range index, offset in that range, bytes)``.
    needed : int
        Bytes of the tiles themselves (what the ranges hold besides gaps read through).
    """

    tiles: np.ndarray
    starts: list[int]
    ends: list[int]
    pieces: dict[int, tuple[str, int, int, int]]
    needed: int


def _piece(t: TiledImage, k: int, url: str) -> tuple[str, int, int]:
    """``(column, file offset, bytes)`` of tile ``k``'s stored data."""
    for name in ("COMPRESSED_DATA", "GZIP_COMPRESSED_DATA", "UNCOMPRESSED_DATA"):
        if name in t.ranges and t.ranges[name][k, 0] > 0:
            nbytes, offset = (int(v) for v in t.ranges[name][k])
            return name, t.heap + offset, nbytes
    raise MosaicError(f"{url}: tile {k} of the compressed image has no data")


def _gap_limit(gaps: np.ndarray, needed: int, n: int, costs: Any) -> int:
    """Largest gap to read through: the quickest plan under ``costs`` (``seconds(n, bytes)``)
    among those reading at most ``costs.max_overread`` times the tiles' bytes."""
    order = np.sort(gaps[gaps > 0])
    nbytes = needed + np.concatenate([[0], np.cumsum(order)])
    n_req = n - np.count_nonzero(gaps <= 0) - np.arange(order.size + 1)
    best, limit = np.inf, 0
    for k in range(order.size + 1):
        if k and nbytes[k] > costs.max_overread * needed:
            break
        if 0 < k < order.size and order[k] == order[k - 1]:
            continue  # every gap of one size is read through, or none
        t = costs.seconds(int(n_req[k]), int(nbytes[k]))
        if t < best:
            best, limit = t, int(order[k - 1]) if k else 0
    return limit


def plan_tiles(t: TiledImage, boxes: Sequence[Sequence[int]], url: str, *, costs: Any,
               max_gap: int | None = None) -> TilePlan:
    """The requests fetching the tiles that meet in-bounds boxes ``(x0, x1, y0, y1)``.

    Tiles next to each other in the heap (those of one tile row, as written) are one
    request; gaps between tiles are read through where ``max_gap`` allows, or by default
    where that is quicker under ``costs`` (a :class:`~dask_phot.images.read.ReadCosts`)
    and keeps the bytes within ``costs.max_overread`` times the tiles'. A request holds
    at most 16 MiB unless one tile is larger.
    """
    tiles = np.unique(np.concatenate([t.tiles_meeting(b) for b in boxes]))
    found = sorted(((*_piece(t, int(k), url), int(k)) for k in tiles), key=lambda p: p[1])
    starts = np.array([p[1] for p in found], np.int64)
    ends = starts + np.array([p[2] for p in found], np.int64)
    needed = int((ends - starts).sum())
    gaps = starts[1:] - np.maximum.accumulate(ends)[:-1]
    limit = max_gap if max_gap is not None else _gap_limit(gaps, needed, len(found), costs)
    req_starts: list[int] = []
    req_ends: list[int] = []
    pieces: dict[int, tuple[str, int, int, int]] = {}
    for column, start, nbytes, k in found:
        end = start + nbytes
        if (not req_starts or start - req_ends[-1] > limit
                or (end - req_starts[-1] > _io.MAX_REQUEST and start >= req_ends[-1])):
            req_starts.append(start)
            req_ends.append(end)
        req_ends[-1] = max(req_ends[-1], end)
        pieces[k] = (column, len(req_starts) - 1, start - req_starts[-1], nbytes)
    return TilePlan(tiles, req_starts, req_ends, pieces, needed)


@functools.cache
def _randoms() -> np.ndarray:
    """The standard's 10,000 uniform deviates for subtractive dithering (float32)."""
    a, m, seed = 16807.0, 2147483647.0, 1.0
    out = np.empty(_N_RANDOM, np.float32)
    for i in range(_N_RANDOM):
        temp = a * seed
        seed = temp - m * int(temp / m)
        out[i] = seed / m
    if int(seed) != 1043618065:
        raise RuntimeError("the dithering random sequence is wrong (this is a bug)")
    return out


def _dither(n: int, row: int) -> np.ndarray:
    """The deviates subtracted from the ``n`` pixels of table row ``row`` (1-based,
    ZDITHER0 added), as float64 values of the float32 table."""
    rand = _randoms()
    out = np.empty(n, np.float32)
    iseed, pos = (row - 1) % _N_RANDOM, 0
    while pos < n:
        first = int(rand[iseed] * np.float32(500))
        take = min(_N_RANDOM - first, n - pos)
        out[pos:pos + take] = rand[first:first + take]
        pos += take
        iseed = (iseed + 1) % _N_RANDOM
    return out.astype(np.float64)


def _dequantize(t: TiledImage, k: int, q: np.ndarray) -> np.ndarray:
    """Float values of a quantized tile; NaN where it holds the blank value."""
    assert t.zscale is not None and t.zzero is not None
    scale, zero = float(t.zscale[k]), float(t.zzero[k])
    values = q.astype(np.float64)
    if t.quantize == "NO_DITHER":
        values = values * scale + zero
    else:
        values = (values - _dither(q.size, k + t.dither0).reshape(q.shape) + 0.5) * scale + zero
        if t.quantize == "SUBTRACTIVE_DITHER_2":
            values[q == _ZERO_VALUE] = 0.0
    values = values.astype(_BITPIX_DTYPE[t.zbitpix])
    blank = t.blank if t.zblank is None else int(t.zblank[k])
    if blank is not None:
        values[q == blank] = np.nan
    return values


@functools.cache
def _rice_decoder() -> Callable[[bytes, int, int, int], np.ndarray]:
    """astropy's RICE_1 decoder (a private module of astropy.io.fits; imported here only)."""
    try:
        from astropy.io.fits.hdu.compressed._codecs import Rice1
    except ImportError as err:  # pragma: no cover - depends on the astropy version
        raise MosaicError(f"RICE_1 tiles need astropy's compression codecs, which this astropy "
                          f"does not have ({err}); recompress the file with GZIP_2") from err

    def decode(buf: bytes, blocksize: int, bytepix: int, tilesize: int) -> np.ndarray:
        codec = Rice1(blocksize=blocksize, bytepix=bytepix, tilesize=tilesize)
        return np.asarray(codec.decode(np.frombuffer(buf, np.uint8)))

    return decode


def _typed(data: bytes, npix: int, zbitpix: int, floats: bool, url: str) -> np.ndarray:
    """Decompressed GZIP/NOCOMPRESS bytes as big-endian values (their size says which)."""
    itemsize = len(data) // npix
    if itemsize * npix != len(data) or itemsize not in (1, 2, 4, 8):
        raise MosaicError(f"{url}: a tile decompresses to {len(data)} bytes for {npix} pixels")
    code = {1: "u", 2: "i", 4: "f" if floats else "i", 8: "f" if floats else "i"}[itemsize]
    return np.frombuffer(data, f">{code}{itemsize}")


def _gunzip(buf: bytes, url: str, k: int) -> bytes:
    try:
        return zlib.decompress(buf, 47)  # gzip or zlib stream
    except zlib.error as err:
        raise MosaicError(f"{url}: tile {k} of the compressed image is corrupt ({err})") from err


def _decode(t: TiledImage, k: int, column: str, buf: bytes, url: str) -> np.ndarray:
    """Tile ``k`` as ``(ny, nx)`` values: integers of ZBITPIX, or floats with NaN."""
    x0, x1, y0, y1 = t.tile_box(k)
    shape, npix = (y1 - y0, x1 - x0), (y1 - y0) * (x1 - x0)
    floats = t.zbitpix < 0
    if column == "UNCOMPRESSED_DATA":
        values = np.frombuffer(buf, t.raw_dtype)
    elif column == "GZIP_COMPRESSED_DATA":  # a float tile that could not be quantized
        values = _typed(_gunzip(buf, url, k), npix, t.zbitpix, True, url)
    elif t.algorithm in ("RICE_1", "RICE_ONE"):
        values = _rice_decoder()(buf, t.blocksize, t.bytepix, npix)[:npix]
        values = values.view(np.uint8) if t.bytepix == 1 else values
    else:
        data = buf if t.algorithm == "NOCOMPRESS" else _gunzip(buf, url, k)
        size = len(data) // npix
        if t.algorithm == "GZIP_2" and size > 1 and size * npix == len(data):
            data = np.frombuffer(data, np.uint8).reshape(size, npix).T.tobytes()
        values = _typed(data, npix, t.zbitpix, floats and t.quantize == "NONE", url)
    if values.size != npix:
        raise MosaicError(f"{url}: tile {k} holds {values.size} values for {npix} pixels")
    values = values.reshape(shape)
    if column == "COMPRESSED_DATA" and floats and t.quantize != "NONE":
        return _dequantize(t, k, values)
    out = values.astype(_BITPIX_DTYPE[t.zbitpix])
    blank = t.blank if t.zblank is None else int(t.zblank[k])
    if blank is not None and column == "COMPRESSED_DATA":
        hit = values == blank
        if hit.any():
            out[hit] = np.nan if floats else (t.blank if t.blank is not None else blank)
    return out


def assemble_boxes(t: TiledImage, plan: TilePlan, parts: Sequence[bytes],
                   boxes: Sequence[Sequence[int]], url: str) -> list[np.ndarray]:
    """The stored values of in-bounds boxes ``(x0, x1, y0, y1)`` from the fetched ranges
    of ``plan``: integers of ZBITPIX (BLANK kept), or floats with NaN for blank pixels.

    Each tile is decompressed once, however many boxes it meets.
    """
    tiles: dict[int, np.ndarray] = {}
    out = []
    for box in boxes:
        x0, x1, y0, y1 = box
        arr = np.empty((y1 - y0, x1 - x0), _BITPIX_DTYPE[t.zbitpix])
        for k in t.tiles_meeting(box):
            k = int(k)
            tile = tiles.get(k)
            if tile is None:
                column, index, lo, nbytes = plan.pieces[k]
                tile = _decode(t, k, column, parts[index][lo:lo + nbytes], url)
                if len(boxes) > 1:  # kept for the next boxes
                    tiles[k] = tile
            tx0, tx1, ty0, ty1 = t.tile_box(k)
            ix0, ix1, iy0, iy1 = max(x0, tx0), min(x1, tx1), max(y0, ty0), min(y1, ty1)
            arr[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = tile[iy0 - ty0:iy1 - ty0,
                                                             ix0 - tx0:ix1 - tx0]
        out.append(arr)
    return out
