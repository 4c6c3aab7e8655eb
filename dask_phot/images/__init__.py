"""Mosaics: an index built from FITS headers alone, and lazy reads of sky regions.

The pipeline reads, for each sky cell and band, only the box of the band's mosaic that
the cell needs, from local disk, S3 or HTTP:

>>> index = build_index("data/irac1_*_sci.fits", "data/irac1_*_wht.fits",
...                     band="irac1")                                # doctest: +SKIP
>>> mosaic = select_mosaic(index, 150.1, 2.2, radius_deg=0.01)       # doctest: +SKIP
>>> xr, yr = sky_to_box(mosaic, ra, dec, margin_pix=20)              # doctest: +SKIP
>>> region = read_region(mosaic, xr, yr)                             # doctest: +SKIP

Modules: :mod:`~dask_phot.images.index` (:class:`Mosaic`, :func:`build_index`,
:func:`select_mosaic`, :func:`covering`), :mod:`~dask_phot.images.read`
(:class:`Region`, :func:`read_region`, :func:`sky_to_box`),
:mod:`~dask_phot.images.frames` (:func:`icrs_to_pixel`, :func:`pixel_to_icrs`: ICRS
positions on mosaics in any celestial frame), ``_fits`` (header scanning)
and ``_io`` (URLs, fsspec, the gzip cache, byte ranges).
"""

from dask_phot.images.frames import icrs_to_pixel, pixel_to_icrs
from dask_phot.images.index import (
    Mosaic,
    NoiseKind,
    assign_mosaics,
    build_index,
    covering,
    select_mosaic,
)
from dask_phot.images.read import Region, noise_to_weight, read_region, sky_to_box

__all__ = [
    "Mosaic",
    "NoiseKind",
    "Region",
    "assign_mosaics",
    "build_index",
    "covering",
    "icrs_to_pixel",
    "noise_to_weight",
    "pixel_to_icrs",
    "read_region",
    "select_mosaic",
    "sky_to_box",
]
