"""Locate a mosaic's 2-D image HDU from its header blocks alone.

A FITS file is a sequence of HDUs, each a header of 2880-byte blocks (80-character
cards, the last one ``END``) followed by its data, padded to a whole block. To read a
box of pixels we need only the image header (shape, BITPIX, BSCALE/BZERO/BLANK, WCS)
and the byte offset where its data starts; :func:`scan_image_hdu` finds them by
fetching header blocks incrementally, skipping the data of any HDU before the image.

A multi-extension mosaic (a JWST ``i2d`` file: SCI, ERR, CON, WHT, VAR_*; an HST
``drz`` file: SCI, WHT, CTX) is read by extension: :class:`ExtensionSpec` names the
HDU (``EXTNAME`` and optionally ``EXTVER``, or an index), as the ``[SCI]`` suffix of
a mosaic's URL does (:func:`dask_phot.images.split_extension`). Keywords that
pipelines keep in the primary header (instrument, filter, HST photometry) are
copied into the extension's header where it lacks them (:data:`INHERITED_KEYWORDS`).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError
from astropy.wcs import WCS

from dask_phot.images import _tiled
from dask_phot.images._errors import MosaicError
from dask_phot.images._tiled import TiledImage

__all__ = ["BLOCK", "INHERITED_KEYWORDS", "ExtensionSpec", "FitsImageLayout", "MosaicError",
           "ReadBytes", "pixel_dtype", "scan_image_hdu"]

log = logging.getLogger(__name__)

BLOCK = 2880
CARD = 80
_END_CARD = b"END" + b" " * (CARD - 3)
_FIRST_CHUNK = 4 * BLOCK
_MAX_CHUNK = 64 * BLOCK
_MAX_HEADER_BYTES = 64 * 1024 * 1024
#: Keywords of a header's structure, scaling and WCS: a card among them that cannot be
#: parsed is an error (wcslib would silently take a default instead).
_STRUCTURE_RE = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT|BSCALE|BZERO|BLANK|CTYPE\d|CUNIT\d|"
    r"CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|PV\d_\d+|LONPOLE|LATPOLE|RADESYS|"
    r"RADECSYS|EQUINOX|EPOCH|[AB]P?_(ORDER|\d+_\d+))$")
_BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}

#: ``read(start, end) -> bytes`` (fewer bytes, or none, past the end of the file).
ReadBytes = Callable[[int, int], bytes]

#: Primary-header keywords copied into an extension's header that lacks them: what
#: JWST and HST pipelines keep in the primary header but a reader of one extension
#: needs (instrument and filter for grouping, HST photometry for flux conversions).
INHERITED_KEYWORDS = ("TELESCOP", "INSTRUME", "DETECTOR", "FILTER", "FILTER1", "FILTER2",
                      "PUPIL", "PROGRAM", "PROPOSID", "TARGNAME", "TARGPROP", "EXPTIME",
                      "PHOTMODE", "PHOTFLAM", "PHOTFNU", "PHOTPLAM", "PHOTBW", "PHOTZPT")


@dataclass(frozen=True)
class ExtensionSpec:
    """Which HDU of a FITS file holds the image: by ``EXTNAME`` (and ``EXTVER``) or index.

    Examples
    --------
    >>> ExtensionSpec.parse("SCI"), ExtensionSpec.parse("sci,2").label
    (ExtensionSpec(name='SCI', version=None, index=None), 'SCI,2')
    >>> ExtensionSpec.parse("4").index
    4
    """

    name: str | None = None
    version: int | None = None
    index: int | None = None

    @classmethod
    def parse(cls, text: str) -> ExtensionSpec:
        """``"SCI"``, ``"SCI,2"`` (EXTNAME, EXTVER) or ``"3"`` (HDU index)."""
        name, _, ver = (part.strip() for part in text.partition(","))
        if name.isdigit() and not ver:
            return cls(index=int(name))
        if not name or (ver and not ver.isdigit()):
            raise MosaicError(f"bad FITS extension {text!r}: give EXTNAME, EXTNAME,EXTVER or "
                             "an HDU index")
        return cls(name=name.upper(), version=int(ver) if ver else None)

    @property
    def label(self) -> str:
        """As written in a URL suffix (without the brackets)."""
        if self.index is not None:
            return str(self.index)
        return self.name + (f",{self.version}" if self.version is not None else "")

    def matches(self, header: fits.Header, index: int) -> bool:
        """Whether HDU ``index`` with ``header`` is the one asked for."""
        if self.index is not None:
            return index == self.index
        name = str(header.get("EXTNAME", "PRIMARY" if index == 0 else "")).strip().upper()
        return name == self.name and (self.version is None
                                      or int(header.get("EXTVER", 1)) == self.version)


@dataclass(frozen=True)
class FitsImageLayout:
    """Where and how the pixels of one 2-D image HDU are stored.

    Attributes
    ----------
    shape : tuple of int
        ``(ny, nx)``.
    bitpix : int
        FITS BITPIX (8, 16, 32, 64, -32, -64).
    bscale, bzero : float
        Physical value = raw * BSCALE + BZERO.
    blank : int or None
        BLANK value of integer images.
    data_offset : int
        Byte offset of the first pixel in the file.
    hdu_index : int
        Index of the HDU in the file.
    header : astropy.io.fits.Header
        The HDU's header (of the image, for a tile-compressed one).
    tiles : TiledImage or None
        For a tile-compressed image (``ZIMAGE``): its tiles and where they are
        (:mod:`dask_phot.images._tiled`); ``data_offset`` is then its table's.
    """

    shape: tuple[int, int]
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None
    data_offset: int
    hdu_index: int
    header: fits.Header
    tiles: TiledImage | None = None


def pixel_dtype(bitpix: int) -> np.dtype:
    """Big-endian numpy dtype of a FITS BITPIX."""
    try:
        return np.dtype(_BITPIX_DTYPE[bitpix])
    except KeyError:
        raise MosaicError(f"invalid FITS BITPIX {bitpix!r}") from None


class _Reader:
    """Buffered forward reads of header blocks, through a ``ReadBytes`` callable."""

    def __init__(self, read: ReadBytes, url: str, first: bytes = b"") -> None:
        self.read = read
        self.url = url
        self.buf = first
        self.buf_start = 0
        self.chunk = _FIRST_CHUNK
        self.nbytes = len(first)

    def block(self, offset: int) -> bytes:
        """The 2880-byte block at ``offset`` (shorter or empty at end of file)."""
        lo = offset - self.buf_start
        if lo < 0 or lo + BLOCK > len(self.buf):
            data = self.read(offset, offset + self.chunk)
            self.nbytes += len(data)
            self.buf, self.buf_start, lo = data, offset, 0
            self.chunk = min(2 * self.chunk, _MAX_CHUNK)
        return self.buf[lo : lo + BLOCK]


def _parse_header(raw: bytes, url: str, offset: int) -> fits.Header:
    """A Header from raw card bytes; header warnings are logged, not raised."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MosaicError(f"{url}: header at byte {offset} is not ASCII: not a FITS file?"
                          ) from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        header = fits.Header.fromstring(text)
        for start in range(0, len(text), CARD):
            image = text[start:start + CARD]
            if _STRUCTURE_RE.match(image[:8].rstrip()) and image[8:10] == "= ":
                try:
                    fits.Card.fromstring(image).value  # noqa: B018 (parsing is the check)
                except VerifyError:
                    raise ValueError(f"{url}: header card {image[:8].rstrip()} (header at byte "
                                     f"{offset}) cannot be parsed: {image.rstrip()!r}") from None
    for w in caught:
        log.debug("%s: header at byte %d: %s", url, offset, w.message)
    return header


def _read_header(reader: _Reader, offset: int) -> tuple[fits.Header, int] | None:
    """Header starting at ``offset`` and its length in bytes; None at end of file."""
    blocks: list[bytes] = []
    pos = offset
    while True:
        block = reader.block(pos)
        if not blocks and not block.strip(b"\0"):
            return None
        if len(block) < BLOCK:
            raise MosaicError(
                f"{reader.url}: truncated FITS header at byte {pos} (file ends inside it)"
            )
        blocks.append(block)
        pos += BLOCK
        cards = (block[i : i + CARD] for i in range(0, BLOCK, CARD))
        if any(card == _END_CARD for card in cards):
            return _parse_header(b"".join(blocks), reader.url, offset), pos - offset
        if pos - offset > _MAX_HEADER_BYTES:
            raise MosaicError(f"{reader.url}: no END card in the header at byte {offset}")


def _data_size(header: fits.Header) -> int:
    """Size of an HDU's data in bytes, padded to whole blocks."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    if header.get("GROUPS", False) and dims[0] == 0:
        dims = dims[1:]
    size = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1))
    size *= int(header.get("PCOUNT", 0)) + math.prod(dims)
    return -(-size // BLOCK) * BLOCK


def _is_image(header: fits.Header, index: int) -> bool:
    """A 2-D image (extra axes of length 1 allowed), primary or IMAGE extension."""
    if index > 0 and str(header.get("XTENSION", "")).strip() != "IMAGE":
        return False
    naxis = int(header.get("NAXIS", 0))
    if naxis < 2:
        return False
    dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    return dims[0] > 0 and dims[1] > 0 and all(d == 1 for d in dims[2:])


def _layout(header: fits.Header, index: int, data_offset: int, url: str,
            tiles: TiledImage | None = None) -> FitsImageLayout:
    bitpix = int(header["BITPIX"])
    pixel_dtype(bitpix)
    blank = header.get("BLANK") if bitpix > 0 else None
    try:
        bscale = float(header.get("BSCALE", 1.0))
        bzero = float(header.get("BZERO", 0.0))
    except (TypeError, ValueError):
        raise MosaicError(f"{url}: HDU {index} has a non-numeric BSCALE or BZERO") from None
    return FitsImageLayout(
        shape=(int(header["NAXIS2"]), int(header["NAXIS1"])),
        bitpix=bitpix,
        bscale=bscale,
        bzero=bzero,
        blank=None if blank is None else int(blank),
        data_offset=data_offset,
        hdu_index=index,
        header=header,
        tiles=tiles,
    )


def _describe(header: fits.Header, index: int) -> str:
    name = str(header.get("EXTNAME", "PRIMARY" if index == 0 else "")).strip() or f"HDU {index}"
    kind = "" if index == 0 else str(header.get("XTENSION", "")).strip()
    naxis = int(header.get("NAXIS", 0))
    dims = "x".join(str(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1))
    return f"{name} ({kind + ' ' if kind not in ('', 'IMAGE') else ''}{dims or 'no data'})"


def _inherit(header: fits.Header, primary: fits.Header | None) -> fits.Header:
    """``header`` with :data:`INHERITED_KEYWORDS` it lacks copied from ``primary``."""
    if primary is None:
        return header
    missing = [k for k in INHERITED_KEYWORDS if k in primary and k not in header]
    if not missing:
        return header
    header = header.copy()
    for key in missing:
        header[key] = (primary[key], "(from the primary header)")
    return header


def _tiled_layout(reader: _Reader, header: fits.Header, index: int, data_offset: int,
                  where: str) -> FitsImageLayout:
    """The layout of a tile-compressed image HDU, its tile table read."""

    size = _tiled.table_size(header)
    table = reader.read(data_offset, data_offset + size) if size else b""
    reader.nbytes += len(table)
    tiles = _tiled.parse_tiled(header, table, data_offset, f"{where} (HDU {index})")
    return _layout(_tiled.image_header(header), index, data_offset, where, tiles)


def scan_image_hdu(read: ReadBytes, url: str, *, first: bytes = b"",
                   extension: ExtensionSpec | None = None) -> tuple[FitsImageLayout, int]:
    """Find a 2-D image HDU of a FITS file, reading header blocks only.

    Parameters
    ----------
    read : callable
        ``read(start, end) -> bytes`` on the file.
    url : str
        The file, for error messages.
    first : bytes
        Bytes already read from the start of the file, if any.
    extension : ExtensionSpec, optional
        The HDU to use; default the first 2-D image HDU. Its header gets the
        primary header's :data:`INHERITED_KEYWORDS` it lacks.

    Returns
    -------
    layout : FitsImageLayout
        The image's storage.
    nbytes : int
        Bytes fetched (including ``first``).

    Raises
    ------
    MosaicError
        Not a FITS file, truncated, tile-compressed in a way that cannot be read
        (:mod:`dask_phot.images._tiled`), without a 2-D image HDU, or without the
        extension asked for (the message lists the file's HDUs).
    """
    reader = _Reader(read, url, first)
    if not reader.block(0).startswith(b"SIMPLE  ="):
        raise MosaicError(f"{url}: not a FITS file (it does not start with SIMPLE =)")
    offset, index = 0, 0
    primary: fits.Header | None = None
    seen: list[str] = []
    where = url if extension is None else f"{url}[{extension.label}]"
    while True:
        found = _read_header(reader, offset)
        if found is None:
            break
        header, header_len = found
        primary = header if index == 0 else primary
        seen.append(_describe(header, index))
        wanted = extension is None or extension.matches(header, index)
        if wanted and header.get("ZIMAGE", False):
            layout = _tiled_layout(reader, header, index, offset + header_len, where)
            return _layout(_inherit(layout.header, primary if index else None), index,
                           layout.data_offset, url, layout.tiles), reader.nbytes
        if wanted and _is_image(header, index):
            header = _inherit(header, primary if index else None)
            return _layout(header, index, offset + header_len, url), reader.nbytes
        if wanted and extension is not None:
            raise MosaicError(f"{where}: HDU {index} ({seen[-1]}) is not a 2-D image")
        offset += header_len + _data_size(header)
        index += 1
    if extension is not None:
        raise MosaicError(f"{url}: no extension {extension.label} (its HDUs: "
                          f"{', '.join(seen)})")
    raise MosaicError(f"{url}: no 2-D image HDU among its {index} HDU(s)")


def celestial_wcs(header: fits.Header, url: str) -> WCS:
    """The celestial WCS of an image header, pixel axes 1 and 2 being (lon, lat).

    Raises
    ------
    ValueError
        If the header has no celestial WCS on its first two axes.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wcs = WCS(header, naxis=2)
        except Exception as err:
            raise MosaicError(f"{url}: invalid WCS in the image header: {err}") from err
    for w in caught:
        log.debug("%s: WCS: %s", url, w.message)
    if not wcs.has_celestial or wcs.naxis != 2 or {wcs.wcs.lng, wcs.wcs.lat} != {0, 1}:
        ctype = [header.get("CTYPE1"), header.get("CTYPE2")]
        raise MosaicError(
            f"{url}: no celestial WCS on the image axes (CTYPE1/CTYPE2 = {ctype}); "
            "a mosaic needs e.g. RA---TAN/DEC--TAN"
        )
    wcs.pixel_shape = (int(header["NAXIS1"]), int(header["NAXIS2"]))
    return wcs
