"""Credentials never leave the process (issue 16, finding 11).

A run reads its priors and mosaics from a private bucket and writes its catalog to
another, with a known fake key and secret in the configuration's ``[storage]``
and a session token from the environment (``DASK_PHOT__STORAGE__TOKEN``); then
every file the run wrote (catalog objects, reports, run record, Dask performance
report, its log at ``-vv``) and the manifests of ``submit --dry-run`` are searched
for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dask_phot.config import load_config
from dask_phot.pipeline.resume import config_digest
from dask_phot.testing import simulate_to_dir

ROOT = Path(__file__).parents[1]
KEY = "AKIAFAKE7Q2WXDASKPHOT"
SECRET = "fake-secret-3f9a1c77e0b24d5e8a6b"
TOKEN = "fake-session-token-51d0c2aa9e"


def _search(blobs: dict[str, bytes]) -> list[str]:
    return [f"{name}: {word}" for name, blob in blobs.items()
            for word in (KEY, SECRET, TOKEN) if word.encode() in blob]


@pytest.mark.slow
def test_credentials_are_never_written(s3_server, tmp_path, dask_scheduler):
    pytest.importorskip("yaml")
    field = tmp_path / "input"
    _, paths = simulate_to_dir(field, area_arcmin2=1.0, bands=["irac1"], seed=3)
    s3_server.create_bucket("cred-in", public=False)
    s3_server.create_bucket("cred-out", public=False)
    for key in ("priors", "irac1_sci", "irac1_wht"):
        s3_server.upload(paths[key], "cred-in", paths[key].name)
    config = field / "secret.toml"
    config.write_text(
        '[priors]\npath = "s3://cred-in/priors.parquet"\n'
        '[bands.irac1]\nimages = ["s3://cred-in/irac1_sci.fits"]\n'
        'noise = ["s3://cred-in/irac1_wht.fits"]\n'
        '[output]\npath = "s3://cred-out/catalog"\n'
        f'[storage]\nendpoint_url = "{s3_server.endpoint_url}"\nkey = "{KEY}"\n'
        f'secret = "{SECRET}"\nanon = false\n')
    written = tmp_path / "written"
    written.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DASK_PHOT__STORAGE__TOKEN": TOKEN}
    run = subprocess.run(
        [sys.executable, "-m", "dask_phot.commands", "-vv", "run", str(config),
         "--scheduler", dask_scheduler, "--performance-report", str(written / "perf.html")],
        capture_output=True, env=env, timeout=600)
    (written / "run.stdout").write_bytes(run.stdout)
    (written / "run.stderr").write_bytes(run.stderr)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    submit = subprocess.run(
        [sys.executable, "-m", "dask_phot.commands", "submit", str(config), "--name",
         "cred-test", "--dry-run", "--s3-secret", "dask-phot-s3"],
        capture_output=True, env=env, timeout=120)
    (written / "job.yaml").write_bytes(submit.stdout)
    (written / "submit.stderr").write_bytes(submit.stderr)
    assert submit.returncode == 0, submit.stderr.decode()
    assert (written / "perf.html").stat().st_size > 0
    assert b"kind: DaskJob" in submit.stdout and b"left out of the job's ConfigMap" \
        in submit.stderr
    client = s3_server.boto3_client()
    objects = [o["Key"] for o in client.list_objects_v2(Bucket="cred-out")["Contents"]]
    assert any(k.endswith(".parquet") for k in objects) and "catalog/dask_phot_run.json" \
        in objects
    blobs = {f"s3://cred-out/{k}": client.get_object(Bucket="cred-out", Key=k)["Body"].read()
             for k in objects}
    blobs.update({str(p): p.read_bytes() for p in written.rglob("*") if p.is_file()})
    assert len(blobs) > 10
    assert _search(blobs) == []
    # the resume key does not depend on them either
    cfg = load_config(config, environ={"DASK_PHOT__STORAGE__TOKEN": TOKEN})
    other = load_config(config, overrides={"storage.secret": "another"}, environ={})
    assert cfg.storage["token"] == TOKEN and config_digest(cfg) == config_digest(other)
    assert TOKEN not in str(cfg.public_dict()) and SECRET not in str(cfg.public_dict())
