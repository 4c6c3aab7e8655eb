"""HST -> HSC forced photometry on real COSMOS data: point, Sersic and template models.

Data: ``../shared/data/scarlet-cosmos-hst-hsc`` (scarlet's test cutouts: HST/ACS
F814W at 0.03"/px with its PSF, HSC grizy at 0.168"/px with per-band PSFs,
TAN WCSs, normalised fluxes). For each of the two fields: detect on HST
(:func:`dask_phot.detect.detect_sources`), measure each galaxy's shape on HST
(half-light radius deconvolved from the HST PSF, axis ratio and position
angle from the second moments, Sersic index 1), map the shapes onto the HSC
grid (:func:`dask_phot.models.shapes.sky_to_pixel`), and force photometry in
each HSC band three ways: point sources, Sersic models with the HST shapes,
and templates (:func:`dask_phot.templates.run_templates`). Prints the
galaxies' median reduced chi2 per method and band and writes data / model /
residual figures (``--out``, default ``../notes/realdata``).

Run: ``python benchmarks/real_hst_hsc.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS

from dask_phot import forced_photometry
from dask_phot.detect import DetectionParams, detect_sources
from dask_phot.engine import robust_sigma
from dask_phot.models.shapes import sky_to_pixel, wcs_jacobian
from dask_phot.psf import PixelPSF
from dask_phot.templates import run_templates
from dask_phot.templates.geometry import map_sources
from dask_phot.templates.shapes import sky_shapes

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "scarlet-cosmos-hst-hsc"
BANDS = "grizy"
FIELDS = {"field0": ("Cut_HST.fits", "Cut_HSC.fits"), "field1": ("Cut_HST1.fits", "Cut_HSC1.fits")}


def load_field(data: Path, name: str) -> dict:
    """HST image, WCS and PSF; HSC cube, WCS and per-band PSFs of one field."""
    hst_file, hsc_file = FIELDS[name]
    with fits.open(data / hst_file) as h:
        hst = np.array(h[0].data, dtype=np.float64)
        hwcs = WCS(h[0].header).celestial
    with fits.open(data / hsc_file) as h:
        hsc = np.array(h[0].data, dtype=np.float64)
        wcs = WCS(h[0].header).celestial
    with fits.open(data / "PSF_HST.fits") as h:
        hpsf = PixelPSF.from_array(np.array(h[0].data, dtype=np.float64), 0.03, size=177,
                                    name="PSF_HST.fits")
    with fits.open(data / "PSF_HSC.fits") as h:
        cube = np.array(h[0].data, dtype=np.float64)
    psfs = [PixelPSF(cube[b], 0.168, name=f"PSF_HSC.fits[{BANDS[b]}]") for b in range(5)]
    return {"hst": hst, "hwcs": hwcs, "hpsf": hpsf, "hsc": hsc, "wcs": wcs, "psfs": psfs}


def detect_hst(hst: np.ndarray) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Background-subtracted HST image, detections and segmentation map."""
    det = detect_sources(hst, params=DetectionParams(thresh=2.0, minarea=10,
                                                     deblend_cont=0.01),
                         background_kwargs={"box_size": 64})
    return hst - det.background.back, det.table, det.segmap


def pixel_shapes(shapes: pd.DataFrame, wcs: WCS, X: np.ndarray, Y: np.ndarray) -> dict:
    """Sky shapes -> HSC pixel shapes."""
    r, q, theta = sky_to_pixel(wcs_jacobian(wcs, X, Y), shapes["r_e"].to_numpy(),
                               shapes["q"].to_numpy(), shapes["pa"].to_numpy())
    return {"r_e": r, "q": np.clip(q, 0.05, 1.0), "theta": theta, "n": shapes["n"].to_numpy()}


def run_field(f: dict) -> tuple[pd.DataFrame, dict]:
    """Fits of every band by the three methods; chi2 table rows and images."""
    sub, table, segmap = detect_hst(f["hst"])
    X, Y, _ = map_sources(f["hwcs"], f["wcs"], table["x"].to_numpy(), table["y"].to_numpy())
    sky = sky_shapes(sub, table, f["hpsf"].array, f["hwcs"], 0.03)
    shapes = pixel_shapes(sky, f["wcs"], X, Y)
    rows, images = [], {}
    for b, band in enumerate(BANDS):
        img, psf = f["hsc"][b], f["psfs"][b]
        pt = forced_photometry(img, psf, X, Y, fit_sky=True, return_model=True)
        ser = forced_photometry(img, psf, X, Y, shapes=shapes, fit_sky=True,
                                return_model=True)
        tpl = run_templates(img, f["wcs"], psf, sub, f["hwcs"], f["hpsf"], segmap,
                            fit_sky=True)
        gal = (tpl.table["model"] == "template").to_numpy()
        fits_ = (("point", pt.chi2, pt.model), ("sersic", ser.chi2, ser.model),
                 ("template", tpl.table["chi2"].to_numpy(), tpl.model))
        # the noise: the smallest robust RMS of the three residuals (the best model's
        # residual is the closest to noise; no method is favoured a priori)
        sigma = min(robust_sigma(img - model) for _, _, model in fits_)
        disc = _discs(img.shape, X[gal], Y[gal], 2.0 * psf.fwhm)
        for method, chi2, model in fits_:
            resid = (img - model) / sigma
            rows.append({"band": band, "method": method,
                         "median_chi2": float(np.nanmedian(chi2[gal])),
                         "median_chi2_disc": float(np.median([np.mean(resid[d] ** 2)
                                                              for d in disc])),
                         "max_abs_resid_sigma": float(np.nanmax(np.abs(resid))),
                         "n_galaxies": int(gal.sum()),
                         "shift_east": float(np.median(tpl.table["shift_east"])),
                         "shift_north": float(np.median(tpl.table["shift_north"]))})
            images[(band, method)] = (img, model, resid)
    return pd.DataFrame(rows), images


def _discs(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, radius: float) -> list:
    """Pixel masks of discs around each position (one footprint for every method)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return [(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2 for cx, cy in zip(x, y, strict=True)]


def figure(images: dict, band: str, path: Path, title: str) -> None:
    """Data / model / residual (sigma) per method for one band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ("point", "sersic", "template")
    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    img = images[(band, "point")][0]
    lo, hi = np.percentile(img, [1, 99.5])
    for r, method in enumerate(methods):
        data, model, resid = images[(band, method)]
        for c, (arr, kw) in enumerate(((data, {"vmin": lo, "vmax": hi}),
                                       (model, {"vmin": lo, "vmax": hi}),
                                       (resid, {"vmin": -5, "vmax": 5, "cmap": "RdBu_r"}))):
            ax = axes[r, c]
            im = ax.imshow(arr, origin="lower", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 2:
                fig.colorbar(im, ax=ax, fraction=0.046, label="sigma")
            ax.set_title(f"{method}: {('data', 'model', 'residual')[c]}", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--out", default=str(ROOT / ".." / "notes" / "realdata"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in FIELDS:
        tab, images = run_field(load_field(Path(args.data), name))
        tables.append(tab.assign(field=name))
        for band in BANDS:
            figure(images, band, out / f"{name}_{band}.png",
                   f"{name}, HSC {band}: HST-prior point / Sersic / template fits")
    allt = pd.concat(tables)
    pivot = allt.pivot_table(index=["field", "method"], columns="band",
                             values="median_chi2").round(2)
    print("median reduced chi2 of the galaxies (resolved on HST) over each method's own "
          "stamps (the engine's chi2), per method and band")
    print(pivot[list(BANDS)].to_string())
    disc = allt.pivot_table(index=["field", "method"], columns="band",
                            values="median_chi2_disc").round(2)
    print("\nthe same over one footprint for all methods: mean (residual/sigma)^2 within "
          "2 FWHM of each galaxy")
    print(disc[list(BANDS)].to_string())
    worst = allt.pivot_table(index=["field", "method"], columns="band",
                             values="max_abs_resid_sigma").round(1)
    print("\nlargest |residual| (sigma) in the cutout")
    print(worst[list(BANDS)].to_string())
    reg = allt[allt.method == "template"].set_index(["field", "band"])
    print("\nregistration HST -> HSC measured by the template fit (arcsec)")
    print(reg[["shift_east", "shift_north"]].round(3).unstack("band").to_string())
    allt.to_csv(out / "chi2_table.csv", index=False)
    print(f"\nfigures and table in {out.resolve()}")


if __name__ == "__main__":
    main()
