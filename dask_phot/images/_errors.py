"""The error of a mosaic that cannot be used as given (shared by the FITS readers)."""

from __future__ import annotations

__all__ = ["MosaicError"]


class MosaicError(ValueError):
    """A mosaic that cannot be used as given; the message names the file (and extension)."""

    __module__ = "dask_phot.images"  # its public home
