"""Survey-sized simulated fields written strip by strip (dask_phot.testing.survey)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dask_phot.testing.survey import cut_priors, write_survey


def test_write_survey_layout_and_cache(tmp_path):
    kw = dict(area_arcmin2=2.0, bands=["irac1", "nuv"], seed=3, strip=40)
    m = write_survey(tmp_path, **kw)
    assert m["images"] == {"irac1": ["irac1"], "nuv": ["nuv_t00", "nuv_t01", "nuv_t10", "nuv_t11"]}
    priors = pd.read_parquet(tmp_path / "priors.parquet")
    assert len(priors) == m["n_priors"] > 100
    data, header = fits.getdata(tmp_path / "irac1_sci.fits", header=True)
    weight = fits.getdata(tmp_path / "irac1_wht.fits")
    assert data.shape == weight.shape and data.shape[0] > 3 * kw["strip"]  # several strips
    assert np.isnan(data).any() and (weight[np.isnan(data)] == 0).all()
    # every source lies on the mosaic, and the brightest shows at its position
    wcs = WCS(header)
    x, y = wcs.all_world2pix(priors["ra"], priors["dec"], 0)
    assert (x > 0).all() and (x < data.shape[1] - 1).all() and (y > 0).all()
    k = int(np.argmax(priors["flux_true_irac1"]))
    yy, xx = int(np.rint(y[k])), int(np.rint(x[k]))
    assert np.nanargmax(data[yy - 3:yy + 4, xx - 3:xx + 4]) == 24
    # the GALEX tiles overlap and have their own tangent points
    centers = [WCS(fits.getheader(tmp_path / f"{n}_sci.fits")).wcs.crval
               for n in m["images"]["nuv"]]
    assert len({tuple(np.round(c, 6)) for c in centers}) == 4
    # reused, not simulated again; another field in the same folder is refused
    mtime = (tmp_path / "irac1_sci.fits").stat().st_mtime_ns
    assert write_survey(tmp_path, **kw) == m
    assert (tmp_path / "irac1_sci.fits").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="another field"):
        write_survey(tmp_path, **{**kw, "seed": 4})


def test_cut_priors_is_the_central_square():
    from dask_phot.testing.sources import COSMOS_CENTER

    ra0, dec0 = COSMOS_CENTER
    offsets = np.array([0.0, 0.1, 0.124, 0.126, 0.2]) / 60  # degrees; a 0.125 arcmin half-side
    priors = pd.DataFrame({"ra": ra0 + offsets / np.cos(np.radians(dec0)),
                           "dec": dec0 + 0 * offsets})
    assert len(cut_priors(priors, 0.25 ** 2)) == 3


@pytest.mark.parametrize("band", ["irac1", "nuv"])
def test_render_points_is_fineprf_rendering(band):
    """The survey's point renderer draws FinePRF's spline (to rounding), stamps cut at the
    image's edges included; GALEX's PRF is upsampled 5x, IRAC's PSF is 6x finer."""
    from dask_phot.bands import get_band
    from dask_phot.testing.render import FinePRF, render_model
    from dask_phot.testing.survey import render_points

    psf = get_band(band).load_psf()
    rng = np.random.default_rng(5)
    n, shape = 300, (70, 90)
    x, y = rng.uniform(-35, 125, n), rng.uniform(-35, 105, n)
    flux = rng.lognormal(3.0, 1.0, n)
    flux[:3] = [0.0, np.nan, -5.0]  # skipped, skipped, drawn (negative)
    got = render_points(shape, x, y, flux, psf)
    ref = render_model(shape, x, y, np.nan_to_num(flux), FinePRF(psf), normalise=False)
    assert np.abs(got - ref).max() <= 1e-12 * np.abs(ref).max()
    assert np.abs(ref).max() > 0
