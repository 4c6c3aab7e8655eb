"""Tests of dask_phot.images (header-only index, mosaic choice, ranged region reads)
and of dask_phot.s3server (the local S3 endpoint that counts bytes)."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import numpy as np
import pytest
from astropy.io import fits

from dask_phot.images import (
    Region,
    assign_group,
    assign_mosaics,
    build_index,
    covering,
    noise_to_weight,
    read_region,
    select_mosaic,
    sky_to_box,
)
from dask_phot.s3server import LocalS3Server

SHAPE = (400, 600)
BOXES = {
    "small": ((10, 25), (300, 312)),
    "large": ((50, 550), (20, 390)),
    "full": ((0, 600), (0, 400)),
    "full-width": ((0, 600), (100, 180)),
    "one-pixel": ((599, 600), (399, 400)),
    "clip-low": ((-15, 40), (-7, 30)),
    "clip-high": ((570, 640), (380, 420)),
    "outside": ((700, 720), (10, 20)),
}


def _bucket() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _upload(server: LocalS3Server, paths: list[Path], bucket: str, prefix: str) -> list[str]:
    return [server.upload(p, bucket, f"{prefix}/{p.name}") for p in paths]


def _expected(array: np.ndarray, x_range: tuple[int, int], y_range: tuple[int, int]) -> np.ndarray:
    """The box of ``array`` with NaN off the array (the reference for read_region)."""
    (x0, x1), (y0, y1) = x_range, y_range
    out = np.full((y1 - y0, x1 - x0), np.nan)
    cx0, cx1 = max(x0, 0), min(x1, array.shape[1])
    cy0, cy1 = max(y0, 0), min(y1, array.shape[0])
    if cx0 < cx1 and cy0 < cy1:
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = array[cy0:cy1, cx0:cx1]
    return out


def _int16_mosaic(path: Path, write_raw_fits, tan_wcs) -> tuple[Path, np.ndarray]:
    """int16 with BSCALE/BZERO/BLANK; returns the file and its physical values."""
    rng = np.random.default_rng(3)
    raw = rng.integers(-30000, 30000, SHAPE).astype(np.int16)
    raw[::37, ::23] = -32768
    header = tan_wcs(SHAPE).to_header()
    header["BSCALE"], header["BZERO"], header["BLANK"] = 0.25, 1000.0, -32768
    write_raw_fits(path, raw, header)
    physical = raw.astype(np.float64) * 0.25 + 1000.0
    physical[raw == -32768] = np.nan
    return path, physical


def _extension_mosaic(path: Path, tan_wcs) -> tuple[Path, np.ndarray]:
    """float64 image in HDU 2, after a binary table; returns the file and its values."""
    data = np.random.default_rng(4).normal(size=SHAPE)
    table = fits.BinTableHDU.from_columns([fits.Column("a", "K", array=np.arange(1000))])
    image = fits.ImageHDU(data, tan_wcs(SHAPE).to_header(), name="SCI")
    fits.HDUList([fits.PrimaryHDU(), table, image]).writeto(path)
    return path, data


# --------------------------------------------------------------------------------------
# The index
# --------------------------------------------------------------------------------------


def test_index_local_glob(write_mosaic, tmp_path):
    a = write_mosaic("a", center=(150.10, 2.2))
    b = write_mosaic("b", center=(150.15, 2.2), seed=1)
    index = build_index(str(tmp_path / "*_sci.fits"), str(tmp_path / "*_wei.fits"), band="irac1")
    assert [m.url for m in index] == [str(a.sci), str(b.sci)]
    assert [m.noise_url for m in index] == [str(a.noise), str(b.noise)]
    m = index[0]
    assert (m.band, m.shape, m.bitpix, m.noise_kind, m.noise_bitpix) == (
        "irac1",
        SHAPE,
        -32,
        "weight",
        -32,
    )
    with fits.open(a.sci) as hdul:
        assert m.data_offset == hdul[0].fileinfo()["datLoc"]
    assert m.center == pytest.approx((150.1, 2.2), abs=1e-3 / 3600)
    assert m.pixel_scale_arcsec == pytest.approx(0.6)
    dec = np.array(m.footprint)[:, 1]
    assert np.ptp(dec) == pytest.approx(400 * 0.6 / 3600, rel=1e-3)
    assert m.wcs.pixel_shape == (600, 400)


def test_index_hdu_after_table(tmp_path, tan_wcs):
    path, _ = _extension_mosaic(tmp_path / "ext.fits", tan_wcs)
    (m,) = build_index(path, band="b")
    with fits.open(path) as hdul:
        assert m.data_offset == hdul[2].fileinfo()["datLoc"]
    assert m.noise_kind == "none" and m.noise_url is None


def test_index_s3_prefix_reads_headers_only(s3_server, write_mosaic, tmp_path):
    files = [write_mosaic(n, seed=i) for i, n in enumerate("abc")]
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    _upload(s3_server, [f.sci for f in files], bucket, "sci")
    _upload(s3_server, [f.noise for f in files], bucket, "wht")
    s3_server.reset_counts()
    index = build_index(
        f"s3://{bucket}/sci/",
        f"s3://{bucket}/wht/*.fits",
        band="r",
        storage_options=s3_server.storage_options(anon=True),
    )
    assert [m.url for m in index] == [f"s3://{bucket}/sci/{f.sci.name}" for f in files]
    assert [m.noise_url for m in index] == [f"s3://{bucket}/wht/{f.noise.name}" for f in files]
    size = files[0].sci.stat().st_size
    for f in files:
        assert s3_server.bytes_served(f.sci.name) <= 4 * 2880 < size / 50
        assert s3_server.bytes_served(f.noise.name) <= 4 * 2880


def test_index_http(http_dir, write_mosaic):
    f = write_mosaic("h", directory=http_dir.root)
    index = build_index(http_dir.url + f.sci.name, [http_dir.url + f.noise.name], band="h")
    assert index[0].url == http_dir.url + f.sci.name
    assert 0 < http_dir.counter["bytes"] <= 2 * 4 * 2880
    region = read_region(index[0], (10, 60), (20, 40))
    np.testing.assert_array_equal(region.data, f.data[20:40, 10:60])
    assert http_dir.counter["bytes"] < 2 * 4 * 2880 + 2 * region.data.size * 4 + 1


def test_noise_list_mismatch_names_both(write_mosaic, tmp_path):
    a, b = write_mosaic("a"), write_mosaic("b")
    with pytest.raises(ValueError, match=r"2 image\(s\).*a_sci.*1 noise map\(s\).*a_wei"):
        build_index([a.sci, b.sci], [a.noise], band="x")


def test_noise_shape_mismatch(write_mosaic):
    a = write_mosaic("a")
    small = write_mosaic("s", shape=(100, 100))
    with pytest.raises(ValueError, match=r"s_wei.*\(100, 100\).*a_sci.*\(400, 600\)"):
        build_index(a.sci, small.noise, band="x")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_missing_file_named(tmp_path):
    missing = tmp_path / "nope_sci.fits"
    with pytest.raises(FileNotFoundError, match=r"nope_sci\.fits"):
        build_index(missing, band="x")
    with pytest.raises(FileNotFoundError, match=r"nothing_\*"):
        build_index(str(tmp_path / "nothing_*.fits"), band="x")


def test_missing_s3_key_named(s3_server):
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    url = f"s3://{bucket}/missing.fits"
    with pytest.raises(FileNotFoundError, match=url):
        build_index(url, band="x", storage_options=s3_server.storage_options(anon=True))


def test_missing_http_named(http_dir):
    url = http_dir.url + "missing.fits"
    with pytest.raises(FileNotFoundError, match=url):
        build_index(url, band="x")


def test_non_image_fits(tmp_path):
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column("a", "D", array=np.arange(5.0))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(ValueError, match=r"table\.fits: no 2-D image HDU among its 2"):
        build_index(path, band="x")


def test_not_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("hello " * 1000)
    with pytest.raises(ValueError, match=r"notes\.fits: not a FITS file"):
        build_index(path, band="x")


def test_no_celestial_wcs(tmp_path, write_raw_fits):
    path = write_raw_fits(tmp_path / "plain.fits", np.zeros((10, 12), np.float32))
    with pytest.raises(ValueError, match=r"plain\.fits: no celestial WCS"):
        build_index(path, band="x")


def test_bad_noise_kind(write_mosaic):
    a = write_mosaic("a")
    with pytest.raises(ValueError, match="noise_kind must be one of"):
        build_index(a.sci, a.noise, band="x", noise_kind="sigma")
    with pytest.raises(ValueError, match="noise_kind='none'"):
        build_index(a.sci, a.noise, band="x", noise_kind="none")


# --------------------------------------------------------------------------------------
# Choosing a mosaic
# --------------------------------------------------------------------------------------


def test_select_most_central(write_mosaic, tmp_path):
    # two 0.1 x 0.0667 deg mosaics overlapping in RA 150.10 .. 150.15
    write_mosaic("west", center=(150.10, 2.2), noise=None)
    write_mosaic("east", center=(150.15, 2.2), noise=None)
    west, east = sorted(
        build_index(str(tmp_path / "*_sci.fits"), band="x"), key=lambda m: m.center[0]
    )
    assert select_mosaic([west, east], 150.115, 2.2) is west
    assert select_mosaic([west, east], 150.135, 2.2) is east
    assert select_mosaic([east, west], 150.06, 2.21) is west
    assert select_mosaic([west, east], 150.4, 2.2) is None
    assert select_mosaic([west, east], 330.1, -2.2) is None
    assert covering([west, east], 150.135, 2.2) == [east, west]
    assert covering([west, east], 150.06, 2.2) == [west]
    assert covering([west, east], 10.0, 2.2) == []
    # a circle that only fits in the eastern mosaic
    assert select_mosaic([west, east], 150.14, 2.2, radius_deg=0.013) is east
    assert covering([west, east], 150.14, 2.2, radius_deg=0.013) == [east]
    # too large for either: falls back to the most central containing the point
    assert select_mosaic([west, east], 150.115, 2.2, radius_deg=1.0) is west


def test_assign_group_one_mosaic_for_a_cell_that_fits(write_mosaic, tmp_path):
    # the same two mosaics: a group inside both goes whole to the one where its least
    # central member is most central; one that no mosaic holds whole is split per source
    write_mosaic("west", center=(150.10, 2.2), noise=None)
    write_mosaic("east", center=(150.15, 2.2), noise=None)
    index = sorted(build_index(str(tmp_path / "*_sci.fits"), band="x"),
                   key=lambda m: m.center[0])
    ra = np.linspace(150.121, 150.131, 11)
    dec = np.full(ra.size, 2.2)
    assert list(assign_mosaics(index, ra, dec)) == [0] * 5 + [1] * 6  # split at 150.125
    assert (assign_group(index, ra, dec, pad_arcsec=20.0) == 1).all()
    assert (assign_group(index, ra - 0.002, dec, pad_arcsec=20.0) == 0).all()
    # too near an edge of both with this padding, or wider than the overlap: per source
    for r, pad in ((ra, 120.0), (np.linspace(150.09, 150.16, 11), 0.0)):
        assert (assign_group(index, r, dec, pad) == assign_mosaics(index, r, dec)).all()
    assert list(assign_group(index, [10.0], [2.2], 0.0)) == [-1]


# --------------------------------------------------------------------------------------
# Region reads
# --------------------------------------------------------------------------------------


@pytest.fixture
def local_variants(write_mosaic, write_raw_fits, tan_wcs, tmp_path):
    """Mosaic files in several storage layouts, with their physical values."""
    f = write_mosaic("f32")
    i16, i16_values = _int16_mosaic(tmp_path / "i16_sci.fits", write_raw_fits, tan_wcs)
    ext, ext_values = _extension_mosaic(tmp_path / "ext_sci.fits", tan_wcs)
    return {"float32": (f.sci, f.data), "int16-scaled": (i16, i16_values), "ext": (ext, ext_values)}


@pytest.mark.parametrize("box", list(BOXES))
@pytest.mark.parametrize("variant", ["float32", "int16-scaled", "ext"])
def test_read_region_local_equals_slice(local_variants, variant, box):
    path, values = local_variants[variant]
    (mosaic,) = build_index(path, band="x")
    x_range, y_range = BOXES[box]
    region = read_region(mosaic, x_range, y_range)
    assert isinstance(region, Region)
    assert region.data.dtype == np.float64
    assert (region.x0, region.y0) == (x_range[0], y_range[0])
    assert region.weight is None
    np.testing.assert_array_equal(region.data, _expected(values, x_range, y_range))


def test_read_region_int16_matches_astropy(local_variants):
    path, _ = local_variants["int16-scaled"]
    (mosaic,) = build_index(path, band="x")
    region = read_region(mosaic, (0, 600), (0, 400))
    np.testing.assert_allclose(region.data, fits.getdata(path), rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("box", ["small", "large", "clip-low", "clip-high", "full-width"])
def test_read_region_s3_equals_slice(s3_server, local_variants, box):
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    options = s3_server.storage_options(anon=True)
    for variant, (path, values) in local_variants.items():
        url = s3_server.upload(path, bucket, f"{variant}/{path.name}")
        (mosaic,) = build_index(url, band="x", storage_options=options)
        region = read_region(mosaic, *BOXES[box], storage_options=options)
        np.testing.assert_array_equal(region.data, _expected(values, *BOXES[box]))


def test_region_bytes_at_s3(s3_server, write_mosaic):
    f = write_mosaic("bytes")
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    options = s3_server.storage_options(anon=True)
    _upload(s3_server, [f.sci, f.noise], bucket, "m")
    (mosaic,) = build_index(
        f"s3://{bucket}/m/*_sci.fits",
        f"s3://{bucket}/m/*_wei.fits",
        band="x",
        storage_options=options,
    )
    s3_server.reset_counts()
    x_range, y_range = (200, 300), (150, 230)
    region = read_region(mosaic, x_range, y_range, storage_options=options)
    box_bytes = 100 * 80 * 4
    served = s3_server.bytes_served(f.sci.name)
    file_size = f.sci.stat().st_size
    assert region.bytes_read == 2 * box_bytes
    assert served == box_bytes
    assert served < 1.5 * box_bytes + 2880
    assert served < file_size / 25
    assert s3_server.bytes_served(f.noise.name) == box_bytes
    np.testing.assert_array_equal(region.data, f.data[150:230, 200:300])
    # a full-width box is one contiguous range: one request per file
    s3_server.reset_counts()
    region = read_region(mosaic, (0, 600), (10, 20), storage_options=options)
    assert s3_server.requests_served(f.sci.name) == 1
    assert s3_server.bytes_served(f.sci.name) == 600 * 10 * 4


def test_region_weight_and_wcs(write_mosaic):
    f = write_mosaic("w")
    (mosaic,) = build_index(f.sci, f.noise, band="x")
    region = read_region(mosaic, (-10, 50), (-5, 40))
    expected_w = _expected(f.noise_data, (-10, 50), (-5, 40))
    expected_w[np.isnan(_expected(f.data, (-10, 50), (-5, 40)))] = 0.0
    np.testing.assert_array_equal(region.weight, np.nan_to_num(expected_w, nan=0.0))
    assert (region.weight[5:25, 10:40] == 0).all()  # masked corner
    for x, y in [(0, 0), (13.5, 7.25), (59, 44)]:
        np.testing.assert_allclose(
            region.wcs.pixel_to_world_values(x, y),
            mosaic.wcs.pixel_to_world_values(x - 10, y - 5),
            rtol=0,
            atol=1e-10,
        )
    inner = read_region(mosaic, (100, 150), (30, 60))
    np.testing.assert_allclose(
        inner.wcs.pixel_to_world_values(0, 0), mosaic.wcs.pixel_to_world_values(100, 30)
    )
    assert inner.wcs.pixel_shape == (50, 30)
    assert (inner.x_range, inner.y_range, inner.shape) == ((100, 150), (30, 60), (30, 50))


def test_read_region_threads_after_pickle(write_mosaic):
    f = write_mosaic("t")
    (mosaic,) = build_index(f.sci, f.noise, band="x")
    mosaic = pickle.loads(pickle.dumps(mosaic))  # as shipped to a Dask worker
    assert "wcs=" not in repr(mosaic)
    boxes = [((x, x + 45), (y, y + 33)) for x in range(-20, 600, 70) for y in range(-10, 400, 90)]
    with ThreadPoolExecutor(8) as pool:
        regions = list(pool.map(lambda box: read_region(mosaic, *box), boxes))
    for (x_range, y_range), region in zip(boxes, regions, strict=True):
        np.testing.assert_array_equal(region.data, _expected(f.data, x_range, y_range))


@pytest.mark.parametrize("kind", ["uncertainty", "variance"])
def test_region_noise_kinds(write_mosaic, kind):
    f = write_mosaic("n", noise=kind)
    (mosaic,) = build_index(f.sci, f.noise, band="x", noise_kind=kind)
    region = read_region(mosaic, (0, 100), (0, 50))
    noise = f.noise_data[:50, :100]
    expected = 1 / noise**2 if kind == "uncertainty" else 1 / noise
    expected[~np.isfinite(expected) | np.isnan(f.data[:50, :100])] = 0.0
    np.testing.assert_allclose(region.weight, expected, rtol=1e-12)
    assert (region.weight[:20, :30] == 0).all()


def test_noise_to_weight():
    noise = np.array([4.0, 0.0, -1.0, np.nan, np.inf, 0.5])
    np.testing.assert_array_equal(noise_to_weight(noise, "weight"), [4, 0, 0, 0, 0, 0.5])
    np.testing.assert_array_equal(noise_to_weight(noise, "uncertainty"), [1 / 16, 0, 0, 0, 0, 4])
    np.testing.assert_array_equal(noise_to_weight(noise, "variance"), [0.25, 0, 0, 0, 0, 2])
    with pytest.raises(ValueError, match="'std'"):
        noise_to_weight(noise, "std")


def test_read_region_bad_box(write_mosaic):
    (mosaic,) = build_index(write_mosaic("b").sci, band="x")
    with pytest.raises(ValueError, match=r"x_range .* start < stop, got \(5, 5\)"):
        read_region(mosaic, (5, 5), (0, 10))
    with pytest.raises(ValueError, match=r"y_range .*got \(0.5, 3\)"):
        read_region(mosaic, (0, 5), (0.5, 3))


def test_sky_to_box(write_mosaic):
    (mosaic,) = build_index(write_mosaic("s").sci, band="x")
    x = np.array([100.2, 140.7, 120.0])
    y = np.array([50.0, 80.4, 60.0])
    ra, dec = mosaic.wcs.pixel_to_world_values(x, y)
    assert sky_to_box(mosaic, ra, dec, 0) == ((100, 142), (50, 81))
    assert sky_to_box(mosaic, ra, dec, 10) == ((90, 152), (40, 91))
    assert sky_to_box(mosaic, ra, dec, 200) == ((0, 342), (0, 281))
    ra0, dec0 = mosaic.wcs.pixel_to_world_values(599.2, 399.4)
    assert sky_to_box(mosaic, ra0, dec0, 3) == ((596, 600), (396, 400))
    assert sky_to_box(mosaic, 151.0, 2.2, 3) == ((0, 0), (0, 0))


# --------------------------------------------------------------------------------------
# gzip
# --------------------------------------------------------------------------------------


def test_gzip_fetched_once(write_mosaic, tmp_path, caplog):
    f = write_mosaic("gz", compress=True, directory=tmp_path / "data")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="dask_phot.images"):
        (mosaic,) = build_index(f.sci, f.noise, band="x", cache_dir=cache)
    fetched = [r for r in caplog.records if "gzip" in r.getMessage()]
    assert len(fetched) == 2  # image and noise map, fetched at once (in either order)
    assert any(r.getMessage().startswith(str(f.sci)) for r in fetched)
    assert mosaic.source_url == str(f.sci) and Path(mosaic.url).parent == cache
    assert not mosaic.url.endswith(".gz")
    mtime = os.stat(mosaic.url).st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dask_phot.images"):
        (again,) = build_index(f.sci, f.noise, band="x", cache_dir=cache)
        region = read_region(again, (5, 50), (0, 30))
    assert not [r for r in caplog.records if "gzip" in r.getMessage()]
    assert again.url == mosaic.url and os.stat(again.url).st_mtime_ns == mtime
    np.testing.assert_array_equal(region.data, f.data[0:30, 5:50])
    assert region.weight is not None


def test_gzip_on_s3_not_refetched(s3_server, write_mosaic, tmp_path, monkeypatch, caplog):
    f = write_mosaic("gzs3", compress=True, noise=None, directory=tmp_path / "d")
    monkeypatch.setenv("DASK_PHOT_CACHE", str(tmp_path / "envcache"))
    bucket = _bucket()
    s3_server.create_bucket(bucket)
    # no .gz suffix: detected from the gzip magic bytes
    url = s3_server.upload(f.sci, bucket, "m/gzs3_sci.fits")
    options = s3_server.storage_options(anon=True)
    s3_server.reset_counts()
    with caplog.at_level(logging.INFO, logger="dask_phot.images"):
        (mosaic,) = build_index(url, band="x", storage_options=options)
    assert any("gzip" in r.getMessage() and url in r.getMessage() for r in caplog.records)
    assert Path(mosaic.url).parent == tmp_path / "envcache"
    first = s3_server.bytes_served("gzs3_sci")
    assert first >= f.sci.stat().st_size
    (again,) = build_index(url, band="x", storage_options=options)
    # the header probe (first 4 blocks) only; no second download
    assert s3_server.bytes_served("gzs3_sci") - first <= 4 * 2880
    region = read_region(again, (0, 600), (0, 400), storage_options=options)
    np.testing.assert_array_equal(region.data, f.data)
    # a worker without the cached copy re-creates it
    os.unlink(again.url)
    region = read_region(again, (1, 3), (2, 4), storage_options=options)
    np.testing.assert_array_equal(region.data, f.data[2:4, 1:3])


# --------------------------------------------------------------------------------------
# The local S3 server
# --------------------------------------------------------------------------------------


def test_s3server_anonymous_and_private(s3_server, write_mosaic):
    f = write_mosaic("priv", noise=None)
    public, private = _bucket(), _bucket()
    s3_server.create_bucket(public, public=True)
    s3_server.create_bucket(private, public=False)
    pub_url = s3_server.upload(f.sci, public, "x_sci.fits")
    priv_url = s3_server.upload(f.sci, private, "x_sci.fits")
    anon = s3_server.storage_options(anon=True)
    assert build_index(pub_url, band="x", storage_options=anon)[0].shape == SHAPE
    # moto refuses unsigned reads of objects in a bucket without a public policy
    with pytest.raises(PermissionError, match=f"{priv_url}.*credentials"):
        build_index(priv_url, band="x", storage_options=anon)
    signed = s3_server.storage_options(anon=False)
    (mosaic,) = build_index(priv_url, band="x", storage_options=signed)
    region = read_region(mosaic, (0, 10), (0, 10), storage_options=signed)
    np.testing.assert_array_equal(region.data, f.data[:10, :10])


def test_s3server_lifecycle(tmp_path):
    env_before = {k for k in os.environ if k.startswith("AWS_")}
    server = LocalS3Server()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint_url
    with server:
        url = server.endpoint_url
        assert url.startswith("http://127.0.0.1:")
        options = server.storage_options()
        assert options["key"] == "testing" and options["client_kwargs"]["endpoint_url"] == url
        assert "key" not in server.storage_options(anon=True)
        bucket = _bucket()
        server.create_bucket(bucket)
        server.create_bucket(bucket)  # idempotent
        blob = tmp_path / "blob.bin"
        blob.write_bytes(b"x" * 5000)
        server.upload(blob, bucket, "a/blob.bin")
        server.reset_counts()
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **server.storage_options())
        assert fs.cat_file(f"{bucket}/a/blob.bin", start=100, end=1100) == b"x" * 1000
        assert server.bytes_served("blob.bin") == 1000
        assert server.bytes_served("other") == 0
        assert server.requests_served("blob.bin") == 1
        server.reset_counts()
        assert server.bytes_served() == 0
        with pytest.raises(FileNotFoundError, match=r"nothing\.bin"):
            server.upload(tmp_path / "nothing.bin", bucket, "k")
    assert not server.running
    server.stop()  # idempotent
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))  # nothing listens any more
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # the port was released
    assert {k for k in os.environ if k.startswith("AWS_")} == env_before


def test_headers_are_read_at_once_in_order_with_the_first_error_in_order():
    """``in_threads`` overlaps latency-bound calls (the remote headers of an index) but
    keeps the loop's results and its first error."""
    import threading
    import time

    from dask_phot.images.index import in_threads

    seen: set[int] = set()
    started = threading.Barrier(4, timeout=10)

    def call(i: int) -> int:
        seen.add(threading.get_ident())
        started.wait()  # returns only when four calls run at once
        return i * i

    assert in_threads(call, range(4), threads=4) == [0, 1, 4, 9]
    assert len(seen) == 4

    def fail(i: int) -> int:
        if i == 1:
            time.sleep(0.2)  # fails after item 3 has failed
            raise ValueError("item 1")
        if i == 3:
            raise ValueError("item 3")
        return i

    with pytest.raises(ValueError, match="item 1"):
        in_threads(fail, range(4))
    assert in_threads(call, [], threads=4) == []
