"""Time to build the ePSF of a 15'x15' IRAC-like mosaic (0.6"/px, COSMOS density), one core.

The mosaic comes from :func:`dask_phot.testing.simulate_field` with the golfir IRAC
ch1 PSF binned to 0.6" (or a Moffat when the shared data is absent). Prints the
build time (wall and CPU) of :func:`dask_phot.psf.empirical.build_epsf` (global without
and with the bootstrap of the stars that measures its flux error, and automatic grid)
and, on the same stars, the time of photutils' ``EPSFBuilder`` (extra ``psf``) and the
two ePSFs' differences from the PSF the field was made with. Timings are only
meaningful on a quiet machine. Run: ``python benchmarks/bench_epsf_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from dask_phot.psf import PixelPSF, moffat_psf
from dask_phot.psf.empirical import EPSFOptions, build_epsf
from dask_phot.testing import SimBand, simulate_field

GOLFIR = os.path.join(os.path.dirname(__file__), "..", "dask_phot", "data", "psf",
                      "irac_ch1_warm_psf.fits")


def photutils_epsf(image, x, y, over, size):
    """photutils' EPSFBuilder on the same stars (sky subtracted by a global median)."""
    from astropy.nddata import NDData
    from astropy.table import Table
    from photutils.psf import EPSFBuilder, extract_stars

    data = image - np.median(image)
    stars = extract_stars(NDData(data), Table({"x": x, "y": y}), size=size)
    t0 = time.perf_counter()
    epsf, _ = EPSFBuilder(oversampling=over, maxiters=10, progress_bar=False)(stars)
    return time.perf_counter() - t0, epsf.data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--area-arcmin2", type=float, default=225.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-photutils", action="store_true")
    args = ap.parse_args(argv)
    if os.path.isfile(GOLFIR):
        from astropy.io import fits

        psf = PixelPSF.from_oversampled(fits.getdata(GOLFIR).astype(float), 0.1, 0.6,
                                        size=41, name="golfir")
    else:
        psf = moffat_psf(1.8 / 0.6, 2.5, pixel_scale=0.6, size=41)
    band = SimBand("irac1", psf, to_ujy=8.4616, depth_5sigma_ujy=0.5, sky=0.05)
    fld = simulate_field(bands=[band], seed=args.seed, area_arcmin2=args.area_arcmin2,
                         depth_variation=0.0)
    im = fld.images["irac1"]
    print(f"mosaic {im.shape[1]}x{im.shape[0]} px, {len(fld.priors)} priors")
    for grid, samples in (("none", 0), ("none", 16), ("auto", 16)):
        t0, c0 = time.perf_counter(), time.process_time()
        res = build_epsf(im.data, wcs=im.wcs, sigma=im.sigma, priors=fld.priors[["ra", "dec"]],
                         options=EPSFOptions(grid=grid, error_samples=samples), name="sim")
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        # CPU time is what one core spends (wall time counts the other users of a
        # shared machine too)
        print(f"build_epsf grid={grid}, error_samples={samples}: {dt:.1f} s wall, {dc:.1f} s "
              f"CPU, {res.n_stars} stars, mode {res.mode} ({res.grid_note}), flux error "
              f"{100 * res.flux_error:.3f}%; {res.selection.summary()}")
    truth = psf.array
    h = truth.shape[0] // 2
    ours = res.pixel_psf().array
    k = min(h, ours.shape[0] // 2)
    cut = slice(h - k, h + k + 1)
    mine = ours[ours.shape[0] // 2 - k: ours.shape[0] // 2 + k + 1,
                ours.shape[0] // 2 - k: ours.shape[0] // 2 + k + 1]
    t = truth[cut, cut] / truth[cut, cut].sum()
    print(f"dask-phot ePSF (phase 0) vs input PSF: max |diff| / peak "
          f"{np.abs(mine / mine.sum() - t).max() / t.max():.4f}")
    if args.no_photutils:
        return
    try:
        st = res.stars
        dt, data = photutils_epsf(im.data, st["x_cat"].to_numpy(), st["y_cat"].to_numpy(), 4,
                                  2 * (res.size // 2) + 1)
    except ImportError:
        print("photutils not installed (pip install 'dask-phot[psf]'): no comparison")
        return
    n = data.shape[0]
    dec = data[(n // 2) % 4::4, (n // 2) % 4::4]
    k = min(h, dec.shape[0] // 2)
    c = dec.shape[0] // 2
    dec = dec[c - k:c + k + 1, c - k:c + k + 1]
    t = truth[h - k:h + k + 1, h - k:h + k + 1]
    print(f"photutils EPSFBuilder on the same {len(st)} stars: {dt:.1f} s; phase 0 vs input "
          f"PSF: max |diff| / peak {np.abs(dec / dec.sum() - t / t.sum()).max() / t.max():.4f}")


if __name__ == "__main__":
    main()
