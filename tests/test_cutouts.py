"""Cutouts: FITS per source with a WCS extension per band, size rule, Lupton PNG."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dask_phot.cutouts import CutoutSpec, cutout_size_arcsec, make_cutouts
from dask_phot.psf import gaussian_psf
from dask_phot.testing import SimBand, simulate_field, write_field


@pytest.fixture(scope="module")
def three_bands(tmp_path_factory):
    """Three bands on different pixel grids (0.1", 0.15", 0.2") over 0.3 arcmin2."""
    bands = [SimBand(name, gaussian_psf(fwhm, pixel_scale=scale), 0.1, 0.05, sky=0.01)
             for name, fwhm, scale in (("b", 2.0, 0.1), ("g", 2.0, 0.15), ("r", 2.0, 0.2))]
    field = simulate_field(bands=bands, seed=4, area_arcmin2=0.3)
    out = tmp_path_factory.mktemp("cut")
    write_field(field, out)
    return field, out


def test_size_rule_bounds():
    spec = CutoutSpec(scale=2.0, min_size=2.0, max_size=10.0)
    assert cutout_size_arcsec([0.2, 1.0, 9.0, np.nan], spec).tolist() == [2.0, 4.0, 10.0, 2.0]
    with pytest.raises(ValueError):
        CutoutSpec(min_size=5.0, max_size=1.0)


def test_cutouts_fits_wcs_centre_size_and_png(three_bands, tmp_path):
    pytest.importorskip("matplotlib", reason="the plots extra (matplotlib) is not installed")
    field, out = three_bands
    pri = field.priors.nlargest(3, "flux_true_r").reset_index(drop=True)
    cat = pri.assign(extent_arcsec=[0.5, 1.5, 20.0])  # 3" (min), 6", 12" (max)
    spec = CutoutSpec(scale=2.0, min_size=3.0, max_size=12.0)
    images = {b: str(out / f"{b}_sci.fits") for b in ("r", "g", "b")}
    done = make_cutouts(cat, images, tmp_path / "cut", spec=spec, rgb=("r", "g", "b"))
    assert done["size_arcsec"].tolist() == [3.0, 6.0, 12.0]
    for row, src in zip(done.itertuples(), cat.itertuples(), strict=True):
        with fits.open(row.fits) as hdul:
            assert [h.name for h in hdul[1:]] == ["R", "G", "B"]
            for hdu in hdul[1:]:
                scale = hdu.header["PIXSCALE"]
                ny, nx = hdu.data.shape
                assert ny == nx and nx % 2 == 1
                assert (nx - 2) * scale < row.size_arcsec <= nx * scale  # odd, just covering
                x, y = WCS(hdu.header).world_to_pixel_values(src.ra, src.dec)
                assert abs(x - nx // 2) <= 0.5 and abs(y - ny // 2) <= 0.5  # centred
                c = nx // 2
                core = hdu.data[c - 4:c + 5, c - 4:c + 5]
                peak = np.unravel_index(np.nanargmax(core), core.shape)
                assert abs(peak[0] - 4) <= 1 and abs(peak[1] - 4) <= 1  # the source is there
        import matplotlib.image as mpimg

        png = mpimg.imread(row.png)
        r_shape = fits.getheader(row.fits, "R")
        assert png.shape[:2] == (r_shape["NAXIS2"], r_shape["NAXIS1"]) and png.shape[2] >= 3
        assert png[..., :3].max() > 0.5  # the source shows


def test_cutouts_cli_and_off_field_source(three_bands, tmp_path, capsys):
    from dask_phot.commands import main

    field, out = three_bands
    cat = field.priors.head(2)[["source_id", "ra", "dec"]].copy()
    cat.loc[len(cat)] = [999, 10.0, 10.0]  # nowhere near the mosaics
    cat.to_parquet(tmp_path / "cat.parquet")
    assert main(["cutouts", str(tmp_path / "cat.parquet"), "--images",
                 f"r={out / 'r_sci.fits'}", f"g={out / 'g_sci.fits'}",
                 "--out", str(tmp_path / "c"), "--in-process"]) == 0
    assert "2 FITS cutouts" in capsys.readouterr().out
    assert not (tmp_path / "c" / "999.fits").exists()
    listed = pd.Series(sorted(p.name for p in (tmp_path / "c").glob("*.fits")))
    assert len(listed) == 2


# ---------------------------------------------------------------------- colour
def _blob(amplitudes, sigma=1.0, seed=0, size=61):
    from dask_phot.testing import simulate_image

    rng = np.random.default_rng(seed)
    c = (size - 1) / 2
    return [simulate_image((size, size), [c], [c], [a], gaussian_psf(3.0), seed=rng,
                           sigma=sigma).data for a in amplitudes]


def test_lupton_stretch_from_the_noise_and_q_from_the_peak():
    from dask_phot.cutouts import composite
    from dask_phot.cutouts.colour import robust_noise

    bright, how_b = composite(_blob([2e4, 2e4, 2e4]), method="lupton")
    mid, how_m = composite(_blob([800.0, 800.0, 800.0]), method="lupton")
    faint, how_f = composite(_blob([60.0, 60.0, 60.0]), method="lupton")
    sigma_i = np.sqrt(3.0) / 3.0  # three bands of unit noise
    for how in (how_b, how_m):
        assert how.stretch == pytest.approx(sigma_i / 0.04, rel=0.1)  # from the noise
        assert how.noise_level == pytest.approx(0.04, rel=1e-6)
    assert how_b.q > how_m.q > 1.0 and how_b.peak > how_m.peak  # Q from the brightness
    for rgb in (bright, mid):
        assert rgb[30, 30].max() >= 250  # the peak at full scale
        # the background noise shows at noise_level of full scale
        assert robust_noise(rgb[:10, :10, 0].astype(float))[1] / 255 < 0.1
    # too faint for that: linear, the noise shown at most at max_noise_level
    assert how_f.q < 1e-3 and how_f.noise_level == pytest.approx(0.1, rel=0.05)
    assert faint[30, 30].min() > 120  # still shown bright
    fixed = composite(_blob([800.0] * 3), method="lupton", stretch=50.0, q=3.0)[1]
    assert (fixed.stretch, fixed.q) == (50.0, 3.0)
    with pytest.raises(ValueError, match="unknown colour method"):
        composite(_blob([1.0] * 3), method="hsv")


def test_asinh_per_band_with_a_common_white_point():
    from dask_phot.cutouts import ColourSpec, composite

    grey, how = composite(_blob([3000.0, 3000.0, 3000.0]), method="asinh")
    assert np.ptp(grey[30, 30].astype(int)) <= 8 and grey[30, 30].min() > 200  # white
    red, how_r = composite(_blob([3000.0, 1000.0, 300.0]), method="asinh")
    r, g, b = red[30, 30].astype(int)
    assert r > g > b and r >= 250
    assert how_r.white == pytest.approx(how_r.peak) and how_r.q == 0.0
    assert how.noise_level == pytest.approx(0.04, rel=0.01)
    with pytest.raises(ValueError, match="colour methods"):
        ColourSpec(("r", "g", "b"), methods=("rainbow",))
    with pytest.raises(ValueError, match="three bands"):
        ColourSpec(("r", "g"))  # type: ignore[arg-type]


def test_contact_sheet_needs_composites(tmp_path):
    from dask_phot.cutouts import contact_sheet

    with pytest.raises(ValueError, match="no colour composites"):
        contact_sheet(pd.DataFrame({"source_id": [1], "png": [""]}), tmp_path / "s.html")
