"""``dask-phot psf MOSAIC``: build a mosaic's effective PSF from its stars.

Writes the ePSF as FITS (:meth:`dask_phot.psf.EmpiricalPSF.write_fits`) and, with
``--qa``, its quality figure (:func:`dask_phot.plots.psf.epsf_qa_figure`) beside a
preset's PSF. The far wings come from ``--wings`` (a band's PSF file, a FITS file,
``moffat`` or ``none``); by default from the first ``--compare`` band's PSF file, else
a Moffat profile fitted to the stars (said on stderr: on an IRAC-like PSF it puts ~10%
too much light in the wings). Too few stars, only saturated ones or a mosaic without a
WCS are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _grid(value: str) -> object:
    if value in ("auto", "none"):
        return value
    ny, sep, nx = value.lower().partition("x")
    if not (sep and ny.isdigit() and nx.isdigit()):
        raise argparse.ArgumentTypeError(f"--grid wants auto, none or NYxNX, got {value!r}")
    return (int(ny), int(nx))


def _wings(value: str, scale: float | None) -> object:
    if value in ("moffat", "none"):
        return value
    from dask_phot.bands import PRESETS, get_band

    if value in PRESETS:
        from dask_phot.pipeline.psfs import band_wings

        return band_wings(get_band(value))
    from dask_phot.psf import WingModel

    return WingModel.from_fits(value, scale)


def _cmd_psf(args: argparse.Namespace) -> int:
    from astropy.io import fits
    from astropy.wcs import WCS

    from dask_phot.psf.empirical import EPSFOptions, build_epsf
    from dask_phot.tables import read_table

    path = Path(args.mosaic)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mosaic")
    with fits.open(path) as hdul:
        hdu = hdul[args.hdu]
        image = hdu.data.astype("f8")
        header = hdu.header
    wcs = WCS(header).celestial if WCS(header).has_celestial else None
    saturation = args.saturation
    if saturation is None and "SATURATE" in header:
        saturation = float(header["SATURATE"])
    wings = args.wings
    if wings == "auto":
        wings = args.compare[0] if args.compare else "moffat"
        if wings == "moffat":
            print("dask-phot psf: far wings from a Moffat fitted to the stars' profile (no "
                  "--wings or --compare band given); it extrapolates an IRAC-like PSF's "
                  "wings too high (fluxes +9-12% on a simulated IRAC field): give "
                  "--wings BAND or a PSF file where one exists", file=sys.stderr)
    options = EPSFOptions(
        oversampling=args.oversampling, size=args.size, snr_min=args.snr_min,
        min_stars=args.min_stars, saturation=saturation, grid=args.grid,
        wings=_wings(wings, args.wing_scale))
    stars = read_table(args.stars) if args.stars else None
    priors = read_table(args.priors) if args.priors else None
    result = build_epsf(image, wcs=wcs, stars=stars, priors=priors, options=options,
                        name=path.name, pixel_scale=args.pixel_scale)
    out = Path(args.out or path.with_name(path.stem + ".epsf.fits"))
    out.parent.mkdir(parents=True, exist_ok=True)
    result.write_fits(out, overwrite=True)
    print(f"wrote {out}: {result.n_stars} stars, FWHM {result.fwhm:.2f} px, {result.mode} "
          f"({result.grid_note}), flux error {100 * result.flux_error:.2f}% (bootstrap of "
          f"the stars); {result.selection.summary()}")
    if args.qa:
        from dask_phot.bands import get_band
        from dask_phot.plots.psf import epsf_qa_figure

        compare = [get_band(b).load_psf() for b in args.compare]
        fig = epsf_qa_figure(result, compare=compare)
        Path(args.qa).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.qa, dpi=100)
        print(f"wrote {args.qa}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``psf``."""
    p = subparsers.add_parser("psf", help="build a mosaic's effective PSF from its stars "
                              "(FITS and a QA figure)")
    p.add_argument("mosaic", metavar="MOSAIC", help="the mosaic, a FITS file with a WCS")
    p.add_argument("--stars", metavar="TABLE", help="reference stars (ra, dec or x, y)")
    p.add_argument("--priors", metavar="TABLE", help="every known source (ra, dec or x, y): "
                   "neighbours, and the candidates without --stars")
    p.add_argument("--out", metavar="FILE", help="ePSF FITS (default MOSAIC.epsf.fits)")
    p.add_argument("--qa", metavar="FILE", help="also write the QA figure (PNG or PDF)")
    p.add_argument("--compare", nargs="*", default=[], metavar="BAND",
                   help="preset bands drawn beside the ePSF in the QA figure")
    p.add_argument("--hdu", type=int, default=0, help="HDU of the image (default 0)")
    p.add_argument("--pixel-scale", type=float, default=None, metavar="ARCSEC",
                   help="mosaic pixel scale (default from the WCS)")
    p.add_argument("--oversampling", type=int, default=4, help="ePSF nodes per pixel")
    p.add_argument("--size", type=int, default=None, help="odd ePSF side in pixels")
    p.add_argument("--snr-min", type=float, default=50.0, help="smallest S/N of a star")
    p.add_argument("--min-stars", type=int, default=10, help="fewer usable stars: error")
    p.add_argument("--saturation", type=float, default=None,
                   help="saturation level (default the header's SATURATE)")
    p.add_argument("--grid", type=_grid, default="auto", help="auto, none or NYxNX")
    p.add_argument("--wings", default="auto", metavar="MODEL",
                   help="far wings: a preset band (its PSF file: irac1...), a PSF FITS "
                   "file, moffat or none; default the first --compare band's PSF, else a "
                   "Moffat (it extrapolates IRAC's wings ~10%% too high: give the band)")
    p.add_argument("--wing-scale", type=float, default=None, metavar="ARCSEC",
                   help="pixel scale of the --wings file (default from its header)")
    p.set_defaults(func=_cmd_psf)
