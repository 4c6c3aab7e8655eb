"""The rendered manifests, turned into the pods the dask-kubernetes operator would create.

* The DaskJob: ``kubectl kustomize`` of an overlay of deploy/base that sets the image
  (kustomize's ``images:``), generates the ConfigMap ``dask-phot-config`` from the run's
  config.toml and the Secret ``dask-phot-s3`` from the S3 credentials, as a user's
  overlay does (deploy/examples/s3-batch).
* The chart: rendered by Helm's Go SDK (the ``helm-python-sdk`` package; no helm binary is
  packaged on PyPI, Debian or npm), release ``phot``, with the image, two workers and the
  S3 settings as values.
* The pods: the operator's own builders (``build_scheduler_deployment_spec``,
  ``build_worker_deployment_spec``, ``build_job_pod_spec``), which add what the operator
  adds: ``DASK_SCHEDULER_ADDRESS`` (the scheduler Service's DNS name) and
  ``DASK_WORKER_NAME``. The Service's names resolve to 127.0.0.1 in the containers.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any
from uuid import uuid4

import yaml

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "dask-phot-test"
RELEASE = "phot"
SECRET = "dask-phot-s3"
LOOPBACK = "127.0.0.1"


@dataclasses.dataclass
class Pods:
    """One Dask cluster's pods (pod specs, as the operator builds them) and what they use."""

    scheduler: dict[str, Any]
    workers: dict[str, dict[str, Any]]
    runner: dict[str, Any]
    secrets: dict[str, dict[str, str]]
    config_maps: dict[str, dict[str, str]]
    volume_dirs: dict[str, str]
    add_hosts: list[str]
    ports: dict[str, int]
    probe_path: str

    @property
    def probe_url(self) -> str:
        """The scheduler's readiness probe, from its spec."""
        return f"http://{LOOPBACK}:{self.ports['probe']}{self.probe_path}"

    @property
    def dashboard_url(self) -> str:
        """The scheduler's dashboard."""
        return f"http://{LOOPBACK}:{self.ports['http-dashboard']}"

    @property
    def local_scheduler(self) -> str:
        """The scheduler's address from this machine."""
        return f"tcp://{LOOPBACK}:{self.ports['tcp-comm']}"

    def worker_spec_with_args(self, args: list[str]) -> dict[str, Any]:
        """A worker's pod spec running ``args`` instead of ``dask worker``."""
        spec = copy.deepcopy(next(iter(self.workers.values())))
        spec["containers"][0]["args"] = args
        return spec


def kustomize_daskjob(overlay: Path, config_toml: str, image: str) -> list[dict[str, Any]]:
    """``kubectl kustomize`` of an overlay of deploy/base with this run's config and image."""
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "config.toml").write_text(config_toml)
    repository, tag = image.rsplit(":", 1)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [os.path.relpath(REPO / "deploy" / "base", overlay)],
        "configMapGenerator": [{"name": "dask-phot-config", "files": ["config.toml"]}],
        "secretGenerator": [{"name": SECRET, "envs": ["s3.env"]}],
        "images": [{"name": "ghcr.io/dask-phot/dask-phot", "newName": repository,
                    "newTag": tag}],
    }
    (overlay / "s3.env").write_text("AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n")
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True,
                         text=True, timeout=120, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_chart(image: str, *, endpoint_url: str) -> list[dict[str, Any]]:
    """The chart rendered by Helm (``helm template``), release ``phot``; ImportError without."""
    import helm_python

    repository, tag = image.rsplit(":", 1)
    values = {"image": {"repository": repository, "tag": tag}, "worker": {"replicas": 2},
              "s3": {"existingSecret": SECRET, "endpointUrl": endpoint_url,
                     "region": "us-east-1"}}
    with helm_python.Chart.load(str(REPO / "helm" / "dask-phot")) as chart:
        chart.validate_schema(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [d for path, text in sorted(manifests.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]


def objects_data(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, str]]:
    """Name -> data of the Secrets (decoded) or ConfigMaps among rendered objects."""
    out = {}
    for doc in objects:
        if doc["kind"] != kind:
            continue
        data = dict(doc.get("data", {}))
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        out[doc["metadata"]["name"]] = {**data, **doc.get("stringData", {})}
    return out


def config_map_dirs(pod_specs: list[dict[str, Any]], config_maps: dict[str, dict[str, str]],
                    root: Path) -> dict[str, str]:
    """Volume name -> host directory with the files of the ConfigMap it mounts."""
    out = {}
    for spec in pod_specs:
        for volume in spec.get("volumes", []):
            if "configMap" not in volume:
                continue
            name = volume["configMap"]["name"]
            where = root / name
            where.mkdir(parents=True, exist_ok=True)
            where.chmod(0o755)
            for key, text in config_maps[name].items():
                (where / key).write_text(text)
                (where / key).chmod(0o644)
            out[volume["name"]] = str(where)
    return out


def _operator() -> Any:
    from dask_kubernetes.operator.controller import controller

    return controller


def cluster_pods(name: str, cluster_spec: dict[str, Any]) -> tuple[dict, dict, list[str]]:
    """The scheduler's and the workers' pod specs of a DaskCluster, and its Service names."""
    ctl = _operator()
    scheduler = ctl.build_scheduler_deployment_spec(
        name, cluster_spec["scheduler"]["spec"], {}, {})["spec"]["template"]["spec"]
    group = ctl.build_default_worker_group_spec(name, cluster_spec["worker"], {}, {})
    workers = {}
    for _ in range(cluster_spec["worker"].get("replicas", 1)):
        deployment = ctl.build_worker_deployment_spec(
            group["metadata"]["name"], NAMESPACE, name, uuid4().hex[:10],
            cluster_spec["worker"]["spec"], {}, {})
        workers[deployment["metadata"]["name"]] = deployment["spec"]["template"]["spec"]
    service = ctl.build_scheduler_service_spec(name, cluster_spec["scheduler"]["service"],
                                               {}, {})["metadata"]["name"]
    hosts = [service, f"{service}.{NAMESPACE}", f"{service}.{NAMESPACE}.svc",
             f"{service}.{NAMESPACE}.svc.cluster.local"]
    return scheduler, workers, [f"{h}:{LOOPBACK}" for h in hosts]


def _scheduler_ports(scheduler: dict[str, Any]) -> tuple[dict[str, int], str]:
    container = scheduler["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["readinessProbe"]["httpGet"]
    ports["probe"] = ports.get(probe["port"], probe["port"])
    return ports, probe["path"]


def daskjob_pods(objects: list[dict[str, Any]], workdir: Path,
                 cluster: dict[str, Any] | None = None) -> Pods:
    """The pods of the DaskJob among ``objects``; with ``cluster`` (a DaskCluster, e.g.
    the chart's), its runner against that cluster's scheduler instead of its own."""
    (job,) = [d for d in objects if d["kind"] == "DaskJob"]
    owner = cluster or {"metadata": job["metadata"], "spec": job["spec"]["cluster"]["spec"]}
    name = owner["metadata"]["name"]
    scheduler, workers, hosts = cluster_pods(name, owner["spec"])
    runner = _operator().build_job_pod_spec(job["metadata"]["name"], name, NAMESPACE,
                                            job["spec"]["job"]["spec"], {}, {})["spec"]
    config_maps = objects_data(objects, "ConfigMap")
    secrets = objects_data(objects, "Secret")
    if cluster is not None:  # the chart expects the Secret to exist under its own name
        secrets[SECRET] = next(v for k, v in secrets.items() if k.startswith(SECRET))
    ports, probe_path = _scheduler_ports(scheduler)
    volume_dirs = config_map_dirs([runner, scheduler, *workers.values()], config_maps,
                                  workdir / "volumes")
    return Pods(scheduler, workers, runner, secrets, config_maps, volume_dirs, hosts, ports,
                probe_path)
