"""Template fitting: accuracy on a crowded simulated pair, and time against point sources.

Both parts simulate with GalSim (:func:`dask_phot.testing.pairs.simulate_pair`)
a sharp (0.06"/px, HST-like) and an IRAC ch1-like (0.6"/px, the golfir 0.1"
PSF) image of the same irregular, clumpy galaxies at COSMOS density.

1. Accuracy (``--accuracy-size``, 2'x2' by default, as in
   ``tests/test_templates.py``): segments from ``detect_sources`` without
   deblending (1.5 sigma); templates fitted with the function's default options
   (segments grown 1.2" with the outskirts shared between neighbours, one
   registration iteration with the shifts fitted jointly with the fluxes), with
   the blurred WCS handed out true and 0.3" east of the truth. Prints the flux
   bias and the pulls' std (and 1.4826 MAD) by S/N over segments owned by one
   source, the registration recovered, and whether the issue's targets are met
   (:data:`TARGETS`).
2. Time (``--size``, 15'x15' by default, ~32,500 sources, 15000^2 sharp
   pixels; simulating it takes ~10 min of CPU, keep it with ``--cache``): the
   sharp image segmented as detection without deblending does (smoothed,
   thresholded at 1.5 sigma, connected pixels labelled: a full-field ``sep`` run
   would dominate the set-up). Then, timed in one run on one core (CPU and wall
   seconds, best of ``--repeat``):

   * the point-source fit: :func:`dask_phot.forced_photometry` of every
     segment's position (its centroid through both WCSs) with the sky fitted;
   * the template fit of the whole image: :func:`dask_phot.templates.run_templates`,
     templates built and fitted: with the default options (the setting of part
     1: grown, shared, registration measured in one iteration: two builds and
     two fits); once more with the measured shifts given (the registration is
     a property of the two mosaics: measured once, then every fit is one pass);
     one pass without registration; and one pass with the default segments
     (``grow=0``, which fails part 1's targets), for reference;

   and the point-source fit once more (the load changes during the run: its
   best time is kept); prints the ratios of CPU and of wall time to the
   point-source fit, and the peak memory. The machine is shared: the load
   average is printed with the timings.

Run: ``python benchmarks/bench_templates.py`` (``--size 300`` for a 5'x5' field;
``--cache FILE`` keeps the simulated field; ``--skip-accuracy``, ``--skip-time``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
from scipy import ndimage

from dask_phot import forced_photometry
from dask_phot.psf import OversampledPSF
from dask_phot.templates import run_templates
from dask_phot.templates.geometry import map_sources
from dask_phot.templates.segments import measure_segments
from dask_phot.testing.pairs import simulate_pair

DEFAULT_PSF = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
               / "golfir-irac-psf" / "irac_ch1_warm_psf.fits")


def segment(hires: np.ndarray, sigma: float) -> np.ndarray:
    """Connected pixels (>= 5) of the 2-pixel-FWHM smoothed image above 1.5 times the
    pixel noise, SExtractor's threshold convention."""
    smooth = ndimage.gaussian_filter(hires, 2.0 / 2.3548)
    labels, _ = ndimage.label(smooth > 1.5 * sigma)
    sizes = np.bincount(labels.ravel())
    small = sizes < 5
    small[0] = False
    labels[small[labels]] = 0
    return labels.astype(np.int32)


def timed(label: str, fn, repeat: int = 2):  # type: ignore[no-untyped-def]
    """Best of ``repeat`` runs (the machine is shared): wall-clock and CPU seconds
    of this (single-threaded) process; the CPU time is what a loaded machine
    distorts least. Returns the last output and ``(cpu, wall)``."""
    dt, cpu = np.inf, np.inf
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        dt = min(dt, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    print(f"  {label:<46s} {cpu:8.2f} s CPU {dt:8.2f} s wall   (load average "
          f"{os.getloadavg()[0]:.1f})", flush=True)
    return out, (cpu, dt)


#: The issue's accuracy targets: |bias| and pull std range at S/N 5-100, and the
#: registration error (arcsec) with the WCSs 0.3" apart.
TARGETS = {"bias": 0.02, "std": (0.85, 1.25), "shift": 0.05}


def accuracy(psf: OversampledPSF, size: float, seed: int, options: dict) -> bool:
    """Part 1 (module docstring): bias, pulls by S/N and registration, true and 0.3"
    off, with ``options`` (the function's defaults when empty); whether they meet
    :data:`TARGETS`."""
    from dask_phot.detect import DetectionParams, detect_sources
    from dask_phot.testing.pairs import pair_statistics

    print(f"accuracy: {size / 60:.0f}'x{size / 60:.0f}' COSMOS-density pair, seed {seed}, "
          f"options {options or 'default'}")
    ok = True
    for offset in (0.0, 0.3):
        sim = simulate_pair(psf, size_arcsec=size, offset=(offset, 0.0), seed=seed)
        seg = detect_sources(sim.hires, params=DetectionParams(thresh=1.5, minarea=5,
                                                               deblend_cont=1.0),
                             rms=sim.hires_sigma, background=0.0).segmap
        tab = run_templates(sim.image, sim.wcs, psf, sim.hires, sim.hires_wcs,
                            sim.hires_psf, seg, sigma=1.0, return_model=False,
                            **options).table
        stats = pair_statistics(sim, tab, seg)
        true_east = -float(np.median(sim.truth.dx)) * float(psf.pixel_scale)
        east = float(np.median(tab.shift_east))
        print(f"  WCS {offset:.1f}\" off: registration {east:+.3f}\" "
              f"east (truth {true_east:+.3f}), {np.median(tab.shift_north):+.3f}\" north "
              "(truth +0.000)")
        for name, row in stats.iterrows():
            print(f"    S/N {name:>7s}: n {int(row.n):4d}  bias {100 * row.bias:+6.2f}%  "
                  f"pull std {row['std']:.2f}  (MAD {row.mad_std:.2f})")
        whole = stats.iloc[-1]
        lo, hi = TARGETS["std"]
        ok &= bool(abs(whole.bias) <= TARGETS["bias"] and lo <= whole["std"] <= hi
                   and abs(east - true_east) <= TARGETS["shift"])
    print(f"  meets the accuracy targets (|bias| <= {100 * TARGETS['bias']:.0f}%, pull std "
          f"{lo}-{hi} at S/N 5-100, registration within {TARGETS['shift']}\"): "
          f"{'yes' if ok else 'NO'}", flush=True)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--psf", default=str(DEFAULT_PSF))
    ap.add_argument("--size", type=float, default=900.0, help="timed field side, arcsec")
    ap.add_argument("--accuracy-size", type=float, default=120.0,
                    help="accuracy field side, arcsec")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--cache", default="", help="keep the simulated field in this file "
                    "(pickle) and reuse it")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-time", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each fit (best "
                    "kept)")
    args = ap.parse_args()
    psf = OversampledPSF.from_fits(args.psf, 0.6, size=21)
    ok = None
    if not args.skip_accuracy:
        ok = accuracy(psf, args.accuracy_size, seed=1, options={})
    if not args.skip_time:
        timing(psf, args, ok)


def timing(psf: OversampledPSF, args: argparse.Namespace, accurate: bool | None) -> None:
    """Part 2 (module docstring): template fits against the point-source fit;
    ``accurate``: whether part 1 found the default options meet the targets (None:
    not run)."""
    t0 = time.perf_counter()
    if args.cache and Path(args.cache).exists():
        with open(args.cache, "rb") as f:
            sim, seg = pickle.load(f)
    else:
        sim = simulate_pair(psf, size_arcsec=args.size, keep_stamps=False, seed=args.seed)
        seg = segment(sim.hires, sim.hires_sigma)
        if args.cache:
            with open(args.cache, "wb") as f:
                pickle.dump((sim, seg), f, protocol=5)
    print(f"{args.size / 60:.0f}'x{args.size / 60:.0f}' field: {len(sim.truth)} sources, "
          f"sharp {sim.hires.shape}, blurred {sim.image.shape}, {seg.max()} segments "
          f"(simulated in {time.perf_counter() - t0:.0f} s)")
    table = measure_segments(sim.hires, seg)
    X, Y, _ = map_sources(sim.hires_wcs, sim.wcs, table.x, table.y)
    # compile everything once on a small piece, so timings are of the work itself
    hc = sim.hires.shape[0] // 2
    hbox = (slice(hc - 300, hc + 300), slice(hc - 300, hc + 300))
    cx, cy = (int(v) for v in sim.wcs.world_to_pixel(sim.hires_wcs.pixel_to_world(hc, hc)))
    box = (slice(cy - 25, cy + 25), slice(cx - 25, cx + 25))
    for grow in (0.0, 1.2):
        run_templates(sim.image[box], sim.wcs.slice(box), psf, sim.hires[hbox],
                      sim.hires_wcs.slice(hbox), sim.hires_psf, seg[hbox], sigma=1.0,
                      grow=grow)
    forced_photometry(sim.image[:60, :60], psf, X[:5] % 60, Y[:5] % 60, sigma=1.0,
                      fit_sky=True)
    print("timings (one core; CPU and wall seconds, best of "
          f"{args.repeat}):", flush=True)
    _, pt = timed("point-source fit", lambda: forced_photometry(
        sim.image, psf, X, Y, sigma=1.0, fit_sky=True), args.repeat)
    common = dict(sigma=1.0, return_model=False)
    runs = [("default options (grown 1.2\" shared + registration)", dict()),
            ("default options, registration given (one pass)", None),
            ("default options without registration", dict(register=False)),
            ("one pass, default segments (grow=0)", dict(register=False, grow=0.0))]
    ratios = []
    tpl = None
    for label, opts in runs:
        if opts is None:  # the shifts measured by the run before, applied
            opts = dict(shifts=tpl.shifts)
        tpl, t = timed(label, lambda opts=opts: run_templates(
            sim.image, sim.wcs, psf, sim.hires, sim.hires_wcs, sim.hires_psf, seg,
            **common, **opts), args.repeat)
        ratios.append((label, t))
        if not opts:
            registered = tpl.table
    # the point fit timed again after the template fits: the load changes during the run
    _, pt2 = timed("point-source fit (again)", lambda: forced_photometry(
        sim.image, psf, X, Y, sigma=1.0, fit_sky=True), args.repeat)
    pt = (min(pt[0], pt2[0]), min(pt[1], pt2[1]))
    print("templates built + fitted against the point-source fit (same image, its best "
          "time):")
    for label, t in ratios:
        print(f"  {label:<46s} {t[0] / pt[0]:6.2f}x CPU {t[1] / pt[1]:6.2f}x wall")
    verdict = {None: "not measured in this run (--skip-accuracy)", True: "yes (part 1)",
               False: "NO (part 1)"}[accurate]
    print("the default options are the setting that meets the accuracy targets on the "
          f"crowded pair: {verdict}; default segments (grow=0) do not (pull std 1.61-1.75)")
    print(f"registration measured: median shift {registered.shift_east.median():+.3f}\" "
          f"east, {registered.shift_north.median():+.3f}\" north (truth: 0)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak memory of this process: {peak:.1f} GiB")

if __name__ == "__main__":
    main()
