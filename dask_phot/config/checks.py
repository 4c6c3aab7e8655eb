"""Value checks of configuration keys: small functions ``value -> checked value``.

A check returns the value it accepts, normalised where TOML and Python differ (a
list becomes a tuple, an integer given for a float becomes a float), or raises
:class:`Invalid` saying what it expected; the caller
(:mod:`dask_phot.config.sections`) adds where the value came from and its
dotted key. A key declared without a check gets one from its type hint
(:func:`for_hint`), so ``tile_size: int = 2048`` needs nothing more.

Examples
--------
>>> number(1, integer=True)(4)
4
>>> number(1, integer=True)(0)
Traceback (most recent call last):
...
dask_phot.config.checks.Invalid: must be an integer >= 1, got 0
>>> strings()("a.fits"), for_hint(tuple[float, ...])([2, 4.5])
(('a.fits',), (2.0, 4.5))
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "BOOLEAN",
    "NAME",
    "Check",
    "Invalid",
    "epsf_options",
    "for_hint",
    "memory_size",
    "number",
    "one_of",
    "pair",
    "scheduler_address",
    "shape_columns",
    "sky_value",
    "string",
    "strings",
    "table",
]

#: A value check: returns the (normalised) value or raises :class:`Invalid`.
Check = Callable[[Any], Any]

_SCHEDULER_RE = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://\S+$")


class Invalid(ValueError):
    """A rejected value; the message says what was expected and what was given."""


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def string(*, empty: bool = True, pattern: str | None = None) -> Check:
    """A string (non-empty unless ``empty``; matching ``pattern`` if given)."""
    def check(v: Any) -> str:
        if not isinstance(v, str) or (not empty and not v) \
                or (pattern is not None and not re.match(pattern, v)):
            what = f"matching {pattern}" if pattern else "" if empty else "non-empty"
            raise Invalid(f"must be a {what + ' ' if what else ''}string, got {v!r}")
        return v
    return check


#: A non-empty string (a path, a column name...).
NAME: Check = string(empty=False)


def strings(*, empty: bool = True) -> Check:
    """A list of non-empty strings (a single string is a list of one), as a tuple."""
    def check(v: Any) -> tuple[str, ...]:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list | tuple) or not all(isinstance(s, str) and s for s in items) \
                or (not empty and not items):
            raise Invalid(f"must be a{'' if empty else ' non-empty'} list of non-empty strings, "
                          f"got {v!r}")
        return tuple(items)
    return check


def number(lo: float | None = None, *, strict: bool = False, hi: float | None = None,
           integer: bool = False, auto: bool = False) -> Check:
    """A finite number (an integer if ``integer``) above ``lo`` (``> lo`` if ``strict``,
    else ``>= lo``) and at most ``hi``; also the word ``"auto"`` if ``auto``."""
    def check(v: Any) -> Any:
        if auto and v == "auto":
            return v
        ok = _is_number(v) and (lo is None or (v > lo if strict else v >= lo)) \
            and (hi is None or v <= hi) and (isinstance(v, int) or not integer)
        if not ok:
            if lo is not None and hi is not None:
                span = f" {lo:g}..{hi:g}"
            elif lo is not None:
                span = f" {'>' if strict else '>='} {lo:g}"
            else:
                span = ""
            tail = ' or "auto"' if auto else ""
            raise Invalid(f"must be {'an integer' if integer else 'a number'}{span}{tail}, "
                          f"got {v!r}")
        return v if integer else float(v)
    return check


def one_of(*choices: Any) -> Check:
    """One of ``choices``, of the same type (``1`` is not ``True``)."""
    def check(v: Any) -> Any:
        if not any(v == c and type(v) is type(c) for c in choices):
            raise Invalid(f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
        return v
    return check


#: ``true`` or ``false``.
BOOLEAN: Check = one_of(True, False)


def pair(v: Any) -> tuple[float, float]:
    """A list of two finite numbers, as a tuple of floats."""
    if not isinstance(v, list | tuple) or len(v) != 2 or not all(_is_number(x) for x in v):
        raise Invalid(f"must be a list of two numbers, got {v!r}")
    return float(v[0]), float(v[1])


def table(v: Any) -> dict[str, Any]:
    """A table (checked further by whoever reads it), as a dict."""
    if not isinstance(v, Mapping):
        raise Invalid(f"must be a table, got {v!r}")
    return dict(v)


#: The keys of ``[priors] shape_columns``: the shape each catalogue column holds.
SHAPE_KEYS = ("r_e", "q", "pa", "n")


def shape_columns(v: Any) -> dict[str, str]:
    """``{r_e, q, pa, n} -> column name`` (``r_e`` required when the table is not empty).

    Examples
    --------
    >>> shape_columns({"r_e": "FLUX_RADIUS", "q": "AXIS_RATIO"})
    {'r_e': 'FLUX_RADIUS', 'q': 'AXIS_RATIO'}
    """
    cols = table(v)
    unknown = [k for k in cols if k not in SHAPE_KEYS]
    if unknown:
        raise Invalid(f"has unknown key(s) {unknown}: the keys are {', '.join(SHAPE_KEYS)} "
                      "(half-light radius, axis ratio b/a, position angle, Sersic index)")
    if cols and "r_e" not in cols:
        raise Invalid("must name the half-light radius column (r_e = \"...\")")
    for key, name in cols.items():
        if not isinstance(name, str) or not name:
            raise Invalid(f"{key} must be a column name, got {name!r}")
    return cols


#: Wing models of a pipeline ePSF besides :class:`~dask_phot.psf.empirical.EPSFOptions`' own:
#: ``"band"``, the band's PSF file.
EPSF_WINGS = ("band", "moffat", "none")


def epsf_options(v: Any) -> dict[str, Any]:
    """A band's ``epsf`` table: options of :class:`dask_phot.psf.empirical.EPSFOptions`.

    ``wings`` is ``"band"`` (the band's PSF file), ``"moffat"`` or ``"none"``;
    ``grid`` ``"auto"``, ``"none"`` or ``[ny, nx]``.

    Examples
    --------
    >>> epsf_options({"min_stars": 20, "grid": [1, 2]})
    {'min_stars': 20, 'grid': (1, 2)}
    >>> epsf_options({"oversample": 4})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dask_phot.config.checks.Invalid: epsf: unknown option(s) ['oversample']; known: [...]
    """
    from dask_phot.psf import PSFError
    from dask_phot.psf.empirical import EPSFOptions

    opts = table(v)
    if isinstance(opts.get("grid"), list | tuple):
        opts["grid"] = tuple(opts["grid"])
    wings = opts.get("wings", "band")
    if wings not in EPSF_WINGS:
        raise Invalid(f"wings must be one of {', '.join(EPSF_WINGS)}, got {wings!r}")
    try:
        EPSFOptions.from_mapping({k: val for k, val in opts.items() if k != "wings"})
    except (PSFError, TypeError) as exc:
        raise Invalid(str(exc)) from None
    return opts


def sky_value(v: Any) -> str | float:
    """A band's sky treatment: ``"fit"``, ``"clipped"``, ``"none"`` or a fixed level."""
    if isinstance(v, str):
        return one_of("fit", "clipped", "none")(v)
    if not _is_number(v):
        raise Invalid(f"must be 'fit', 'clipped', 'none' or a number, got {v!r}")
    return float(v)


def scheduler_address(v: Any) -> str:
    """``"local"``, ``"kubernetes"`` or a Dask scheduler address."""
    if v not in ("local", "kubernetes") and not (isinstance(v, str) and _SCHEDULER_RE.match(v)):
        raise Invalid(f"must be 'local', 'kubernetes' or a scheduler address like "
                      f"tcp://host:8786, got {v!r}")
    return v


def memory_size(v: Any) -> str | int:
    """A memory size Dask understands (``"4GiB"``, bytes) or ``"auto"``."""
    from dask.utils import parse_bytes

    try:
        ok = v == "auto" or (not isinstance(v, bool) and parse_bytes(v) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise Invalid(f"must be a size like '4GiB', a number of bytes or 'auto', got {v!r}")
    return v


def _union(options: tuple[Any, ...]) -> Check:
    checks = [for_hint(o) for o in options]

    def check(v: Any) -> Any:
        for c in checks:
            try:
                return c(v)
            except Invalid:
                continue
        names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
        raise Invalid(f"must be {names}, got {v!r}")
    return check


def for_hint(hint: Any) -> Check:
    """The check of a key declared only by its type hint.

    ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``tuple[X, ...]``,
    unions of these and ``None`` (TOML has no null: ``None`` is only a default).

    Examples
    --------
    >>> for_hint(typing.Literal["conv", "matched"])("fft")
    Traceback (most recent call last):
    ...
    dask_phot.config.checks.Invalid: must be one of 'conv', 'matched', got 'fft'
    """
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return one_of(*typing.get_args(hint))
    if origin is tuple:
        inner = for_hint(typing.get_args(hint)[0])

        def items(v: Any) -> tuple[Any, ...]:
            if not isinstance(v, list | tuple):
                raise Invalid(f"must be a list, got {v!r}")
            return tuple(inner(x) for x in v)
        return items
    if origin in (typing.Union, types.UnionType):
        return _union(tuple(o for o in typing.get_args(hint) if o is not type(None)))
    simple: dict[Any, Check] = {bool: BOOLEAN, int: number(integer=True), float: number(),
                                str: string()}
    if hint in simple:
        return simple[hint]
    raise TypeError(f"no configuration check for type {hint!r}: declare one with setting()")
