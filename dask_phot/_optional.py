"""Optional dependencies, imported when a feature first needs them.

``import dask_phot`` needs only the core dependencies; :func:`require` imports
a library behind an extra (``sep`` and ``astroscrappy``: ``detect``,
``matplotlib``: ``plots``, ``dask_kubernetes`` and ``kubernetes``:
``kubernetes``...) on first use, and its error says which extra to install.
``sep`` is configured once when imported; :func:`ensure_pixstack` and
:func:`as_sep_array` are what every caller of sep needs.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["EXTRAS", "as_sep_array", "ensure_pixstack", "require"]

#: sep's sub-object limit when deblending.
SEP_SUBOBJECT_LIMIT = 4096
#: Top-level module -> the dask-phot extra that installs it.
EXTRAS: dict[str, str] = {
    "sep": "detect", "astroscrappy": "detect", "matplotlib": "plots",
    "dask_kubernetes": "kubernetes", "kubernetes": "kubernetes", "yaml": "kubernetes",
    "pyvo": "archive", "astroquery": "archive", "nwaylib": "crossmatch", "moto": "demo",
}


@functools.cache
def require(name: str) -> ModuleType:
    """Import an optional dependency, or raise ImportError naming the extra.

    Parameters
    ----------
    name : str
        The module (``"dask_kubernetes.operator"``...); its top-level package
        is a key of :data:`EXTRAS`.

    Returns
    -------
    module

    Examples
    --------
    >>> require("sep").__name__
    'sep'
    """
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        extra = EXTRAS[name.partition(".")[0]]
        raise ImportError(
            f"{name} is needed for this feature: pip install 'dask-phot[{extra}]'"
        ) from exc
    if name == "sep":
        # process-wide limit, only ever raised to this fixed value (idempotent)
        module.set_sub_object_limit(max(module.get_sub_object_limit(), SEP_SUBOBJECT_LIMIT))
    return module


def ensure_pixstack(n_pixels: int) -> None:
    """Make sep's pixel stack hold ``n_pixels`` (an image's size can never overflow it).

    The stack is process-wide and allocated at every extraction (so it is not set
    larger than needed); it only ever grows, so threads extracting at once never
    see it shrink below what they need.
    """
    sep = require("sep")
    if sep.get_extract_pixstack() < n_pixels:
        sep.set_extract_pixstack(int(n_pixels))


def as_sep_array(values: Any, dtype: type = np.float64) -> np.ndarray:
    """A C-contiguous, native-byte-order copy-if-needed array for sep.

    Examples
    --------
    >>> a = as_sep_array(np.arange(4, dtype=">f4").reshape(2, 2))
    >>> a.dtype.byteorder in "=|", a.flags.c_contiguous
    (True, True)
    """
    arr = np.asarray(values, dtype=dtype)
    return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("="), copy=False))
