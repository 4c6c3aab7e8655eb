"""Tests of :mod:`dask_phot.bands`: presets, packaged PSFs, calibration and
bands from configuration.

Everything here runs on the packaged PSF files; only the provenance check
against ``/work/shared/data`` skips when that folder is absent.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from dask_phot.bands import (
    NOTEBOOK_BANDS,
    PRESETS,
    Band,
    BandError,
    flux_to_mag,
    get_band,
    mjysr_to_ujy,
    packaged_psf_files,
)
from dask_phot.config import ConfigError, band_from_config
from dask_phot.psf import OversampledPSF, PixelPSF, gaussian_psf

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared reference data absent: {SHARED_DATA} not found"
)

IRAC_TO_UJY = 1e12 / 4.254517e10 * 0.36

W = {w: 3.631 * 10 ** (-0.4 * off) for w, off in ((1, 2.699), (2, 3.339), (3, 5.174),
                                                    (4, 6.620))}
#: name -> (psf_file, pixel_scale, psf_pixel_scale, psf_size, psf_wing_size, to_ujy, unit,
#:          cutout_width, wavelength, fwhm)
EXPECTED = {
    "irac1": ("irac_ch1_warm_psf.fits", 0.6, 0.1, 21, 49, IRAC_TO_UJY, "MJy/sr", 10.0, 3.6,
              1.95),
    "irac2": ("irac_ch2_warm_psf.fits", 0.6, 0.1, 21, 49, IRAC_TO_UJY, "MJy/sr", 10.0, 4.5,
              2.02),
    "irac3": ("irac_ch3_cold_psf.fits", 0.6, 0.1, 21, 49, IRAC_TO_UJY, "MJy/sr", 10.0, 5.8,
              1.88),
    "irac4": ("irac_ch4_cold_psf.fits", 0.6, 0.1, 21, 49, IRAC_TO_UJY, "MJy/sr", 10.0, 8.0,
              1.98),
    "nuv": ("PSFnuv_faint.fits", 1.5, 1.5, 27, 61, 33.73, "count/s", 40.0, 0.2267, 5.3),
    "fuv": ("PSFfuv.fits", 1.5, 1.5, 27, 61, 107.6, "count/s", 40.0, 0.1516, 4.2),
    "w1": ("psf_model_w1.fits", 2.75, 2.75, 41, 101, W[1], "nanomaggy (Vega)", 41 * 2.75,
           3.4, 6.1),
    "w2": ("psf_model_w2.fits", 2.75, 2.75, 41, 101, W[2], "nanomaggy (Vega)", 41 * 2.75,
           4.6, 6.4),
    "w3": ("psf_model_w3.fits", 2.75, 2.75, 61, 161, W[3], "nanomaggy (Vega)", 61 * 2.75,
           12.0, 6.5),
    "w4": ("psf_model_w4.fits", 2.75, 5.5, 61, None, W[4], "nanomaggy (Vega)", 61 * 2.75,
           22.0, 12.0),
    **{f"irac{ch}_notebook": (f"PRF_IRAC_ch{ch}.fits", 0.6, 0.6, 17, None, IRAC_TO_UJY,
                              "MJy/sr", 10.0, wl, fw)
       for ch, wl, fw in ((1, 3.6, 1.95), (2, 4.5, 2.02), (3, 5.8, 1.88), (4, 8.0, 1.98))},
    "nuv_notebook": ("PSFnuv_faint.fits", 1.5, 1.5, 27, None, 33.73, "count/s", 40.0, 0.2267,
                     5.3),
    "fuv_notebook": ("PSFfuv.fits", 1.5, 1.5, 27, None, 107.6, "count/s", 40.0, 0.1516, 4.2),
}
#: Presets whose PSF is cut to its stamp and normalised there (no wings).
CUT = [n for n, e in EXPECTED.items() if e[4] is None]
WINGED = [n for n, e in EXPECTED.items() if e[4] is not None]


def packaged_array(name: str) -> np.ndarray:
    """A packaged PSF file's image, read independently of dask_phot.bands."""
    ref = resources.files("dask_phot").joinpath("data", "psf", name)
    with resources.as_file(ref) as path:
        return np.asarray(fits.getdata(path), dtype=np.float64)


def write_psf(path: Path, array: np.ndarray, **header: float) -> Path:
    hdu = fits.PrimaryHDU(array)
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


# ---------------------------------------------------------------------- presets
def test_preset_names() -> None:
    assert tuple(PRESETS) == tuple(EXPECTED)
    assert NOTEBOOK_BANDS == ("irac1", "irac2", "irac3", "irac4", "nuv", "fuv")
    assert set(NOTEBOOK_BANDS) <= set(PRESETS)
    assert {b.psf_file for b in PRESETS.values()} == set(packaged_psf_files())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_preset_values(name: str) -> None:
    band = PRESETS[name]
    (psf_file, scale, psf_scale, size, wing, to_ujy, unit, cutout, wavelength,
     fwhm) = EXPECTED[name]
    assert band.name == name
    assert band.psf_file == psf_file
    assert band.pixel_scale == scale
    assert band.psf_pixel_scale == psf_scale
    assert band.psf_size == size
    assert band.psf_wing_size == wing
    assert band.to_ujy == to_ujy  # exact: the notebook's (or unWISE's) arithmetic
    assert band.unit == unit
    assert band.cutout_width == pytest.approx(cutout)
    assert band.wavelength == wavelength
    assert band.fwhm == fwhm
    assert band.psf_normalize == "sum"
    assert band.depth_5sigma_ujy is not None and band.depth_5sigma_ujy > 0
    assert "simulator" in band.description
    assert band.calibration  # each preset says which calibration it follows
    assert ("total flux" in band.calibration) == (wing is not None)


def test_irac_conversion_is_the_notebooks() -> None:
    for ch in (1, 2, 3, 4):
        assert get_band(f"irac{ch}").to_ujy == 1e12 / 4.254517e10 * 0.36
    assert mjysr_to_ujy(0.6) == IRAC_TO_UJY
    assert mjysr_to_ujy(1.2) == pytest.approx(4 * IRAC_TO_UJY, rel=1e-15)


@pytest.mark.parametrize("name", CUT)
def test_cut_preset_psf_loads_normalised_and_odd(name: str) -> None:
    band = PRESETS[name]
    psf = band.load_psf()
    assert isinstance(psf, PixelPSF)
    assert psf.size == band.psf_size and psf.size % 2 == 1
    assert psf.array.shape == (band.psf_size, band.psf_size)
    assert psf.pixel_scale == band.pixel_scale
    assert psf.sum == pytest.approx(1.0, abs=1e-12)
    psf.check_normalized(rtol=1e-12)
    assert band.load_psf() is psf  # cached


@pytest.mark.parametrize("name", WINGED)
def test_winged_preset_psf_holds_the_whole_file(name: str) -> None:
    """Total fluxes: the whole PSF file is the PSF (normalised over all of it); the fit's
    stamps hold most of the light and the wings box nearly all of it."""
    band = PRESETS[name]
    psf = band.load_psf()
    assert isinstance(psf, OversampledPSF)
    assert (psf.size, psf.wing_size, psf.pixel_scale) == (band.psf_size, band.psf_wing_size,
                                                           band.pixel_scale)
    assert psf.array.sum() == pytest.approx(1.0, abs=1e-12)
    core, wings = psf.encircled(psf.size), psf.encircled(psf.wing_size)
    assert band.psf_flux_fraction() == core
    assert 0.88 < core < 0.99 and wings > max(core, 0.95)
    assert band.load_psf() is psf  # cached


@pytest.mark.parametrize("ch", [1, 2, 3, 4])
def test_irac_presets_are_golfir_psfs_centred_on_the_star(ch: int) -> None:
    psf = get_band(f"irac{ch}").load_psf()
    assert psf.oversampling == 6 and not psf.integrated  # mosaic pixels sum 6x6 fine ones
    assert psf.center == (149.0, 149.0)  # CRPIX: the drizzled Gaia star's position
    st = psf.stamps(np.zeros(1), np.zeros(1))[0][0]
    off = np.arange(-10, 11)
    cx, cy = st.sum(axis=0) @ off / st.sum(), st.sum(axis=1) @ off / st.sum()
    assert abs(cx) < 0.15 and abs(cy) < 0.15  # against 0.5-0.8 px for the notebook's PRFs


@pytest.mark.parametrize("name", ["nuv", "fuv"])
def test_galex_presets_are_centred_on_their_core(name: str) -> None:
    psf = get_band(name).load_psf()
    assert psf.oversampling == 1 and psf.integrated
    cx, cy = psf.center
    assert abs(cx - 59.0) < 0.05 and abs(cy - 59.0) < 0.05  # not the array's 59.5


#: Relative tolerance on the FWHM. The notebook's IRAC ch4 PRF measures 2.85"
#: against the nominal 1.98" (its core is broad and lopsided): tested apart.
@pytest.mark.parametrize("name", [n for n in CUT if n != "irac4_notebook"])
def test_cut_preset_psf_fwhm_near_nominal(name: str) -> None:
    band = PRESETS[name]
    measured = band.load_psf().fwhm * band.pixel_scale
    assert measured == pytest.approx(band.fwhm, rel=0.2)


def test_irac4_notebook_prf_is_broader_than_nominal() -> None:
    band = get_band("irac4_notebook")
    measured = band.load_psf().fwhm * band.pixel_scale
    assert 1.3 * band.fwhm < measured < 1.6 * band.fwhm


@pytest.mark.parametrize("ch", [1, 2, 3, 4])
def test_irac_notebook_prf_is_the_file_unchanged(ch: int) -> None:
    raw = packaged_array(f"PRF_IRAC_ch{ch}.fits")
    assert raw.shape == (17, 17)
    np.testing.assert_allclose(get_band(f"irac{ch}_notebook").load_psf().array,
                               raw / raw.sum(), rtol=1e-13)


@pytest.mark.parametrize("ch", [1, 2, 3, 4])
def test_irac_notebook_prfs_are_off_centre_by_half_a_pixel(ch: int) -> None:
    # The notebook's PRFs put the light ~0.5-0.8 px left of the middle pixel
    # (kept for parity); still within PixelPSF's 1 px centring tolerance.
    arr = get_band(f"irac{ch}_notebook").load_psf().array
    cx = arr.sum(axis=0) @ np.arange(-8, 9)
    assert -0.9 < cx < -0.4


@pytest.mark.parametrize(("name", "psf_file"), [("nuv", "PSFnuv_faint.fits"),
                                                ("fuv", "PSFfuv.fits")])
def test_galex_notebook_psf_is_the_notebooks_cut(name: str, psf_file: str) -> None:
    raw = packaged_array(psf_file)
    assert raw.shape == (120, 120)
    assert raw.max() == pytest.approx(1.0, abs=1e-4)  # peak-normalised in the file
    # the notebook: prf[0:119, 0:119], then [(60 - 13 - 1):(60 + 13)] on both axes
    cut = raw[0:119, 0:119][46:73, 46:73]
    band = get_band(f"{name}_notebook")
    psf = band.load_psf()
    assert psf.size == 27
    np.testing.assert_allclose(psf.array, cut / cut.sum(), rtol=1e-12)
    assert 0.95 < band.psf_flux_fraction() < 0.97
    assert get_band(name).psf_flux_fraction() == pytest.approx(band.psf_flux_fraction(),
                                                               abs=0.01)


def test_wise_psf_size_keeps_most_of_the_w1_flux() -> None:
    assert get_band("w1").psf_flux_fraction() >= 0.97
    assert get_band("w2").psf_flux_fraction() >= 0.97
    assert get_band("w3").psf_flux_fraction() > 0.88
    assert get_band("w4").psf_flux_fraction() > 0.88


def test_w4_model_is_upsampled_from_native_pixels() -> None:
    band = get_band("w4")
    raw = packaged_array("psf_model_w4.fits")
    native = PixelPSF.from_array(raw, 5.5, size=31)
    # interpolated onto 2.75" pixels: same width in arcsec, twice in pixels
    assert band.load_psf().fwhm * 2.75 == pytest.approx(native.fwhm * 5.5, rel=0.1)
    assert band.load_psf().fwhm * 2.75 == pytest.approx(12.0, rel=0.15)


@pytest.mark.parametrize(("name", "zeropoint"), [("nuv", 20.08), ("fuv", 18.82),
                                                 ("w1", 22.5 + 2.699), ("w4", 22.5 + 6.620),
                                                 ("irac1", 21.581)])
def test_ab_zeropoints(name: str, zeropoint: float) -> None:
    assert get_band(name).ab_zeropoint == pytest.approx(zeropoint, abs=1e-3)


def test_flux_to_mag() -> None:
    mag, err = flux_to_mag(np.array([1.0, 10.0, 0.0, -3.0, np.nan]),
                           np.array([0.1, 1.0, 1.0, 1.0, 1.0]))
    np.testing.assert_allclose(mag[:2], [23.9, 21.4])
    np.testing.assert_allclose(err[:2], [2.5 / math.log(10) * 0.1] * 2)
    assert np.isnan(mag[2:]).all() and np.isnan(err[2:]).all()
    # one magnitude is 10**0.4 in flux
    m2, _ = flux_to_mag([1.0, 10**0.4], [0.0, 0.0])
    assert m2[0] - m2[1] == pytest.approx(1.0)


# ---------------------------------------------------------------------- lookup
def test_get_band_is_case_insensitive() -> None:
    assert get_band("IRAC1") is PRESETS["irac1"]
    assert get_band("Nuv") is PRESETS["nuv"]
    band = PRESETS["w2"]
    assert get_band(band) is band


def test_get_band_unknown_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown band 'irac5'; known bands: irac1, irac2"):
        get_band("irac5")


def test_presets_are_read_only() -> None:
    with pytest.raises(TypeError):
        PRESETS["mine"] = PRESETS["irac1"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["irac1"].pixel_scale = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------------- Band checks
@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"pixel_scale": -1}, r"bands\.x: pixel_scale must be a number > 0, got -1"),
        ({"pixel_scale": "0.6"}, r"bands\.x: pixel_scale must be a number > 0, got '0\.6'"),
        ({"to_ujy": 0.0}, r"bands\.x: to_ujy must be a number > 0"),
        ({"psf_size": 26}, r"bands\.x: psf_size must be an odd integer >= 3 .*, got 26"),
        ({"psf_size": True}, r"bands\.x: psf_size must be an odd integer"),
        ({"fwhm": math.nan}, r"bands\.x: fwhm must be a number > 0"),
        ({"psf_normalize": "max"}, r"bands\.x: psf_normalize must be"),
        ({"psf_file": ""}, r"bands\.x: psf_file must be a non-empty string"),
        ({"name": "my-band"}, r"band name must start with a letter"),
        ({"aperture_correction": 0}, r"bands\.x: aperture_correction \(or \"auto\"\) must be"),
        ({"aperture_correction": "yes"}, r"bands\.x: aperture_correction"),
    ],
)
def test_band_rejects_bad_values(change: dict, pattern: str) -> None:
    settings = {"name": "x", "psf_file": "PSFfuv.fits", "pixel_scale": 1.5, "psf_size": 27}
    with pytest.raises(BandError, match=pattern):
        Band(**(settings | change))


def test_band_defaults() -> None:
    band = Band(name="x", psf_file="PSFfuv.fits", pixel_scale=1.5, psf_size=27)
    assert band.psf_pixel_scale == 1.5
    assert band.cutout_width == pytest.approx(27 * 1.5)
    assert band.to_ujy == 1.0
    assert band.wavelength is None and band.fwhm is None and band.depth_5sigma_ujy is None


# ---------------------------------------------------------------------- from files and config
def test_from_psf_file_on_a_mosaic_grid(tmp_path: Path) -> None:
    path = write_psf(tmp_path / "g.fits", 3.0 * gaussian_psf(3.0, size=25).array)
    band = Band.from_psf_file("mine", path, pixel_scale=0.6, unit="MJy/sr")
    assert band.psf_size == 25
    assert band.psf_pixel_scale == 0.6
    assert band.to_ujy == mjysr_to_ujy(0.6)
    assert band.fwhm == pytest.approx(3.0 * 0.6, rel=0.1)  # measured
    assert band.psf_file == str(path.resolve())
    np.testing.assert_allclose(band.load_psf().array, gaussian_psf(3.0, size=25).array,
                               rtol=1e-12)


def test_from_psf_file_resamples_by_header_scale(tmp_path: Path) -> None:
    fine = gaussian_psf(20.0, size=121, pixel_scale=0.1)
    path = write_psf(tmp_path / "fine.fits", fine.array, PIXSCALE=0.1)
    band = Band.from_psf_file("fine", path, pixel_scale=0.6)
    assert band.psf_pixel_scale == 0.1
    assert band.psf_size == 21  # ceil(121 * 0.1 / 0.6) made odd
    psf = band.load_psf()
    coarse = gaussian_psf(2.0 / 0.6, size=21)
    assert np.abs(psf.array - coarse.array).max() < 0.01 * coarse.array.max()


def test_from_psf_file_unknown_setting(tmp_path: Path) -> None:
    with pytest.raises(BandError, match=r"bands\.x: .*unexpected keyword argument 'colour'"):
        Band.from_psf_file("x", "PSFfuv.fits", pixel_scale=1.5, psf_size=27, colour="blue")


def test_load_psf_sees_a_rewritten_file(tmp_path: Path) -> None:
    path = write_psf(tmp_path / "p.fits", gaussian_psf(3.0, size=21).array)
    band = Band.from_psf_file("p", path, pixel_scale=1.0, psf_size=21)
    first = band.load_psf()
    path.unlink()
    write_psf(path, gaussian_psf(5.0, size=31).array)
    assert band.load_psf().fwhm > first.fwhm + 1.0


def test_config_band_from_a_fits_file(tmp_path: Path) -> None:
    write_psf(tmp_path / "mypsf.fits", gaussian_psf(3.0, size=25).array)
    table = tomllib.loads(
        '[bands.myband]\npsf_file = "mypsf.fits"\npixel_scale = 0.6\nto_ujy = 8.46\n'
        'wavelength = 3.6\n'
    )["bands"]["myband"]
    band = band_from_config("myband", table, base_dir=tmp_path)
    assert band.name == "myband"
    assert band.to_ujy == 8.46
    assert band.wavelength == 3.6
    assert band.psf_size == 25
    assert band.load_psf().sum == pytest.approx(1.0, abs=1e-12)
    assert band.load_psf().fwhm == pytest.approx(3.0, rel=0.1)


def test_config_relative_path_uses_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_psf(tmp_path / "here.fits", gaussian_psf(3.0, size=15).array)
    monkeypatch.chdir(tmp_path)
    band = band_from_config("here", {"psf_file": "here.fits", "pixel_scale": 1.0})
    assert Path(band.psf_file) == (tmp_path / "here.fits").resolve()


def test_config_mjysr_without_to_ujy(tmp_path: Path) -> None:
    write_psf(tmp_path / "p.fits", gaussian_psf(3.0, size=15).array)
    band = band_from_config("p", {"psf_file": str(tmp_path / "p.fits"), "pixel_scale": 1.2,
                                  "unit": "MJy/sr"})
    assert band.to_ujy == mjysr_to_ujy(1.2)


@pytest.mark.parametrize(
    ("table", "pattern"),
    [
        ({"psf_file": "PSFfuv.fits", "pixel_scal": 1.5},
         r"^bands\.myband\.pixel_scal: unknown key; known keys: psf_file, pixel_scale, "
         r".*\(did you mean 'pixel_scale'\?\)$"),
        ({"psf_file": "PSFfuv.fits", "pixel_scale": 1.5, "name": "x"},
         r"bands\.myband\.name: unknown key"),
        ({"psf_file": "PSFfuv.fits", "pixel_scale": 0.0},
         r"bands\.myband: pixel_scale must be a number > 0, got 0\.0"),
        ({"psf_file": "PSFfuv.fits", "pixel_scale": 1.5, "psf_size": 28},
         r"bands\.myband: psf_size must be an odd integer >= 3 .*, got 28"),
        ({"psf_file": "nope.fits", "pixel_scale": 1.5},
         r"bands\.myband: psf_file 'nope\.fits' not found.*packaged PSFs: PRF_IRAC_ch1"),
        ({"pixel_scale": 1.5}, r"bands\.myband\.psf_file: required \(or give preset"),
        ({"psf_file": "PSFfuv.fits"}, r"bands\.myband\.pixel_scale: required"),
        ({"preset": "irac9"}, r"bands\.myband\.preset: unknown band 'irac9'"),
        ({"preset": "irac1", "to_ujy": -2}, r"bands\.myband: to_ujy must be a number > 0"),
        ({"psf_file": "PSFfuv.fits", "pixel_scale": 1.5, "psf_normalize": "peaks"},
         r"bands\.myband: psf_normalize must be 'sum', 'peak' or 'none'"),
    ],
)
def test_config_errors_name_the_key(table: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        band_from_config("myband", table)


def test_config_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"bands\.myband: must be a table"):
        band_from_config("myband", ["psf_file"])  # type: ignore[arg-type]


def test_config_unusable_psf_names_the_file(tmp_path: Path) -> None:
    arr = np.zeros((21, 21))
    arr[2, 3] = 1.0
    write_psf(tmp_path / "offset.fits", arr)
    with pytest.raises(ConfigError, match=r"bands\.bad: psf_file: offset\.fits: PSF is not "
                                          r"centred"):
        band_from_config("bad", {"psf_file": "offset.fits", "pixel_scale": 1.0},
                         base_dir=tmp_path)
    (tmp_path / "text.fits").write_text("not FITS")
    with pytest.raises(ConfigError, match=r"bands\.bad: psf_file: \S*text\.fits: cannot read"):
        band_from_config("bad", {"psf_file": "text.fits", "pixel_scale": 1.0},
                         base_dir=tmp_path)


def test_preset_override() -> None:
    band = band_from_config("deep1", {"preset": "IRAC1", "depth_5sigma_ujy": 0.2,
                                      "cutout_width": 12.0})
    base = get_band("irac1")
    assert band.name == "deep1"
    assert band.depth_5sigma_ujy == 0.2
    assert band.cutout_width == 12.0
    assert dataclasses.replace(band, name="irac1", depth_5sigma_ujy=base.depth_5sigma_ujy,
                               cutout_width=base.cutout_width) == base
    np.testing.assert_array_equal(band.load_psf().array, base.load_psf().array)


def test_preset_override_pixel_scale_follows_pixel_area() -> None:
    band = band_from_config("coarse1", {"preset": "irac1_notebook", "pixel_scale": 1.2})
    assert band.to_ujy == mjysr_to_ujy(1.2)
    assert band.psf_pixel_scale == 0.6  # the PRF is resampled onto 1.2" pixels
    psf = band.load_psf()
    assert psf.size == 17 and psf.pixel_scale == 1.2
    assert psf.sum == pytest.approx(1.0, abs=1e-12)
    assert psf.fwhm < get_band("irac1_notebook").load_psf().fwhm  # fewer, larger pixels
    glimpse = band_from_config("glimpse2", {"preset": "irac2", "pixel_scale": 1.2})
    fine = glimpse.load_psf()  # the 0.1" PSF summed into 1.2" pixels (12 x 12)
    assert fine.oversampling == 12 and fine.pixel_scale == 1.2
    assert fine.fwhm < get_band("irac2").load_psf().fwhm
    explicit = band_from_config("coarse2", {"preset": "irac1", "pixel_scale": 1.2,
                                            "to_ujy": 5.0})
    assert explicit.to_ujy == 5.0


@pytest.mark.parametrize("name", list(EXPECTED))
def test_as_config_round_trip(name: str) -> None:
    band = PRESETS[name]
    assert band_from_config(name, band.as_config()) == band


# ---------------------------------------------------------------------- provenance
@needs_shared
@pytest.mark.parametrize(
    "source",
    [*(f"fornax-cosmos/PRF_IRAC_ch{ch}.fits" for ch in (1, 2, 3, 4)),
     "fornax-cosmos/PSFnuv_faint.fits", "fornax-cosmos/PSFfuv.fits",
     *(f"golfir-irac-psf/irac_ch{ch}_{e}_psf.fits" for ch, e in ((1, "warm"), (2, "warm"),
                                                                  (3, "cold"), (4, "cold"))),
     *(f"unwise-psf/psf_model_w{w}.fits" for w in (1, 2, 3, 4))],
)
def test_packaged_files_are_the_reference_files(source: str) -> None:
    original = SHARED_DATA / source
    if not original.is_file():
        pytest.skip(f"shared reference file absent: {original}")
    packaged = resources.files("dask_phot").joinpath("data", "psf", original.name)
    assert packaged.read_bytes() == original.read_bytes()


# ---------------------------------------------------------------------- total fluxes
def test_aperture_corrections_of_the_presets() -> None:
    """Presets modelling their PSFs in full need none; W4's cut stamp is corrected by the
    model's light beyond it; the notebook presets keep the notebook's fluxes (within the box)."""
    for name in WINGED:
        assert PRESETS[name].flux_correction() == 1.0
    w4 = PRESETS["w4"]
    assert w4.flux_correction() == pytest.approx(1 / w4.psf_flux_fraction())
    assert 1.05 < w4.flux_correction() < 1.2
    for name in NOTEBOOK_BANDS:
        assert PRESETS[name].flux_correction() == 1.0
    record = PRESETS["w4"].calibration_record()
    assert record["aperture_correction"] == w4.flux_correction() and "aperture" in \
        record["calibration"]


def test_a_cut_psf_gives_total_fluxes_once_corrected(tmp_path: Path) -> None:
    """A PSF file wider than its stamp, cut and normalised there: fitted fluxes hold the
    stamp's share of the light; the aperture correction makes them total (truth rendered
    with the whole file)."""
    from dask_phot import forced_photometry
    from dask_phot.psf import PixelPSF
    from dask_phot.testing import simulate_image

    r = np.hypot(*np.mgrid[-30:31, -30:31])
    wide = np.exp(-0.5 * (r / 1.2) ** 2) + 0.02 * np.exp(-r / 6.0)  # a core and broad wings
    wide /= wide.sum()
    fits.writeto(tmp_path / "wide.fits", wide)
    band = Band(name="cut", psf_file=str(tmp_path / "wide.fits"), pixel_scale=1.0, psf_size=11)
    frac = band.psf_flux_fraction()
    assert 0.75 < frac < 0.9 and band.flux_correction() == pytest.approx(1 / frac)
    rng = np.random.default_rng(5)
    x, y = np.meshgrid(np.arange(40.0, 400, 70), np.arange(40.0, 400, 70))
    x, y = x.ravel() + rng.uniform(-0.5, 0.5, x.size), y.ravel() + rng.uniform(-0.5, 0.5, x.size)
    flux = np.full(x.size, 1e4)
    image = simulate_image((440, 440), x, y, flux, PixelPSF(wide), seed=rng, sigma=0.01)
    res = forced_photometry(image.data, band.load_psf(), x, y, sigma=0.01, fit_sky=False)
    assert np.median(res.flux / flux) == pytest.approx(frac, rel=5e-3)
    total = res.flux * band.flux_correction()
    assert np.median(total / flux) == pytest.approx(1.0, rel=5e-3)
    fixed = dataclasses.replace(band, aperture_correction=1.0)
    assert fixed.flux_correction() == 1.0
