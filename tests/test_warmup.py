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


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_compiled_once_then_loaded_in_a_fresh_process(tmp_path):
    """Compile into one cache; a process seeded from it (the worker preload) compiles nothing."""
    compiled = _python(
        "import json, dataclasses; from dask_phot.warmup import warm_up, cache_stats; "
        "w = warm_up(every_option=False); print(json.dumps({**dataclasses.asdict(w), "
        "**dataclasses.asdict(cache_stats())}))", tmp_path / "image")
    # (every option's kernels: the image build checks them, deploy/docker/install.sh)
    assert compiled["cells"] == 1 and compiled["fits"] == 0
    assert compiled["misses"] > 0  # a fresh cache: everything compiled
    assert list((tmp_path / "image").rglob("*.nbc"))
    fresh = _python(
        "import json, dataclasses; from dask_phot.warmup import dask_setup, cache_stats; "
        "dask_setup(None); print(json.dumps(dataclasses.asdict(cache_stats())))",
        tmp_path / "tmp", DASK_PHOT_NUMBA_CACHE=str(tmp_path / "image"))
    assert fresh["hits"] > 0 and fresh["misses"] == 0, fresh
    assert {p.name for p in (tmp_path / "tmp").rglob("*")} <= \
        {p.name for p in (tmp_path / "image").rglob("*")}



def test_psf_grid_fits_on_the_warm_up_field(tmp_path):
    """The image build's PSF-grid fits run (a grid of the notebook preset's PRFs)."""
    _, field = warmup._field(tmp_path, 7)
    assert warmup.psf_grid_fits(field) == 2
