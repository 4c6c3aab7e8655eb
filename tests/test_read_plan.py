"""The read plan: requests chosen from their cost, and whole rows shared through the row cache."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from dask_phot.images import ReadCosts, build_index, plan_requests, read_region
from dask_phot.images.rows import RowCache, row_cache


def _bytes(requests, nx, width, itemsize=4):
    return sum(((n - 1) * nx + width) * itemsize for _, n in requests)


def test_narrow_box_of_wide_image_is_read_row_by_row():
    box = (1000, 1900, 200, 1100)  # 900 x 900 of an 8,500-pixel-wide mosaic
    req = plan_requests(2880, 8500, box, 4)
    assert len(req) == 900 and all(n == 1 for _, n in req)
    assert _bytes(req, 8500, 900) == 900 * 900 * 4
    assert req[0][0] == 2880 + (200 * 8500 + 1000) * 4


def test_wide_box_is_merged_within_the_overread():
    box = (20, 590, 0, 300)  # 570 of 600 columns: merging reads < 1.06 x the box
    req = plan_requests(0, 600, box, 4)
    assert len(req) == 1 and req[0][1] == 300
    assert _bytes(req, 600, 570) <= 1.5 * 570 * 300 * 4


@pytest.mark.parametrize("overread", [1.0, 1.5, 3.0, 20.0])
def test_plan_never_reads_more_than_the_overread(overread):
    costs = ReadCosts(latency=0.05, request_cpu=0.01, max_overread=overread)
    for width in (50, 200, 400, 599):
        box = (0, width, 10, 210)
        req = plan_requests(0, 600, box, 4, costs=costs)
        assert sum(n for _, n in req) == 200
        assert _bytes(req, 600, width) <= max(overread * width * 200 * 4, width * 200 * 4)


def test_costly_requests_merge_when_the_overread_allows():
    box = (0, 300, 0, 400)  # half the width: merged reads ~2 x the box
    cheap = plan_requests(0, 600, box, 4, costs=ReadCosts(request_cpu=0, latency=0,
                                                          max_overread=3.0))
    costly = plan_requests(0, 600, box, 4, costs=ReadCosts(request_cpu=0.01, latency=0.05,
                                                           max_overread=3.0))
    assert len(cheap) == 400
    assert len(costly) == 1


def test_max_gap_keeps_its_meaning():
    box = (0, 300, 0, 10)
    assert len(plan_requests(0, 600, box, 4, max_gap=0)) == 10
    assert len(plan_requests(0, 600, box, 4, max_gap=65536)) == 1


def test_row_cache_drops_least_recently_used():
    cache = RowCache(30)
    for r in range(3):
        cache.put("u", r, b"x" * 10)
    assert cache.get("u", 0) == b"x" * 10  # 0 is now the most recent
    cache.put("u", 3, b"y" * 10)
    assert cache.get("u", 1) is None and cache.get("u", 0) is not None
    assert cache.size == 30
    cache.resize(10)
    assert cache.size == 10 and cache.get("u", 0) == b"x" * 10  # the last used


def test_row_cache_reads_at_s3(s3_server, write_mosaic):
    """Neighbouring boxes of a wide mosaic: whole rows fetched once, in few requests, and the
    pixels are exactly the boxes'."""
    f = write_mosaic("rows", shape=(300, 2000))
    bucket = f"rows-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    for p in (f.sci, f.noise):
        s3_server.upload(p, bucket, p.name)
    options = s3_server.storage_options(anon=True)
    (mosaic,) = build_index(f"s3://{bucket}/{f.sci.name}", f"s3://{bucket}/{f.noise.name}",
                            band="x", storage_options=options)
    row_cache(1).resize(0)  # start empty
    s3_server.reset_counts()
    first = read_region(mosaic, (100, 400), (50, 150), storage_options=options,
                        row_cache_bytes=64 * 2**20)
    np.testing.assert_array_equal(first.data, f.data[50:150, 100:400])
    assert first.requests == 2 and first.bytes_read == 2 * 100 * 2000 * 4
    assert first.box_bytes == 2 * 100 * 300 * 4
    second = read_region(mosaic, (350, 650), (100, 180), storage_options=options,
                         row_cache_bytes=64 * 2**20)
    np.testing.assert_array_equal(second.data, f.data[100:180, 350:650])
    expected_w = f.noise_data[100:180, 350:650].astype(float)
    expected_w[np.isnan(second.data)] = 0
    np.testing.assert_array_equal(second.weight, expected_w)
    assert second.bytes_read == 2 * 30 * 2000 * 4  # rows 150-179 only
    assert s3_server.requests_served(bucket) == 4
    # without the cache the box is read row by row
    third = read_region(mosaic, (350, 650), (100, 180), storage_options=options)
    assert third.requests == 2 * 80 and third.bytes_read == third.box_bytes


def test_row_cache_reads_a_replaced_object_afresh(s3_server, write_mosaic):
    """An object replaced at the same URL (same size, another ETag: a notebook re-run
    after the mosaic was remade) is read afresh in the same process once indexed again;
    reads of an unchanged mosaic still come from the cache."""
    old = write_mosaic("same", shape=(120, 1500), seed=1)
    bucket = f"replaced-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    for p in (old.sci, old.noise):
        s3_server.upload(p, bucket, p.name)
    options = s3_server.storage_options(anon=True)
    urls = (f"s3://{bucket}/{old.sci.name}", f"s3://{bucket}/{old.noise.name}")
    cached = {"storage_options": options, "row_cache_bytes": 64 * 2**20}
    row_cache(1).resize(0)  # start empty
    (mosaic,) = build_index(*urls, band="x", storage_options=options)
    first = read_region(mosaic, (100, 300), (10, 60), **cached)
    np.testing.assert_array_equal(first.data, old.data[10:60, 100:300])
    (again,) = build_index(*urls, band="x", storage_options=options)
    s3_server.reset_counts()
    repeat = read_region(again, (100, 300), (10, 60), **cached)
    np.testing.assert_array_equal(repeat.data, old.data[10:60, 100:300])
    assert repeat.bytes_read == 0 and s3_server.requests_served(bucket) == 0  # cache hit
    new = write_mosaic("same", shape=(120, 1500), seed=2, directory=old.sci.parent / "new")
    assert new.sci.stat().st_size == old.sci.stat().st_size
    for p in (new.sci, new.noise):
        s3_server.upload(p, bucket, p.name)
    (replaced,) = build_index(*urls, band="x", storage_options=options)
    assert (replaced.version, replaced.noise_version) != (mosaic.version, mosaic.noise_version)
    fresh = read_region(replaced, (100, 300), (10, 60), **cached)
    assert fresh.bytes_read == 2 * 50 * 1500 * 4
    np.testing.assert_array_equal(fresh.data, new.data[10:60, 100:300])
    assert not np.array_equal(fresh.data, old.data[10:60, 100:300], equal_nan=True)
