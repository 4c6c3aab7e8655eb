"""dask_phot.archive against recorded archive replies served on 127.0.0.1.

The real pyvo and astroquery code runs: a small HTTP server answers each request
(method, path and the request's parameters) with a reply shaped exactly like the
service's (files in tests/data/archive, provenance in its README.md). Libraries are
pointed at the server through their public settings: service URLs passed as
arguments, astroquery's portal URLs and ``Heasarc.VO_URL``.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd
import pytest

from dask_phot.archive import (
    ArchiveCache,
    ArchiveError,
    RecipeError,
    SkyRegion,
    fetch_recipe,
    galex_images,
    irsa_images,
    load_recipe,
    plan_pieces,
    query_priors,
    xray_catalog,
)
from dask_phot.cells import healpix_29, partition_priors
from dask_phot.priors import read_priors
from dask_phot.testing.archive_server import ArchiveServer, mast_request

pytest.importorskip("pyvo")
pytest.importorskip("astroquery")

DATA = Path(__file__).parent / "data" / "archive"
REPO = Path(__file__).resolve().parents[1]
CENTRE = (150.01, 2.2)
NOTEBOOK = SkyRegion.cone(*CENTRE, 0.5 / 60)

# the notebook's COSMOS2015 columns (as examples/cosmos.toml asks for them)
COSMOS_COLUMNS = [
    "ra", "dec", "id", "ks_flux_aper2", "ks_fluxerr_aper2", "photoz", "splash_1_mag",
    "splash_1_magerr", "splash_1_flux", "splash_1_flux_err", "splash_2_flux",
    "splash_2_flux_err", "splash_3_flux", "splash_3_flux_err", "splash_4_flux",
    "splash_4_flux_err", "flux_galex_nuv", "flux_galex_fuv", "flux_chandra_05_2",
    "flux_chandra_2_10", "flux_chandra_05_10", "id_chandra09", "type", "r_mag_auto",
    "r_magerr_auto", "flux_24", "fluxerr_24", "mag_galex_nuv", "magerr_galex_nuv",
    "mag_galex_fuv", "magerr_galex_fuv",
]
#: the exact ADQL dask-phot sends for the notebook's query (the recorded reply's key)
NOTEBOOK_ADQL = (
    f"SELECT {', '.join(COSMOS_COLUMNS)} FROM cosmos2015 WHERE CONTAINS(POINT('ICRS', ra, "
    "dec), CIRCLE('ICRS', 150.01, 2.2, 0.008333333333)) = 1"
)


# ---------------------------------------------------------------------- the server
@pytest.fixture
def archive() -> Iterator[ArchiveServer]:
    """The recorded replies of IRSA TAP/SIA, MAST and HEASARC on 127.0.0.1."""
    with ArchiveServer() as server:
        add_recorded_routes(server)
        yield server


def add_recorded_routes(server: ArchiveServer) -> None:
    # IRSA TAP (pyvo run_sync: POST <base>/sync, REQUEST=doQuery, LANG=ADQL, QUERY=...)
    server.add("POST", "/TAP/sync", {"REQUEST": "doQuery", "LANG": "ADQL",
                                     "QUERY": NOTEBOOK_ADQL}, file=DATA / "irsa_tap_cosmos2015.xml")
    server.add("POST", "/TAP/sync", {"QUERY": lambda q: "ks_flux_aperx" in q},
               file=DATA / "irsa_tap_error.xml", status=400)
    # IRSA SIA v2 (GET <endpoint>?POS=...&COLLECTION=...)
    server.add("GET", "/SIA", {"COLLECTION": "spitzer_scosmos",
                               "POS": lambda p: p.startswith("CIRCLE 150.01 2.2 ")},
               file=DATA / "irsa_sia_scosmos.xml")
    server.add("GET", "/SIA", {"COLLECTION": "cadc_test"}, file=DATA / "sia2_dataset_cadc.xml")
    # MAST portal (astroquery: columns config, then POST /api/v0/invoke request=<json>)
    server.add("POST", "/portal/Mashup/Mashup.asmx/columnsconfig", {},
               file=DATA / "mast_columnsconfig.json", content_type="application/json")
    server.add("POST", "/api/v0/invoke", {"request": mast_request(
        "Mast.Caom.Filtered.Position", lambda p: p["position"].startswith("150.01, 2.2,"))},
        file=DATA / "mast_galex_cosmos_observations.json", content_type="application/json")
    server.add("POST", "/api/v0/invoke", {"request": mast_request(
        "Mast.Caom.Filtered.Position", lambda p: p["position"].startswith("210.8, 54.35,"))},
        file=DATA / "mast_advsearchpos_m101.json", content_type="application/json")
    server.add("POST", "/api/v0/invoke", {"request": mast_request("Mast.Caom.Products")},
               file=DATA / "mast_galex_cosmos_products.json", content_type="application/json")
    # HEASARC (astroquery Heasarc.query_region: POST <VO_URL>/tap/sync)
    server.add("POST", "/xamin/vo/tap/sync", {"QUERY": lambda q: "FROM ccosmoscat" in q},
               file=DATA / "heasarc_ccosmoscat.xml")


def tap_reply(frame: pd.DataFrame, query: str) -> bytes:
    """A TAP sync reply in the shape of the recorded one (irsa_tap_cosmos2015.xml)."""
    types = {"f": "double", "i": "long"}
    fields = "".join(f'      <FIELD name="{c}" datatype="{types[frame[c].dtype.kind]}"/>\n'
                     for c in frame.columns)
    rows = "".join("          <TR>" + "".join(f"<TD>{v!r}</TD>" for v in r) + "</TR>\n"
                   for r in frame.itertuples(index=False))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.4" '
        'xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n  <RESOURCE type="results">\n'
        f'    <INFO name="QUERY_STATUS" value="OK"/>\n    <INFO name="QUERY" '
        f"value={quoteattr(escape(query))}/>\n    <TABLE>\n{fields}      <DATA>\n"
        f"        <TABLEDATA>\n{rows}        </TABLEDATA>\n      </DATA>\n    </TABLE>\n"
        "  </RESOURCE>\n</VOTABLE>\n").encode()


def _separation(ra0: float, dec0: float, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r0, d0, r, d = (np.radians(v) for v in (ra0, dec0, ra, dec))
    h = np.sin((d - d0) / 2) ** 2 + np.cos(d0) * np.cos(d) * np.sin((r - r0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(h)))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- TAP priors
def test_tap_priors_notebook_query(archive: ArchiveServer, tmp_path: Path) -> None:
    cache = ArchiveCache(tmp_path)
    df = query_priors(NOTEBOOK, table="cosmos2015", columns=COSMOS_COLUMNS,
                      service_url=f"{archive.url}/TAP", id_column="id", cache=cache,
                      service_name="IRSA TAP")
    assert archive.requests("/TAP/sync")[0]["QUERY"] == NOTEBOOK_ADQL
    assert len(df) == 10 and list(df.columns) == COSMOS_COLUMNS
    assert df["flux_galex_nuv"].isna().sum() == 4          # empty cells are NaN
    priors = read_priors(df, id_column="id", columns=["ks_flux_aper2", "type"])
    assert priors["source_id"].is_unique and priors["ra"].between(150.0, 150.02).all()
    again = query_priors(NOTEBOOK, table="cosmos2015", columns=COSMOS_COLUMNS,
                         service_url=f"{archive.url}/TAP", id_column="id", cache=cache)
    assert len(archive.requests("/TAP/sync")) == 1      # answered from the cache
    pd.testing.assert_frame_equal(again, df)


def test_large_radius_fetched_in_cells_without_duplicates(archive: ArchiveServer,
                                                         tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    n = 1500
    r = 0.4 * np.sqrt(rng.uniform(size=n))
    theta = rng.uniform(0, 2 * np.pi, n)
    truth = pd.DataFrame({"ra": CENTRE[0] + r * np.cos(theta) / math.cos(math.radians(2.2)),
                          "dec": CENTRE[1] + r * np.sin(theta),
                          "id": np.arange(100_000, 100_000 + n)})
    region = SkyRegion.cone(*CENTRE, 0.3)
    pieces = plan_pieces(region, table="cosmos2015", columns=["ra", "dec", "id"],
                         max_piece_radius=0.1)
    assert len(pieces) > 10 and len({p.cell.pixel for p in pieces}) == len(pieces)
    served = 0
    for piece in pieces:  # each reply: the catalog within the piece's circle
        ra0, dec0 = piece.cell.center()
        near = _separation(ra0, dec0, truth["ra"].to_numpy(), truth["dec"].to_numpy())
        rows = truth[near <= piece.cell.radius_deg() + 1 / 3600]
        served += len(rows)
        archive.add("POST", "/TAP/sync", {"QUERY": piece.adql}, body=tap_reply(rows, piece.adql))

    df = query_priors(region, table="cosmos2015", columns=["ra", "dec", "id"],
                      service_url=f"{archive.url}/TAP", id_column="id",
                      max_piece_radius=0.1, cache=ArchiveCache(tmp_path))

    assert len(archive.requests("/TAP/sync")) == len(pieces)
    inside = truth[_separation(*CENTRE, truth["ra"].to_numpy(), truth["dec"].to_numpy()) <= 0.3]
    assert served > len(inside)                            # the pieces overlap...
    assert df["id"].is_unique                              # ...yet every source comes once
    assert sorted(df["id"]) == sorted(inside["id"])
    priors = read_priors(df, id_column="id")
    parts = partition_priors(priors, order=8, margin_arcsec=5.0)
    assert sum(p.n_primary for p in parts) == len(inside)


def test_pieces_cover_the_region() -> None:
    rng = np.random.default_rng(1)
    for region in (SkyRegion.cone(10.0, -45.0, 0.7), SkyRegion.box(359.9, 30.0, 1.2, 0.6)):
        pieces = plan_pieces(region, table="t", columns=["ra", "dec"], max_piece_radius=0.15)
        cells = {p.cell.pixel for p in pieces}
        order = pieces[0].cell.order
        ra = region.ra + rng.uniform(-2, 2, 4000)
        dec = region.dec + rng.uniform(-1, 1, 4000)
        inside = region.contains(ra, dec)
        pix = healpix_29(ra[inside] % 360, dec[inside]) >> 2 * (29 - order)
        assert set(pix.tolist()) <= cells
    box = SkyRegion.box(359.9, 30.0, 1.2, 0.6)
    assert "(ra >= " in box.adql("ra", "dec") and " OR ra <= " in box.adql("ra", "dec")


def test_offline_uses_the_cache_and_fails_clearly_without(archive: ArchiveServer,
                                                          tmp_path: Path) -> None:
    kwargs = dict(table="cosmos2015", columns=COSMOS_COLUMNS, id_column="id",
                  service_url=f"{archive.url}/TAP", service_name="IRSA TAP")
    online = query_priors(NOTEBOOK, **kwargs, cache=ArchiveCache(tmp_path / "cache"))
    n = len(archive.log)
    offline = query_priors(NOTEBOOK, **kwargs,
                           cache=ArchiveCache(tmp_path / "cache", offline=True))
    assert len(archive.log) == n
    pd.testing.assert_frame_equal(offline, online)
    with pytest.raises(ArchiveError, match=r"^IRSA TAP \(http://127.0.0.1:\d+/TAP\), query "
                       r"QUERY=SELECT ra, dec, id.*FROM cosmos2015 .*: offline, and no cached "
                       r"reply in .*empty") as info:
        query_priors(NOTEBOOK, **kwargs, cache=ArchiveCache(tmp_path / "empty", offline=True))
    assert len(archive.log) == n and info.value.__cause__ is None


def test_service_errors_are_one_clear_message(archive: ArchiveServer, tmp_path: Path) -> None:
    cache = ArchiveCache(tmp_path)
    with pytest.raises(ArchiveError, match=r"IRSA TAP \(http.*/TAP\), query QUERY=SELECT ra, "
                       r"dec, ks_flux_aperx FROM cosmos2015.*ks_flux_aperx\\?\" not found") as e:
        query_priors(NOTEBOOK, table="cosmos2015", columns=["ra", "dec", "ks_flux_aperx"],
                     service_url=f"{archive.url}/TAP", cache=cache, service_name="IRSA TAP")
    assert e.value.__cause__ is None and e.value.__suppress_context__
    port = _closed_port()
    with pytest.raises(ArchiveError, match=r"IRSA SIA \(http://127.0.0.1:\d+/SIA\), query "
                       r"POS=150.01 2.2 .*COLLECTION=spitzer_scosmos.*cannot be reached"):
        irsa_images(NOTEBOOK, collection="spitzer_scosmos", bands={"irac1": "IRAC1"},
                    sia_url=f"http://127.0.0.1:{port}/SIA", cache=cache)
    # a real ObsCore reply (CADC) lacks IRSA's band and subtype columns
    with pytest.raises(ArchiveError, match="no column 'energy_bandpassname', "
                       "'dataproduct_subtype'; it has: calib_level"):
        irsa_images(NOTEBOOK, collection="cadc_test", bands={"irac1": "IRAC1"},
                    sia_url=f"{archive.url}/SIA", cache=cache)
    with pytest.raises(ArchiveError, match=r"no 'science' images with band pass w1 for band "
                       r"'w1'; the reply has .*IRAC1/science.*MIPS24/science"):
        irsa_images(NOTEBOOK, collection="spitzer_scosmos", bands={"w1": "W1"},
                    sia_url=f"{archive.url}/SIA", cache=cache)


def test_truncated_reply_is_an_error(archive: ArchiveServer, tmp_path: Path) -> None:
    region = SkyRegion.cone(*CENTRE, 0.01)
    (piece,) = plan_pieces(region, table="cosmos2015", columns=["ra", "dec", "id"])
    rows = pd.DataFrame({"ra": [150.01], "dec": [2.2], "id": [7]})
    body = tap_reply(rows, piece.adql).replace(  # DALI: the overflow INFO follows the TABLE
        b"    </TABLE>\n", b'    </TABLE>\n    <INFO name="QUERY_STATUS" value="OVERFLOW"/>\n')
    archive.add("POST", "/TAP/sync", {"QUERY": piece.adql}, body=body)
    with pytest.raises(ArchiveError, match=r"QUERY=SELECT ra, dec, id FROM cosmos2015.*: the "
                       r"reply was truncated by the service's row limit"):
        query_priors(region, table="cosmos2015", columns=["ra", "dec", "id"],
                     service_url=f"{archive.url}/TAP", cache=ArchiveCache(tmp_path))
    assert not list(tmp_path.iterdir())                    # nothing cached


# ---------------------------------------------------------------------- images
def test_irsa_sia_irac_cloud_uris_and_noise(archive: ArchiveServer, tmp_path: Path) -> None:
    bands = {f"irac{c}": f"IRAC{c}" for c in (1, 2, 3, 4)}
    sets = irsa_images(NOTEBOOK, collection="spitzer_scosmos", bands=bands,
                       sia_url=f"{archive.url}/SIA", cache=ArchiveCache(tmp_path))
    (params,) = archive.requests("/SIA")
    assert params["POS"] == f"CIRCLE 150.01 2.2 {0.5 / 60}" and len(archive.log) == 1
    assert list(sets) == list(bands)
    irac1, irac3 = sets["irac1"], sets["irac3"]
    assert irac1.images == ("s3://nasa-irsa-spitzer/spitzer/scosmos/images/irac/"
                            "irac_ch1_go2_sci_10.fits",)
    assert irac1.noise == ("s3://nasa-irsa-spitzer/spitzer/scosmos/images/irac/"
                           "irac_ch1_go2_unc_10.fits",)
    assert irac3.images[0].startswith("https://irsa.ipac.caltech.edu/") and \
        irac3.images[0].endswith("irac_ch3_go2_sci_10.fits")    # no cloud copy: HTTPS
    assert irac3.noise[0].endswith("irac_ch3_go2_unc_10.fits")
    assert irac1.extra["coverage"][0].endswith("irac_ch1_go2_cov_10.fits")
    assert irac1.config_entry()["noise_kind"] == "uncertainty"
    https = irsa_images(NOTEBOOK, collection="spitzer_scosmos", bands={"irac1": "irac1"},
                        sia_url=f"{archive.url}/SIA", prefer_cloud=False,
                        noise_subtype="", cache=ArchiveCache(tmp_path))["irac1"]
    assert https.images[0].startswith("https://") and https.config_entry()["noise"] == []


def test_mast_galex_deep_tiles_science_and_skybg(archive: ArchiveServer,
                                                 tmp_path: Path) -> None:
    sets = galex_images(NOTEBOOK, mast_url=archive.url, cache=ArchiveCache(tmp_path))
    invoked = [json.loads(p["request"]) for p in archive.requests("/api/v0/invoke")]
    assert [r["service"] for r in invoked] == ["Mast.Caom.Filtered.Position",
                                               "Mast.Caom.Products"]
    assert {"paramName": "obs_collection", "values": ["GALEX"], "separator": ";"} \
        in invoked[0]["params"]["filters"]
    # deep DIS tiles only: the shallow AIS visit and the older, shallower COSMOS_01 are out
    assert sorted(invoked[1]["params"]["obsid"].split(",")) == [
        "1000000561", "1000000562", "1000000563", "1000000564"]
    for band, letter in (("nuv", "n"), ("fuv", "f")):
        found = sets[band]
        names = [u.rsplit("/", 1)[1] for u in found.images]
        assert names == [f"COSMOS_0{i}-{letter}d-int.fits.gz" for i in (1, 2, 3, 4)]
        assert [u.rsplit("/", 1)[1] for u in found.extra["skybg"]] == \
            [f"COSMOS_0{i}-{letter}d-skybg.fits.gz" for i in (1, 2, 3, 4)]
        assert all(u.startswith(f"{archive.url}/api/v0.1/Download/file?uri=mast:GALEX/")
                   for u in found.images)
        assert found.config_entry() == {"images": list(found.images), "noise": [],
                                        "noise_kind": "none"}


def test_mast_real_reply_without_deep_exposures(archive: ArchiveServer,
                                                tmp_path: Path) -> None:
    m101 = SkyRegion.cone(210.8, 54.35, 0.2)
    with pytest.raises(ArchiveError, match=r"MAST \(http.*\), query service=Mast.Caom.Filtered"
                       r".*no GALEX NUV/FUV observation longer than 40000 s \(12 found; the "
                       r"deepest is 13294.4 s\)"):
        galex_images(m101, mast_url=archive.url, cache=ArchiveCache(tmp_path))


# ---------------------------------------------------------------------- X-ray
def test_heasarc_chandra_cosmos_catalog(archive: ArchiveServer, tmp_path: Path) -> None:
    xray = xray_catalog(SkyRegion.cone(*CENTRE, 1.0), catalog="ccosmoscat",
                        heasarc_url=f"{archive.url}/xamin/vo", cache=ArchiveCache(tmp_path))
    (params,) = archive.requests("/xamin/vo/tap/sync")
    assert params["QUERY"] == ("SELECT * FROM ccosmoscat WHERE CONTAINS(POINT('ICRS',ra,dec),"
                               "CIRCLE('ICRS',150.01,2.2,1.0))=1")
    assert list(xray.columns) == ["name", "ra", "dec", "error_radius", "soft_flux",
                                  "soft_flux_error", "hard_flux", "hard_flux_error",
                                  "full_flux", "full_flux_error"]
    assert len(xray) == 7 and xray["soft_flux"].isna().sum() == 1
    box = xray_catalog(SkyRegion.box(*CENTRE, 2.0, 2.0), catalog="ccosmoscat",
                       heasarc_url=f"{archive.url}/xamin/vo", cache=ArchiveCache(tmp_path))
    assert "POLYGON('ICRS',149.009262" in archive.requests("/xamin/vo/tap/sync")[1]["QUERY"]
    assert len(box) == 7
    with pytest.raises(ArchiveError, match=r"HEASARC .*catalog=ccosmoscat.*no column 'flux_x'"):
        xray_catalog(SkyRegion.cone(*CENTRE, 1.0), catalog="ccosmoscat", keep=["ra", "flux_x"],
                     heasarc_url=f"{archive.url}/xamin/vo", cache=ArchiveCache(tmp_path))


# ---------------------------------------------------------------------- the COSMOS recipe
def _local_recipe(archive: ArchiveServer, tmp_path: Path) -> Path:
    """examples/cosmos.toml with its services pointed at the local server."""
    text = (REPO / "examples" / "cosmos.toml").read_text()
    for old, new in (("https://irsa.ipac.caltech.edu", archive.url),
                     ("https://mast.stsci.edu", archive.url),
                     ("https://heasarc.gsfc.nasa.gov", archive.url)):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "cosmos.toml"
    path.write_text(text.replace('cache_dir = ""', 'cache_dir = "cache"'))
    return path


def test_cosmos_recipe_end_to_end(archive: ArchiveServer, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dask_phot.commands import main
    from dask_phot.config import load_config

    recipe = _local_recipe(archive, tmp_path)
    assert main(["fetch", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "priors: 10 sources (1 query)" in out and "nuv: 4 image(s), 4 skybg" in out
    assert "x-ray catalog: 7 sources" in out
    config = load_config(tmp_path / "cosmos" / "config.toml", environ={})
    assert config.band_names == ("irac1", "irac2", "irac3", "irac4", "nuv", "fuv")
    irac1, nuv = config.band("irac1"), config.band("nuv")
    assert irac1.images[0].startswith("s3://") and irac1.noise_kind == "uncertainty"
    assert nuv.band.to_ujy == 33.73 and nuv.band.psf_file == "PSFnuv_faint.fits"
    assert config.band("fuv").band.to_ujy == 107.6 and len(nuv.images) == 4
    assert config.priors.keep_columns[0] == "ks_flux_aper2"
    assert config.output.path == str(tmp_path / "cosmos" / "catalog")
    priors = read_priors(config.priors.path, **config.priors.read_kwargs())
    assert len(priors) == 10 and "ks_flux_aper2" in priors
    manifest = json.loads((tmp_path / "cosmos" / "fetch.json").read_text())
    assert len(manifest["images"]["fuv"]["skybg"]) == 4
    assert len(manifest["images"]["irac2"]["coverage"]) == 1

    # offline: the same result from the cache alone, and one clear line without it
    n = len(archive.log)
    assert main(["fetch", str(recipe), "--offline", "--out", str(tmp_path / "again")]) == 0
    assert len(archive.log) == n
    capsys.readouterr()
    again = (tmp_path / "again" / "config.toml").read_text()
    assert again == (tmp_path / "cosmos" / "config.toml").read_text()
    shutil.rmtree(tmp_path / "cache")
    assert main(["fetch", str(recipe), "--offline", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dask-phot fetch: error: TAP (http://127.0.0.1:") and "offline" in err
    assert len(err.strip().splitlines()) == 1 and len(archive.log) == n


def test_recipe_is_checked_before_fetching(tmp_path: Path) -> None:
    base = load_recipe(REPO / "examples" / "cosmos.toml")
    assert base.region.radius * 60 == pytest.approx(0.5)
    big = load_recipe(REPO / "examples" / "cosmos.toml",
                      overrides={"archive.radius_arcmin": 48.0})
    assert big.region.radius == pytest.approx(0.8)
    assert len(plan_pieces(big.region, table="cosmos2015", columns=["ra", "dec"],
                           max_piece_radius=big.priors.max_piece_radius_arcmin / 60)) > 1
    cases = [
        ({"archive.images.irac1.bandpas": "IRAC1"}, r"archive.images.irac1.bandpas: unknown "
         r"key; known keys: .*\(did you mean 'bandpass'\?\)"),
        ({"archive.box_arcmin": [10, 10]}, "give radius_arcmin .* or box_arcmin"),
        ({"priors.path": "mine.parquet"}, "priors.path: set by the fetch"),
        ({"bands.nuv.images": ["a.fits"]}, r"bands.nuv.images: set by the fetch from "
         r"\[archive.images.nuv\]"),
        ({"bands.irac1.psf_fil": "x.fits"}, r"cosmos.toml: bands.irac1.psf_fil: unknown key"),
        ({"archive.images.w9.source": "galex"}, "archive.images.w9.filter: required"),
    ]
    for overrides, message in cases:
        with pytest.raises(RecipeError, match=message):
            load_recipe(REPO / "examples" / "cosmos.toml", overrides=overrides)
    with pytest.raises(ArchiveError, match="offline"):
        fetch_recipe(base, offline=True, cache_dir=tmp_path / "none", output_dir=tmp_path)
