"""Configuration sections: frozen dataclasses whose fields are the keys of a TOML table.

A section declares each key once, as a field: its name, type, default and (when
the type hint alone does not say enough) a check::

    @dataclass(frozen=True, kw_only=True)
    class EngineConfig:
        mode: Literal["scene", "cutout"] = "scene"           # checked from the hint
        max_shift: float = setting(0.5, check=number(0, strict=True))

:func:`build_section` turns a table into the section: unknown keys are errors
(with the known keys and the closest one), each value goes through its check, a
key without a default is required, a field whose type is itself a section is a
sub-table (``[detect.params]``), and what ``__post_init__`` rejects is reported
against the section. Every error is a :class:`ConfigError` whose message starts
with where the value came from (a file, an environment variable, ``overrides``)
and the dotted key; :class:`Provenance` keeps that record.

Examples
--------
>>> from dataclasses import dataclass
>>> from dask_phot.config.checks import number
>>> @dataclass(frozen=True, kw_only=True)
... class Tiles:
...     size: int = setting(2048, check=number(64, integer=True))
...     overlap: int = 64
>>> build_section(Tiles, {"size": 512}, key="tiles", origin=Provenance("t.toml"))
Tiles(size=512, overlap=64)
>>> build_section(Tiles, {"sise": 512}, key="tiles", origin=Provenance("t.toml"))
Traceback (most recent call last):
...
dask_phot.config.ConfigError: t.toml: tiles.sise: unknown key; known keys: size, overlap (did you mean 'size'?)
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, NoReturn

from dask_phot.config.checks import Check, Invalid, for_hint

__all__ = [
    "ConfigError",
    "Provenance",
    "build_section",
    "is_section",
    "section_defaults",
    "section_keys",
    "setting",
    "validate",
]

_CHECK = "dask_phot.check"


class ConfigError(ValueError):
    """An unusable configuration: the message names the file (or source) and dotted key."""

    __module__ = "dask_phot.config"  # its public home


def setting(default: Any = MISSING, *, check: Check | None = None,
            factory: Any = MISSING) -> Any:
    """A configuration key as a dataclass field: its default (none: required) and check.

    Parameters
    ----------
    default : optional
        The value when the key is not given; without one (and no ``factory``)
        the key is required.
    check : callable, optional
        ``value -> checked value`` raising :class:`~dask_phot.config.checks.Invalid`;
        default the check of the field's type hint.
    factory : callable, optional
        Makes the default (for mutable defaults).
    """
    metadata = {_CHECK: check}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def is_section(hint: Any) -> type | None:
    """The section class a field's hint names (also inside ``X | None``), else None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if is_section(a)]
        return found[0] if len(found) == 1 else None
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def section_keys(cls: type, skip: Collection[str] = ()) -> tuple[str, ...]:
    """The keys of a section's table, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)


def section_defaults(cls: type) -> dict[str, Any]:
    """Every key with a default, as the TOML value (tuples as lists; sub-sections nested).

    Keys without a default (required) and ``None`` defaults (TOML has no null)
    are left out.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            value = section_defaults(type(value))
        if value is not None:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class Provenance:
    """Where the values of a configuration came from, for error messages.

    Parameters
    ----------
    label : str
        The file (or ``"<dict>"``); errors about missing keys name it.
    origins : mapping
        Dotted key -> the label of the layer that set it last.
    error : type
        The exception raised (a :class:`ConfigError` subclass).
    """

    label: str
    origins: Mapping[str, str] = field(default_factory=dict)
    error: type[ConfigError] = ConfigError

    def where(self, key: str) -> str:
        """The label of the layer that set ``key`` (or its closest table)."""
        probe = key
        while probe and probe not in self.origins:
            probe = probe.rpartition(".")[0]
        return self.origins.get(probe, self.label)

    def fail(self, key: str, message: str, *, here: bool = False) -> NoReturn:
        """Raise the error for ``key``; ``here``: name the file, not the key's layer."""
        label = self.label if here else self.where(key)
        raise self.error(f"{label}: {key}: {message}" if label else f"{key}: {message}")

    def table(self, key: str, value: Any) -> dict[str, Any]:
        """``value`` as a dict, or an error if it is not a table."""
        if not isinstance(value, Mapping):
            self.fail(key, f"must be a table, got {value!r}")
        return dict(value)

    def known(self, key: str, table: Iterable[str], known: Collection[str],
              what: str = "key") -> None:
        """Fail on the first name of ``table`` not in ``known`` (suggesting the closest)."""
        names = list(known)
        for name in table:
            if name not in names:
                close = difflib.get_close_matches(str(name), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                dotted = f"{key}.{name}" if key else str(name)
                self.fail(dotted, f"unknown {what}; known {what}s: {', '.join(names)}{hint}")

    def check(self, key: str, value: Any, check: Check) -> Any:
        """``check(value)``, its :class:`Invalid` reported against ``key``."""
        try:
            return check(value)
        except Invalid as exc:
            self.fail(key, str(exc))


def _field_check(cls: type, f: dataclasses.Field) -> Check:
    return f.metadata.get(_CHECK) or for_hint(_hints(cls)[f.name])


def build_section(cls: type, value: Any, *, key: str, origin: Provenance,
                  skip: Collection[str] = (), extra: Mapping[str, Any] | None = None) -> Any:
    """Check a table against section ``cls`` and build it.

    Parameters
    ----------
    cls : type
        A section (dataclass) class.
    value : Any
        The table.
    key : str
        Its dotted key (for messages).
    origin : Provenance
        Where the values came from.
    skip : collection of str
        Fields that are not keys of the table (filled by ``extra`` or defaults).
    extra : mapping, optional
        Values of skipped fields, passed to ``cls`` as they are.

    Raises
    ------
    ConfigError
        Not a table, unknown or missing key, bad value, or rejected by ``cls``.
    """
    t = origin.table(key, value)
    origin.known(key, t, section_keys(cls, skip))
    values: dict[str, Any] = dict(extra or {})
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        dotted = f"{key}.{f.name}"
        if f.name not in t:
            if f.default is MISSING and f.default_factory is MISSING:
                origin.fail(dotted, "required", here=True)
            continue
        sub = is_section(_hints(cls)[f.name])
        if sub is not None and f.metadata.get(_CHECK) is None:
            values[f.name] = build_section(sub, t[f.name], key=dotted, origin=origin)
        else:
            values[f.name] = origin.check(dotted, t[f.name], _field_check(cls, f))
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        origin.fail(key, str(exc))


def validate(section: Any) -> None:
    """Check the values of a section built in Python (not from a table).

    Raises
    ------
    ValueError
        ``"<key>: <what was expected>"`` for the first value its check rejects.
    """
    cls = type(section)
    for f in dataclasses.fields(cls):
        value = getattr(section, f.name)
        if value is None or is_section(_hints(cls)[f.name]) is not None:
            continue
        try:
            _field_check(cls, f)(value)
        except Invalid as exc:
            raise ValueError(f"{f.name}: {exc}") from None
