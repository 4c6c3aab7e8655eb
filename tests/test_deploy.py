"""Deployment: DaskJob specs, ``submit``, kustomize manifests, the helm chart, the image.

Schemas. Core kinds (ConfigMap, ServiceAccount, Role, Pod...) are checked with
kubernetes-validate's strict schemas (unknown fields are errors). The operator's
custom resources (DaskCluster, DaskJob, DaskWorkerGroup, DaskAutoscaler) are checked
with the ``openAPIV3Schema`` of the CRDs that the installed dask-kubernetes package
ships, resolved, in its own helm chart
(``dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds/``; the
``operator/customresources/*.yaml`` next to it are the unresolved templates), made
strict the way ``kubectl apply --validate=strict`` is: unknown fields are errors.

The DaskJob runner path itself (``dask-phot run`` against separate ``dask scheduler``
and ``dask worker`` processes, configured only through ``DASK_SCHEDULER_ADDRESS``, as
the operator sets it) is tests/test_cluster.py::test_run_on_existing_scheduler_via_environment.
"""

from __future__ import annotations

import copy
import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest
import yaml

import dask_phot
from dask_phot.commands import kubernetes as kube_commands
from dask_phot.commands import main
from dask_phot.config import load_config
from dask_phot.deploy import (
    kube_cluster_spec,
    kube_job_spec,
    local_paths,
    submission_manifests,
    to_yaml,
    validate_name,
)

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "dask-phot"
EXAMPLE = REPO / "deploy" / "examples" / "s3-batch"
K8S_VERSION = "1.30"
BIN = Path(sys.executable).parent
#: The dask-phot command of this checkout (the installed script may be another's).
DASK_PHOT = [sys.executable, "-m", "dask_phot.commands"]


# ---------------------------------------------------------------------- validation
def _strict(schema: Any) -> Any:
    """Copy of an OpenAPI schema in which objects with ``properties`` reject others."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind) -> strict openAPIV3Schema`` from the installed operator's CRDs."""
    dk = pytest.importorskip("dask_kubernetes", reason="needs the kubernetes extra")
    crds = (Path(dk.__file__).parent / "operator" / "deployment" / "helm"
            / "dask-kubernetes-operator" / "crds")
    if not crds.is_dir():
        pytest.skip(f"dask-kubernetes {dk.__version__} ships no resolved CRDs at {crds}")
    out = {}
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            out[key] = _strict(version["schema"]["openAPIV3Schema"])
    assert {k for _, k in out} >= {"DaskCluster", "DaskJob", "DaskWorkerGroup",
                                   "DaskAutoscaler"}
    return out


@pytest.fixture(scope="module")
def validate(crd_schemas):
    """``validate(doc)``: a manifest against the Kubernetes or the operator's schemas."""
    kv = pytest.importorskip("kubernetes_validate")

    def check(doc: dict[str, Any]) -> None:
        key = (doc["apiVersion"], doc["kind"])
        if key not in crd_schemas:
            kv.validate(doc, K8S_VERSION, strict=True)
            return
        # the API server checks metadata; the CRD schema covers the rest
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        kv.validate(meta, K8S_VERSION, strict=True)
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        jsonschema.Draft7Validator(crd_schemas[key]).validate(body)

    return check


def _pod(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = job["spec"]["cluster"]["spec"]
    return [*job["spec"]["job"]["spec"]["containers"],
            *cluster["scheduler"]["spec"]["containers"],
            *cluster["worker"]["spec"]["containers"]]


def _pod_specs(job: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = job["spec"]["cluster"]["spec"]
    return [job["spec"]["job"]["spec"], cluster["scheduler"]["spec"],
            cluster["worker"]["spec"]]


# ---------------------------------------------------------------------- pure builders
def test_validator_rejects_what_the_api_server_would(validate):
    job = kube_job_spec("phot", config_map="phot-config")
    validate(job)
    bad = copy.deepcopy(job)
    bad["spec"]["cluster"]["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = copy.deepcopy(job)
    bad["spec"]["job"]["spec"]["containers"][0]["imagePullPolicy_"] = "Always"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                  "data": {"k": 1}})


@pytest.mark.parametrize("options", [
    {},
    {"n_workers": 16, "threads_per_worker": 2, "memory": "8Gi", "cpu": "2",
     "output": "s3://b/cat", "s3_secret": "s3-creds", "service_account": "phot-irsa",
     "env": {"AWS_DEFAULT_REGION": "eu-west-1"}, "namespace": "science",
     "image": "registry.example.org/dask-phot:dev"},
])
def test_specs_validate_against_kubernetes_and_crd_schemas(validate, options):
    job = kube_job_spec("phot", config_map="phot-config", **options)
    validate(job)
    for spec in _pod_specs(job):  # the pods the operator will create from them
        validate(_pod(spec))
    cluster_options = {k: v for k, v in options.items()
                       if k in ("n_workers", "threads_per_worker", "memory", "cpu", "env",
                                "namespace", "image")}
    cluster = kube_cluster_spec("phot", **cluster_options)
    validate(cluster)
    worker_group = {"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskWorkerGroup",
                    "metadata": {"name": "phot-highmem"},
                    "spec": {"cluster": "phot", "worker": cluster["spec"]["worker"]}}
    validate(worker_group)
    validate({"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler",
              "metadata": {"name": "phot"},
              "spec": {"cluster": "phot", "minimum": 1, "maximum": 10}})


def test_job_spec_wiring():
    job = kube_job_spec("phot", config_map="phot-config", n_workers=5, output="s3://b/cat",
                        s3_secret="s3-creds", service_account="irsa", env={"A": "1"})
    assert (job["apiVersion"], job["kind"]) == ("kubernetes.dask.org/v1", "DaskJob")
    cluster = job["spec"]["cluster"]["spec"]
    assert cluster["worker"]["replicas"] == 5
    # the operator names the cluster after the job: the scheduler Service must select it
    assert cluster["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == "phot"
    runner = job["spec"]["job"]["spec"]["containers"][0]
    assert runner["name"] == "job"
    assert runner["args"] == ["dask-phot", "run", "/etc/dask-phot/config.toml",
                              "--out", "s3://b/cat"]
    env = {e["name"]: e.get("value") for e in runner["env"]}
    # the runner takes the operator's DASK_SCHEDULER_ADDRESS whatever [cluster] says
    assert env == {"A": "1", "DASK_PHOT__CLUSTER__SCHEDULER": "local"}
    pod = job["spec"]["job"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert {"name": "config", "configMap": {"name": "phot-config"}} in pod["volumes"]
    for spec in _pod_specs(job):
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == "irsa"
    for c in _containers(job):
        assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert not any(re.search("SECRET|TOKEN|PASSWORD", e["name"]) for e in c["env"])
    plain = kube_job_spec("phot", config_map="phot-config")
    assert all("envFrom" not in c for c in _containers(plain))
    assert kube_job_spec("phot", config_map="phot-config") == plain  # pure


@pytest.mark.parametrize("name", ["", "Phot", "phot_1", "1phot", "phot-", "p" * 38])
def test_job_names_are_checked(name):
    with pytest.raises(ValueError, match="job name"):
        validate_name(name)
    with pytest.raises(ValueError, match="job name"):
        submission_manifests("", name=name)


def test_yaml_has_no_aliases_and_round_trips():
    docs = submission_manifests('[priors]\npath = "s3://b/p.parquet"\n', name="phot",
                                s3_secret="s")
    text = to_yaml(docs)
    assert "&id" not in text and "*id" not in text
    assert list(yaml.safe_load_all(text)) == docs
    assert 'config.toml: |\n    [priors]\n    path = "s3://b/p.parquet"\n' in text


# ---------------------------------------------------------------------- submit, status, logs
def _write_remote_config(path: Path) -> Path:
    path.write_text('[priors]\npath = "s3://survey/priors.parquet"\n\n[bands.irac1]\n'
                    'images = ["s3://survey/irac/ch1_*_sci.fits"]\n'
                    'noise = ["s3://survey/irac/ch1_*_unc.fits"]\n'
                    'noise_kind = "uncertainty"\n\n[output]\npath = "s3://survey/cat"\n')
    return path


def test_submit_dry_run_prints_manifests_that_validate(tmp_path, capsys, validate):
    cfg = _write_remote_config(tmp_path / "config.toml")
    assert main(["submit", str(cfg), "--name", "cosmos", "-n", "science", "--workers", "3",
                 "--image", "example.org/dask-phot:1", "--s3-secret", "s3-creds",
                 "--dry-run"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "DaskJob"]
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["namespace"] == "science"
    config_map, job = docs
    assert config_map["data"]["config.toml"] == cfg.read_text()
    assert job["spec"]["cluster"]["spec"]["worker"]["replicas"] == 3
    assert {c["image"] for c in _containers(job)} == {"example.org/dask-phot:1"}
    volumes = job["spec"]["job"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "cosmos-config"}} in volumes


def test_submit_refuses_paths_the_pods_cannot_see(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[priors]\npath = "priors.parquet"\n[bands.irac1]\n'
                   'images = ["s3://survey/ch1.fits"]\n')
    assert main(["submit", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "priors.path: " + str(tmp_path / "priors.parquet") in err
    assert "output.path" in err and "Traceback" not in err
    found = local_paths(load_config(cfg, environ={}), output="s3://survey/cat")
    assert found == ["priors.path: " + str(tmp_path / "priors.parquet")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_commands_without_a_cluster_fail_clearly(tmp_path):
    cfg = _write_remote_config(tmp_path / "config.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "missing"))
    run = [*DASK_PHOT, "submit", str(cfg), "--name", "cosmos"]
    out = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "no Kubernetes cluster to talk to" in out.stderr and "--dry-run" in out.stderr
    assert "Traceback" not in out.stderr
    # a kubeconfig whose API server does not answer
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{_closed_port()}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u",
                                               "namespace": "science"}}]}))
    env["KUBECONFIG"] = str(kubeconfig)
    for args in (run, [*DASK_PHOT, "status", "cosmos"]):
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 2, out.stderr
        assert "cannot reach the Kubernetes API server" in out.stderr
        assert "namespace science" in out.stderr
        assert "Traceback" not in out.stderr and "Retrying" not in out.stderr


def test_only_submit_suggests_a_dry_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("kubernetes", reason="needs the kubernetes extra")
    for name in [k for k in os.environ if k.startswith("KUBERNETES_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    cfg = _write_remote_config(tmp_path / "config.toml")
    assert main(["submit", str(cfg), "--name", "cosmos"]) == 2
    assert "or use --dry-run" in capsys.readouterr().err
    for command in (["status", "cosmos"], ["logs", "cosmos"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "no Kubernetes cluster to talk to" in err and "--dry-run" not in err


class _FakeKube:
    """Stands for the ``kubernetes.client`` module: records calls, replays job states."""

    def __init__(self, states: tuple[str, ...] = ("Running",), fail_config_map: bool = False):
        from kubernetes.client import exceptions

        self.exceptions, self.states, self.fail = exceptions, list(states), fail_config_map
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def CustomObjectsApi(self) -> _FakeKube:
        return self

    CoreV1Api = CustomObjectsApi

    def create_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
        body = args[4]
        self.created.append(body)
        return {**body, "metadata": {**body["metadata"], "uid": "uid-1"}}

    def delete_namespaced_custom_object(self, *args: Any, **kw: Any) -> None:
        self.deleted.append(args[4])

    def create_namespaced_config_map(self, namespace: str, body: Any, **kw: Any) -> None:
        if self.fail:
            raise self.exceptions.ApiException(status=403, reason="Forbidden")
        self.created.append(body)

    def get_namespaced_custom_object(self, *args: Any, **kw: Any) -> dict[str, Any]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"metadata": {"name": args[4]},
                "spec": {"cluster": {"spec": {"worker": {"replicas": 2}}}},
                "status": {"jobStatus": state, "jobRunnerPodName": f"{args[4]}-runner"}}

    def read_namespaced_pod(self, *args: Any, **kw: Any) -> Any:
        return SimpleNamespace(status=SimpleNamespace(phase="Running"))

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> Any:
        assert name == "cosmos-runner" and kw["container"] == "job"
        return SimpleNamespace(stream=lambda: iter([b"cells 1/2 | 9 sources\n", b"done\n"]))


def test_submit_status_logs_through_the_client(tmp_path, capsys, monkeypatch):
    pytest.importorskip("kubernetes", reason="needs the kubernetes extra")
    cfg = _write_remote_config(tmp_path / "config.toml")
    fake = _FakeKube(states=("ClusterCreated", "Running", "Successful"))
    monkeypatch.setattr(kube_commands, "_client", lambda context: (fake, "science"))
    assert main(["submit", str(cfg), "--name", "cosmos"]) == 0
    job, config_map = fake.created
    assert (job["kind"], job["metadata"]["namespace"]) == ("DaskJob", "science")
    assert config_map["metadata"]["ownerReferences"] == [{
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskJob", "name": "cosmos",
        "uid": "uid-1"}]
    assert "submitted DaskJob cosmos to namespace science" in capsys.readouterr().out
    assert main(["status", "cosmos", "--wait", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "status: ClusterCreated" in out and out.rstrip().endswith("status: Successful")
    monkeypatch.setattr(kube_commands, "_client",
                        lambda context: (_FakeKube(("Failed",)), "science"))
    assert main(["status", "cosmos"]) == 1
    assert main(["logs", "cosmos", "--follow"]) == 0
    assert "cells 1/2 | 9 sources\ndone\n" in capsys.readouterr().out
    # a ConfigMap that cannot be created takes its DaskJob back
    fake = _FakeKube(fail_config_map=True)
    monkeypatch.setattr(kube_commands, "_client", lambda context: (fake, "science"))
    assert main(["submit", str(cfg), "--name", "cosmos"]) == 2
    assert fake.deleted == ["cosmos"]
    assert "creating ConfigMap cosmos-config: 403 Forbidden" in capsys.readouterr().err


# ---------------------------------------------------------------------- kustomize
def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot run `kubectl kustomize`")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("path", ["deploy/base", "deploy/rbac", "deploy/examples/s3-batch"])
def test_kustomize_output_validates(path, validate):
    docs = _kustomize(REPO / path)
    assert docs
    for doc in docs:
        validate(doc)


def test_example_wires_config_secret_and_least_rbac():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _kustomize(EXAMPLE)}
    assert {d["metadata"].get("namespace") for d in docs.values()} == {"dask-phot"}
    job = docs["DaskJob", "dask-phot"]
    config_maps = [name for kind, name in docs if kind == "ConfigMap"]
    assert len(config_maps) == 1 and config_maps[0].startswith("dask-phot-config-")
    assert {"name": "config", "configMap": {"name": config_maps[0]}} in \
        job["spec"]["job"]["spec"]["volumes"]
    assert docs["ConfigMap", config_maps[0]]["data"]["config.toml"] == \
        (EXAMPLE / "config.toml").read_text()
    assert job["spec"]["cluster"]["spec"]["worker"]["replicas"] == 8
    assert all(c["envFrom"] == [{"secretRef": {"name": "dask-phot-s3"}}]
               for c in _containers(job))
    assert docs["ServiceAccount", "dask-phot-runner"]["automountServiceAccountToken"] is False
    # RBAC: only the submitter role, bound only to the submitter; nothing cluster-wide
    assert not any(kind.startswith("Cluster") for kind, _ in docs)
    assert [k for k in docs if k[0] in ("Role", "RoleBinding")] == [
        ("Role", "dask-phot-submitter"), ("RoleBinding", "dask-phot-submitter")]
    rules = {(g, r): sorted(rule["verbs"]) for rule in docs["Role", "dask-phot-submitter"]["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {("kubernetes.dask.org", "daskjobs"): ["create", "delete", "get", "list"],
                     ("", "configmaps"): ["create"], ("", "pods"): ["get"],
                     ("", "pods/log"): ["get"]}
    assert docs["RoleBinding", "dask-phot-submitter"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "dask-phot-submitter", "namespace": "dask-phot"}]


def test_base_daskjob_is_the_builders_output():
    expected = kube_job_spec("dask-phot", config_map="dask-phot-config",
                             s3_secret="dask-phot-s3", service_account="dask-phot-runner")
    found = yaml.safe_load((REPO / "deploy" / "base" / "daskjob.yaml").read_text())
    assert found == expected, "deploy/base/daskjob.yaml is stale; now:\n" + to_yaml([expected])


def test_example_config_is_valid_and_remote():
    assert local_paths(load_config(EXAMPLE / "config.toml", environ={})) == []


# ---------------------------------------------------------------------- helm chart
def _values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def test_chart_values_satisfy_the_schema():
    jsonschema.Draft7Validator.check_schema(_schema())
    jsonschema.Draft7Validator(_schema()).validate(_values())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == dask_phot.__version__


@pytest.mark.parametrize(("path", "value"), [
    ("env", [{"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}]),
    ("securityContext.runAsNonRoot", False),
    ("securityContext.readOnlyRootFilesystem", False),
    ("securityContext.allowPrivilegeEscalation", True),
    ("podSecurityContext.runAsNonRoot", False),
    ("worker.replicas", -1),
    ("worker.resources.limits.memory", "lots"),
    ("s3.accessKey", "AKIA..."),
    ("image.pullPolicy", "Sometimes"),
])
def test_chart_schema_rejects(path, value):
    values = _values()
    *parents, last = path.split(".")
    node = values
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(_schema()).validate(values)
    ok = _values()
    ok["env"] = [{"name": "AWS_SECRET_ACCESS_KEY",
                  "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}}}]
    jsonschema.Draft7Validator(_schema()).validate(ok)


def test_chart_templates_use_only_defined_values():
    values = _values()
    templates = sorted((CHART / "templates").glob("*"))
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    defined = set(re.findall(r'{{-?\s*define\s+"([^"]+)"', helpers))
    used_paths = set()
    for path in templates:
        text = path.read_text()
        assert text.count("{{") == text.count("}}"), path.name
        used_paths |= set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text))
        for name in re.findall(r'include\s+"([^"]+)"', text):
            assert name in defined, f"{path.name}: include {name!r} is not defined"
    assert len(used_paths) > 20
    for dotted in sorted(used_paths):
        node: Any = values
        for key in dotted.strip(".").split("."):
            assert isinstance(node, dict) and key in node, f".Values{dotted} not in values.yaml"
            node = node[key]
    kinds = {m for p in templates for m in re.findall(r"^kind: (\w+)", p.read_text(), re.M)}
    assert kinds == {"DaskCluster", "DaskAutoscaler", "Service", "ServiceAccount"}


def _render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    helm = pytest.importorskip("helm_python", reason="needs helm-python-sdk (Helm's Go SDK)")
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name="phot", namespace="science")
    assert "dask-phot/templates/NOTES.txt" in manifests
    return [d for path, text in sorted(manifests.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("values", [
    {},
    {"autoscaler": {"enabled": True, "maximum": 5}, "worker": {"replicas": 3, "threads": 2},
     "s3": {"existingSecret": "s3", "region": "eu-west-1", "endpointUrl": "http://minio:9000"},
     "tmpSizeLimit": "20Gi", "nodeSelector": {"pool": "spot"},
     "env": [{"name": "A", "value": "1"}], "imagePullSecrets": ["regcred"]},
])
def test_chart_rendered_by_helm_validates(values, validate):
    """``helm template`` (Helm's Go SDK) of the chart: every object against its schema."""
    docs = _render_chart(values)
    for doc in docs:
        validate(doc)
        if doc["kind"] == "DaskCluster":
            for role in ("scheduler", "worker"):
                validate(_pod(doc["spec"][role]["spec"]))
    kinds = sorted(d["kind"] for d in docs)
    expected = ["DaskCluster", "Service", "ServiceAccount"]
    assert kinds == sorted(expected + (["DaskAutoscaler"] if values else []))
    (cluster,) = [d for d in docs if d["kind"] == "DaskCluster"]
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    assert worker["args"][:2] == ["dask", "worker"]
    assert worker["image"] == f"ghcr.io/dask-phot/dask-phot:{dask_phot.__version__}"
    if values:
        env = {e["name"]: e.get("value") for e in worker["env"]}
        assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000" and env["A"] == "1"
        assert worker["envFrom"] == [{"secretRef": {"name": "s3"}}]


def test_chart_values_are_commented_key_by_key():
    """Every value is under a comment: directly above it or above a key containing it."""
    stack: list[tuple[int, bool]] = []  # (indent, commented) of the enclosing keys
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if match:
            indent = len(match[1])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            commented = previous.lstrip().startswith("#") or any(c for _, c in stack)
            is_leaf = match[3].strip() not in ("",)
            assert commented or not is_leaf, f"values.yaml: {match[2]!r} has no comment"
            stack.append((indent, commented))
        if line.strip():
            previous = line


# ---------------------------------------------------------------------- the image
def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [(m[1].upper(), m[2].strip()) for line in text.splitlines()
            if (m := re.match(r"^\s*([A-Za-z]+)\s+(.*)$", line)) and not line.startswith("#")]


def _stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each from its FROM to the next."""
    steps = _dockerfile()
    starts = [i for i, (ins, _) in enumerate(steps) if ins == "FROM"]
    return [steps[a:b] for a, b in zip(starts, [*starts[1:], len(steps)], strict=True)]


def test_dockerfile_is_two_stage_non_root_with_healthcheck():
    steps = _dockerfile()
    build, runtime = _stages()
    args = dict(a.split("=", 1) for ins, a in steps if ins == "ARG" and "=" in a)
    assert args["BASE_IMAGE"] == "python:${PYTHON_VERSION}-slim"
    assert build[0][1] == "${BASE_IMAGE} AS build"
    assert runtime[0][1] == "${BASE_IMAGE} AS runtime"
    users = [args for ins, args in runtime if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(ins == "HEALTHCHECK" for ins, _ in runtime)
    # the operator sets args: no ENTRYPOINT may swallow them
    assert not any(ins == "ENTRYPOINT" for ins, _ in steps)
    assert (REPO / "deploy" / "docker" / "install.sh").stat().st_mode & 0o111
    ignored = (REPO / ".dockerignore").read_text()
    for ins, args in steps:
        if ins == "COPY" and "--from" not in args:
            for source in shlex.split(args)[:-1]:
                assert f"!{source.rstrip('/')}" in ignored or any(
                    source.startswith(f"{d}/") for d in re.findall(r"^!(\S+)/$", ignored, re.M))


def test_dockerfile_layers_are_cache_friendly():
    """Dependencies before the package, the package before its compiled kernels."""
    runtime = _stages()[1]
    order = [(ins, args) for ins, args in runtime if ins in ("COPY", "RUN")]
    deps = next(i for i, (ins, a) in enumerate(order) if "dask-phot-install deps" in a)
    package = next(i for i, (ins, a) in enumerate(order) if "dask-phot-install package" in a)
    kernels = next(i for i, (ins, a) in enumerate(order) if "dask-phot-install kernels" in a)
    assert deps < package < kernels == len(order) - 1
    # nothing that changes with the code comes before the dependencies' layer
    assert not any("dask_phot" in a or "wheels" in a for _, a in order[:deps])
    # the wheel is copied (podman's cache ignores what a RUN bind-mounts from a stage)
    assert order[package - 1][0] == "COPY" and "--from=build" in order[package - 1][1]
    env = {k: v for ins, a in runtime if ins == "ENV" for k, v in
           (item.split("=", 1) for item in shlex.split(a))}
    assert env["DASK_DISTRIBUTED__WORKER__PRELOAD"] == '["dask_phot.warmup"]'
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert env["DASK_PHOT_NUMBA_CACHE"] == shlex.split(order[kernels][1])[-1]


def _load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dask_phot_healthcheck", REPO / "deploy" / "docker" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve(status: int, body: bytes) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_healthcheck():
    hc = _load_healthcheck()
    good, bad = _serve(200, b"ok"), _serve(500, b"no")
    try:
        closed = _closed_port()
        assert hc.check([closed])[0]  # no Dask server: the import decides
        assert hc.check([closed, good.server_port])[0]
        healthy, reason = hc.check([bad.server_port, good.server_port])
        assert not healthy and "HTTP 500" in reason
    finally:
        for server in (good, bad):
            server.shutdown()
            server.server_close()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_image_install_steps(tmp_path):
    """The Dockerfile's COPY and RUN steps, replayed in a fresh venv (no container engine).

    Where podman can build and run the image itself (tests/test_container.py), that test
    covers all of this and more, and this replay is skipped to keep CI short.
    """
    if sys.platform == "linux" and os.geteuid() == 0 and all(
            shutil.which(t) for t in ("podman", "runc", "kubectl")):
        pytest.skip("podman builds and runs the image itself: tests/test_container.py")
    steps = _dockerfile()
    build = _stages()[0]
    src = tmp_path / "src"
    src.mkdir()
    for ins, args in build:  # COPY the build context as the build stage does
        if ins == "COPY" and not args.endswith("dask-phot-install"):
            *sources, _dest = shlex.split(args)
            for source in sources:
                origin = REPO / source
                if origin.is_dir():
                    shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns(
                        "__pycache__", "*.nbi", "*.nbc", "*.egg-info"))
                else:
                    shutil.copy2(origin, src / source)
    paths = {"/src": src, "/wheels": tmp_path / "wheels", "/opt/dask-phot": tmp_path / "venv",
             "/usr/local/share/dask-phot/pyproject.toml": REPO / "pyproject.toml",
             "/usr/local/share/dask-phot/wheels": tmp_path / "wheels",
             "/opt/dask-phot/numba-cache": tmp_path / "numba-cache"}
    runs = [shlex.split(args)[-3:] for ins, args in steps
            if ins == "RUN" and "dask-phot-install" in args]
    assert [r[0] for r in runs] == ["wheel", "deps", "package", "kernels"]
    env = {**os.environ, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)  # the venv must import its own dask_phot
    for command, *where in runs:
        out = subprocess.run(["sh", str(REPO / "deploy" / "docker" / "install.sh"), command,
                              *(str(paths[w]) for w in where)],
                             capture_output=True, text=True, env=env, timeout=1500)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    venv = paths["/opt/dask-phot"] / "bin"
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    assert not (site / "pip").exists() and not list(site.glob("pandas/tests"))
    assert (site / "astropy" / "tests").is_dir()  # imported by astropy itself
    assert list(paths["/opt/dask-phot/numba-cache"].rglob("*.nbc"))
    # the runtime stage's ENV, its paths mapped here; HOME unwritable as in the pods
    (tmp_path / "tmp").mkdir()
    image_env = {k: v for k, v in os.environ.items()
                 if not k.startswith("VIRTUAL_ENV") and k != "PYTHONPATH"}
    image_env["HOME"] = str(tmp_path / "read-only-home")
    here = {"/opt/dask-phot": str(paths["/opt/dask-phot"]), "/tmp": str(tmp_path / "tmp"),
            "$PATH": os.environ["PATH"]}

    def mapped(path: str) -> str:
        top = next((p for p in here if path == p or path.startswith(p + "/")), None)
        return here[top] + path[len(top):] if top else path

    for ins, args in _stages()[1]:
        for item in shlex.split(args) if ins == "ENV" else ():
            key, value = item.split("=", 1)
            image_env[key] = os.pathsep.join(mapped(v) for v in value.split(os.pathsep))
    assert image_env["PATH"].startswith(str(venv))
    image_env["DASK_PHOT_NUMBA_CACHE"] = str(paths["/opt/dask-phot/numba-cache"])
    cache = "from astropy.config import get_cache_dir; print(get_cache_dir())"
    seeded = ("from dask_phot.warmup import dask_setup, cache_stats; dask_setup(None); "
              "s = cache_stats(); assert s.hits and not s.misses, s")
    for args in (["dask-phot", "--help"], ["dask", "--version"],
                 ["python", str(REPO / "deploy" / "docker" / "healthcheck.py")],
                 ["python", "-W", "error", "-c", f"import s3fs, bokeh, dask_phot.engine; {cache}"],
                 ["python", "-c", seeded],
                 ["dask-phot", "submit", str(EXAMPLE / "config.toml"), "--dry-run"]):
        out = subprocess.run(args, capture_output=True, text=True, env=image_env, timeout=300)
        assert out.returncode == 0, (args, out.stderr)
        assert args[0] != "python" or "-W" not in args or \
            out.stdout.strip().startswith(str(tmp_path / "tmp"))
    assert not (tmp_path / "read-only-home").exists()
