"""Seed streams for the simulator: one root seed, independent named sub-streams.

Every random draw of :mod:`dask_phot.testing` comes from a
:func:`numpy.random.default_rng` built from the user's seed. Sub-streams are keyed
by a purpose and a band name (not by the band's position in a list), so that
adding a band to a simulation leaves the other bands' fluxes, noise and masks
unchanged.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["SeedLike", "child_rng", "root_entropy"]

#: What the public functions accept as ``seed``.
SeedLike = int | np.random.SeedSequence | None

#: Purposes of the sub-streams (first element of the spawn key).
POSITIONS, COLOURS, IMAGE, SHAPES = 0, 1, 2, 3


def root_entropy(seed: SeedLike) -> int:
    """Entropy of ``seed`` as an int (fresh random entropy when ``seed`` is None)."""
    if isinstance(seed, np.random.SeedSequence):
        entropy = seed.entropy
    else:
        entropy = np.random.SeedSequence(seed).entropy
    if not isinstance(entropy, int):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return entropy


def child_rng(entropy: int, purpose: int, name: str = "") -> np.random.Generator:
    """Generator for one purpose (and band ``name``) derived from the root entropy."""
    key = (purpose, zlib.crc32(name.encode("utf-8")))
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))
