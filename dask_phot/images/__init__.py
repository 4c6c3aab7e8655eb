"""Mosaics: an index built from FITS headers alone, and lazy reads of sky regions.

The pipeline reads, for each sky cell and band, only the box of the band's mosaic that
the cell needs, from local disk, S3 or HTTP:

>>> index = build_index("data/irac1_*_sci.fits", "data/irac1_*_wht.fits",
...                     band="irac1")                                # doctest: +SKIP
>>> mosaic = select_mosaic(index, 150.1, 2.2, radius_deg=0.01)       # doctest: +SKIP
>>> xr, yr = sky_to_box(mosaic, ra, dec, margin_pix=20)              # doctest: +SKIP
>>> region = read_region(mosaic, xr, yr)                             # doctest: +SKIP

Mosaics may be plain, gzip-compressed (decompressed once into a local cache) or
tile-compressed (``fpack``, the FITS standard's tiled image compression): a box of a
tile-compressed mosaic fetches and decompresses only the tiles it meets
(``_tiled``).

Multi-extension mosaics are read by extension name: ``x_i2d.fits[SCI]`` with
``x_i2d.fits[WHT]`` as its weight (JWST), ``x_drz.fits[SCI]`` and ``x_drz.fits[WHT]``
(HST); :func:`header_to_ujy` converts their pixel values to microjansky from the
headers (MJy/sr and PIXAR_SR, PHOTFLAM and PHOTPLAM).

Modules: :mod:`~dask_phot.images.index` (:class:`Mosaic`, :func:`build_index`,
:func:`select_mosaic`, :func:`covering`), :mod:`~dask_phot.images.read`
(:class:`Region`, :func:`read_region`, :func:`sky_to_box`),
:mod:`~dask_phot.images.frames` (:func:`icrs_to_pixel`, :func:`pixel_to_icrs`: ICRS
positions on mosaics in any celestial frame), :mod:`~dask_phot.images.units`
(:func:`header_to_ujy`), ``_fits`` (header scanning, extensions), ``_errors``
(:class:`MosaicError`), ``_tiled`` (tile-compressed images), ``rows`` (the row cache)
and ``_io`` (URLs, fsspec, the gzip cache, byte ranges, :func:`split_extension`).
"""

from dask_phot.images._fits import ExtensionSpec, MosaicError
from dask_phot.images._io import expand_urls, split_extension
from dask_phot.images.frames import icrs_to_pixel, pixel_to_icrs
from dask_phot.images.index import (
    Mosaic,
    NoiseKind,
    assign_group,
    assign_mosaics,
    build_index,
    companion,
    covering,
    select_mosaic,
)
from dask_phot.images.read import (
    ReadCosts,
    Region,
    box_wcs,
    noise_to_weight,
    plan_requests,
    read_boxes,
    read_region,
    sky_to_box,
)
from dask_phot.images.units import header_to_ujy

__all__ = [
    "ExtensionSpec",
    "Mosaic",
    "MosaicError",
    "NoiseKind",
    "ReadCosts",
    "Region",
    "assign_group",
    "assign_mosaics",
    "box_wcs",
    "build_index",
    "companion",
    "covering",
    "expand_urls",
    "header_to_ujy",
    "icrs_to_pixel",
    "noise_to_weight",
    "pixel_to_icrs",
    "plan_requests",
    "read_boxes",
    "read_region",
    "select_mosaic",
    "sky_to_box",
    "split_extension",
]
