"""Loading a configuration in layers: packaged defaults, the user's file, environment, overrides.

:func:`load_layers` merges, in order: a packaged defaults file
(``dask_phot/data/<name>.toml``, which documents every key), the user's file
(or a dict), environment variables ``DASK_PHOT__<SECTION>__<KEY>`` (deeper
tables add ``__<KEY>``: ``DASK_PHOT__BANDS__IRAC1__SKY``,
``DASK_PHOT__DETECT__PARAMS__THRESH``; values parsed as TOML, else taken as
strings) and finally ``overrides``. A variable applies to every command whose
configuration has its section, and is left alone by the others (as Dask's own
``DASK_*`` variables are). Relative paths are taken from the configuration
file's directory (from the working directory for dicts, the environment and
overrides); URLs (``s3://``, ``https://``...) are kept as they are. The result
is the merged dict and a :class:`~dask_phot.config.sections.Provenance` recording
which layer set each key, for the sections to check.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from dask_phot.config.sections import ConfigError, Provenance

__all__ = ["ENV_PREFIX", "Layers", "is_url", "load_layers", "packaged_defaults",
           "read_toml", "resolve_paths"]

ENV_PREFIX = "DASK_PHOT__"
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: Whether a path value stays as written (e.g. the name of a packaged PSF file).
KeepPath = Callable[[str], bool]


def is_url(path: str) -> bool:
    """True for ``scheme://...`` (``s3://``, ``https://``, ``file://``...)."""
    return bool(_URL_RE.match(path))


def packaged_defaults(name: str) -> tuple[dict[str, Any], str]:
    """The packaged defaults ``dask_phot/data/<name>.toml`` as a dict, and its label."""
    text = resources.files("dask_phot").joinpath("data", f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text), f"dask_phot/data/{name}.toml"


def read_toml(path_or_dict: Any, *, what: str = "configuration file",
              error: type[ConfigError] = ConfigError) -> tuple[dict[str, Any], str, Path]:
    """``(content, label, base directory)`` of a TOML file, or of a dict (label ``<dict>``)."""
    if isinstance(path_or_dict, Mapping):
        return copy.deepcopy(dict(path_or_dict)), "<dict>", Path.cwd()
    label = os.fspath(path_or_dict)
    path = Path(label).expanduser()
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise error(f"{label}: cannot read the {what} ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{label}: not valid TOML: {exc}") from None
    return data, label, path.resolve().parent


def _resolve(value: Any, base: Path, keep: KeepPath | None) -> Any:
    """A path taken from ``base`` (URLs, absolute paths, "" and non-strings unchanged)."""
    if isinstance(value, list | tuple):
        return [_resolve(v, base, keep) for v in value]
    if not isinstance(value, str) or not value or is_url(value) or (keep and keep(value)):
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def resolve_paths(layer: Mapping[str, Any], base: Path, keys: Collection[str], *,
                  keep: Mapping[str, KeepPath] | None = None) -> dict[str, Any]:
    """Copy of a layer with its path-valued keys resolved against ``base``.

    Parameters
    ----------
    layer : mapping
        A configuration layer (nested tables).
    base : Path
        Directory relative paths are taken from.
    keys : collection of str
        Dotted keys holding paths; ``*`` matches any table name
        (``"bands.*.images"``).
    keep : mapping, optional
        Dotted key -> predicate of values kept as written.

    Examples
    --------
    >>> resolve_paths({"bands": {"b": {"images": ["x.fits", "s3://b/y.fits"]}}},
    ...               Path("/data"), ["bands.*.images"])
    {'bands': {'b': {'images': ['/data/x.fits', 's3://b/y.fits']}}}
    """
    out = copy.deepcopy(dict(layer))
    for dotted in keys:
        *tables, name = dotted.split(".")
        nodes: list[Any] = [out]
        for part in tables:
            nodes = [child for node in nodes if isinstance(node, dict)
                     for child in (node.values() if part == "*" else [node.get(part)])]
        for node in nodes:
            if isinstance(node, dict) and name in node:
                node[name] = _resolve(node[name], base, (keep or {}).get(dotted))
    return out


def _merge(into: dict[str, Any], layer: Mapping[str, Any], label: str,
           origins: dict[str, str], prefix: str = "") -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        origins[dotted] = label
        if isinstance(value, Mapping):
            if not isinstance(into.get(key), dict):
                into[key] = {}
            _merge(into[key], value, label, origins, f"{dotted}.")
        else:
            into[key] = copy.deepcopy(value)


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _env_layers(environ: Mapping[str, str], sections: Collection[str],
                user: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """One layer per ``DASK_PHOT__...`` variable of these sections, sorted by name.

    Names are upper case: a table name given in the user's file (a band) keeps
    the file's spelling.
    """
    layers = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        label = f"environment variable {name}"
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"{label}: expected {ENV_PREFIX}<SECTION>__<KEY> (deeper "
                              f"tables: {ENV_PREFIX}BANDS__<NAME>__<KEY>)")
        if parts[0] not in sections:
            continue
        nested: Any = _parse_env_value(environ[name])
        node = user
        spelled = []
        for part in parts[:-1]:
            table = node if isinstance(node, Mapping) else {}
            part = next((k for k in table if str(k).lower() == part), part)
            spelled.append(part)
            node = table.get(part, {})
        for part in reversed([*spelled, parts[-1]]):
            nested = {part: nested}
        layers.append((label, nested))
    return layers


def _expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"engine.fit_sky": False}`` -> ``{"engine": {"fit_sky": False}}`` (nested kept)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        nested = value
        for part in reversed(str(key).split(".")):
            nested = {part: nested}
        _merge(out, nested, "overrides", {})
    return out


@dataclass(frozen=True)
class Layers:
    """The merged configuration and where each key came from."""

    merged: dict[str, Any]
    origin: Provenance
    base: Path


def load_layers(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    defaults: str | None,
    sections: Collection[str],
    paths: Collection[str] = (),
    keep: Mapping[str, KeepPath] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    error: type[ConfigError] = ConfigError,
) -> Layers:
    """Read and merge the layers of a configuration (nothing is checked but the form).

    Parameters
    ----------
    path_or_dict : path-like or mapping
        The user's TOML file, or its content as a dict.
    defaults : str or None
        Name of the packaged defaults file (``"default"``: ``dask_phot/data/default.toml``).
    sections : collection of str
        The configuration's sections (environment variables of others are left alone).
    paths, keep
        Path-valued keys and values kept as written (see :func:`resolve_paths`).
    environ : mapping, optional
        Environment to read ``DASK_PHOT__*`` from; default ``os.environ``.
    overrides : mapping, optional
        Applied last; nested or dotted (``{"engine.fit_sky": False}``) keys.
    error : type
        Error raised for an unreadable file.
    """
    user, label, base = read_toml(path_or_dict, error=error)
    cwd = Path.cwd()
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if defaults is not None:
        table, defaults_label = packaged_defaults(defaults)
        layers.append((defaults_label, resolve_paths(table, base, paths, keep=keep)))
    layers.append((label, resolve_paths(user, base, paths, keep=keep)))
    env = os.environ if environ is None else environ
    layers += [(lab, resolve_paths(lay, cwd, paths, keep=keep))
               for lab, lay in _env_layers(env, sections, user)]
    if overrides:
        layers.append(("overrides", resolve_paths(_expand_dotted(overrides), cwd, paths,
                                                  keep=keep)))
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for lab, layer in layers:
        _merge(merged, layer, lab, origins)
    return Layers(merged, Provenance(label, origins, error), base)
