"""Configuration: typed, validated settings from TOML, for every command.

One mechanism serves ``dask-phot run`` (:func:`load_config`), ``dask-phot
detect`` (:func:`dask_phot.detect.load_detect_config`), ``dask-phot fetch``
(:func:`dask_phot.archive.load_recipe`) and band definitions
(:func:`band_from_config`):

* :mod:`~dask_phot.config.checks`: value checks (numbers in a range, one of
  some words, lists of strings, memory sizes...), each ``value -> value``;
* :mod:`~dask_phot.config.sections`: a TOML table is a frozen dataclass whose
  fields are its keys (:func:`setting` gives a default and a check);
  :func:`build_section` rejects unknown keys naming the closest known one;
* :mod:`~dask_phot.config.layers`: packaged defaults, the user's file,
  ``DASK_PHOT__<SECTION>__<KEY>`` environment variables and overrides, merged,
  with relative paths taken from the file's directory;
* :mod:`~dask_phot.config.model` and :mod:`~dask_phot.config.run`: the run
  configuration (:class:`RunConfig`) and its loading; the packaged
  ``dask_phot/data/default.toml`` documents every key.

Every error is a :class:`ConfigError` whose message names the file (or the
environment variable, or ``overrides``) and the dotted key.

Adding a key: add a field to its section class (the type hint is the check, or
``setting(default, check=...)``), and the key with a comment to the packaged
defaults file (``default.toml``; ``detect.toml`` for ``[detect]``); the tests
in ``tests/test_config.py`` fail until both agree. A key of a band table is a
field of :class:`BandFiles` (how to read the band's images) or of
:class:`dask_phot.bands.Band` (the band itself), documented under
``# [bands.<name>]``. Adding a section to the run configuration: a section
class in :mod:`~dask_phot.config.model`, a field of :class:`RunConfig`, an
entry in :data:`~dask_phot.config.run.RUN_SECTIONS` (and ``RUN_PATHS`` for
path keys) and its table in ``default.toml``; if it changes results, its name
in :attr:`RunConfig.SCIENCE_SECTIONS` (the sections
:meth:`RunConfig.config_hash` covers: a run resumes only cells made with the
same hash). Path-valued keys are listed in ``RUN_PATHS`` / ``DETECT_PATHS``.

Examples
--------
>>> cfg = load_config({"priors": {"path": "/data/priors.parquet"},
...                    "bands": {"irac1": {"images": ["/data/irac1_*.fits"]}}},
...                   environ={})
>>> cfg.engine.forced_kwargs()["mode"], cfg.cluster.n_workers
('scene', 2)
"""

from dask_phot.config.band_tables import band_from_config
from dask_phot.config.layers import ENV_PREFIX, is_url, read_toml
from dask_phot.config.model import (
    MAX_CELL_ORDER,
    BandFiles,
    BandImages,
    CellsConfig,
    ClusterConfig,
    EngineConfig,
    OutputConfig,
    PriorsConfig,
    RunConfig,
    StorageConfig,
    storage_options,
)
from dask_phot.config.run import check_storage, default_config, load_config, resolve_run_paths
from dask_phot.config.sections import (
    ConfigError,
    Provenance,
    build_section,
    section_defaults,
    section_keys,
    setting,
)

__all__ = [
    "ENV_PREFIX",
    "MAX_CELL_ORDER",
    "BandFiles",
    "BandImages",
    "CellsConfig",
    "ClusterConfig",
    "ConfigError",
    "EngineConfig",
    "OutputConfig",
    "PriorsConfig",
    "Provenance",
    "RunConfig",
    "StorageConfig",
    "band_from_config",
    "build_section",
    "check_storage",
    "default_config",
    "is_url",
    "load_config",
    "read_toml",
    "resolve_run_paths",
    "section_defaults",
    "section_keys",
    "setting",
    "storage_options",
]
