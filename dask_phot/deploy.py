"""Kubernetes manifests for dask-phot: pure builders returning plain dicts.

A ``DaskCluster`` (:func:`kube_cluster_spec`: the scheduler and workers of
``[cluster] scheduler = "kubernetes"``), and a batch run: two objects for the
dask-kubernetes operator, a ``ConfigMap`` holding the run's ``config.toml``
(:func:`config_map_spec`) and a ``DaskJob`` (:func:`kube_job_spec`) whose
runner pod executes ``dask-phot run`` on it against the job's own DaskCluster.
The operator gives the runner ``DASK_SCHEDULER_ADDRESS``; the job also sets
``DASK_PHOT__CLUSTER__SCHEDULER=local`` so that address is used whatever the
file's ``[cluster]`` says (see :func:`dask_phot.cluster.connect`). No pod gets
a Kubernetes API token: none of them talks to the API.

Nothing here contacts a cluster: ``dask-phot submit | status | logs``
(:mod:`dask_phot.commands.kubernetes`) send these manifests and ask about them.

Examples
--------
>>> docs = submission_manifests("[priors]\\npath = 's3://b/p.parquet'\\n", name="phot",
...                             namespace="science", n_workers=8, s3_secret="s3-creds")
>>> [d["kind"] for d in docs]
['ConfigMap', 'DaskJob']
>>> job = docs[1]
>>> job["spec"]["cluster"]["spec"]["worker"]["replicas"]
8
>>> job["spec"]["job"]["spec"]["containers"][0]["args"]
['dask-phot', 'run', '/etc/dask-phot/config.toml']
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dask_phot.config import is_url

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_IMAGE",
    "config_map_spec",
    "kube_cluster_spec",
    "kube_job_spec",
    "local_paths",
    "submission_manifests",
    "to_yaml",
    "validate_name",
]

#: The image of every pod (scheduler, workers, runner) unless told otherwise.
DEFAULT_IMAGE = "ghcr.io/dask-phot/dask-phot:0.1.0"

#: Where the runner pod mounts the run's ConfigMap (relative paths resolve from here).
CONFIG_DIR = "/etc/dask-phot"
CONFIG_KEY = "config.toml"
#: Longest job name: pods are named ``<job>-default-worker-<10 characters>`` (<= 63).
MAX_NAME_LENGTH = 37
DASK_GROUP, DASK_VERSION, DASKJOB_PLURAL = "kubernetes.dask.org", "v1", "daskjobs"
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABELS = {"app.kubernetes.io/name": "dask-phot", "app.kubernetes.io/component": "batch"}
_SECURITY = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
             "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


# ---------------------------------------------------------------------- pure builders
def kube_cluster_spec(
    name: str,
    *,
    image: str = DEFAULT_IMAGE,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory: str = "4Gi",
    cpu: str = "1",
    env: dict[str, str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A ``DaskCluster`` custom resource (dask-kubernetes operator) as a plain dict.

    Pure: nothing is contacted. The same image runs the scheduler and the
    workers; S3 credentials are never put here (mount them from a Secret).

    Examples
    --------
    >>> spec = kube_cluster_spec("phot", n_workers=3)
    >>> spec["kind"], spec["spec"]["worker"]["replicas"]
    ('DaskCluster', 3)
    """
    env_list = [{"name": k, "value": v} for k, v in sorted((env or {}).items())]
    resources = {"requests": {"cpu": cpu, "memory": memory},
                 "limits": {"cpu": cpu, "memory": memory}}
    security = dict(_SECURITY)
    worker = {
        "name": "worker", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads",
                 str(threads_per_worker), "--memory-limit", "0", "--dashboard",
                 "--dashboard-address", "8788", "--local-directory", "/tmp"],
        "env": env_list, "resources": resources, "securityContext": security,
        "ports": [{"name": "http-dashboard", "containerPort": 8788, "protocol": "TCP"}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    scheduler = {
        "name": "scheduler", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["dask", "scheduler"], "env": env_list, "securityContext": security,
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                      "limits": {"cpu": "1", "memory": "2Gi"}},
        "ports": [{"name": "tcp-comm", "containerPort": 8786, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": 8787, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"},
                           "initialDelaySeconds": 0, "periodSeconds": 1, "timeoutSeconds": 300},
        "livenessProbe": {"httpGet": {"port": "http-dashboard", "path": "/health"},
                          "initialDelaySeconds": 15, "periodSeconds": 20},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod = {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
           "volumes": [{"name": "tmp", "emptyDir": {}}]}
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": "dask-phot"}}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": meta,
        "spec": {
            "worker": {"replicas": int(n_workers), "spec": {**pod, "containers": [worker]}},
            "scheduler": {
                "spec": {**pod, "containers": [scheduler]},
                "service": {"type": "ClusterIP",
                            "selector": {"dask.org/cluster-name": name,
                                         "dask.org/component": "scheduler"},
                            "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": 8786,
                                       "targetPort": "tcp-comm"},
                                      {"name": "http-dashboard", "protocol": "TCP",
                                       "port": 8787, "targetPort": "http-dashboard"}]},
            },
        },
    }


def validate_name(name: str) -> str:
    """Return ``name`` if it can name a DaskJob (and its cluster and pods), else raise.

    Examples
    --------
    >>> validate_name("cosmos-irac")
    'cosmos-irac'
    >>> validate_name("Cosmos_IRAC")
    Traceback (most recent call last):
    ...
    ValueError: job name 'Cosmos_IRAC': use lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, at most 37 characters
    """  # noqa: E501
    if not (_NAME_RE.match(name) and len(name) <= MAX_NAME_LENGTH):
        raise ValueError(f"job name {name!r}: use lower-case letters, digits and '-', "
                         "starting with a letter and ending with a letter or digit, "
                         f"at most {MAX_NAME_LENGTH} characters")
    return name


def config_map_spec(name: str, config_text: str, *,
                    namespace: str | None = None) -> dict[str, Any]:
    """A ``ConfigMap`` holding a run's ``config.toml`` under the key ``config.toml``.

    Examples
    --------
    >>> config_map_spec("phot-config", "[priors]\\n")["data"]
    {'config.toml': '[priors]\\n'}
    """
    meta: dict[str, Any] = {"name": name, "labels": dict(_LABELS)}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {CONFIG_KEY: config_text}}


def _with_pod_options(pod: dict[str, Any], *, s3_secret: str | None,
                      service_account: str | None) -> dict[str, Any]:
    """Copy of a pod spec: no API token, optional service account, Secret as env."""
    out = {**pod, "automountServiceAccountToken": False}
    if service_account:
        out["serviceAccountName"] = service_account
    if s3_secret:
        out["containers"] = [{**c, "envFrom": [{"secretRef": {"name": s3_secret}}]}
                             for c in pod["containers"]]
    return out


def _runner_container(image: str, *, output: str | None, memory: str,
                      env: Mapping[str, str]) -> dict[str, Any]:
    """The DaskJob's ``job`` container: ``dask-phot run`` on the mounted config."""
    # "local" + the operator's DASK_SCHEDULER_ADDRESS: the job's scheduler, whatever
    # the file's [cluster] scheduler says
    runner_env = {**env, "DASK_PHOT__CLUSTER__SCHEDULER": "local"}
    return {
        "name": "job", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["dask-phot", "run", f"{CONFIG_DIR}/{CONFIG_KEY}",
                 *(["--out", output] if output else [])],
        "env": [{"name": k, "value": v} for k, v in sorted(runner_env.items())],
        "resources": {"requests": {"cpu": "500m", "memory": memory},
                      "limits": {"cpu": "1", "memory": memory}},
        "securityContext": dict(_SECURITY),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }


def kube_job_spec(
    name: str,
    *,
    config_map: str,
    image: str = DEFAULT_IMAGE,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory: str = "4Gi",
    cpu: str = "1",
    runner_memory: str = "2Gi",
    output: str | None = None,
    s3_secret: str | None = None,
    service_account: str | None = None,
    env: Mapping[str, str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A ``DaskJob`` custom resource that runs ``dask-phot run`` as a plain dict.

    Pure: nothing is contacted. The operator names the job's DaskCluster
    ``name``, its runner pod ``<name>-runner``, its scheduler service
    ``<name>-scheduler``.

    Parameters
    ----------
    name : str
        Job name (see :func:`validate_name`).
    config_map : str
        ConfigMap with the run's ``config.toml``, mounted at :data:`CONFIG_DIR`.
    image : str
        Image of the runner, the scheduler and the workers.
    n_workers, threads_per_worker, memory, cpu : int, int, str, str
        Worker count and each worker's threads and resources (Kubernetes units).
    runner_memory : str
        Memory of the runner pod (it reads the priors and collects cell reports).
    output : str, optional
        Catalog location passed as ``dask-phot run --out`` (e.g. ``s3://bucket/cat``).
    s3_secret : str, optional
        An existing Secret whose keys (``AWS_ACCESS_KEY_ID``...) become
        environment variables of every pod; credentials never appear here.
    service_account : str, optional
        Service account of every pod (e.g. one bound to a cloud IAM role).
    env : mapping, optional
        Extra plain environment variables of every pod.
    namespace : str, optional
        Namespace written in the metadata; none means the one applied to.

    Returns
    -------
    dict
        The ``kubernetes.dask.org/v1`` ``DaskJob``.
    """
    validate_name(name)
    env = dict(env or {})
    cluster = kube_cluster_spec(name, image=image, n_workers=n_workers,
                                threads_per_worker=threads_per_worker, memory=memory,
                                cpu=cpu, env=env)["spec"]
    options = {"s3_secret": s3_secret, "service_account": service_account}
    for part in ("worker", "scheduler"):
        cluster[part]["spec"] = _with_pod_options(cluster[part]["spec"], **options)
    runner = _runner_container(image, output=output, memory=runner_memory, env=env)
    pod = {"restartPolicy": "Never", "containers": [runner],
           "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
           "volumes": [{"name": "config", "configMap": {"name": config_map}},
                       {"name": "tmp", "emptyDir": {}}]}
    meta: dict[str, Any] = {"name": name, "labels": dict(_LABELS)}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": f"{DASK_GROUP}/{DASK_VERSION}", "kind": "DaskJob", "metadata": meta,
            "spec": {"job": {"spec": _with_pod_options(pod, **options)},
                     "cluster": {"spec": cluster}}}


def submission_manifests(config_text: str, *, name: str, namespace: str | None = None,
                         **job_options: Any) -> list[dict[str, Any]]:
    """The ConfigMap and the DaskJob of a batch run of ``config_text``.

    ``job_options`` are keyword arguments of :func:`kube_job_spec`; the
    ConfigMap is named ``<name>-config``.
    """
    config_map = f"{validate_name(name)}-config"
    return [config_map_spec(config_map, config_text, namespace=namespace),
            kube_job_spec(name, config_map=config_map, namespace=namespace, **job_options)]


def local_paths(config: Any, *, output: str | None = None) -> list[str]:
    """The data paths of a :class:`~dask_phot.config.RunConfig` that are not URLs.

    A runner pod sees only its ConfigMap: priors, images and the output must
    be URLs (``s3://``, ``https://``...). ``output`` replaces ``[output] path``.

    Examples
    --------
    >>> from dask_phot.config import load_config
    >>> cfg = load_config({"priors": {"path": "s3://b/priors.parquet"},
    ...                    "bands": {"irac1": {"images": ["/data/ch1.fits"]}}}, environ={})
    >>> local_paths(cfg, output="s3://b/catalog")
    ['bands.irac1.images: /data/ch1.fits']
    """
    found = [("priors.path", config.priors.path),
             ("output.path", output or config.output.path)]
    for band in config.bands:
        found += [(f"bands.{band.name}.{key}", path)
                  for key in ("images", "noise") for path in getattr(band, key)]
    return [f"{key}: {path}" for key, path in found if not is_url(path)]


def to_yaml(docs: Sequence[Mapping[str, Any]]) -> str:
    """Manifests as one multi-document YAML text (no aliases; multi-line strings as blocks).

    Examples
    --------
    >>> print(to_yaml([config_map_spec("c", "[priors]\\npath = 'p'\\n")]), end="")
    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: c
      labels:
        app.kubernetes.io/name: dask-phot
        app.kubernetes.io/component: batch
    data:
      config.toml: |
        [priors]
        path = 'p'
    """
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all([dict(d) for d in docs], Dumper=Dumper, sort_keys=False)
