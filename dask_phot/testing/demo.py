"""The demo field: a simulated field in preset bands, on disk with a ready run
configuration, and the accuracy of a catalogue against its truth.

:func:`simulate_to_dir` is what ``dask-phot simulate`` and ``dask-phot demo``,
the notebook and the pipeline benchmark run on; :func:`accuracy_table` is the
table they print.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.schema import UNRELIABLE_FLAGS
from dask_phot.testing.field import SimBand, SimulatedField, simulate_field
from dask_phot.testing.io import write_field

__all__ = ["accuracy_table", "simulate_to_dir"]


def simulate_to_dir(outdir: str | Path, *, area_arcmin2: float, bands: Sequence[str],
                    seed: int, url_prefix: str | None = None, galaxies: float = 0.7,
                    truth_oversampling: int | None = None
                    ) -> tuple[SimulatedField, dict[str, Path]]:
    """Simulate a field in preset bands, write it and a ready ``config.toml``.

    Parameters
    ----------
    outdir : path-like
        Directory for the mosaics (``<band>_sci.fits``, ``<band>_wht.fits``),
        ``priors.parquet`` and ``config.toml``.
    area_arcmin2 : float
        Sky area of the field.
    bands : sequence of str
        Preset band names (:data:`dask_phot.bands.PRESETS`): each band's PSF,
        calibration and depth.
    seed : int
        Root seed of the simulation.
    url_prefix : str, optional
        Where the configuration says the mosaics are (``s3://bucket``: the
        caller uploads them there); default next to it.
    galaxies : float
        Fraction of Sersic galaxies among the sources (their shapes go in the
        priors, and the configuration fits them with ``[priors] shape_columns``).
    truth_oversampling : int, optional
        Draw galaxies on a real-space canvas of this many fine pixels per image
        pixel (see :func:`~dask_phot.testing.simulate_image`); None (default):
        exactly, in Fourier space. The canvas (3: 0.2" for IRAC; 6: its PSF's
        0.1") is 1e-4 to 1e-2 of the peak off for compact galaxies, which is many
        sigma at S/N > 1,000.

    Returns
    -------
    SimulatedField, dict
        The field, and its files by key (``"<band>_sci"``, ``"priors"``, ``"config"``...).
    """
    import tomli_w

    from dask_phot.bands import get_band

    outdir = Path(outdir)
    sims = []
    for name in bands:
        b = get_band(name)
        sky = 0.05 if b.unit == "MJy/sr" else 1e-3
        sims.append(SimBand(b.name, b.load_psf(), b.to_ujy, b.depth_5sigma_ujy, sky=sky,
                            unit=b.unit, truth_oversampling=truth_oversampling))
    field = simulate_field(bands=sims, seed=seed, area_arcmin2=area_arcmin2,
                           mask_fraction=0.005, galaxies=galaxies)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = write_field(field, outdir, noise_product="weight")

    def where(key: str) -> str:
        name = paths[key].name
        return f"{url_prefix.rstrip('/')}/{name}" if url_prefix else name

    shapes = {k: k for k in ("r_e", "q", "pa", "n")} if galaxies > 0 else {}
    config = {
        "priors": {"path": "priors.parquet", "shape_columns": shapes,
                   "keep_columns": [f"flux_true_{b}" for b in bands]
                   + (["r_e"] if galaxies > 0 else [])},
        "bands": {b: {"images": [where(f"{b}_sci")], "noise": [where(f"{b}_wht")],
                      "noise_kind": "weight", "sky": "fit"} for b in bands},
        "output": {"path": "catalog"},
    }
    (outdir / "config.toml").write_text(tomli_w.dumps(config))
    paths["config"] = outdir / "config.toml"
    return field, paths


def accuracy_table(catalog: pd.DataFrame, bands: Sequence[str], *,
                   trusted: bool = False) -> pd.DataFrame:
    """Per band, pulls ``(flux - true) / flux_err`` in two ranges of true S/N.

    Sources are selected on the true S/N (true flux / reported error), which does
    not depend on the noise, so the selection does not bias the pulls. The truth
    of bands with oversampled PSFs is exact (within 1e-6 of GalSim); the engine's
    point models are within 2e-5 of it in flux, its galaxies within ~3e-5 (up to
    1.7e-4) and 4e-4 to 7e-4 of the peak pixel. Above S/N ~ 10,000 that is no
    longer exact against the noise; a bright source's residual then moves the
    flux of a faint neighbour closer than ~4 pixels: such pairs carry HIGH_CHI2
    or MODEL_MISMATCH, and ``trusted=True`` leaves them out.

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``flux_<band>``, ``flux_err_<band>`` and ``flux_true_<band>`` per band
        (and ``flags_<band>`` with ``trusted``).
    bands : sequence of str
        The bands to tabulate.
    trusted : bool
        Only sources whose flags have no bit of
        :data:`~dask_phot.schema.UNRELIABLE_FLAGS` (the README's filter).

    Returns
    -------
    pandas.DataFrame
        One row per band: counts, median and standard deviation of the pulls at
        true S/N 5-100 and above 100, and the median measured/true flux.
    """
    rows = []
    for b in bands:
        flux, err = catalog[f"flux_{b}"], catalog[f"flux_err_{b}"]
        truth = catalog[f"flux_true_{b}"]
        pull = (flux - truth) / err
        if trusted:
            pull = pull.where((catalog[f"flags_{b}"] & int(UNRELIABLE_FLAGS)) == 0)
        snr = truth / err
        row: dict[str, Any] = {"band": b}
        for label, sel in (("5-100", (snr > 5) & (snr <= 100)), (">100", snr > 100)):
            ok = np.isfinite(pull) & sel
            row[f"n S/N {label}"] = int(ok.sum())
            row[f"median {label}"] = float(np.median(pull[ok])) if ok.any() else np.nan
            row[f"std {label}"] = float(np.std(pull[ok])) if ok.any() else np.nan
        ok = np.isfinite(pull) & (snr > 5)
        row["n flagged"] = int((np.isfinite(flux / err) & (snr > 5)).sum() - ok.sum())
        row["flux/true"] = float(np.median(flux[ok] / truth[ok])) if ok.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
