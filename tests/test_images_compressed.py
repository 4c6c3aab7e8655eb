"""Boxes of tile-compressed FITS images (images._tiled), checked against astropy's decoder.

Every file is written by astropy's ``CompImageHDU``; each box read through the range-request
layer must equal, exactly, the same box of astropy's full decompression of the file.
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dask_phot.bands import get_band
from dask_phot.config import load_config
from dask_phot.images import MosaicError, ReadCosts, build_index, read_boxes, read_region
from dask_phot.images._tiled import plan_tiles
from dask_phot.pipeline import plan_cells, process_cell
from dask_phot.testing import SimBand, simulate_field, write_field
from dask_phot.testing.image import simulate_image
from dask_phot.testing.render import GaussianPRF

SHAPE = (203, 317)  # odd sizes: edge tiles are cut
#: Boxes over tile edges, the image's corners and beyond its edges.
BOXES = [((0, 317), (0, 203)), ((30, 101), (61, 140)), ((-5, 20), (190, 210)),
         ((250, 330), (-3, 7)), ((127, 128), (99, 100))]


def _wcs(shape: tuple[int, int]) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    wcs.wcs.cdelt = [-0.6 / 3600, 0.6 / 3600]
    return wcs


def _sky(seed: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """A seeded field of point sources on noise, with a few NaN pixels."""
    rng = np.random.default_rng(seed)
    n = 40
    sim = simulate_image(shape, rng.uniform(0, shape[1], n), rng.uniform(0, shape[0], n),
                         rng.uniform(10, 500, n), GaussianPRF(fwhm=2.5, size=15), seed=seed,
                         sigma=0.5, sky=3.0)
    data = sim.data.astype(np.float32)
    data[5, 7] = data[150, 40] = np.nan
    return data


def _write(path: Path, data: np.ndarray, header: fits.Header | None = None,
           **options: object) -> Path:
    """``data`` as a tile-compressed image extension, written by astropy."""
    header = header if header is not None else _wcs(data.shape).to_header()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on lossy compression of floats
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header, **options)]
                     ).writeto(path)
    return path


def _astropy(path: Path) -> np.ndarray:
    """astropy's full decompression, as physical float64 values (BLANK -> NaN)."""
    with fits.open(path) as hdul:
        hdu = hdul[1]
        blank = hdu.header.get("BLANK")
        raw = hdu.data
        values = raw.astype(np.float64)
        if blank is not None and raw.dtype.kind in "iu" and hdu.header.get("BZERO", 0) == 0:
            values[raw == blank] = np.nan
    return values


def _expected(full: np.ndarray, box: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    (x0, x1), (y0, y1) = box
    ny, nx = full.shape
    out = np.full((y1 - y0, x1 - x0), np.nan)
    out[max(y0, 0) - y0:min(y1, ny) - y0, max(x0, 0) - x0:min(x1, nx) - x0] = full[
        max(y0, 0):min(y1, ny), max(x0, 0):min(x1, nx)]
    return out


FLOAT_CASES = {
    "gzip2-lossless-square": dict(compression_type="GZIP_2", tile_shape=(64, 64),
                                  quantize_level=0.0),
    "gzip1-lossless-rows": dict(compression_type="GZIP_1", tile_shape=(1, SHAPE[1]),
                                quantize_level=0.0),
    "rice-dither1-rows (fpack default)": dict(compression_type="RICE_1",
                                              tile_shape=(1, SHAPE[1]), quantize_method=1,
                                              dither_seed=3),
    "rice-dither2-square": dict(compression_type="RICE_1", tile_shape=(50, 40),
                                quantize_method=2, dither_seed=9999),
    "gzip2-nodither": dict(compression_type="GZIP_2", tile_shape=(32, 100),
                           quantize_method=-1, quantize_level=8),
    "gzip1-dither1": dict(compression_type="GZIP_1", tile_shape=(64, 64), quantize_method=1,
                          dither_seed=1),
    "nocompress": dict(compression_type="NOCOMPRESS", tile_shape=(50, 40)),
}


@pytest.mark.parametrize("case", list(FLOAT_CASES))
def test_float_boxes_equal_astropy(tmp_path, case):
    data = _sky(1)
    data[100:110, 200:210] = 0.0  # exact zeros (SUBTRACTIVE_DITHER_2 keeps them)
    path = _write(tmp_path / "img.fits", data, **FLOAT_CASES[case])
    full = _astropy(path)
    (mosaic,) = build_index(str(path), band="x")
    assert mosaic.tiles is not None and mosaic.shape == SHAPE and mosaic.bitpix == -32
    assert np.allclose(mosaic.wcs.wcs.crval, [150.1, 2.2])
    for box in BOXES:
        region = read_region(mosaic, *box)
        np.testing.assert_array_equal(region.data, _expected(full, box))
    if "lossless" in case:
        with fits.open(path, disable_image_compression=True) as hdul:
            assert "ZSCALE" not in hdul[1].columns.names  # stored as floats
        np.testing.assert_array_equal(full, data.astype(np.float64))
    if "dither2" in case:
        assert np.all(read_region(mosaic, (200, 210), (100, 110)).data == 0.0)


def test_float64_and_unquantizable_tiles(tmp_path):
    """A float64 image whose constant tiles cannot be quantized: astropy stores them in
    the GZIP_COMPRESSED_DATA column, losslessly."""
    data = _sky(2).astype(np.float64)
    data[:64, :64] = 7.25
    path = _write(tmp_path / "f8.fits", data, compression_type="RICE_1", tile_shape=(64, 64),
                  quantize_method=1)
    with fits.open(path, disable_image_compression=True) as hdul:
        assert "GZIP_COMPRESSED_DATA" in hdul[1].columns.names
        assert hdul[1].data["COMPRESSED_DATA"][0].size == 0  # tile 0 went there
    full = _astropy(path)
    (mosaic,) = build_index(str(path), band="x")
    for box in BOXES:
        np.testing.assert_array_equal(read_region(mosaic, *box).data, _expected(full, box))
    assert np.all(read_region(mosaic, (0, 70), (0, 60)).data[:, :64] == 7.25)


INT_CASES = {
    "int16-rice": (np.int16, dict(compression_type="RICE_1", tile_shape=(50, 40))),
    "int32-gzip2": (np.int32, dict(compression_type="GZIP_2", tile_shape=(64, 64))),
    "uint8-gzip1-rows": (np.uint8, dict(compression_type="GZIP_1", tile_shape=(1, SHAPE[1]))),
    "uint8-rice": (np.uint8, dict(compression_type="RICE_1", tile_shape=(64, 64))),
    "uint16-rice (BZERO)": (np.uint16, dict(compression_type="RICE_1", tile_shape=(64, 64))),
    "int16-blank-nocompress": (np.int16, dict(compression_type="NOCOMPRESS",
                                              tile_shape=(50, 40))),
}


@pytest.mark.parametrize("case", list(INT_CASES))
def test_integer_boxes_equal_astropy(tmp_path, case):
    dtype, options = INT_CASES[case]
    info = np.iinfo(dtype)
    values = np.nan_to_num(_sky(3), nan=0.0) * 10 + (40000 if dtype == np.uint16 else 0)
    data = np.clip(values, info.min, info.max).astype(dtype)
    header = _wcs(SHAPE).to_header()
    if "blank" in case:
        header["BLANK"] = -32768
        data[10:12, 10:15] = -32768
    path = _write(tmp_path / "int.fits", data, header=header, **options)
    full = _astropy(path)
    (mosaic,) = build_index(str(path), band="x")
    for box in BOXES:
        np.testing.assert_array_equal(read_region(mosaic, *box).data, _expected(full, box))
    if "blank" in case:
        assert np.isnan(read_region(mosaic, (10, 15), (10, 12)).data).all()
    if "BZERO" in case:
        assert full.max() > 32767  # the unsigned range is used, through BZERO


@pytest.mark.parametrize("algorithm", ["HCOMPRESS_1", "PLIO_1"])
def test_unsupported_compression_is_one_clear_error(tmp_path, algorithm):
    data = np.clip(np.nan_to_num(_sky(4), nan=0), 0, 100).astype(np.int32)
    path = _write(tmp_path / "odd.fits", data, compression_type=algorithm,
                  tile_shape=(SHAPE[0], SHAPE[1]) if algorithm == "HCOMPRESS_1" else (1, 317))
    with pytest.raises(MosaicError, match=rf"odd\.fits.*{algorithm}.* not supported"):
        build_index(str(path), band="x")


def test_contiguous_tiles_are_one_request_and_gaps_follow_the_costs(tmp_path):
    data = _sky(5, (400, 1000))
    path = _write(tmp_path / "wide.fits", data, compression_type="GZIP_2",
                  tile_shape=(100, 100), quantize_level=0.0)
    (mosaic,) = build_index(str(path), band="x")
    t = mosaic.tiles
    assert t.grid == (4, 10)
    box = (150, 320, 120, 330)  # tiles 1-3 of tile rows 1-3
    plan = plan_tiles(t, [box], "wide.fits", costs=ReadCosts())
    assert list(plan.tiles) == [r * 10 + c for r in (1, 2, 3) for c in (1, 2, 3)]
    assert len(plan.starts) == 3  # one per tile row: a gap (7 tiles) would read > 1.5x
    assert plan.needed == sum(e - s for s, e in zip(plan.starts, plan.ends, strict=True))
    free = ReadCosts(request_cpu=1.0, max_overread=10.0)  # requests are dear: read through
    merged = plan_tiles(t, [box], "wide.fits", costs=free)
    assert len(merged.starts) == 1
    assert len(plan_tiles(t, [box], "wide.fits", costs=free, max_gap=0).starts) == 3
    region = read_region(mosaic, box[:2], box[2:], costs=free)
    np.testing.assert_array_equal(region.data, data[120:330, 150:320].astype(float))
    assert region.requests == 1


def test_read_boxes_of_a_tiled_mosaic(tmp_path):
    data = _sky(6)
    path = _write(tmp_path / "cut.fits", data, compression_type="RICE_1", tile_shape=(32, 32),
                  quantize_method=2)
    full = _astropy(path)
    (mosaic,) = build_index(str(path), band="x")
    boxes = [(x0, x1, y0, y1) for (x0, x1), (y0, y1) in BOXES]
    arrays, nbytes = read_boxes(mosaic, boxes)
    assert nbytes > 0
    for arr, box in zip(arrays, BOXES, strict=True):
        np.testing.assert_array_equal(arr, _expected(full, box))


def test_s3_read_fetches_only_the_tiles_of_the_box(tmp_path, s3_server):
    """Image and weight map both compressed, over the loopback S3 server: the bytes served
    are exactly the compressed bytes of the tiles that meet the box, one request per tile
    row and file."""
    shape = (600, 2000)
    data = _sky(7, shape)
    weight = np.random.default_rng(7).uniform(1.0, 4.0, shape).astype(np.float32)
    weight[:20, :30] = 0.0
    header = _wcs(shape).to_header()
    sci = _write(tmp_path / "m_sci.fits", data, header=header, compression_type="GZIP_2",
                 tile_shape=(100, 100), quantize_level=0.0)
    wht = _write(tmp_path / "m_wht.fits", weight, header=header, compression_type="GZIP_2",
                 tile_shape=(100, 100), quantize_level=0.0)
    bucket = f"tiled-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    for p in (sci, wht):
        s3_server.upload(p, bucket, p.name)
    options = s3_server.storage_options(anon=True)
    (mosaic,) = build_index(f"s3://{bucket}/{sci.name}", f"s3://{bucket}/{wht.name}",
                            band="x", storage_options=options)
    assert mosaic.tiles is not None and mosaic.noise_tiles is not None
    s3_server.reset_counts()
    region = read_region(mosaic, (450, 640), (120, 330), storage_options=options,
                         row_cache_bytes=64 * 2**20)
    np.testing.assert_array_equal(region.data, data[120:330, 450:640].astype(float))
    expected_w = weight[120:330, 450:640].astype(float)
    expected_w[np.isnan(region.data)] = 0.0
    np.testing.assert_array_equal(region.weight, expected_w)
    needed = 0
    for path in (sci, wht):
        with fits.open(path, disable_image_compression=True) as hdul:
            col = hdul[1].data["COMPRESSED_DATA"]
            needed += sum(col[r * 20 + c].size for r in (1, 2, 3) for c in (4, 5, 6))
    assert region.bytes_read == needed == s3_server.bytes_served(bucket)
    assert region.requests == 6 == s3_server.requests_served(bucket)
    assert region.box_bytes == 2 * 210 * 190 * 4
    # the whole rows of a plain copy would be 2 x 210 x 2000 x 4 bytes
    assert needed < 0.2 * 2 * 210 * 2000 * 4


def test_cell_fit_from_compressed_mosaics_is_identical(tmp_path):
    """A cell measured from losslessly tile-compressed copies of its mosaic and weight map
    (the pipeline's single-cell path) gives the plain files' table, to the last bit."""
    band = get_band("irac1")
    sim = SimBand("irac1", band.load_psf(), band.to_ujy, band.depth_5sigma_ujy, sky=0.01)
    field = simulate_field(bands=[sim], seed=12, area_arcmin2=2.0)
    paths = write_field(field, tmp_path / "plain", noise_product="weight")
    tiled = {}
    for kind in ("sci", "wht"):
        with fits.open(paths[f"irac1_{kind}"]) as hdul:
            header = hdul[0].header.copy()
            header.remove("EXTEND", ignore_missing=True)
            tiled[kind] = _write(tmp_path / f"irac1_{kind}_tiled.fits", hdul[0].data,
                                 header=header, compression_type="GZIP_2", tile_shape=(64, 64),
                                 quantize_level=0.0)
    tables = []
    for sci, wht in ((paths["irac1_sci"], paths["irac1_wht"]), (tiled["sci"], tiled["wht"])):
        cfg = load_config({"priors": {"path": str(paths["priors"])},
                           "bands": {"irac1": {"images": [str(sci)], "noise": [str(wht)]}},
                           "output": {"path": str(tmp_path / "cat")}})
        parts, indexes = plan_cells(cfg)
        assert (indexes["irac1"][0].tiles is not None) == (sci == tiled["sci"])
        table, report = process_cell(parts[0], indexes, cfg)
        assert report.bytes_read > 0 and not report.errors
        tables.append(table)
    assert len(tables[0]) > 50
    pd.testing.assert_frame_equal(tables[0], tables[1])
