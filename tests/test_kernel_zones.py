"""The clean-pixel zone of a cell's fit (pipeline.zones.within_reach) against a brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dask_phot.pipeline.zones import within_reach


@pytest.mark.parametrize("seed", range(12))
def test_zone_is_exactly_the_pixels_within_reach(seed):
    rng = np.random.default_rng(seed)
    ny, nx = (int(v) for v in rng.integers(40, 250, 2))
    n = int(rng.integers(1, 200))
    x, y = rng.uniform(-0.49, nx - 0.51, n), rng.uniform(-0.49, ny - 0.51, n)
    x[: n // 4] = np.round(x[: n // 4]) + 0.5  # ties between pixels
    y[n // 4: n // 2] = np.round(y[n // 4: n // 2])  # points on pixel rows
    x[n // 2:], y[n // 2:] = np.round(x[n // 2:]), np.round(y[n // 2:])  # on pixels: ties
    if seed % 3 == 0:
        x[0], y[-1] = -20.0, ny + 15.0  # points off the box
    reach = float(rng.uniform(0.5, 50.0)) if seed % 4 else float(rng.integers(1, 30))
    yy, xx = np.mgrid[0:ny, 0:nx]
    dist, _ = cKDTree(np.column_stack([x, y])).query(
        np.column_stack([xx.ravel(), yy.ravel()]), distance_upper_bound=reach)
    np.testing.assert_array_equal(within_reach((ny, nx), x, y, reach),
                                  np.isfinite(dist.reshape(ny, nx)))
