"""Multi-extension mosaics (JWST i2d, HST drz): reads by extension name, from disk and S3,
their flux conversions from the headers, and many boxes read in one fetch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dask_phot.images import (
    MosaicError,
    build_index,
    companion,
    header_to_ujy,
    read_boxes,
    read_region,
    split_extension,
)
from dask_phot.testing.mast_products import write_drz, write_i2d
from dask_phot.testing.surveys import survey_wcs

SHAPE = (120, 160)


def _exposures(n: int = 4) -> np.ndarray:
    masks = np.zeros((n, *SHAPE), bool)
    for i in range(n):
        masks[i, 10 * (i % 2):SHAPE[0] - 10 * (1 - i % 2), 12 * (i // 2):SHAPE[1] - 12] = True
    return masks


@pytest.fixture(scope="module")
def i2d(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    data = rng.normal(0.0, 0.01, SHAPE).astype(np.float32)
    data[60, 80] = np.nan
    sigma = np.full(SHAPE, 0.01, np.float32) * (1 + np.arange(SHAPE[1]) / 400.0)
    wcs = survey_wcs((214.86, 52.88), 0.04, SHAPE, 20.0)
    path = write_i2d(tmp_path_factory.mktemp("i2d") / "jw01345-o001_t001_nircam_clear-f200w_"
                     "i2d.fits", data, sigma, _exposures(), wcs, filter="F200W")
    return path, data, sigma


def test_i2d_layout_is_the_pipelines(i2d):
    path, _, _ = i2d
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "ERR", "CON", "WHT", "VAR_POISSON",
                                          "VAR_RNOISE", "VAR_FLAT", "HDRTAB", "ASDF"]
        assert hdul[0].data is None and hdul[0].header["TELESCOP"] == "JWST"
        assert hdul["SCI"].header["BUNIT"] == "MJy/sr" and "PIXAR_SR" in hdul["SCI"].header
        assert "FILTER" not in hdul["SCI"].header and hdul["CON"].data.shape == (1, *SHAPE)
        assert "CTYPE1" not in hdul["WHT"].header  # only SCI carries the WCS


def test_extensions_by_name_equal_the_file(i2d):
    path, data, sigma = i2d
    (m,) = build_index(f"{path}[SCI]", f"{path}[WHT]", noise_kind="weight", band="f200w")
    assert m.source_url.endswith("_i2d.fits[SCI]") and m.url == str(path)
    assert m.header["FILTER"] == "F200W"  # inherited from the primary header
    assert "(from the primary header)" in m.header.comments["FILTER"]
    region = read_region(m, (70, 95), (50, 70))
    np.testing.assert_array_equal(region.data, data[50:70, 70:95].astype(float))
    np.testing.assert_allclose(region.weight[np.isfinite(region.data)],
                               (1 / sigma[50:70, 70:95].astype(float) ** 2)[
                                   np.isfinite(region.data)], rtol=1e-6)
    assert region.weight[10, 10] == 0.0  # the NaN pixel at (60, 80)
    assert math.isclose(header_to_ujy(m.header, url=m.source_url),
                        m.header["PIXAR_SR"] * 1e12, rel_tol=1e-12)
    by_index = build_index(f"{path}[1]", band="x")[0]
    assert by_index.data_offset == m.data_offset
    con = companion(m, f"{path}[CON]")
    assert con.wcs is m.wcs and con.bitpix == 32
    np.testing.assert_array_equal(read_region(con, (0, 5), (0, 5)).data, 1.0)  # one exposure


def test_missing_extension_names_the_file_and_its_hdus(tmp_path, i2d):
    _, data, sigma = i2d
    no_wht = write_i2d(tmp_path / "x_i2d.fits", data, sigma, _exposures(),
                       survey_wcs((10.0, 0.0), 0.04, SHAPE, 0.0), filter="F444W",
                       extensions=("SCI", "ERR", "CON"))
    with pytest.raises(MosaicError, match=r"x_i2d\.fits: no extension WHT \(its HDUs: PRIMARY "
                                          r"\(no data\), SCI \(160x120\), ERR \(160x120\), "
                                          r"CON \(160x120x1\), HDRTAB \(BINTABLE"):
        build_index(f"{no_wht}[SCI]", f"{no_wht}[WHT]", band="f444w")
    with pytest.raises(MosaicError, match=r"\[HDRTAB\]: HDU 4 .* is not a 2-D image"):
        build_index(f"{no_wht}[HDRTAB]", band="x")
    with pytest.raises(MosaicError, match=r"x_i2d\.fits\[CON\]: no celestial WCS"):
        build_index(f"{no_wht}[CON]", band="x")  # no WCS of its own: a companion
    assert split_extension("a/b_drz.fits.gz[SCI,2]") == ("a/b_drz.fits.gz", "SCI,2")


@pytest.mark.parametrize("instrument", ["ACS", "WFC3"])
def test_drz_photflam_from_sci_or_primary(tmp_path, instrument):
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, SHAPE)
    path = write_drz(tmp_path / "j_drz.fits", data, np.ones(SHAPE), _exposures(2),
                     survey_wcs((150.1, 2.2), 0.03, SHAPE, 0.0), filter="F814W",
                     instrument=instrument)
    (m,) = build_index(f"{path}[SCI]", f"{path}[WHT]", band="f814w")
    expected = 7.0724e-20 * 8045.0**2 / 2.99792458e18 * 1e29  # erg/s/cm2/A -> uJy
    assert header_to_ujy(m.header, url=m.source_url) == pytest.approx(expected, rel=1e-12)
    assert 23.9 - 2.5 * math.log10(expected) == pytest.approx(25.94, abs=0.01)  # F814W AB ZP
    ctx = companion(m, f"{path}[CTX]")
    assert read_region(ctx, (80, 81), (60, 61)).data[0, 0] == 3.0  # bits 0 and 1


def test_incomplete_calibration_is_one_clear_error(tmp_path, i2d):
    _, data, sigma = i2d
    bare = write_i2d(tmp_path / "nopix_i2d.fits", data, sigma, _exposures(),
                     survey_wcs((10.0, 0.0), 0.04, SHAPE, 0.0), filter="F200W",
                     drop_keywords=("PIXAR_SR", "PIXAR_A2"))
    (m,) = build_index(f"{bare}[SCI]", band="x")
    with pytest.raises(MosaicError, match=r"^.*nopix_i2d\.fits\[SCI\]: BUNIT is 'MJy/sr' "
                                          r"\(surface brightness\) but its headers have no "
                                          r"pixel area PIXAR_SR \(or PIXAR_A2\)"):
        header_to_ujy(m.header, url=m.source_url)
    drz = write_drz(tmp_path / "noflam_drz.fits", data, sigma, _exposures(2),
                    survey_wcs((10.0, 0.0), 0.04, SHAPE, 0.0), filter="F606W",
                    drop_keywords=("PHOTFLAM",))
    (h,) = build_index(f"{drz}[SCI]", band="x")
    with pytest.raises(MosaicError, match=r"noflam_drz\.fits\[SCI\]: an HST count-rate image "
                                          r"\(BUNIT 'ELECTRONS/S'\) without PHOTFLAM"):
        header_to_ujy(h.header, url=h.source_url)
    a2 = fits.Header({"BUNIT": "MJy/sr", "PIXAR_A2": 0.0016})  # the same area in arcsec^2
    assert header_to_ujy(a2) == pytest.approx(0.0016 / 4.254517e10 * 1e12, rel=1e-6)
    assert header_to_ujy({"BUNIT": "counts"}) is None  # says nothing: the caller decides


def test_read_boxes_equal_regions_and_read_only_the_boxes_from_s3(i2d, s3_server):
    path, _, _ = i2d
    s3_server.create_bucket("mast-ext")
    url = s3_server.upload(path, "mast-ext", "jw/x_i2d.fits")
    opts = s3_server.storage_options()
    (m,) = build_index(f"{url}[SCI]", f"{url}[WHT]", band="f200w", storage_options=opts)
    boxes = [(-5, 20, -3, 10), (60, 91, 40, 71), (70, 101, 50, 81), (150, 170, 110, 125),
             (500, 510, 0, 5)]
    box_bytes = sum((min(b[1], 160) - max(b[0], 0)) * (min(b[3], 120) - max(b[2], 0)) * 4
                    for b in boxes if b[0] < 160)
    s3_server.reset_counts()
    arrays, nbytes = read_boxes(m, boxes, max_gap=0, storage_options=opts)
    served = s3_server.bytes_served("x_i2d.fits")
    assert nbytes == served < box_bytes  # boxes 2 and 3 overlap: their bytes are read once
    for arr, b in zip(arrays, boxes, strict=True):
        np.testing.assert_array_equal(arr, read_region(m, b[:2], b[2:],
                                                       storage_options=opts).data)
    assert np.isnan(arrays[4]).all() and np.isnan(arrays[0][:3]).all()
    merged, n_all = read_boxes(m, boxes, max_gap=10**6, storage_options=opts)
    assert n_all > nbytes and all(np.array_equal(a, b, equal_nan=True)
                                  for a, b in zip(merged, arrays, strict=True))
    weights, _ = read_boxes(m, boxes[1:2], noise=True, storage_options=opts)
    assert np.all(weights[0] > 0)
    with pytest.raises(ValueError, match="x0 < x1"):
        read_boxes(m, [(5, 5, 0, 3)])
