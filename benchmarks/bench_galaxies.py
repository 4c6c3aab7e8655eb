"""Galaxy photometry against independently rendered truth, by Sersic index, size and S/N.

Isolated Sersic galaxies (and point sources) in an IRAC ch1-like image (0.6"/px)
made with the golfir 0.1" empirical PSF: truth rendered on the 0.1" grid and
summed into 0.6" pixels by :mod:`dask_phot.testing.galaxies` (real space), the
fit by :func:`dask_phot.forced_photometry` with the shapes given (Fourier
space). Prints, per (n, r_e), the median flux bias, the pull median and std,
and what a point-source fit of the same galaxies gives (bias, and the fraction
flagged MODEL_MISMATCH), and what the fit's own choice of a round galaxy gives
without the shapes (``choose_models``). Run: ``python benchmarks/bench_galaxies.py``; the
golfir PSF comes from ``../shared/data/golfir-irac-psf`` (or ``--psf``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np

from dask_phot import Flag, forced_photometry
from dask_phot.psf import OversampledPSF
from dask_phot.testing import simulate_image

DEFAULT_PSF = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
               / "golfir-irac-psf" / "irac_ch1_warm_psf.fits")


def isolated(psf, n, r_e_arcsec, snr, count, seed, scale=0.6):
    """Image of ``count`` isolated galaxies on a grid, noise set for the given S/N."""
    rng = np.random.default_rng(seed)
    r_e = r_e_arcsec / scale
    st = None
    from dask_phot.models.render import render_sources
    from dask_phot.models.shapes import Shapes

    q = rng.uniform(0.5, 1.0, count)
    theta = rng.uniform(0, 180, count)
    shapes = {"r_e": np.full(count, r_e), "q": q, "theta": theta, "n": np.full(count, n)}
    probe = render_sources(psf, np.zeros(1), np.zeros(1),
                              Shapes.from_mapping({k: v[:1] for k, v in shapes.items()}, 1)).stamps
    st = probe.stamp(0)
    spacing = st.shape[0] + 8
    side = int(np.ceil(np.sqrt(count)))
    gx, gy = np.meshgrid(np.arange(side), np.arange(side))
    x = (gx.ravel()[:count] + 0.5) * spacing + rng.uniform(-0.5, 0.5, count)
    y = (gy.ravel()[:count] + 0.5) * spacing + rng.uniform(-0.5, 0.5, count)
    flux = np.full(count, 1000.0)
    sigma = flux[0] / snr * np.sqrt(np.sum(st**2))
    shape = (side * spacing, side * spacing)
    if r_e == 0:
        shapes = None
    im = simulate_image(shape, x, y, flux, psf, seed=rng, sigma=sigma, shapes=shapes)
    return im


def row(psf, n, r_e, snr, count, seed):
    im = isolated(psf, n, r_e, snr, count, seed)
    fit = forced_photometry(im.data, psf, im.x, im.y, sigma=im.sigma, shapes=im.shapes)
    pull = (fit.flux - im.flux) / fit.flux_err
    bias = np.median(fit.flux / im.flux - 1)
    pt = forced_photometry(im.data, psf, im.x, im.y, sigma=im.sigma)
    pt_bias = np.median(pt.flux / im.flux - 1)
    flagged = np.mean(pt.has(Flag.MODEL_MISMATCH)) if r_e > 0 else np.nan
    good_flag = np.mean(fit.has(Flag.MODEL_MISMATCH))
    ch = forced_photometry(im.data, psf, im.x, im.y, sigma=im.sigma, choose_models=True)
    ch_pull = (ch.flux - im.flux) / ch.flux_err
    choice = (np.median(ch.flux / im.flux - 1), np.std(ch_pull), np.mean(ch.chosen_r_e > 0))
    return bias, np.median(pull), np.std(pull), pt_bias, flagged, good_flag, choice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--psf", default=str(DEFAULT_PSF), help="0.1\"/px PSF FITS (golfir)")
    ap.add_argument("--count", type=int, default=150, help="galaxies per row")
    ap.add_argument("--snr", type=float, default=50.0, help="S/N of each galaxy")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    psf = OversampledPSF.from_fits(args.psf, 0.6, size=21)
    print(f"IRAC ch1-like, 0.6\"/px, PSF {Path(args.psf).name} (stamp {psf.size} px), "
          f"S/N {args.snr:g}, {args.count} isolated sources per row, q 0.5-1")
    print("shape given: the fit with the true shape; as point: fitted as a point source "
          "(MODEL_MISMATCH rate); no shape, chosen: choose_models=True (bias, pull std, "
          "fraction fitted as galaxies)")
    print(f"{'model':>10} {'r_e':>5} | {'bias':>7} {'pull med':>8} {'pull std':>8} "
          f"{'flagged':>7} | {'as point':>8} {'flagged':>7} | {'chosen':>7} {'pull std':>8} "
          f"{'galaxy':>6}")
    t0 = time.perf_counter()
    for n, r_e in [(0, 0.0), (1, 0.3), (1, 0.7), (1, 1.5), (4, 0.3), (4, 0.7), (4, 1.5)]:
        b, pm, ps, pb, fl, gf, ch = row(psf, max(n, 1), r_e, args.snr, args.count,
                                        args.seed + n)
        name = "point" if r_e == 0 else f"n={n}"
        print(f"{name:>10} {r_e:5.1f} | {100 * b:+6.2f}% {pm:+8.3f} {ps:8.3f} {gf:7.2f} | "
              f"{100 * pb:+7.2f}% {fl:7.2f} | {100 * ch[0]:+6.2f}% {ch[1]:8.2f} {ch[2]:6.2f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
