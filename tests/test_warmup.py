"""dask_phot.warmup: kernels compiled once, a compiled cache seeded into a fresh process.

Each process test runs in a subprocess with its own ``NUMBA_CACHE_DIR``, so that what is
compiled or loaded there is counted from a clean start (numba keeps compiled code per
process, and the suite's own processes have compiled everything long before).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from dask_phot import warmup
from dask_phot.config import EngineConfig

REPO = Path(__file__).resolve().parents[1]


def test_engine_variants_cover_every_finite_option():
    variants = warmup.engine_variants()
    hints = typing.get_type_hints(EngineConfig)
    finite = {f.name for f in dataclasses.fields(EngineConfig)
              if warmup._finite_values(hints[f.name])} - {"backend"}  # the Tractor: not ours
    assert finite >= {"mode", "fit_sky", "sky_model", "fit_positions"}
    assert {k.removeprefix("engine.") for k in variants[0]} == finite
    # the defaults first, then every combination once
    assert variants[0] == {f"engine.{k}": getattr(EngineConfig(), k) for k in finite}
    sizes = [len(warmup._finite_values(hints[k])) for k in sorted(finite)]
    assert len(variants) == len({json.dumps(v, sort_keys=True) for v in variants}) \
        == len(list(itertools.product(*(range(n) for n in sizes))))
    values = {k: {json.dumps(v[k]) for v in variants} for k in variants[0]}
    assert values["engine.fit_positions"] == {"false", "true", '"source"', '"global"'}
    assert values["engine.mode"] == {'"scene"', '"cutout"'}


def test_finite_values():
    assert warmup._finite_values(bool) == (False, True)
    assert warmup._finite_values(typing.Literal["a", "b"]) == ("a", "b")
    assert warmup._finite_values(bool | typing.Literal["x"]) == (False, True, "x")
    assert warmup._finite_values(float) == ()
    assert warmup._finite_values(float | None) == ()


def test_seed_cache_copies_what_is_missing(tmp_path):
    src, dst = tmp_path / "image", tmp_path / "tmp"
    (src / "engine_abc").mkdir(parents=True)
    (src / "engine_abc" / "k.py311.nbi").write_bytes(b"index")
    (src / "engine_abc" / "k.py311.1.nbc").write_bytes(b"code")
    (dst / "engine_abc").mkdir(parents=True)
    (dst / "engine_abc" / "k.py311.nbi").write_bytes(b"newer")
    assert warmup.seed_cache(src, dst) == 1
    assert (dst / "engine_abc" / "k.py311.1.nbc").read_bytes() == b"code"
    assert (dst / "engine_abc" / "k.py311.nbi").read_bytes() == b"newer"  # kept
    assert not list(dst.rglob("*.tmp"))
    assert warmup.seed_cache(src, dst) == 0
    assert warmup.seed_cache(src, src) == 0
    assert warmup.seed_cache(tmp_path / "missing", dst) == 0


def test_seed_cache_defaults_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(warmup.SEED_ENV, raising=False)
    assert warmup.seed_cache(target=tmp_path) == 0  # no compiled cache named
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "f.nbi").write_bytes(b"i")
    monkeypatch.setenv(warmup.SEED_ENV, str(tmp_path / "seed"))
    assert warmup.seed_cache(target=tmp_path / "cache") == 1


def _python(code: str, cache: Path, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=900, cwd=REPO,
                         env={**os.environ, "NUMBA_CACHE_DIR": str(cache), **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, dict]:
    """A cache compiled by a worker's warm-up (:func:`~dask_phot.warmup.dask_setup`'s:
    ``every_option=False, templates=True``) in a fresh process."""
    image = tmp_path_factory.mktemp("warm") / "image"
    out = _python(
        "import json, dataclasses; from dask_phot.warmup import warm_up, cache_stats; "
        "w = warm_up(every_option=False, templates=True); "
        "print(json.dumps({**dataclasses.asdict(w), "
        "**dataclasses.asdict(cache_stats())}))", image)
    return image, out


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_compiled_once_then_loaded_in_a_fresh_process(tmp_path, compiled):
    """Compile into one cache; a process seeded from it (the worker preload) compiles nothing."""
    image, compiled = compiled
    # (every option's kernels: the image build checks them, deploy/docker/install.sh)
    # the default cell, the template cell and one direct template fit
    assert compiled["cells"] == 2 and compiled["fits"] == 1
    assert compiled["misses"] > 0  # a fresh cache: everything compiled
    assert list(image.rglob("*.nbc"))
    fresh = _python(
        "import json, dataclasses; from dask_phot.warmup import dask_setup, cache_stats; "
        "dask_setup(None); print(json.dumps(dataclasses.asdict(cache_stats())))",
        tmp_path / "tmp", DASK_PHOT_NUMBA_CACHE=str(image))
    assert fresh["hits"] > 0 and fresh["misses"] == 0, fresh
    assert {p.name for p in (tmp_path / "tmp").rglob("*")} <= \
        {p.name for p in image.rglob("*")}


#: In a process: a GalSim pair of another size than the warm-up's, its WCS 0.3" off (the
#: registration measures it), fitted directly (float32 image, int32 map, as FITS files and
#: ``detect_sources`` give them) and as a pipeline template cell (which reads them as
#: float64 and int64; priors without a segment are points); prints the cache counts.
TEMPLATE_RUN = """
import dataclasses, json, sys
from pathlib import Path
import numpy as np, pandas as pd
from astropy.io import fits
import dask_phot
from dask_phot.config import load_config
from dask_phot.detect import DetectionParams, detect_sources
from dask_phot.pipeline import plan_cells, process_cell
from dask_phot.schema import MODEL_CODES
from dask_phot.psf import OversampledPSF
from dask_phot.templates import fit_templates
from dask_phot.templates.segments import measure_segments
from dask_phot.testing.pairs import simulate_pair
from dask_phot.warmup import cache_stats
out = Path(sys.argv[1])
psf = OversampledPSF.from_fits(Path(dask_phot.__file__).parent / "data" / "psf"
                               / "irac_ch1_warm_psf.fits", 0.6, size=21)
sim = simulate_pair(psf, size_arcsec=60.0, offset=(0.3, 0.0), seed=5)
seg = detect_sources(sim.hires, params=DetectionParams(thresh=1.5, minarea=5,
                     deblend_cont=1.0), rms=sim.hires_sigma, background=0.0).segmap
tab = fit_templates(sim.image, sim.wcs, psf, sim.hires, sim.hires_wcs, sim.hires_psf, seg,
                    sigma=sim.sigma)
assert (tab.model == "template").sum() > 20 and tab.shift_east.abs().max() > 0.1
fits.writeto(out / "sharp.fits", sim.hires.astype(np.float32), sim.hires_wcs.to_header())
fits.writeto(out / "seg.fits", seg.astype(np.int32), sim.hires_wcs.to_header())
fits.writeto(out / "psf.fits", sim.hires_psf.array.astype(np.float32))
fits.writeto(out / "irac1.fits", sim.image.astype(np.float32), sim.wcs.to_header())
t = measure_segments(sim.hires, seg)
sky = sim.hires_wcs.pixel_to_world(t.x, t.y)
pd.DataFrame({"source_id": np.append(t.id, 10**6), "ra": np.append(sky.ra.deg, sky.ra.deg[0]),
              "dec": np.append(sky.dec.deg, sky.dec.deg[0] + 1e-4)}
             ).to_parquet(out / "priors.parquet")
cfg = load_config({"priors": {"path": str(out / "priors.parquet")},
                   "bands": {"irac1": {"images": [str(out / "irac1.fits")],
                                       "noise_kind": "none", "model": "template"}},
                   "templates": {"image": str(out / "sharp.fits"),
                                 "segmap": str(out / "seg.fits"), "psf": str(out / "psf.fits")},
                   "output": {"path": str(out / "catalog")}}, environ={})
parts, indexes = plan_cells(cfg)
cat = process_cell(max(parts, key=lambda p: p.n_primary), indexes, cfg)[0]
assert (cat.model_irac1 == MODEL_CODES["template"]).sum() > 10, cat.model_irac1.value_counts()
print(json.dumps(dataclasses.asdict(cache_stats())))
"""


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_template_fits_compile_nothing_after_the_warm_up(tmp_path, compiled):
    """A worker's warm-up compiles the template fits' kernels: a template fit of another
    size and a pipeline template cell then load every kernel from the cache."""
    pytest.importorskip("galsim")
    image, _ = compiled
    (tmp_path / "run").mkdir()
    out = subprocess.run([sys.executable, "-c", TEMPLATE_RUN, str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=900, cwd=REPO,
                         env={**os.environ, "NUMBA_CACHE_DIR": str(image)})
    assert out.returncode == 0, out.stderr[-3000:]
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["hits"] > 0 and stats["misses"] == 0, stats


def test_psf_grid_fits_on_the_warm_up_field(tmp_path):
    """The image build's PSF-grid fits run (a grid of the notebook preset's PRFs)."""
    _, field = warmup._field(tmp_path, 7)
    assert warmup.psf_grid_fits(field) == 2


def test_template_fits_on_the_warm_up_field(tmp_path):
    """The warm-up's sharp image (numpy, no GalSim): labels are priors' ids, some priors
    undetected; every template variant and the template cell run."""
    user, field = warmup._field(tmp_path, 7)
    sharp, seg, _, psf = warmup._sharp_pair(field, 7)
    labels, ids = set(np.unique(seg)) - {0}, set(field.priors.source_id)
    assert labels < ids and len(labels) > len(ids) / 2
    assert sharp.dtype == np.float32 and seg.dtype == np.int32
    assert psf.sum() == pytest.approx(1.0)
    assert warmup.template_fits(field, tmp_path, user, 7, every_option=True) == (1, 5)
