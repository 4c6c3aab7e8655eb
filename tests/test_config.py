"""Tests of dask_phot.config: the run configuration."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dask_phot.bands import PRESETS
from dask_phot.config import (
    ClusterConfig,
    ConfigError,
    EngineConfig,
    RunConfig,
    default_config,
    load_config,
    section_defaults,
    section_keys,
    storage_options,
)

MINIMAL = """
[priors]
path = "priors.parquet"
[bands.irac1]
images = ["irac1_sci.fits"]
noise = ["irac1_wht.fits"]
"""


def _write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _load(path_or_dict, **kw) -> RunConfig:
    return load_config(path_or_dict, environ=kw.pop("environ", {}), **kw)


def test_packaged_defaults_load(tmp_path):
    d = default_config()
    assert {"priors", "band_defaults", "cells", "engine", "output", "cluster",
            "storage"} <= d.keys()
    cfg = _load(_write(tmp_path, MINIMAL))
    assert cfg.engine == EngineConfig() and cfg.cluster == ClusterConfig()
    assert cfg.cells.order == "auto" and cfg.cells.rows_per_partition == 10000
    assert cfg.storage == {"anon": True}
    assert cfg.band_names == ("irac1",) and cfg.bands[0].band is PRESETS["irac1"]
    assert cfg.bands[0].noise_kind == "weight" and cfg.bands[0].sky == "fit"
    # auto margin: the stamp's half-width h, the final fit's radius (the stamp's
    # half-diagonal, h * sqrt(2), when 2 FWHM is smaller) and the wings' half-width + h
    assert cfg.margin_arcsec == pytest.approx((10 + 10 * 2**0.5 + 24 + 10) * 0.6)
    assert cfg.engine.forced_kwargs() == {
        "mode": "scene", "fit_sky": True, "sky_model": "constant", "fit_positions": False,
        "max_shift": 0.5, "position_snr": 5.0, "high_chi2": 5.0, "mismatch_sigma": 3.0,
        "max_stamp": 255, "backend": "dask_phot"}


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, MINIMAL + "[engine]\nfit_skyy = false\n")
    with pytest.raises(ConfigError, match=rf"^{path}: engine\.fit_skyy: unknown key; "
                                          r"known keys: mode, fit_sky, .*did you mean 'fit_sky'"):
        _load(path)
    path = _write(tmp_path, MINIMAL.replace("noise =", "nois ="))
    with pytest.raises(ConfigError, match=r"config\.toml: bands\.irac1\.nois: unknown key"):
        _load(path)
    with pytest.raises(ConfigError, match=r"config\.toml: enigne: unknown section"):
        _load(_write(tmp_path, MINIMAL + "[enigne]\nmode = 'scene'\n"))


@pytest.mark.parametrize(("section", "line", "message"), [
    ("cells", "order = 42", r'cells\.order: must be an integer 0\.\.13 or "auto", got 42'),
    ("cells", "margin_arcsec = -1.0", r"cells\.margin_arcsec: must be a number >= 0"),
    ("cells", "rows_per_partition = 0", r"cells\.rows_per_partition: must be an integer >= 1"),
    ("engine", 'mode = "bogus"', r"engine\.mode: must be one of 'scene', 'cutout', got 'bogus'"),
    ("engine", "fit_sky = 1", r"engine\.fit_sky: must be one of True, False, got 1"),
    ("engine", "max_shift = 0", r"engine\.max_shift: must be a number > 0"),
    ("cluster", 'memory_limit = "lots"', r"cluster\.memory_limit: must be a size"),
    ("cluster", 'scheduler = "host:8786"', r"cluster\.scheduler: must be 'local'"),
    ("bands.irac1", 'sky = "median"', r"bands\.irac1\.sky: must be one of 'fit'"),
    ("bands.irac1", 'noise_kind = "none"', r"bands\.irac1\.noise_kind: is 'none' but noise"),
    ("bands.irac1", "psf_size = 4", r"bands\.irac1: psf_size must be an odd integer"),
])
def test_bad_values_name_the_key(tmp_path, section, line, message):
    band = '[bands.irac1]\nimages = ["irac1_sci.fits"]\n'
    if section == "bands.irac1":
        band += line + "\n" + ('noise = ["w.fits"]\n' if "noise" in line else "")
        text = '[priors]\npath = "p.parquet"\n' + band
    else:
        text = f'[priors]\npath = "p.parquet"\n{band}[{section}]\n{line}\n'
    with pytest.raises(ConfigError, match=rf"config\.toml: {message}"):
        _load(_write(tmp_path, text))


def test_required_parts(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.toml: priors\.path: required"):
        _load(_write(tmp_path, '[bands.irac1]\nimages = ["a.fits"]\n'))
    with pytest.raises(ConfigError, match=r"config\.toml: bands: at least one"):
        _load(_write(tmp_path, '[priors]\npath = "p.parquet"\n'))
    with pytest.raises(ConfigError, match=r"bands\.foo: not a preset band"):
        _load(_write(tmp_path, MINIMAL + '[bands.foo]\nimages = ["a.fits"]\n'))
    with pytest.raises(ConfigError, match=r"bands\.irac1\.noise: must list one file per image"):
        _load(_write(tmp_path, MINIMAL.replace('noise = ["irac1_wht.fits"]',
                                               'noise = ["a.fits", "b.fits"]')))
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read"):
        _load(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_config_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = MINIMAL + '[bands.nuv]\nimages = ["s3://bucket/nuv/", "https://x.org/a.fits"]\n'
    cfg = _load(_write(tmp_path, text, "sub/config.toml"))
    sub = tmp_path / "sub"
    assert cfg.priors.path == str(sub / "priors.parquet")
    assert cfg.bands[0].images == (str(sub / "irac1_sci.fits"),)
    assert cfg.bands[0].noise == (str(sub / "irac1_wht.fits"),)
    assert cfg.bands[1].images == ("s3://bucket/nuv/", "https://x.org/a.fits")
    assert cfg.output.path == str(sub / "catalog")
    over = _load(cfg.to_dict(), overrides={"output.path": "out"})
    assert over.output.path == str(tmp_path / "out")  # overrides: from the working directory


def test_environment_overrides(tmp_path, monkeypatch):
    path = _write(tmp_path, MINIMAL)
    monkeypatch.setenv("DASK_PHOT__ENGINE__FIT_SKY", "false")
    monkeypatch.setenv("DASK_PHOT__BANDS__IRAC1__SKY", "none")
    monkeypatch.setenv("DASK_PHOT__CELLS__ORDER", "9")
    cfg = load_config(path)
    assert cfg.engine.fit_sky is False and cfg.bands[0].sky == "none" and cfg.cells.order == 9
    with pytest.raises(ConfigError, match=r"^environment variable DASK_PHOT__ENGINE__MODE: "
                                          r"engine\.mode: must be one of"):
        load_config(path, environ={"DASK_PHOT__ENGINE__MODE": "fast"})
    with pytest.raises(ConfigError, match=r"DASK_PHOT__ENGINE__BOGUS: engine\.bogus: unknown"):
        load_config(path, environ={"DASK_PHOT__ENGINE__BOGUS": "1"})
    with pytest.raises(ConfigError, match=r"DASK_PHOT__ENGINE: expected"):
        load_config(path, environ={"DASK_PHOT__ENGINE": "1"})


def test_user_defined_band(tmp_path):
    y, x = np.mgrid[-12:13, -12:13]
    psf = np.exp(-(x**2 + y**2) / (2 * 2.0**2))
    fits.PrimaryHDU(psf).writeto(tmp_path / "my_psf.fits")
    text = MINIMAL + """
[bands.myband]
images = ["my_*.fits"]
psf_file = "my_psf.fits"
pixel_scale = 0.5
to_ujy = 2.0
[bands.irac2]
images = ["irac2.fits"]
pixel_scale = 1.2
"""
    cfg = _load(_write(tmp_path, text))
    mine = cfg.band("myband")
    assert mine.band.name == "myband" and mine.band.psf_size == 25 and mine.band.to_ujy == 2.0
    assert mine.band.psf_file == str(tmp_path / "my_psf.fits")
    assert mine.band.load_psf().size == 25
    assert mine.noise_kind == "none"
    assert cfg.band("irac2").band.pixel_scale == 1.2  # preset overridden
    assert cfg.margin_arcsec == pytest.approx(max(b.margin_arcsec for b in cfg.bands))
    assert cfg.band("irac2").margin_arcsec == pytest.approx((10 + 10 * 2**0.5 + 24 + 10) * 1.2)
    with pytest.raises(ConfigError, match=r"config\.toml: bands\.myband\.pixel_scal: unknown "
                                          r"key; .*did you mean 'pixel_scale'"):
        _load(_write(tmp_path, text.replace("pixel_scale = 0.5", "pixel_scal = 0.5")))


def test_to_dict_round_trip(tmp_path):
    text = MINIMAL + """
[bands.nuv]
images = ["nuv.fits"]
sky = 0.25
[cells]
order = 9
margin_arcsec = 6
[storage]
anon = false
endpoint_url = "http://127.0.0.1:5000"
"""
    cfg = _load(_write(tmp_path, text))
    d = cfg.to_dict()
    json.dumps(d)
    again = _load(d)
    assert again == cfg and again.to_dict() == d
    assert again.config_hash() == cfg.config_hash()
    assert cfg.cells.margin_arcsec == 6.0 and cfg.band("nuv").sky == 0.25
    assert storage_options(cfg) == {"anon": False,
                                    "client_kwargs": {"endpoint_url": "http://127.0.0.1:5000"}}


def test_hash_stable_and_science_only(tmp_path):
    path = _write(tmp_path, MINIMAL)
    base = _load(path).config_hash()
    assert base == _load(path).config_hash() and len(base) == 64
    assert _load(path, overrides={"engine": {"fit_sky": False}}).config_hash() != base
    assert _load(path, overrides={"engine.mode": "cutout"}).config_hash() != base
    assert _load(path, overrides={"cells.order": 8}).config_hash() != base
    assert _load(path, overrides={"cluster.n_workers": 8,
                                  "output.catalog_name": "x"}).config_hash() == base


def test_storage_credentials_turn_off_anon(tmp_path):
    cfg = _load(_write(tmp_path, MINIMAL + '[storage]\nkey = "k"\nsecret = "s"\n'))
    assert storage_options(cfg) == {"anon": False, "key": "k", "secret": "s"}
    with pytest.raises(ConfigError, match=r"storage\.anon: must be one of True, False"):
        _load(_write(tmp_path, MINIMAL + '[storage]\nanon = "yes"\n'))


# ---------------------------------------------------------------------- packaged defaults
def _documented(text: str) -> dict[str, dict[str, tuple[bool, bool]]]:
    """Section -> key -> (set, commented) for every ``key = value`` line of a TOML file,
    including the commented-out ones (``# key = value  # what it means``) that document
    required or open keys; ``# [bands.<name>]`` starts a documented table."""
    out: dict[str, dict[str, tuple[bool, bool]]] = {}
    section = ""
    for line in text.splitlines():
        live = not line.lstrip().startswith("#")
        body = line.strip().lstrip("#").strip()
        head = re.match(r"^\[([\w.<>]+)\]", body)
        if head and (live or "<name>" in head[1]):
            section = head[1]
            continue
        item = re.match(r"^(\w+)\s*=\s*(.*)$", body)
        if item and section:
            value = item[2]
            # a comment after the value ('#' outside quotes)
            commented = "#" in re.sub(r"'[^']*'|\"[^\"]*\"", "", value)
            out.setdefault(section, {})[item[1]] = (live, commented)
    return out


def test_default_toml_documents_every_key_of_the_model():
    from dask_phot.config.band_tables import BAND_TABLE_KEYS
    from dask_phot.config.run import RUN_SECTIONS

    text = resources.files("dask_phot").joinpath("data", "default.toml").read_text()
    documented = _documented(text)
    expected = {name: set(section_keys(cls)) for name, cls in RUN_SECTIONS.items() if cls}
    expected["bands.<name>"] = set(BAND_TABLE_KEYS)
    assert {s: set(keys) for s, keys in documented.items()} == expected
    for section, keys in documented.items():
        undocumented = [k for k, (_, commented) in keys.items() if not commented]
        assert not undocumented, f"[{section}] keys without a comment: {undocumented}"
    # the values it sets are the model's defaults, so Python users get the same
    defaults = default_config()
    for name, cls in RUN_SECTIONS.items():
        if cls is not None:
            model = section_defaults(cls)
            assert defaults[name] == {k: model[k] for k in defaults[name]}, name


def test_default_toml_states_the_auto_margin_the_code_computes():
    from dask_phot.config.model import BandImages

    text = resources.files("dask_phot").joinpath("data", "default.toml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("margin_arcsec"))
    comment = " ".join(line.split("#", 1)[1] for line in lines[at:at + 2])
    stated = float(re.search(r'irac1: ([\d.]+)"', comment)[1])
    irac1 = BandImages(name="irac1", band=PRESETS["irac1"], images=("x.fits",))
    assert stated == round(irac1.margin_arcsec, 1) == 34.9
    cfg = load_config({"priors": {"path": "p.parquet"}, "bands": {"irac1": {"images": ["x"]}}},
                      environ={})
    assert round(cfg.margin_arcsec, 1) == stated
    assert f'{stated}"' in BandImages.margin_arcsec.__doc__
    assert "max(h sqrt 2, 2 FWHM)" in comment and "w + h" in comment and "half-widths" in comment


def test_detect_toml_documents_every_key_of_the_model():
    from dask_phot.detect.config import (
        ApertureSettings,
        BackgroundSettings,
        CosmicsSettings,
        DetectConfig,
        ReferenceSettings,
        SurveyInputs,
    )
    from dask_phot.detect.extract import DetectionParams

    text = resources.files("dask_phot").joinpath("data", "detect.toml").read_text()
    documented = _documented(text)
    sections = {"detect": DetectConfig, "detect.params": DetectionParams,
                "detect.background": BackgroundSettings, "detect.aperture": ApertureSettings,
                "detect.reference": ReferenceSettings, "detect.cosmics": CosmicsSettings,
                "detect.surveys.<name>": SurveyInputs}
    nested = {"params", "background", "aperture", "reference", "cosmics", "cluster", "storage",
              "surveys"}
    expected = {name: set(section_keys(cls)) - nested for name, cls in sections.items()}
    assert {s: set(keys) for s, keys in documented.items()} == expected
    for section, keys in documented.items():
        assert all(commented for _, commented in keys.values()), section
    data = tomllib.loads(text)
    for name, cls in sections.items():
        if "<name>" in name:  # a documented table without defaults
            continue
        table = data
        for part in name.split("."):
            table = table[part]
        model = section_defaults(cls)
        assert {k: v for k, v in table.items() if not isinstance(v, dict)} == \
            {k: model[k] for k in table if not isinstance(table[k], dict)}, name


@pytest.mark.parametrize(("line", "message"), [
    ("n_workers = 0", r"cluster\.n_workers: must be an integer >= 1, got 0"),
    ('memory_limit = "lots"', r"cluster\.memory_limit: must be a size like '4GiB'"),
    ('scheduler = "host:8786"', r"cluster\.scheduler: must be 'local', 'kubernetes'"),
])
def test_every_command_checks_cluster_the_same_way(tmp_path, line, message):
    from dask_phot.archive import RecipeError, load_recipe
    from dask_phot.detect import load_detect_config

    run = _write(tmp_path, MINIMAL + f"[cluster]\n{line}\n", "run.toml")
    detect = _write(tmp_path, f'[detect]\nimages = ["m.fits"]\n[cluster]\n{line}\n', "d.toml")
    recipe = _write(tmp_path, '[archive]\ncenter = [150.0, 2.0]\nradius_arcmin = 1.0\n'
                              '[archive.priors]\ntable = "t"\ncolumns = ["ra", "dec"]\n'
                              '[archive.images.irac1]\ncollection = "c"\n'
                              f'[cluster]\n{line}\n', "recipe.toml")
    with pytest.raises(ConfigError, match=rf"run\.toml: {message}"):
        _load(run)
    with pytest.raises(ConfigError, match=rf"d\.toml: {message}"):
        load_detect_config(detect, environ={})
    with pytest.raises(RecipeError, match=rf"recipe\.toml: {message}"):
        load_recipe(recipe)


def test_detect_config_layers_like_the_run_config(tmp_path):
    from dask_phot.detect import load_detect_config

    path = _write(tmp_path, '[detect]\nimages = ["m/*.fits"]\nreference.path = "gaia.csv"\n'
                            '[storage]\nendpoint_url = "http://127.0.0.1:9"\n', "sub/d.toml")
    env = {"DASK_PHOT__DETECT__PARAMS__THRESH": "3.5", "DASK_PHOT__CLUSTER__N_WORKERS": "1",
           "DASK_PHOT__ENGINE__FIT_SKY": "false"}  # a run-configuration variable: left alone
    cfg = load_detect_config(path, environ=env, overrides={"detect.tile_size": 512})
    sub = tmp_path / "sub"
    assert cfg.images == (str(sub / "m/*.fits"),) and cfg.output == str(sub / "detections")
    assert cfg.reference.path == str(sub / "gaia.csv") and cfg.psf_file == ""
    assert cfg.params.thresh == 3.5 and cfg.cluster.n_workers == 1 and cfg.tile_size == 512
    assert storage_options(cfg) == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    with pytest.raises(ConfigError, match=r"DASK_PHOT__DETECT__PARAMS__THRES: "
                                          r"detect\.params\.thres: unknown key"):
        load_detect_config(path, environ={"DASK_PHOT__DETECT__PARAMS__THRES": "3"})
    with pytest.raises(ConfigError, match=r"d\.toml: detect\.images: required"):
        load_detect_config(_write(tmp_path, "[detect]\ntile_size = 128\n", "sub/d.toml"),
                           environ={})
