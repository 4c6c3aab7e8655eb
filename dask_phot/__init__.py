"""dask-phot: multi-wavelength forced photometry at scale."""

from dask_phot.engine import PhotometryResult, forced_photometry
from dask_phot.psf import PixelPSF, PSFGrid, gaussian_psf, moffat_psf
from dask_phot.schema import Flag

__version__ = "0.1.0"

__all__ = [
    "Flag",
    "PSFGrid",
    "PhotometryResult",
    "PixelPSF",
    "__version__",
    "forced_photometry",
    "gaussian_psf",
    "moffat_psf",
]
