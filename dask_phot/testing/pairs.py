"""A sharp and a blurred image of the same irregular galaxies, rendered with GalSim.

The truth for template fitting (:mod:`dask_phot.templates`), made
independently of the engine: every source is a GalSim profile on the sky
(a few compact clumps, often over a diffuse exponential disc, or a point
source), drawn twice with GalSim's own convolution and pixel integration:

* a sharp image (HST-like: 0.06"/px, an obscured Airy pattern at 814 nm with
  a little jitter), rotated with respect to the blurred one;
* a blurred image (IRAC-like: 0.6"/px) through the band's fine PSF (for
  example the golfir 0.1" IRAC PSF, as a GalSim interpolated image) with the
  pixel response.

Each source has one colour (its sharp and blurred images are the same
profile, scaled). The blurred image's WCS can be handed out offset from the
truth, to test registration. Needs GalSim (the ``test`` extra).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from dask_phot.models.shapes import wcs_jacobian
from dask_phot.psf import OversampledPSF, PixelPSF
from dask_phot.testing.sources import COSMOS_CENTER, COSMOS_DENSITY

__all__ = ["SimulatedPair", "pair_statistics", "simulate_pair", "tan_wcs"]


@dataclass
class SimulatedPair:
    """The two images, their WCSs, PSFs and noise, and the truth.

    ``wcs`` is the blurred image's WCS as handed out (offset from the truth by
    ``offset`` arcsec east and north); ``truth`` has per source ``ra, dec``,
    ``flux`` (blurred image units), ``hires_flux``, ``x, y`` (true position on
    the blurred image), ``dx, dy`` (true minus ``wcs``-predicted position,
    blurred pixels), ``snr`` (nominal, as a point source) and ``kind``.
    """

    hires: np.ndarray
    hires_wcs: WCS
    hires_psf: PixelPSF
    hires_sigma: float
    image: np.ndarray
    wcs: WCS
    psf: OversampledPSF
    sigma: float
    truth: pd.DataFrame
    offset: tuple[float, float]
    stamps: list[tuple[int, int, np.ndarray]]

    def segment_truth(self, segmap: np.ndarray) -> pd.DataFrame:
        """How each source's sharp light falls into segments.

        Returns one row per (source, label) pair with light in it: ``source``
        (truth row), ``label``, ``share`` (fraction of the source's noiseless
        sharp light in that label; label 0 = outside every segment).
        """
        rows = []
        for i, (x0, y0, arr) in enumerate(self.stamps):
            ny, nx = segmap.shape
            ys, xs = max(y0, 0), max(x0, 0)
            ye, xe = min(y0 + arr.shape[0], ny), min(x0 + arr.shape[1], nx)
            if ye <= ys or xe <= xs:
                continue
            a = arr[ys - y0:ye - y0, xs - x0:xe - x0]
            lab = segmap[ys:ye, xs:xe].ravel()
            tot = arr.sum()
            sums = np.bincount(lab, weights=a.ravel())
            for label in np.flatnonzero(sums):
                rows.append((i, int(label), float(sums[label] / tot)))
        return pd.DataFrame(rows, columns=["source", "label", "share"])


def pair_statistics(sim: SimulatedPair, table: pd.DataFrame, segmap: np.ndarray,
                    snr_bins: tuple[float, ...] = (5.0, 10.0, 20.0, 50.0, 100.0)
                    ) -> pd.DataFrame:
    """Flux bias and pulls of a fit (``table``: ``id``, ``flux``, ``flux_err``) against
    the truth, over segments owned by one source.

    A segment is owned when >= 95% of the (noiseless, sharp) light in it is one
    source's and >= 95% of that source's segmented light is in it (needs
    ``keep_stamps``). Rows: the S/N bins (truth flux over ``flux_err``) and
    ``"all"`` (S/N from the first to the last edge); columns ``n``, ``bias``
    (median of flux / truth - 1), ``std`` and ``mad_std`` (1.4826 MAD) of the pulls.
    """
    share = sim.segment_truth(segmap)
    truth = sim.truth
    share["F"] = truth.flux.to_numpy()[share.source.to_numpy()] * share.share
    lab = share[share.label > 0]
    inseg = lab.groupby("source").share.sum()
    own = lab.sort_values("F").groupby("label").tail(1).set_index("label")
    own = own[(own.F / lab.groupby("label").F.sum().loc[own.index] > 0.95)
              & (own.share / inseg.loc[own.source].to_numpy() > 0.95)]
    m = table.set_index("id").join(own, how="inner")
    tflux = truth.flux.to_numpy()[m.source.to_numpy()]
    snr = tflux / m.flux_err.to_numpy()
    pull = (m.flux.to_numpy() - tflux) / m.flux_err.to_numpy()
    ratio = m.flux.to_numpy() / tflux - 1
    edges = list(snr_bins)
    rows = {}
    for name, lo, hi in ([(f"{a:g}-{b:g}", a, b) for a, b in itertools.pairwise(edges)]
                         + [("all", edges[0], edges[-1])]):
        sel = (snr >= lo) & (snr < hi)
        p = pull[sel]
        rows[name] = {"n": int(sel.sum()),
                      "bias": float(np.median(ratio[sel])) if sel.any() else np.nan,
                      "std": float(np.std(p)) if sel.any() else np.nan,
                      "mad_std": float(1.4826 * np.median(np.abs(p - np.median(p))))
                      if sel.any() else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def tan_wcs(scale: float, shape: tuple[int, int], center: tuple[float, float], *,
            rotation: float = 0.0, crpix_offset: tuple[float, float] = (0.0, 0.0)) -> WCS:
    """A TAN WCS, east left, rotated by ``rotation`` degrees, centred on ``center``."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = list(center)
    w.wcs.crpix = [(shape[1] + 1) / 2.0 + crpix_offset[0], (shape[0] + 1) / 2.0
                   + crpix_offset[1]]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    w.wcs.cd = (scale / 3600.0) * np.array([[-c, s], [s, c]])
    return w


def _galsim():  # type: ignore[no-untyped-def]
    try:
        import galsim
    except ImportError as exc:  # pragma: no cover - the test extra has it
        raise ImportError("simulate_pair needs GalSim: pip install 'dask-phot[test]'") from exc
    return galsim


def _profile(galsim, rng: np.random.Generator, kind: str, disc_max: float):  # type: ignore[no-untyped-def]
    """A unit-flux irregular galaxy (clumps, maybe a disc) or a point source, and the
    radius (arcsec) holding practically all its light."""
    if kind == "point":
        return galsim.DeltaFunction(flux=1.0), 1.0
    size = float(np.exp(rng.normal(math.log(0.25), 0.5)))  # arcsec, spread of the clumps
    nclump = int(rng.integers(2, 6))
    frac = rng.dirichlet(np.ones(nclump))
    disc = float(rng.uniform(0.0, disc_max))
    parts = []
    for f in frac:
        hlr = float(rng.uniform(0.03, 0.12))
        clump = galsim.Exponential(half_light_radius=hlr, flux=(1 - disc) * f)
        dx, dy = rng.normal(0.0, size, 2)
        parts.append(clump.shift(float(dx), float(dy)))
    if disc > 0:
        q = float(rng.uniform(0.4, 1.0))
        d = galsim.Exponential(half_light_radius=1.2 * size, flux=disc)
        parts.append(d.shear(q=q, beta=float(rng.uniform(0, 180)) * galsim.degrees))
    return galsim.Add(parts), 4.0 * size + 1.0 + (10.0 * 1.2 * size if disc > 0 else 0.0)


def _jacobian_wcs(galsim, wcs: WCS, shape: tuple[int, int], factor: float = 1.0):  # type: ignore[no-untyped-def]
    """GalSim's local WCS (u east, v north, arcsec) at the image centre."""
    jac = wcs_jacobian(wcs, np.array([(shape[1] - 1) / 2.0]), np.array([(shape[0] - 1) / 2.0]))
    j = jac[0] * factor
    return galsim.JacobianWCS(j[0, 0], j[0, 1], j[1, 0], j[1, 1])


def _draw(galsim, canvas: np.ndarray, prof, x: float, y: float, half: int,  # type: ignore[no-untyped-def]
          gwcs) -> tuple[int, int, np.ndarray]:
    """Draw ``prof`` centred at 0-based pixel ``(x, y)`` into ``canvas`` (added)."""
    cx, cy = math.floor(x + 0.5), math.floor(y + 0.5)
    stamp = galsim.ImageD(2 * half + 1, 2 * half + 1, wcs=gwcs)
    prof.drawImage(image=stamp, offset=(x - cx, y - cy), add_to_image=False)
    ny, nx = canvas.shape
    y0, x0 = cy - half, cx - half
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + stamp.array.shape[0], ny), min(x0 + stamp.array.shape[1], nx)
    if ys < ye and xs < xe:
        canvas[ys:ye, xs:xe] += stamp.array[ys - y0:ye - y0, xs - x0:xe - x0]
    return x0, y0, stamp.array


def simulate_pair(psf: OversampledPSF, *, size_arcsec: float = 120.0,
                  density_per_deg2: float = COSMOS_DENSITY, hires_scale: float = 0.06,
                  rotation: float = 20.0, offset: tuple[float, float] = (0.0, 0.0),
                  snr_range: tuple[float, float] = (3.0, 300.0), hires_depth: float = 5.0,
                  point_fraction: float = 0.15, disc_max: float = 0.3, edge: float = 3.0,
                  keep_stamps: bool = True, seed: int = 0) -> SimulatedPair:
    """Simulate the pair of images (see the module docstring).

    Parameters
    ----------
    psf : OversampledPSF
        The blurred band's PSF (an optical PSF on a fine grid); its
        ``pixel_scale`` is the blurred image's.
    size_arcsec : float
        Side of both images.
    density_per_deg2 : float
        Source density (default: COSMOS priors).
    hires_scale, rotation : float
        Sharp pixel scale (arcsec) and its rotation against the blurred grid (deg).
    offset : (float, float)
        East and north offset (arcsec) of the handed-out blurred WCS from the truth.
    snr_range : (float, float)
        Nominal blurred-image S/N (as point sources), drawn log-uniformly.
    hires_depth : float
        Sharp S/N over blurred S/N of a point source of the mean colour.
    point_fraction : float
        Share of point sources.
    disc_max : float
        Largest share of a galaxy's light in its diffuse disc (uniform from 0).
    edge : float
        Sources keep this far (arcsec) from the images' edges.
    keep_stamps : bool
        Keep each source's noiseless sharp image (for :meth:`SimulatedPair.segment_truth`;
        large fields: False).
    seed : int
        Random seed.
    """
    galsim = _galsim()
    rng = np.random.default_rng(seed)
    scale = float(psf.pixel_scale)
    shape_l = (round(size_arcsec / scale),) * 2
    shape_h = (round(size_arcsec / hires_scale),) * 2
    wcs_true = tan_wcs(scale, shape_l, COSMOS_CENTER, crpix_offset=(0.31, -0.17))
    hwcs = tan_wcs(hires_scale, shape_h, COSMOS_CENTER, rotation=rotation)
    ra, dec, sky, xl, yl, xh, yh = _positions(rng, density_per_deg2, size_arcsec, edge,
                                              wcs_true, hwcs, hires_scale, shape_h)
    n = ra.size
    kinds = np.where(rng.uniform(size=n) < point_fraction, "point", "galaxy")
    nea = 1.0 / np.sum(psf.stamps(np.zeros(1), np.zeros(1), size=psf.wing_size)[0] ** 2)
    snr = np.exp(rng.uniform(*np.log(snr_range), n))
    flux = snr * math.sqrt(nea)  # blurred noise sigma = 1
    colour = 10 ** rng.uniform(-0.3, 0.3, n)
    hpsf_prof, kpsf, g_h, g_l, hires_psf = _psfs(galsim, psf, wcs_true, hwcs, shape_l,
                                                 shape_h, hires_scale)
    nea_h = 1.0 / np.sum(hires_psf.array ** 2)
    hsig = math.sqrt(nea) / (hires_depth * math.sqrt(nea_h))
    hires = np.zeros(shape_h, dtype=np.float32)
    image = np.zeros(shape_l)
    wing = psf.wing_size // 2
    stamps = []
    for i in range(n):
        prof, reach = _profile(galsim, rng, kinds[i], disc_max)
        hprof = galsim.Convolve(prof * (flux[i] * colour[i]), hpsf_prof)
        half_h = round(max(3.0, reach) / hires_scale)
        drawn = _draw(galsim, hires, hprof, xh[i], yh[i], half_h, g_h)
        if keep_stamps:
            stamps.append(drawn)
        lprof = galsim.Convolve(prof * flux[i], kpsf)
        _draw(galsim, image, lprof, xl[i], yl[i], wing, g_l)
    for r0 in range(0, shape_h[0], 1024):  # noise in strips: no full-size temporary
        r1 = min(r0 + 1024, shape_h[0])
        hires[r0:r1] += rng.normal(0.0, hsig, (r1 - r0, shape_h[1]))
    image += rng.normal(0.0, 1.0, shape_l)
    given = tan_wcs(scale, shape_l, (COSMOS_CENTER[0] + offset[0] / 3600.0
                                     / math.cos(math.radians(COSMOS_CENTER[1])),
                                     COSMOS_CENTER[1] + offset[1] / 3600.0),
                    crpix_offset=(0.31, -0.17))
    px, py = (np.asarray(v) for v in given.world_to_pixel(sky))
    truth = pd.DataFrame({"ra": ra, "dec": dec, "flux": flux, "hires_flux": flux * colour,
                          "x": xl, "y": yl, "xh": xh, "yh": yh, "dx": xl - px, "dy": yl - py,
                          "snr": snr, "kind": kinds})
    return SimulatedPair(hires, hwcs, hires_psf, hsig, image, given, psf, 1.0, truth,
                         (float(offset[0]), float(offset[1])), stamps)


def _positions(rng: np.random.Generator, density: float, size: float, edge: float,
               wcs_true: WCS, hwcs: WCS, hires_scale: float, shape_h: tuple[int, int]
               ) -> tuple:
    """Uniform sky positions inside both images: ``ra, dec, sky`` and the pixel positions
    on the blurred (true WCS) and sharp images."""
    from astropy.coordinates import SkyCoord

    n = int(rng.poisson(density * (size / 3600.0) ** 2))
    half = size / 2.0 - edge
    east, north = rng.uniform(-half, half, n), rng.uniform(-half, half, n)
    dec = COSMOS_CENTER[1] + north / 3600.0
    ra = COSMOS_CENTER[0] - east / 3600.0 / np.cos(np.radians(dec))
    sky = SkyCoord(ra, dec, unit="deg")
    xl, yl = (np.asarray(v) for v in wcs_true.world_to_pixel(sky))
    xh, yh = (np.asarray(v) for v in hwcs.world_to_pixel(sky))
    # keep the sources inside both images (the sharp one is rotated)
    lim = edge / hires_scale
    keep = ((xh > lim) & (xh < shape_h[1] - 1 - lim) & (yh > lim)
            & (yh < shape_h[0] - 1 - lim))
    return tuple(v[keep] for v in (ra, dec, sky, xl, yl, xh, yh))


def _psfs(galsim, psf: OversampledPSF, wcs_true: WCS, hwcs: WCS,  # type: ignore[no-untyped-def]
          shape_l: tuple[int, int], shape_h: tuple[int, int], hires_scale: float) -> tuple:
    """The sharp PSF (GalSim profile and its 0.06" PixelPSF), the band's PSF as a GalSim
    interpolated image on its fine grid, and both images' local GalSim WCSs."""
    hpsf_prof = galsim.Convolve(galsim.Airy(lam=814.0, diam=2.4, obscuration=0.33,
                                            scale_unit=galsim.arcsec),
                                galsim.Gaussian(fwhm=0.04))
    g_h = _jacobian_wcs(galsim, hwcs, shape_h)
    g_l = _jacobian_wcs(galsim, wcs_true, shape_l)
    kpsf = galsim.InterpolatedImage(
        galsim.ImageD(np.ascontiguousarray(_centred_fine(psf)),
                      wcs=_jacobian_wcs(galsim, wcs_true, shape_l, 1.0 / psf.oversampling)))
    hpsf_img = galsim.ImageD(63, 63, wcs=g_h)
    hpsf_prof.drawImage(image=hpsf_img)
    hires_psf = PixelPSF(hpsf_img.array.copy(), hires_scale, name="hst-like")
    return hpsf_prof, kpsf, g_h, g_l, hires_psf


def _centred_fine(psf: OversampledPSF) -> np.ndarray:
    """The fine PSF array shifted so its centre is the middle pixel (odd square)."""
    from dask_phot.templates.kernel import centred

    arr = centred(psf.array, psf.center)
    return arr / arr.sum()
