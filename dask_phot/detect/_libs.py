"""Lazy imports of the optional libraries behind the ``detect`` extra.

``sep`` (background, extraction, aperture sums) and ``astroscrappy`` (cosmic
rays) are imported on first use, so that ``import dask_phot`` works without them
and the error says which extra to install.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["as_sep_array", "ensure_pixstack", "require"]

#: sep's sub-object limit when deblending.
SEP_SUBOBJECT_LIMIT = 4096


@functools.cache
def require(name: str) -> ModuleType:
    """Import an optional dependency, or raise ImportError naming the extra.

    Parameters
    ----------
    name : {"sep", "astroscrappy", "matplotlib"}
        The module.

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
        extra = "plots" if name == "matplotlib" else "detect"
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
