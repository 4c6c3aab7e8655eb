"""Archive access: priors from TAP, image lists from SIA and MAST, X-ray catalogs.

Everything a run needs, fetched from the archives the COSMOS notebook uses, without
downloading images by hand:

- :func:`query_priors` (:mod:`~dask_phot.archive.tap`): a cone or box over a TAP
  table (IRSA's ``cosmos2015``), large areas fetched in HEALPix pieces and put
  back together without duplicates; straight into
  :func:`dask_phot.priors.read_priors`.
- :func:`irsa_images` (:mod:`~dask_phot.archive.sia`): IRSA SIA v2 search, per
  band the science images and their noise maps, as ``s3://`` URIs where IRSA
  serves the files from the cloud and HTTPS otherwise.
- :func:`galex_images` (:mod:`~dask_phot.archive.mast`): deep GALEX intensity maps
  and their sky backgrounds from MAST.
- :func:`xray_catalog` (:mod:`~dask_phot.archive.heasarc`): Chandra/XMM catalogs of
  the region from HEASARC: positions, positional errors, fluxes.
- :func:`load_recipe` and :func:`fetch_recipe` (:mod:`~dask_phot.archive.recipe`):
  a recipe file (``examples/cosmos.toml``) in, a ready ``config.toml`` out; the
  ``dask-phot fetch`` command (:mod:`dask_phot.commands.fetch`).

Every reply is cached on disk, keyed by its query (:class:`ArchiveCache`; default
``$DASK_PHOT_CACHE/archive`` or ``~/.cache/dask-phot/archive``);
``ArchiveCache(offline=True)`` answers from the cache only. Whatever goes wrong (an
unreachable service, an error reply, no rows, a missing column) is one
:class:`ArchiveError` naming the service and the query.

pyvo and astroquery (the ``archive`` extra) are imported only when a service is
asked.
"""

from dask_phot.archive._cache import ArchiveCache, ArchiveError, Query, default_cache_dir
from dask_phot.archive.heasarc import HEASARC_VO_URL, classify_columns, xray_catalog
from dask_phot.archive.mast import MAST_URL, galex_images
from dask_phot.archive.recipe import (
    FetchResult,
    Recipe,
    RecipeError,
    fetch_recipe,
    load_recipe,
)
from dask_phot.archive.region import SkyRegion
from dask_phot.archive.sia import IRSA_SIA_URL, ImageSet, cloud_uri, irsa_images, sia_search
from dask_phot.archive.tap import IRSA_TAP_URL, TapPiece, plan_pieces, query_priors

__all__ = [
    "HEASARC_VO_URL",
    "IRSA_SIA_URL",
    "IRSA_TAP_URL",
    "MAST_URL",
    "ArchiveCache",
    "ArchiveError",
    "FetchResult",
    "ImageSet",
    "Query",
    "Recipe",
    "RecipeError",
    "SkyRegion",
    "TapPiece",
    "classify_columns",
    "cloud_uri",
    "default_cache_dir",
    "fetch_recipe",
    "galex_images",
    "irsa_images",
    "load_recipe",
    "plan_pieces",
    "query_priors",
    "sia_search",
    "xray_catalog",
]
