"""Template fitting: fluxes in a blurred image from a sharp image's light.

Sersic models fail for clumpy, irregular and merging galaxies and need shapes
the priors may lack. The method of T-PHOT, golfir and IRACLEAN takes each
source's light from a sharp image itself (HST, JWST): the pixels of its
segment, convolved with a kernel that turns the sharp PSF into the blurred
band's and resampled onto the blurred image's grid through both WCSs, are that
source's model. All models are fitted jointly with the sky, and a second pass
measures the registration between the two images from the residuals,
rebuilds the templates and fits again.

* :func:`fit_templates` (a table) and :func:`run_templates` (with the model
  image and shift map): the entry points;
* :mod:`~dask_phot.templates.kernel`: matching kernels (:func:`matching_kernel`);
* :mod:`~dask_phot.templates.segments`, :mod:`~dask_phot.templates.share`,
  :mod:`~dask_phot.templates.geometry`, :mod:`~dask_phot.templates.build`:
  segments, their shared outskirts, WCS maps, templates;
* :mod:`~dask_phot.templates.register`: registration shifts per region;
* :mod:`~dask_phot.templates.models`: the choice of model per source (template,
  point, Sersic); :mod:`~dask_phot.templates.noise`: the sharp image's noise in
  the fluxes; the joint fit is the engine's :func:`~dask_phot.engine.fit.fit_stamps`.
"""

from dask_phot.templates.fit import TemplateOptions, TemplateResult, fit_templates, run_templates
from dask_phot.templates.kernel import TemplateKernel, matching_kernel

__all__ = [
    "TemplateKernel",
    "TemplateOptions",
    "TemplateResult",
    "fit_templates",
    "matching_kernel",
    "run_templates",
]
