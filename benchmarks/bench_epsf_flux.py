"""Fluxes with an ePSF built from the mosaic against a preset's, on a simulated IRAC field.

The true PSF is the golfir IRAC ch1 warm PSF (0.1", packaged) convolved with a
lopsided elliptical kernel (1.4"x0.7" at PA 30 deg, plus 15% of the light in a lobe
0.6" off), rendered exactly on a fine grid and summed into 0.6" pixels
(:class:`dask_phot.testing.finepsf.LatticePRF`). Sources at COSMOS density
(``--density``) or a sparser field; every source is fitted with forced photometry
using, in turn: the true ePSF (the floor), the ePSF built from the mosaic with golfir
and with Moffat wings (as :func:`build_epsf` gives it, and as the pipeline fits with it:
an :class:`~dask_phot.psf.OversampledPSF` with 21-pixel stamps, wings subtracted, fluxes
divided by the ePSF's flux in its box), the ``irac1`` preset (golfir with wings, what a
band uses by default), the ``irac1_notebook`` preset (17x17 PRF) and the golfir PSF
binned to 0.6". Prints one table: per PSF and S/N range, the median flux ratio - 1 and
the pulls' mean and standard deviation (N(0, 1) when the PSF is right). The ePSF's
flux errors include its own fractional error (``EmpiricalPSF.flux_error``, a bootstrap
of its stars) in quadrature, as the pipeline adds it; a row without it shows its effect.
Run: ``python benchmarks/bench_epsf_flux.py``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
from astropy.io import fits

from dask_phot.bands import get_band
from dask_phot.engine import forced_photometry
from dask_phot.psf import PixelPSF
from dask_phot.psf._epsf_render import EPSFStamps
from dask_phot.psf.empirical import EPSFOptions, build_epsf
from dask_phot.psf.wings import WingModel
from dask_phot.testing.finepsf import LatticePRF, Lobe, simulate_lattice_field

GOLFIR = os.path.join(os.path.dirname(__file__), "..", "dask_phot", "data", "psf",
                      "irac_ch1_warm_psf.fits")
KERNEL = (Lobe(0.85, 1.4, 0.7, 30.0), Lobe(0.15, 0.8, 0.8, 0.0, 0.6, 0.0))
BINS = [(5, 20), (20, 50), (50, 200), (200, np.inf), (50, np.inf)]


def truth_nodes(prf: LatticePRF, over: int, half: int) -> np.ndarray:
    """The true ePSF on the node grid (stamps at the node phases, interleaved)."""
    hn = over * half + 2
    out = np.zeros((2 * hn + 1, 2 * hn + 1))
    h = prf.size // 2
    idx = np.arange(2 * hn + 1) - hn
    for ry in range(over):
        for rx in range(over):
            fx = -rx / over + (1 if rx / over > 0.5 else 0)
            fy = -ry / over + (1 if ry / over > 0.5 else 0)
            st = prf.stamps(np.array([fx]), np.array([fy]))[0]
            rows, cols = idx[idx % over == ry], idx[idx % over == rx]
            pr = np.round(rows / over + fy).astype(int)
            pc = np.round(cols / over + fx).astype(int)
            okr, okc = np.abs(pr) <= h, np.abs(pc) <= h
            out[np.ix_(rows[okr] + hn, cols[okc] + hn)] = st[np.ix_(pr[okr] + h, pc[okc] + h)]
    return out


def rows_for(label, psf, im, sky, factor=1.0, psf_error=0.0):
    res = forced_photometry(im.data, psf, im.x, im.y, sigma=im.sigma, sky=sky)
    res.flux *= factor
    # the ePSF's own fractional flux error (a bootstrap of its stars) in quadrature,
    # as the pipeline adds it
    # binned on the true flux over the statistical error (no selection bias; the same
    # bins with and without the PSF error)
    snr = im.flux / (res.flux_err * factor)
    res.flux_err = np.hypot(res.flux_err, psf_error * res.flux) * factor
    out = []
    for lo, hi in BINS:
        s = (snr > lo) & (snr <= hi) & np.isfinite(res.flux)
        if not s.any():
            continue
        ratio = np.median(res.flux[s] / im.flux[s]) - 1
        pull = (res.flux[s] - im.flux[s]) / res.flux_err[s]
        out.append(f"{label:<32} {lo:>4}-{hi:<5} {int(s.sum()):>5} {100 * ratio:+8.2f}% "
                   f"{np.mean(pull):+7.2f} {np.std(pull):7.2f}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--area-arcmin2", type=float, default=25.0)
    ap.add_argument("--density", type=float, default=6.0e5)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    if not os.path.isfile(GOLFIR):
        raise SystemExit(f"needs the shared golfir PSF: {GOLFIR} not found")
    golfir = fits.getdata(GOLFIR).astype(np.float64)
    prf = LatticePRF(golfir, 0.1, 0.6, kernel=KERNEL, lattice=4)
    im = simulate_lattice_field(prf, area_arcmin2=args.area_arcmin2, seed=args.seed,
                                to_ujy=8.4616, sky=0.05, density_per_deg2=args.density)
    priors = im.meta["priors"][["ra", "dec"]]
    print(f"field: {im.shape[1]}x{im.shape[0]} px at 0.6\", {len(im.x)} sources, sky 0.05")
    table = [f"{'PSF':<32} {'S/N':<10} {'n':>5} {'flux-1':>9} {'pull':>7} {'sd':>7}"]
    table += rows_for("true ePSF (floor)", EPSFStamps([truth_nodes(prf, 4, 27)], 4, 0.6), im,
                      0.05)
    for label, wings in (("ePSF + golfir wings", WingModel("psf", golfir, 0.1, label="golfir")),
                         ("ePSF + Moffat wings", "moffat")):
        t0 = time.perf_counter()
        res = build_epsf(im.data, wcs=im.wcs, sigma=im.sigma, priors=priors, name="sim",
                         options=EPSFOptions(wings=wings, grid="none", size=55))
        dt = time.perf_counter() - t0
        print(f"{label}: {res.n_stars} stars ({res.selection.summary()}), FWHM "
              f"{res.fwhm:.2f} px, box flux {res.flux_in_box:.4f}, flux error "
              f"{100 * res.flux_error:.3f}% (bootstrap), built in {dt:.1f} s")
        table += rows_for(label + ", no PSF err", res.psf_model(), im, 0.05)
        table += rows_for(label, res.psf_model(), im, 0.05, psf_error=res.flux_error)
        table += rows_for("  as the pipeline fits it", res.to_oversampled(size=21), im, 0.05,
                          1.0 / res.flux_in_box, psf_error=res.flux_error)
    for preset in ("irac1", "irac1_notebook"):
        band = get_band(preset)
        table += rows_for(f"preset {preset}", band.load_psf(), im, 0.05,
                          band.flux_correction())
    golfir_odd = PixelPSF.from_oversampled(golfir, 0.1, 0.6, size=51, name="golfir binned")
    table += rows_for("golfir binned to 0.6\"", golfir_odd, im, 0.05)
    print("\n".join(table))


if __name__ == "__main__":
    main()
