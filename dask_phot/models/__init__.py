"""Source models: what a source looks like before the band's PSF blurs it.

Every prior is rendered as a unit-flux image on the band's pixel grid (a
*stamp*): a point source (the PSF itself), a Sersic galaxy of given shape
(:mod:`~dask_phot.models.sersic`), or, for template fitting, any per-source
image. :func:`~dask_phot.models.render.render_sources` turns positions and
shapes into stamps; the engine fits their amplitudes (total fluxes).
"""
