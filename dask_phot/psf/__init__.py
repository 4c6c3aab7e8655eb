"""Point-spread-function models on a mosaic's pixel grid.

A :class:`PixelPSF` is a pixelized PSF (strictly a PRF: already integrated
over the detector pixel) sampled at a known pixel scale, odd-sized and
centred, with an explicit normalisation. It renders stamps at arbitrary
sub-pixel positions with a flux-conserving, separable Lanczos-3 interpolation
(the same interpolant The Tractor uses). A :class:`PSFGrid` holds several
PSFs measured at different image positions and interpolates between them.

Pixel convention: 0-based, pixel centres at integers, ``x`` is the column and
``y`` the row (``image[y, x]``), as in numpy and ``astropy.wcs.world_to_pixel``.

Modules: :mod:`~dask_phot.psf.pixel` (:class:`PixelPSF`, :class:`PSFError`, the
:class:`PSFModel` protocol, :func:`resample_array`), :mod:`~dask_phot.psf.render`
(the compiled Lanczos kernels, :func:`lanczos_stamps`), :mod:`~dask_phot.psf.analytic`
(:func:`gaussian_psf`, :func:`moffat_psf`) and :mod:`~dask_phot.psf.grid`
(:class:`PSFGrid`). Effective PSFs measured from a mosaic's own stars:
:func:`dask_phot.psf.empirical.build_epsf` (not imported here: it fits stars with the
engine, which renders with this package), giving an :class:`EmpiricalPSF`
(:mod:`~dask_phot.psf.epsf_result`), with the star selection in
:mod:`~dask_phot.psf.stars` and the wings in :mod:`~dask_phot.psf.wings`.
"""

from dask_phot.psf.analytic import gaussian_psf, moffat_psf
from dask_phot.psf.epsf_result import EmpiricalPSF
from dask_phot.psf.grid import PSFGrid
from dask_phot.psf.oversampled import OversampledPSF, psf_centroid
from dask_phot.psf.pixel import Normalize as Normalize
from dask_phot.psf.pixel import PixelPSF, PSFError, PSFModel, header_pixel_scale
from dask_phot.psf.pixel import resample_array as resample_array
from dask_phot.psf.render import lanczos_stamps as lanczos_stamps
from dask_phot.psf.wings import WingModel

# ``Normalize``, ``resample_array`` and ``lanczos_stamps`` are importable from here as
# before, outside ``__all__``.
__all__ = [
    "EmpiricalPSF",
    "OversampledPSF",
    "PSFError",
    "PSFGrid",
    "PSFModel",
    "PixelPSF",
    "WingModel",
    "gaussian_psf",
    "header_pixel_scale",
    "moffat_psf",
    "psf_centroid",
]
