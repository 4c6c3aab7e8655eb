"""The ePSF stage of a run: effective PSFs built from each mosaic's stars before the cells.

A band with ``psf = "empirical"`` (see ``default.toml``) gets one effective PSF
per mosaic, measured from the mosaic's own stars by :func:`dask_phot.psf.empirical.build_epsf`:

* :func:`prepare_psfs` runs once per run, after the plan and before the cells: each
  mosaic's ePSF is built on the cluster (or in-process) and written as FITS to
  ``<output>/psf/<band>/<mosaic>-<key>.epsf.fits``, ``key`` a digest of what it is
  made from (the mosaic's identity: URL, size and modification time or ETag, header;
  the noise map's; the band's PSF keys; the ``epsf`` options; the priors on the
  mosaic and the reference stars). A file already there is reused, so a run that
  stopped resumes without rebuilding, and a changed mosaic gets a new ePSF.
* Where an ePSF cannot be built (too few stars, only saturated ones), the run stops
  with one line naming the band, the mosaic and why, unless the band says
  ``psf_fallback = "preset"``: that mosaic then uses the band's ``psf_file``.
* :func:`band_psf` gives the cells' kernel the PSF of the mosaic a pixel box was
  read from, as an :class:`~dask_phot.psf.OversampledPSF` (the engine's PSF with
  wings, so galaxies and the two-pass wing subtraction work as with presets), and
  the factor that makes its fluxes total (the light beyond the ePSF's box, from its
  wing model). With a grid of ePSFs, a cell's box is fitted with the grid's ePSF at
  the box's centre (:meth:`~dask_phot.psf.PSFGrid.weights`: blended between the
  cells of a 2-D grid, the nearest cell's in a single row or column).
  :func:`band_psf_error` is the ePSF's fractional flux error (a bootstrap of its
  stars), which the cells add in quadrature to every flux error.
* :func:`psf_records` is what the catalog records of each band's PSF (Parquet
  metadata ``dask_phot_calibration`` and ``dask_phot_run.json``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dask_phot.cells import CellSources
from dask_phot.config import BandImages, RunConfig, storage_options
from dask_phot.images import Mosaic, Region, read_region
from dask_phot.psf import EmpiricalPSF, OversampledPSF, WingModel
from dask_phot.psf.empirical import EmpiricalPSFError, EPSFOptions
from dask_phot.psf.epsf_result import oversampled_epsf

if TYPE_CHECKING:
    from dask_phot.bands import Band

__all__ = ["MosaicPSF", "band_psf", "band_psf_error", "band_wings", "epsf_keys",
           "epsf_options", "prepare_psfs", "psf_records"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MosaicPSF:
    """The PSF one mosaic of a band is measured with.

    Attributes
    ----------
    mosaic : str
        The mosaic's URL.
    wcs : astropy.wcs.WCS
        Its WCS (to tell which mosaic a cell's pixel box comes from).
    path : str
        The ePSF FITS file; ``""`` when the band's own PSF file is used.
    record : dict
        Provenance: ``status`` (``"built"``, ``"cached"``, ``"fallback"``), the file,
        star counts, mode, FWHM, flux in the box, or why the ePSF could not be built.
    storage : dict
        fsspec options to read the file with.
    """

    mosaic: str
    wcs: Any = dataclasses.field(repr=False)
    path: str = ""
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    storage: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)


# ---------------------------------------------------------------------- options
def epsf_options(band: BandImages, header: Mapping[str, Any] | None = None) -> EPSFOptions:
    """The build options of a band's ePSFs (``[bands.<name>] epsf`` over the band's own).

    Defaults from the band: ``size`` its ``psf_wing_size`` (or ``psf_size``), so the
    cells' margins hold the ePSF; the core box at most that; ``wings`` its PSF file;
    ``saturation`` the mosaic header's ``SATURATE``; the rest as
    :class:`~dask_phot.psf.empirical.EPSFOptions` (``grid = "auto"``).
    """
    opts = dict(band.epsf)
    b = band.band
    opts.setdefault("size", b.psf_wing_size or b.psf_size)
    fwhm_pix = (b.fwhm or 2.0 * b.pixel_scale) / b.pixel_scale
    opts.setdefault("core_size", min(2 * int(np.ceil(4 * fwhm_pix)) + 1, opts["size"]))
    if header is not None and "saturation" not in opts and "SATURATE" in header:
        opts["saturation"] = float(header["SATURATE"])
    wings = opts.pop("wings", "band")
    opts["wings"] = band_wings(band.band) if wings == "band" else wings
    return EPSFOptions.from_mapping(opts)


def band_wings(band: Band) -> WingModel:
    """The far wings of a band's PSF file, for an ePSF (its square middle, at the file's
    scale; a pixel response when the band's ``psf_kind`` is ``"prf"``)."""
    from dask_phot.bands.files import file_stamp, locate_source, read_psf_file

    source = locate_source(band.psf_file, f"bands.{band.name}")
    arr, _, _ = read_psf_file(source, file_stamp(source))
    n = min(arr.shape)
    cut = arr[(arr.shape[0] - n) // 2:(arr.shape[0] - n) // 2 + n,
              (arr.shape[1] - n) // 2:(arr.shape[1] - n) // 2 + n]
    return WingModel("psf", np.array(cut), band.psf_pixel_scale, band.psf_kind == "prf",
                     os.path.basename(band.psf_file))


# ---------------------------------------------------------------------- identity and files
def _fs(url: str, storage: Mapping[str, Any]) -> Any:
    import fsspec

    return fsspec.core.url_to_fs(url, **(dict(storage) if "://" in url else {}))[0]


def _file_identity(url: str, storage: Mapping[str, Any]) -> str:
    info = _fs(url, storage).info(url)
    stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{url} {info.get('size')} {stamp}"


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _mosaic_key(mosaic: Mosaic, band: BandImages, priors: pd.DataFrame,
                stars: pd.DataFrame | None, storage: Mapping[str, Any]) -> str:
    files = [mosaic.source_url or mosaic.url]
    if mosaic.noise_url:
        files.append(mosaic.noise_source_url or mosaic.noise_url)
    rows = pd.util.hash_pandas_object(priors, index=False).to_numpy()
    star_rows = (b"" if stars is None else
                 pd.util.hash_pandas_object(stars, index=False).to_numpy().tobytes())
    b = band.band
    return _digest([_file_identity(u, storage) for u in files], mosaic.header.tostring(),
                   {k: getattr(b, k) for k in ("pixel_scale", "psf_file", "psf_size",
                                               "psf_wing_size", "psf_kind", "psf_pixel_scale")},
                   band.epsf, hashlib.sha256(rows.tobytes()).hexdigest(),
                   hashlib.sha256(star_rows).hexdigest())


def _psf_path(out: str, band: str, mosaic: Mosaic, key: str) -> str:
    stem = os.path.basename(mosaic.source_url or mosaic.url).split(".fits")[0]
    return f"{str(out).rstrip('/')}/psf/{band}/{stem}-{key[:16]}.epsf.fits"


@functools.lru_cache(maxsize=32)
def _read_epsf(path: str, storage_json: str) -> EmpiricalPSF:
    fs = _fs(path, json.loads(storage_json))
    with fs.open(path, "rb") as f:
        return EmpiricalPSF.read_fits(io.BytesIO(f.read()))


def _write_epsf(result: EmpiricalPSF, path: str, storage: Mapping[str, Any]) -> None:
    """Write the FITS under a temporary name, then move it into place (a file that
    exists is complete)."""
    buf = io.BytesIO()
    result.write_fits(buf)
    fs = _fs(path, storage)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    fs.pipe_file(tmp, buf.getvalue())
    fs.mv(tmp, path)


def _summary(result: EmpiricalPSF) -> dict[str, Any]:
    return {"n_stars": result.n_stars, "mode": result.mode, "grid": result.grid_note,
            "fwhm_arcsec": round(result.fwhm * result.pixel_scale, 4),
            "flux_error": round(result.flux_error, 6),
            "flux_in_box": round(result.flux_in_box, 6), "stamp": result.size,
            "oversampling": result.oversampling, "wings": result.wings.model,
            "stars": result.selection.summary()}


# ---------------------------------------------------------------------- the build (a task)
def build_mosaic_psf(mosaic: Mosaic, band: BandImages, priors: pd.DataFrame,
                     stars: pd.DataFrame | None, path: str,
                     storage: Mapping[str, Any]) -> dict[str, Any]:
    """Build one mosaic's ePSF and write it to ``path`` (the unit of work of the stage).

    Returns the provenance record; an ePSF that cannot be built from this mosaic's
    stars is a record with ``status = "failed"`` and the one-line reason, not an error.
    """
    from dask_phot.psf.empirical import build_epsf

    ny, nx = mosaic.shape
    region = read_region(mosaic, (0, nx), (0, ny), storage_options=storage)
    name = os.path.basename(mosaic.source_url or mosaic.url)
    try:
        result = build_epsf(region.data, wcs=mosaic.wcs, weight=region.weight, stars=stars,
                            priors=priors, options=epsf_options(band, mosaic.header),
                            pixel_scale=band.band.pixel_scale, name=name)
    except EmpiricalPSFError as exc:
        return {"status": "failed", "reason": exc.reason, "message": str(exc),
                "found": exc.found, "needed": exc.needed, "rejected": exc.rejected}
    _write_epsf(result, path, storage)
    return {"status": "built", "file": path, **_summary(result)}


def _on_mosaic(priors: pd.DataFrame, mosaic: Mosaic) -> pd.DataFrame:
    x, y = mosaic.wcs.all_world2pix(priors["ra"].to_numpy(), priors["dec"].to_numpy(), 0)
    ny, nx = mosaic.shape
    on = (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    return priors[on].reset_index(drop=True)


def _stage_priors(parts: Sequence[CellSources]) -> pd.DataFrame:
    cols = ["ra", "dec", *(c for c in ("is_star", "star", "point_source")
                           if parts and c in parts[0].sources.columns)]
    rows = [p.sources.loc[p.sources["_primary"].to_numpy(bool), cols] for p in parts]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def prepare_psfs(config: RunConfig, parts: Sequence[CellSources],
                 indexes: Mapping[str, Sequence[Mosaic]], out: str, *, client: Any = None
                 ) -> RunConfig:
    """Build (or reuse) the ePSF of every mosaic of the bands with ``psf = "empirical"``.

    Parameters
    ----------
    config : RunConfig
        The run.
    parts : sequence of CellSources
        The run's cells (their primary sources are the ePSFs' candidates and neighbours
        unless a band gives ``psf_stars``).
    indexes : mapping
        Band -> its mosaics.
    out : str
        The catalog's location; ePSFs are cached in its ``psf/`` folder.
    client : distributed.Client, optional
        Builds run there, one task per mosaic; in-process when None.

    Returns
    -------
    RunConfig
        The configuration whose empirical bands carry their mosaics' PSFs
        (:attr:`~dask_phot.config.BandImages.mosaic_psfs`).

    Raises
    ------
    EmpiricalPSFError
        A mosaic whose ePSF cannot be built, in a band without ``psf_fallback = "preset"``
        (one line: band, mosaic and why).
    """
    storage = storage_options(config)
    bands = [b for b in config.bands if b.psf == "empirical"]
    if not bands:
        return config
    jobs: dict[tuple[str, int], tuple] = {}
    done: dict[tuple[str, int], MosaicPSF] = {}
    for (name, k), (m, key, priors, stars) in _mosaic_inputs(config, parts, indexes).items():
        path = _psf_path(out, name, m, key)
        if _fs(path, storage).exists(path):
            log.info("bands.%s: %s: reusing the ePSF %s", name, m.source_url, path)
            rec = {"status": "cached", "file": path,
                   **_summary(_read_epsf(path, json.dumps(storage, sort_keys=True)))}
            done[name, k] = MosaicPSF(m.source_url or m.url, m.wcs, path, rec, storage)
        else:
            jobs[name, k] = (m, config.band(name), priors, stars, path, storage)
    records = _run_builds(jobs, client)
    for (name, k), rec in records.items():
        m = jobs[name, k][0]
        done[name, k] = _outcome(config.band(name), m, rec, storage)
    new = tuple(dataclasses.replace(b, mosaic_psfs=tuple(
        done[b.name, k] for k in range(len(indexes[b.name])))) if b.psf == "empirical" else b
        for b in config.bands)
    return dataclasses.replace(config, bands=new)


def _mosaic_inputs(config: RunConfig, parts: Sequence[CellSources],
                   indexes: Mapping[str, Sequence[Mosaic]]
                   ) -> dict[tuple[str, int], tuple[Mosaic, str, pd.DataFrame, Any]]:
    """Per (band, mosaic number) of the empirical bands: the mosaic, its ePSF's key, the
    priors on it and the reference stars."""
    out: dict[tuple[str, int], tuple[Mosaic, str, pd.DataFrame, Any]] = {}
    empirical = [b for b in config.bands if b.psf == "empirical"]
    if not empirical:  # nothing to stage (a whole field's primaries: seconds of the plan)
        return out
    storage = storage_options(config)
    everyone = _stage_priors(parts)
    for b in empirical:
        stars = _reference_stars(b, storage) if b.psf_stars else None
        for k, m in enumerate(indexes[b.name]):
            priors = _on_mosaic(everyone, m)
            out[b.name, k] = (m, _mosaic_key(m, b, priors, stars, storage), priors, stars)
    return out


def epsf_keys(config: RunConfig, parts: Sequence[CellSources],
              indexes: Mapping[str, Sequence[Mosaic]]) -> dict[str, list[str]]:
    """Per empirical band, the key of each mosaic's ePSF (in index order).

    The ePSF of a mosaic is a digest of what it is built from (the mosaic, its
    priors and stars, the band's options): a cell kept from an earlier run whose
    mosaic's ePSF has changed since (other priors on the mosaic, other options)
    must be fitted again, so the run plan adds these keys to the cells' mosaic
    identities (:func:`dask_phot.pipeline.plan.prepare_run`).
    """
    out: dict[str, list[str]] = {}
    for (name, _), (_, key, _, _) in _mosaic_inputs(config, parts, indexes).items():
        out.setdefault(name, []).append(key[:16])
    return out


def _reference_stars(band: BandImages, storage: Mapping[str, Any]) -> pd.DataFrame:
    """The band's reference stars (``psf_stars``: any table :func:`read_priors` reads)."""
    from dask_phot.priors import read_priors

    try:
        stars = read_priors(band.psf_stars, storage_options=storage)
    except (ValueError, OSError) as exc:
        raise EmpiricalPSFError(f"bands.{band.name}.psf_stars: {exc}",
                                reason="no_candidates") from None
    return stars[["ra", "dec"]].reset_index(drop=True)


def _run_builds(jobs: Mapping[tuple[str, int], tuple], client: Any
                ) -> dict[tuple[str, int], dict[str, Any]]:
    if client is None:
        return {key: build_mosaic_psf(*args) for key, args in jobs.items()}
    futures = {key: client.submit(build_mosaic_psf, *args, key=f"epsf-{key[0]}-{key[1]}",
                                  pure=False) for key, args in jobs.items()}
    return {key: fut.result() for key, fut in futures.items()}


def _outcome(band: BandImages, mosaic: Mosaic, rec: dict[str, Any],
             storage: dict[str, Any]) -> MosaicPSF:
    url = mosaic.source_url or mosaic.url
    if rec["status"] != "failed":
        log.info("bands.%s: %s: ePSF from %s stars", band.name, url, rec["n_stars"])
        return MosaicPSF(url, mosaic.wcs, rec["file"], rec, storage)
    if band.psf_fallback != "preset":
        raise EmpiricalPSFError(
            f"bands.{band.name}: no ePSF for {rec['message']}; set psf_fallback = \"preset\" "
            f"to use the band's psf_file ({band.band.psf_file}) there",
            reason=rec["reason"], found=rec["found"], needed=rec["needed"],
            rejected=rec["rejected"])
    log.warning("bands.%s: %s: using %s (%s)", band.name, url, band.band.psf_file,
                rec["message"])
    return MosaicPSF(url, mosaic.wcs, "", {**rec, "status": "fallback",
                                           "psf_file": band.band.psf_file})


# ---------------------------------------------------------------------- the cells' side
def _mosaic_of(band: BandImages, region: Region) -> MosaicPSF:
    """The entry of ``band.mosaic_psfs`` whose mosaic the box was read from."""
    ny, nx = region.shape
    px = np.array([0.0, nx - 1.0])
    py = np.array([0.0, ny - 1.0])
    ra, dec = region.wcs.all_pix2world(px, py, 0)
    for entry in band.mosaic_psfs:
        mx, my = entry.wcs.all_world2pix(ra, dec, 0)
        if np.allclose(mx, px + region.x0, atol=1e-3) and np.allclose(my, py + region.y0,
                                                                        atol=1e-3):
            return entry
    raise RuntimeError(f"bands.{band.name}: a pixel box matches none of the band's mosaics")


def band_psf(band: BandImages, region: Region) -> tuple[Any, float]:
    """The PSF a cell's box of this band is fitted with, and the factor to total fluxes.

    The band's own PSF and :meth:`~dask_phot.bands.Band.flux_correction` unless the
    band's ePSFs are built (:func:`prepare_psfs`) and its mosaic has one: then the
    mosaic's ePSF (with a grid: blended at the box's centre) as an
    :class:`~dask_phot.psf.OversampledPSF` with the band's ``psf_size`` stamps and
    wings out to the ePSF's box, and ``1 / flux_in_box`` (the light the wing model
    puts beyond the box), or the band's numeric ``aperture_correction``.
    """
    if band.psf != "empirical":
        return band.band.load_psf(), band.band.flux_correction()
    box = _box_epsf(band, region)
    if box is None:
        return band.band.load_psf(), band.band.flux_correction()
    array, _, result, key = box
    if result.mode != "grid" or result.cells is None:  # the same PSF for every box: built once
        psf = _global_oversampled(*key, band.band.psf_size)
    else:
        psf = _oversampled(array, result, band.band.psf_size)
    return psf, _correction(band, array, result)


def band_psf_error(band: BandImages, region: Region) -> float:
    """Fractional flux error of the PSF a cell's box of this band is fitted with.

    The ePSF's own (``PSFERR``: a bootstrap of its stars,
    :func:`~dask_phot.psf.epsf_error.bootstrap_flux_error`; with a grid, the cells'
    blended at the box's centre), added in quadrature to each flux error by the cells'
    kernel; 0 for a band fitted with a PSF file.
    """
    box = _box_epsf(band, region) if band.psf == "empirical" else None
    return 0.0 if box is None else box[1]


def _box_epsf(band: BandImages, region: Region
              ) -> tuple[np.ndarray, float, EmpiricalPSF, tuple[str, str]] | None:
    """The ePSF array and its flux error at a box's centre, the ePSF and its file's key
    (path, storage), or None (the band's file)."""
    if not band.mosaic_psfs:
        raise RuntimeError(f"bands.{band.name}: psf = \"empirical\" but its ePSFs were not "
                           "prepared (dask_phot.pipeline.psfs.prepare_psfs)")
    entry = _mosaic_of(band, region)
    if not entry.path:
        return None
    key = (entry.path, json.dumps(entry.storage, sort_keys=True))
    result = _read_epsf(*key)
    array, error = result.array, result.flux_error
    if result.mode == "grid" and result.cells is not None:
        ny, nx = region.shape
        idx, w = _epsf_grid(*key).weights(np.array([region.x0 + (nx - 1) / 2.0]),
                                          np.array([region.y0 + (ny - 1) / 2.0]))
        w = w[0] / w[0].sum()
        array = np.tensordot(w, result.cells[idx[0]], axes=1)
        if result.cell_flux_error is not None:
            error = float(np.dot(w, result.cell_flux_error[idx[0]]))
    return array, float(error), result, key


@functools.lru_cache(maxsize=32)
def _epsf_grid(path: str, storage_json: str) -> Any:
    """The grid of an ePSF file as a :class:`~dask_phot.psf.PSFGrid` (once per process)."""
    return _read_epsf(path, storage_json).psf_grid()


@functools.lru_cache(maxsize=32)
def _global_oversampled(path: str, storage_json: str, psf_size: int) -> OversampledPSF:
    """A global ePSF as the engine's PSF, its nodes refined once per process and file."""
    result = _read_epsf(path, storage_json)
    return _oversampled(result.array, result, psf_size)


def _oversampled(array: np.ndarray, result: EmpiricalPSF, psf_size: int) -> OversampledPSF:
    return oversampled_epsf(array, result.oversampling, result.pixel_scale,
                            size=min(psf_size, result.size), wing_size=result.size,
                            name=f"ePSF({result.name})")


def _correction(band: BandImages, array: np.ndarray, result: EmpiricalPSF) -> float:
    if band.band.aperture_correction != "auto":
        return float(band.band.aperture_correction)
    return float(result.oversampling**2 / array.sum())


def psf_records(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Per band, what its PSF is: ``{"psf": "file", "psf_file": ...}``, or for ePSFs
    ``{"psf": "empirical", "mosaics": [record per mosaic]}`` (see :class:`MosaicPSF`)."""
    out: dict[str, dict[str, Any]] = {}
    for b in config.bands:
        if b.psf != "empirical":
            out[b.name] = {"psf": "file", "psf_file": b.band.psf_file}
            continue
        mosaics = []
        for e in b.mosaic_psfs:
            rec = {"mosaic": e.mosaic, **e.record}
            if e.path:
                res = _read_epsf(e.path, json.dumps(e.storage, sort_keys=True))
                rec["aperture_correction"] = _correction(b, res.array, res)
                rec["flux_error"] = res.flux_error
            else:
                rec["aperture_correction"] = b.band.flux_correction()
            mosaics.append(rec)
        out[b.name] = {"psf": "empirical", "psf_file": "per mosaic (mosaics)",
                       "aperture_correction": "per mosaic (mosaics)",
                       "psf_fallback": b.psf_fallback, "psf_stars": b.psf_stars,
                       "epsf": dict(b.epsf), "mosaics": mosaics}
    return out
