"""Locate a mosaic's 2-D image HDU from its header blocks alone.

A FITS file is a sequence of HDUs, each a header of 2880-byte blocks (80-character
cards, the last one ``END``) followed by its data, padded to a whole block. To read a
box of pixels we need only the image header (shape, BITPIX, BSCALE/BZERO/BLANK, WCS)
and the byte offset where its data starts; :func:`scan_image_hdu` finds them by
fetching header blocks incrementally, skipping the data of any HDU before the image.
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

__all__ = ["BLOCK", "FitsImageLayout", "ReadBytes", "pixel_dtype", "scan_image_hdu"]

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
        The HDU's header.
    """

    shape: tuple[int, int]
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None
    data_offset: int
    hdu_index: int
    header: fits.Header


def pixel_dtype(bitpix: int) -> np.dtype:
    """Big-endian numpy dtype of a FITS BITPIX."""
    try:
        return np.dtype(_BITPIX_DTYPE[bitpix])
    except KeyError:
        raise ValueError(f"invalid FITS BITPIX {bitpix!r}") from None


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
        raise ValueError(f"{url}: header at byte {offset} is not ASCII: not a FITS file?") from None
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
            raise ValueError(
                f"{reader.url}: truncated FITS header at byte {pos} (file ends inside it)"
            )
        blocks.append(block)
        pos += BLOCK
        cards = (block[i : i + CARD] for i in range(0, BLOCK, CARD))
        if any(card == _END_CARD for card in cards):
            return _parse_header(b"".join(blocks), reader.url, offset), pos - offset
        if pos - offset > _MAX_HEADER_BYTES:
            raise ValueError(f"{reader.url}: no END card in the header at byte {offset}")


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


def _layout(header: fits.Header, index: int, data_offset: int, url: str) -> FitsImageLayout:
    bitpix = int(header["BITPIX"])
    pixel_dtype(bitpix)
    blank = header.get("BLANK") if bitpix > 0 else None
    try:
        bscale = float(header.get("BSCALE", 1.0))
        bzero = float(header.get("BZERO", 0.0))
    except (TypeError, ValueError):
        raise ValueError(f"{url}: HDU {index} has a non-numeric BSCALE or BZERO") from None
    return FitsImageLayout(
        shape=(int(header["NAXIS2"]), int(header["NAXIS1"])),
        bitpix=bitpix,
        bscale=bscale,
        bzero=bzero,
        blank=None if blank is None else int(blank),
        data_offset=data_offset,
        hdu_index=index,
        header=header,
    )


def scan_image_hdu(read: ReadBytes, url: str, *, first: bytes = b"") -> tuple[FitsImageLayout, int]:
    """Find the first 2-D image HDU of a FITS file, reading header blocks only.

    Parameters
    ----------
    read : callable
        ``read(start, end) -> bytes`` on the file.
    url : str
        The file, for error messages.
    first : bytes
        Bytes already read from the start of the file, if any.

    Returns
    -------
    layout : FitsImageLayout
        The image's storage.
    nbytes : int
        Bytes fetched (including ``first``).

    Raises
    ------
    ValueError
        Not a FITS file, truncated, tile-compressed, or without a 2-D image HDU.
    """
    reader = _Reader(read, url, first)
    if not reader.block(0).startswith(b"SIMPLE  ="):
        raise ValueError(f"{url}: not a FITS file (it does not start with SIMPLE =)")
    offset, index = 0, 0
    while True:
        found = _read_header(reader, offset)
        if found is None:
            break
        header, header_len = found
        if header.get("ZIMAGE", False):
            raise ValueError(
                f"{url}: HDU {index} is a tile-compressed (fpack) image, which cannot be read "
                "by section; decompress it first (e.g. funpack)"
            )
        if _is_image(header, index):
            return _layout(header, index, offset + header_len, url), reader.nbytes
        offset += header_len + _data_size(header)
        index += 1
    raise ValueError(f"{url}: no 2-D image HDU among its {index} HDU(s)")


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
            raise ValueError(f"{url}: invalid WCS in the image header: {err}") from err
    for w in caught:
        log.debug("%s: WCS: %s", url, w.message)
    if not wcs.has_celestial or wcs.naxis != 2 or {wcs.wcs.lng, wcs.wcs.lat} != {0, 1}:
        ctype = [header.get("CTYPE1"), header.get("CTYPE2")]
        raise ValueError(
            f"{url}: no celestial WCS on the image axes (CTYPE1/CTYPE2 = {ctype}); "
            "a mosaic needs e.g. RA---TAN/DEC--TAN"
        )
    wcs.pixel_shape = (int(header["NAXIS1"]), int(header["NAXIS2"]))
    return wcs
