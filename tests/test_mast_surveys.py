"""JWST survey look-ups on MAST against recorded-shape replies on 127.0.0.1, with MAST's
public bucket played by a local S3 endpoint (tests/data/archive/README.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dask_phot.archive import ArchiveCache, ArchiveError, RecipeError
from dask_phot.archive.mast_surveys import SurveySpec, band_of, survey_images
from dask_phot.archive.survey_recipe import fetch_surveys, load_survey_recipe
from dask_phot.testing.archive_server import ArchiveServer, add_mast_survey_routes

pytest.importorskip("astroquery")

DATA = Path(__file__).parent / "data" / "archive"
REPO = Path(__file__).resolve().parents[1]
LOOKUP = json.loads((DATA / "mast_path_lookup_surveys.json").read_text())
CEERS = SurveySpec("ceers", ("1345",), hlsp="ceers", filters=("F115W", "F200W", "F444W"))


def bucket_key(path: str) -> str:
    """The bucket key of a path-look-up path (as astroquery maps it)."""
    if path.startswith("/hlsp_local/public/"):
        return "mast/" + path.removeprefix("/hlsp_local/public/")
    return path.lstrip("/")


@pytest.fixture
def mast() -> Iterator[ArchiveServer]:
    with ArchiveServer() as server:
        add_mast_survey_routes(server, DATA)
        yield server


@pytest.fixture
def bucket(s3_server, tmp_path):
    """stpubdata with every level-3 i2d of CEERS but o002's F444W, and one HLSP mosaic."""
    s3_server.create_bucket("stpubdata")
    stub = tmp_path / "stub.fits"
    stub.write_bytes(b"SIMPLE  =")
    keys = [bucket_key(e["path"]) for e in LOOKUP.values() if e["path"]]
    wanted = [k for k in keys if ("jw01345/L3" in k and k.endswith("_i2d.fits")
                                  and "o002_t001_nircam_clear-f444w" not in k)
              or k.endswith("hlsp_ceers_jwst_nircam_egs1_f200w_v1.0_i2d.fits")]
    for key in wanted:
        s3_server.upload(stub, "stpubdata", key)
    yield s3_server.storage_options(anon=True)
    client = s3_server.boto3_client()
    for key in wanted:
        client.delete_object(Bucket="stpubdata", Key=key)


def test_level3_preferred_choice_recorded_s3_else_https(mast, bucket, tmp_path):
    found = survey_images(CEERS, mast_url=mast.url, storage_options=bucket,
                          cache=ArchiveCache(tmp_path))
    invoked = [json.loads(p["request"]) for p in mast.requests("/api/v0/invoke")]
    assert [r["service"] for r in invoked] == ["Mast.Caom.Filtered", "Mast.Caom.Filtered",
                                               "Mast.Caom.Products"]
    filters = {f["paramName"]: f["values"] for f in invoked[0]["params"]["filters"]}
    assert filters == {"obs_collection": ["JWST"], "proposal_id": ["1345"],
                       "instrument_name": ["NIRCAM/IMAGE"],
                       "filters": ["F115W", "F200W", "F444W"], "dataproduct_type": ["image"]}
    assert {f["paramName"]: f["values"] for f in invoked[1]["params"]["filters"]
            }["provenance_name"] == ["CEERS"]
    assert list(found.bands) == ["f115w", "f200w", "f444w"]
    f200w = found.bands["f200w"]
    assert f200w.images == tuple(
        f"s3://stpubdata/jwst/public/jw01345/L3/t/o00{t}/jw01345-o00{t}_t001_nircam_clear-"
        "f200w_i2d.fits[SCI]" for t in (1, 2))
    assert f200w.noise == tuple(u.replace("[SCI]", "[WHT]") for u in f200w.images)
    assert f200w.noise_kind == "weight"
    assert f200w.extra["coverage"] == tuple(u.replace("[SCI]", "[CON]") for u in f200w.images)
    assert found.choices["f200w"] == {
        "used": "level3", "level3_observations": 2, "hlsp_observations": 2,
        "level2_not_used": 4, "rule": "level3 preferred", "mosaics": 2, "s3_urls": 6,
        "https_urls": 0}
    f444w = found.bands["f444w"]  # o002's F444W is not in the bucket: MAST's download URL
    assert f444w.images[0].startswith("s3://")
    assert f444w.images[1] == (f"{mast.url}/api/v0.1/Download/file?uri=mast:JWST/product/"
                               "jw01345-o002_t001_nircam_clear-f444w_i2d.fits[SCI]")
    assert found.choices["f444w"]["https_urls"] == 3
    # the level-2 exposures and the catalogs, previews, associations are never mosaics
    assert not any("_cal" in u or "_segm" in u for s in found.bands.values() for u in s.images)


def test_hlsp_preferred_and_offline_from_the_cache(mast, bucket, tmp_path):
    found = survey_images(CEERS, prefer="hlsp", noise="ERR", mast_url=mast.url,
                          storage_options=bucket, cache=ArchiveCache(tmp_path))
    f200w = found.bands["f200w"]
    assert found.choices["f200w"]["used"] == "hlsp"
    assert found.choices["f115w"]["used"] == "level3"  # no HLSP mosaic in F115W
    assert f200w.images[0] == ("s3://stpubdata/mast/hlsp/ceers/egs/nircam/hlsp_ceers_jwst_"
                               "nircam_egs1_f200w_v1.0_i2d.fits[SCI]")
    assert f200w.images[1].startswith(f"{mast.url}/api/v0.1/Download/file?uri=mast:HLSP/")
    assert f200w.noise[0].endswith("[ERR]") and f200w.noise_kind == "uncertainty"
    n = len(mast.log)
    again = survey_images(CEERS, prefer="hlsp", noise="ERR", mast_url=mast.url,
                          storage_options=bucket, cache=ArchiveCache(tmp_path, offline=True))
    assert len(mast.log) == n and again.bands == found.bands and again.choices == found.choices
    with pytest.raises(ArchiveError, match="offline, and no cached reply"):
        survey_images(CEERS, mast_url=mast.url, cache=ArchiveCache(tmp_path / "no",
                                                                   offline=True))


def test_a_survey_without_products_is_one_clear_error(mast, tmp_path):
    cache = ArchiveCache(tmp_path)
    with pytest.raises(ArchiveError, match=r"^MAST \(http://127.0.0.1:\d+\), query service="
                       r"Mast.Caom.Filtered; obs_collection=JWST; proposal_id=9999; "
                       r"instrument_name=NIRCAM/IMAGE; filters=F200W; dataproduct_type=image: "
                       r"survey 'nothing': no level-3 or HLSP mosaics in F200W$"):
        survey_images(SurveySpec("nothing", ("9999",), filters=("F200W",)), mast_url=mast.url,
                      cache=cache, cloud=False)
    with pytest.raises(ArchiveError, match=r"survey 'ceers': no level-3 or HLSP mosaics in "
                       r"F090W; mosaics exist in F200W$"):
        survey_images(SurveySpec("ceers", ("1345",), filters=("F090W", "F200W")),
                      mast_url=mast.url, cache=cache, cloud=False)
    with pytest.raises(ValueError, match="give proposal_id and/or hlsp"):
        SurveySpec("x")


def test_band_names():
    assert band_of("F444W") == "f444w" and band_of("CLEAR;F200W") == "f200w"
    assert band_of("F150W2;F162M") == "f150w2-f162m" and band_of("") == ""


def _recipe(mast: ArchiveServer, storage: dict, tmp_path: Path, **mast_keys) -> Path:
    import tomllib

    import tomli_w

    data = tomllib.loads((REPO / "examples" / "jwst_surveys.toml").read_text())
    data["mast"].update(service=mast.url, cache_dir=str(tmp_path / "cache"),
                        output_dir=str(tmp_path / "surveys"), **mast_keys)
    data["storage"] = {"anon": True,
                       "endpoint_url": storage["client_kwargs"]["endpoint_url"]}
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_recipe_writes_detect_config_and_band_list(mast, bucket, tmp_path, capsys):
    from dask_phot.commands import main
    from dask_phot.cutouts import load_band_list
    from dask_phot.detect import load_detect_config

    recipe = _recipe(mast, bucket, tmp_path)
    assert main(["fetch", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "ceers f200w: 2 level3 mosaic(s) (6 s3:// and 0 https URLs; level 3: 2, HLSP: 2)" \
        in out and "primer f444w: 1 level3 mosaic(s)" in out
    cfg = load_detect_config(tmp_path / "surveys" / "detect.toml", environ={})
    assert list(cfg.surveys) == ["ceers", "primer"] and cfg.group_by == "filter"
    ceers = cfg.surveys["ceers"]
    assert len(ceers.images) == 6 and ceers.coverage_kind == "context"
    assert ceers.archive["f200w"]["used"] == "level3" and cfg.cosmics.enabled
    assert cfg.output == str(tmp_path / "surveys" / "detections")
    assert cfg.storage["endpoint_url"].startswith("http://127.0.0.1:")
    images, storage = load_band_list(tmp_path / "surveys" / "bands.toml")
    assert list(images) == ["f115w", "f200w", "f444w"] and len(images["f200w"]) == 3
    assert storage["client_kwargs"]["endpoint_url"] == cfg.storage["endpoint_url"]
    manifest = json.loads((tmp_path / "surveys" / "surveys.json").read_text())
    assert manifest["surveys"]["ceers"]["choices"]["f200w"]["hlsp_observations"] == 2
    # offline: the same files from the cache alone
    n = len(mast.log)
    assert main(["fetch", str(recipe), "--offline", "--out", str(tmp_path / "again")]) == 0
    assert len(mast.log) == n
    assert (tmp_path / "again" / "detect.toml").read_text().splitlines()[1:] == \
        (tmp_path / "surveys" / "detect.toml").read_text().splitlines()[1:]


def test_recipe_errors_name_the_key_and_no_products_exits_2(mast, bucket, tmp_path, capsys):
    from dask_phot.commands import main

    with pytest.raises(RecipeError, match=r"mast.surveys.ceers.proposal: unknown key.*"
                                          r"\(did you mean 'proposal_id'\?\)"):
        load_survey_recipe({"mast": {"surveys": {"ceers": {"proposal": ["1345"]}}}})
    with pytest.raises(RecipeError, match=r"mast.surveys.x: give proposal_id"):
        load_survey_recipe({"mast": {"surveys": {"x": {"filters": ["F200W"]}}}})
    with pytest.raises(RecipeError, match=r"^<dict>: detect.params: thresh must be a number > 0"):
        load_survey_recipe({"mast": {"surveys": {"x": {"hlsp": "x"}}},
                            "detect": {"params": {"thresh": -1}}})
    with pytest.raises(RecipeError, match=r"detect.images: set by the fetch"):
        load_survey_recipe({"mast": {"surveys": {"x": {"hlsp": "x"}}},
                            "detect": {"images": ["a.fits"]}})
    recipe = _recipe(mast, bucket, tmp_path)
    text = recipe.read_text().replace('proposal_id = [\n    "1837",\n]',
                                      'proposal_id = [\n    "9999",\n]')
    assert '"9999"' in text
    recipe.write_text(text)
    assert main(["fetch", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dask-phot fetch: error: MAST (")
    assert err.endswith("survey 'primer': no level-3 or HLSP mosaics in F115W, F200W, F444W")
    with pytest.raises(ArchiveError, match="offline, and no cached reply"):
        fetch_surveys(recipe, offline=True, cache_dir=tmp_path / "none")


def _reply(template: str, rows: list[dict]) -> bytes:
    """A MAST portal reply in the shape of a recorded one, with these rows."""
    shape = json.loads((DATA / template).read_text())
    names = [f["name"] for f in shape["fields"]]
    data = [{k: r.get(k) for k in names} for r in rows]
    paging = dict(shape["paging"], rows=len(rows), rowsFiltered=len(rows), rowsTotal=len(rows))
    return json.dumps(dict(shape, data=data, paging=paging)).encode()


def test_hst_drz_extensions_and_hlsp_separate_weight_files(mast, tmp_path):
    from dask_phot.testing.archive_server import Route, mast_filter, mast_request

    obs = [{"obsid": "2001", "obs_collection": "HST", "calib_level": 3, "filters": "F814W",
            "instrument_name": "ACS/WFC", "proposal_id": "12345", "dataproduct_type": "image"},
           {"obsid": "2002", "obs_collection": "HLSP", "calib_level": 4, "filters": "F160W",
            "instrument_name": "WFC3/IR", "provenance_name": "CANDELS",
            "dataproduct_type": "image"}]
    prods = [{"obsID": "2001", "productFilename": f"j9ab01010_{k}.fits", "calib_level": 3,
              "dataURI": f"mast:HST/product/j9ab01010_{k}.fits", "productType": "SCIENCE"}
             for k in ("drz", "drc", "flt")]
    prods += [{"obsID": "2002", "productFilename": f"hlsp_candels_hst_wfc3_egs_f160w_v1.0_{k}"
               f".fits", "dataURI": f"mast:HLSP/candels/hlsp_candels_hst_wfc3_egs_f160w_v1.0_"
               f"{k}.fits", "productType": "SCIENCE", "calib_level": 4}
              for k in ("drz", "wht")]
    for i, (name, check) in enumerate((
            ("mast_jwst_ceers_observations.json",
             lambda p: mast_filter(p, "proposal_id") == ["12345"]),
            ("mast_jwst_ceers_observations.json",
             lambda p: mast_filter(p, "provenance_name") == ["CANDELS"]))):
        rows = obs[:1] if i == 0 else obs[1:]
        mast.routes.insert(0, Route("POST", "/api/v0/invoke", {"request": mast_request(
            "Mast.Caom.Filtered", check)}, _reply(name, rows), content_type="application/json"))
    mast.routes.insert(0, Route("POST", "/api/v0/invoke", {"request": mast_request(
        "Mast.Caom.Products", lambda p: p["obsid"] == "2001,2002")},
        _reply("mast_jwst_ceers_products.json", prods), content_type="application/json"))
    spec = SurveySpec("egs-hst", ("12345",), hlsp="candels", instrument="ACS/WFC",
                      filters=("F814W", "F160W"), collection="HST")
    found = survey_images(spec, mast_url=mast.url, cloud=False, cache=ArchiveCache(tmp_path))
    f814w, f160w = found.bands["f814w"], found.bands["f160w"]
    download = f"{mast.url}/api/v0.1/Download/file?uri="
    # the CTE-corrected drc rather than the drz of the same visit; never the flt exposures
    assert f814w.images == (f"{download}mast:HST/product/j9ab01010_drc.fits[SCI]",)
    assert f814w.noise[0].endswith("_drc.fits[WHT]") and f814w.noise_kind == "weight"
    assert f814w.extra["coverage"][0].endswith("_drc.fits[CTX]")
    assert found.choices["f160w"]["used"] == "hlsp"
    assert f160w.images == (f"{download}mast:HLSP/candels/hlsp_candels_hst_wfc3_egs_f160w_"
                            "v1.0_drz.fits",)  # the file's image HDU, its weight beside it
    assert f160w.noise == (f"{download}mast:HLSP/candels/hlsp_candels_hst_wfc3_egs_f160w_"
                           "v1.0_wht.fits",) and "coverage" not in f160w.extra
