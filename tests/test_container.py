"""The image, built and run: deploy/docker/podman_test.py, and the pod translation it uses.

The fast tests check deploy/docker/pods.py (a pod spec -> ``podman run`` arguments) on
the real DaskJob the operator would get; the slow one builds the image with podman and
runs the DaskJob's and the chart's scheduler, workers and runner as containers (skipped,
saying why, where podman, runc, kubectl or root are missing; .ci/run installs podman).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dask_phot.deploy import kube_job_spec

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "deploy" / "docker"


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"dask_phot_docker_{name}", DOCKER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pods = _module("pods")


def _operator() -> Any:
    pytest.importorskip("dask_kubernetes", reason="needs the kubernetes extra")
    from dask_kubernetes.operator.controller import controller

    return controller


def _value(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == option]


def test_expand_like_the_kubelet():
    env = {"A": "1", "B": "x y"}
    assert pods.expand("$(A)-$(B)", env) == "1-x y"
    assert pods.expand("$(C) $$(A) $$ $A", env) == "$(C) $(A) $ $A"


@pytest.mark.parametrize(("quantity", "value"), [("500m", 0.5), ("1", 1.0), (2, 2.0)])
def test_cpus(quantity, value):
    assert pods.cpus(quantity) == value


@pytest.mark.parametrize(("quantity", "value"), [("4Gi", 4 * 2**30), ("512M", 512 * 10**6),
                                                 ("1000", 1000)])
def test_memory_bytes(quantity, value):
    assert pods.memory_bytes(quantity) == value
    with pytest.raises(ValueError, match="not a memory quantity"):
        pods.memory_bytes("lots")


def test_worker_pod_as_podman_run():
    ctl = _operator()
    job = kube_job_spec("phot", config_map="phot-config", s3_secret="s3", memory="3Gi")
    cluster = job["spec"]["cluster"]["spec"]
    worker = ctl.build_worker_deployment_spec("phot-default", "science", "phot", "abc",
                                              cluster["worker"]["spec"], {}, {})
    spec = worker["spec"]["template"]["spec"]
    args = pods.podman_run_args(spec, name="w", image="img:1", secrets={"s3": {"K": "v"}},
                                add_hosts=["phot-scheduler:127.0.0.1"])
    assert args[:6] == ["run", "--detach", "--name", "w", "--network", "host"]
    assert _value(args, "--user") == ["1000:1000"] and _value(args, "--group-add") == ["1000"]
    assert {"--read-only", "--read-only-tmpfs=false"} <= set(args)
    assert _value(args, "--cap-drop") == ["ALL"]
    assert _value(args, "--security-opt") == ["no-new-privileges"]
    assert _value(args, "--tmpfs") == ["/tmp:rw,mode=1777"]
    assert _value(args, "--memory") == [str(3 * 2**30)] and _value(args, "--cpus") == ["1"]
    env = dict(e.split("=", 1) for e in _value(args, "--env"))
    assert env["K"] == "v"  # from the Secret
    assert env["DASK_SCHEDULER_ADDRESS"] == "tcp://phot-scheduler.science.svc.cluster.local:8786"
    image_at = args.index("img:1")
    assert args[image_at + 1:image_at + 5] == ["dask", "worker", "--name",
                                               "phot-default-worker-abc"]


def test_runner_pod_mounts_its_config_map_read_only(tmp_path):
    ctl = _operator()
    job = kube_job_spec("phot", config_map="phot-config")
    spec = ctl.build_job_pod_spec("phot", "phot", "science", job["spec"]["job"]["spec"], {}, {})
    args = pods.podman_run_args(spec["spec"], name="r",
                                volume_dirs={"config": str(tmp_path)})
    assert _value(args, "--volume") == [f"{tmp_path}:/etc/dask-phot:ro"]
    assert args[-3:] == ["dask-phot", "run", "/etc/dask-phot/config.toml"]


@pytest.mark.parametrize(("where", "field"), [
    ("pod", {"hostNetwork": True}),
    ("container", {"lifecycle": {"preStop": {}}}),
    ("container", {"securityContext": {"privileged": True}}),
    ("pod", {"volumes": [{"name": "tmp", "hostPath": {"path": "/"}}]}),
])
def test_fields_it_cannot_emulate_are_refused(where, field):
    spec = {"containers": [{"name": "c", "image": "i", "args": ["true"],
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "tmp", "emptyDir": {}}]}
    (spec if where == "pod" else spec["containers"][0]).update(field)
    with pytest.raises(pods.UnsupportedField):
        pods.podman_run_args(spec, name="x")


def test_run_as_non_root_needs_a_user():
    spec = {"securityContext": {"runAsNonRoot": True},
            "containers": [{"name": "c", "image": "i"}]}
    with pytest.raises(pods.UnsupportedField, match="runAsNonRoot"):
        pods.podman_run_args(spec, name="x")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_built_and_run_as_kubernetes_would(tmp_path):
    """podman_test.py: build, run the DaskJob's and the chart's cluster, compare catalogs."""
    out = subprocess.run([sys.executable, str(DOCKER / "podman_test.py"),
                          "--workdir", str(tmp_path)], capture_output=True, text=True,
                         timeout=3500, env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode == 77:
        pytest.skip(out.stdout.strip().splitlines()[-1])
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-5000:]
    assert (tmp_path / "result.json").is_file(), out.stdout[-3000:] + out.stderr[-5000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["kernels"]["compiled"] == 0, result["kernels"]  # read-only root, fresh
    assert result["kernels"]["cache_hits"] > 0
    for label, run in result["scenarios"].items():
        if "skipped" in run:
            continue
        assert run["runner_exit"] == 0, (label, run["runner_output"])
        assert run["cells"] == 31, label
        assert run["catalog"] == {"rows": 702, "reference_rows": 702, "columns": run[
            "catalog"]["columns"], "identical": True}, (label, run["catalog"])
        assert all(check.get("healthy", check.get("served")) for check in
                   run["checks"].values()), (label, run["checks"])
        # the whole run compiled no kernel in any worker: all came from the image's cache
        assert all(k["hits"] > 0 and k["misses"] == 0 for k in
                   run["worker_kernels"].values()), (label, run["worker_kernels"])
    assert out.returncode == 0 and result["passed"]
