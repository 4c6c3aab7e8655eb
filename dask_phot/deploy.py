"""Batch runs on Kubernetes: DaskJob manifests and ``dask-phot submit | status | logs``.

A batch run is two objects for the dask-kubernetes operator: a ``ConfigMap``
holding the run's ``config.toml`` and a ``DaskJob`` whose runner pod executes
``dask-phot run`` on it against the job's own DaskCluster (scheduler and
workers from :func:`dask_phot.cluster.kube_cluster_spec`). The operator gives
the runner ``DASK_SCHEDULER_ADDRESS``; the job also sets
``DASK_PHOT__CLUSTER__SCHEDULER=local`` so that address is used whatever the
file's ``[cluster]`` says (see :func:`dask_phot.cluster.connect`). No pod gets
a Kubernetes API token: none of them talks to the API.

The builders (:func:`kube_job_spec`, :func:`config_map_spec`,
:func:`submission_manifests`) are pure and return plain dicts; the commands
talk to a cluster through the ``kubernetes`` client, imported only when a
command needs it (``pip install 'dask-phot[kubernetes]'``).

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

import argparse
import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dask_phot.cluster import DEFAULT_IMAGE, kube_cluster_spec

__all__ = [
    "CONFIG_DIR",
    "DeployError",
    "config_map_spec",
    "kube_job_spec",
    "local_paths",
    "register",
    "submission_manifests",
    "to_yaml",
    "validate_name",
]

log = logging.getLogger(__name__)

#: Where the runner pod mounts the run's ConfigMap (relative paths resolve from here).
CONFIG_DIR = "/etc/dask-phot"
CONFIG_KEY = "config.toml"
#: Longest job name: pods are named ``<job>-default-worker-<10 characters>`` (<= 63).
MAX_NAME_LENGTH = 37
DASK_GROUP, DASK_VERSION, DASKJOB_PLURAL = "kubernetes.dask.org", "v1", "daskjobs"
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_LABELS = {"app.kubernetes.io/name": "dask-phot", "app.kubernetes.io/component": "batch"}
_SECURITY = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
             "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
_DONE = ("Successful", "Failed")


class DeployError(RuntimeError):
    """A submission or query that cannot be done; the message says why and what to do."""


# ---------------------------------------------------------------------- pure builders
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
    return [f"{key}: {path}" for key, path in found if not _URL_RE.match(path)]


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


# ---------------------------------------------------------------------- Kubernetes client
def _client(context: str | None) -> tuple[Any, str]:
    """The ``kubernetes.client`` module, configured, and the default namespace."""
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise DeployError("talking to Kubernetes needs the kubernetes package: "
                          "pip install 'dask-phot[kubernetes]'") from exc
    try:
        config.load_incluster_config()
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return client, f.read().strip() or "default"
    except (config.ConfigException, OSError):
        pass
    try:
        config.load_kube_config(context=context)
        contexts, active = config.list_kube_config_contexts()
    except (config.ConfigException, OSError, TypeError) as exc:
        raise DeployError(f"no Kubernetes cluster to talk to ({exc}); set KUBECONFIG or "
                          "--context, or use --dry-run to print the manifests") from None
    if context:
        active = next((c for c in contexts if c.get("name") == context), active)
    return client, (active or {}).get("context", {}).get("namespace") or "default"


@contextlib.contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """Turn the client's exceptions into a :class:`DeployError` saying ``what`` failed."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        raise DeployError(f"{what}: {exc.status} {message}") from None
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DeployError(f"{what}: cannot reach the Kubernetes API server ({reason})") from None


def _submit(client: Any, docs: list[dict[str, Any]], namespace: str) -> None:
    """Create the DaskJob, then its ConfigMap owned by it (deleted along with it)."""
    config_map, job = docs
    api = client.CustomObjectsApi()
    name = job["metadata"]["name"]
    with _api_errors(f"creating DaskJob {name} in namespace {namespace}"):
        try:
            created = api.create_namespaced_custom_object(
                DASK_GROUP, DASK_VERSION, namespace, DASKJOB_PLURAL, job, _request_timeout=30)
        except client.exceptions.ApiException as exc:
            if exc.status == 404:
                raise DeployError(
                    f"creating DaskJob {name}: the cluster does not know DaskJob; install "
                    "the dask-kubernetes operator (see docs/deployment.md)") from None
            raise
    owner = {"apiVersion": job["apiVersion"], "kind": "DaskJob", "name": name,
             "uid": created["metadata"]["uid"]}
    config_map = {**config_map, "metadata": {**config_map["metadata"],
                                             "ownerReferences": [owner]}}
    try:
        with _api_errors(f"creating ConfigMap {config_map['metadata']['name']}"):
            client.CoreV1Api().create_namespaced_config_map(namespace, config_map,
                                                            _request_timeout=30)
    except DeployError:
        with contextlib.suppress(Exception):
            api.delete_namespaced_custom_object(DASK_GROUP, DASK_VERSION, namespace,
                                                DASKJOB_PLURAL, name, _request_timeout=30)
        raise


def _get_job(client: Any, name: str, namespace: str) -> dict[str, Any]:
    with _api_errors(f"DaskJob {name} in namespace {namespace}"):
        return client.CustomObjectsApi().get_namespaced_custom_object(
            DASK_GROUP, DASK_VERSION, namespace, DASKJOB_PLURAL, name, _request_timeout=30)


def _describe(job: Mapping[str, Any]) -> str:
    status = job.get("status") or {}
    replicas = job["spec"]["cluster"]["spec"]["worker"].get("replicas")
    rows = [("job", job["metadata"]["name"]), ("status", status.get("jobStatus") or "Pending"),
            ("workers", replicas), ("cluster", status.get("clusterName")),
            ("runner pod", status.get("jobRunnerPodName")),
            ("started", status.get("startTime")), ("ended", status.get("endTime"))]
    return "\n".join(f"{k}: {v}" for k, v in rows if v is not None)


# ---------------------------------------------------------------------- commands
def _default_name() -> str:
    return "dask-phot-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _cmd_submit(args: argparse.Namespace) -> int:
    from dask_phot.config import load_config

    with open(args.config, encoding="utf-8") as f:
        text = f.read()
    config = load_config(args.config, environ={})  # fail here, not in the pod
    local = local_paths(config, output=args.out)
    if local:
        raise DeployError("a job's pods cannot read this machine's files; use URLs "
                          "(s3://...; --out for the catalog) for " + "; ".join(local))
    name = args.name or _default_name()
    options = {"image": args.image, "n_workers": args.workers or config.cluster.n_workers,
               "threads_per_worker": config.cluster.threads_per_worker,
               "memory": args.worker_memory, "cpu": args.worker_cpu, "output": args.out,
               "s3_secret": args.s3_secret, "service_account": args.service_account}
    if args.dry_run:
        docs = submission_manifests(text, name=name, namespace=args.namespace, **options)
        sys.stdout.write(to_yaml(docs))
        return 0
    client, default_namespace = _client(args.context)
    namespace = args.namespace or default_namespace
    _submit(client, submission_manifests(text, name=name, namespace=namespace, **options),
            namespace)
    print(f"submitted DaskJob {name} to namespace {namespace} "
          f"({options['n_workers']} workers, image {args.image})")
    print(f"follow it: dask-phot status {name} -n {namespace} --wait; "
          f"dask-phot logs {name} -n {namespace} --follow")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    client, default_namespace = _client(args.context)
    namespace = args.namespace or default_namespace
    job = _get_job(client, args.job, namespace)
    print(_describe(job), flush=True)
    last = (job.get("status") or {}).get("jobStatus")
    while args.wait and last not in _DONE:
        time.sleep(args.interval)
        job = _get_job(client, args.job, namespace)
        state = (job.get("status") or {}).get("jobStatus")
        if state != last:
            print(f"status: {state}", flush=True)
            last = state
    return 1 if last == "Failed" else 0


def _cmd_logs(args: argparse.Namespace) -> int:
    client, default_namespace = _client(args.context)
    namespace = args.namespace or default_namespace
    job = _get_job(client, args.job, namespace)
    pod = (job.get("status") or {}).get("jobRunnerPodName") or f"{args.job}-runner"
    core = client.CoreV1Api()
    with _api_errors(f"logs of pod {pod} (job {args.job})"):
        while args.follow:
            phase = core.read_namespaced_pod(pod, namespace, _request_timeout=30).status.phase
            if phase != "Pending":
                break
            log.info("runner pod %s is pending; waiting", pod)
            time.sleep(2.0)
        stream = core.read_namespaced_pod_log(pod, namespace, container="job",
                                              follow=args.follow, _preload_content=False)
        for chunk in stream.stream():
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    return 0


def _reporting(func: Any) -> Any:
    """A command that prints a :class:`DeployError` (or bad value) as one line, exit 2."""
    def run(args: argparse.Namespace) -> int:
        if not args.verbose:  # the client's retries are reported once, in the error
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        try:
            return func(args)
        except (DeployError, ValueError) as exc:
            print(f"dask-phot {args.command}: error: {exc}", file=sys.stderr)
            return 2
    return run


def register(subparsers: Any) -> None:
    """Add ``submit``, ``status`` and ``logs`` to the ``dask-phot`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    s = subparsers.add_parser("submit", parents=[common],
                              help="run a config.toml as a DaskJob on Kubernetes")
    s.add_argument("config", help="run configuration; its data paths must be URLs")
    s.add_argument("--name", help="job name (default: dask-phot-<UTC time>)")
    s.add_argument("--workers", type=int, help="workers (default: [cluster] n_workers)")
    s.add_argument("--image", default=DEFAULT_IMAGE, help="image (default: %(default)s)")
    s.add_argument("--worker-memory", default="4Gi", help="per worker (default: %(default)s)")
    s.add_argument("--worker-cpu", default="1", help="per worker (default: %(default)s)")
    s.add_argument("--out", help="catalog location, e.g. s3://bucket/catalog "
                                 "(default: the config's [output] path)")
    s.add_argument("--s3-secret", help="existing Secret whose keys (AWS_ACCESS_KEY_ID, "
                                       "AWS_SECRET_ACCESS_KEY...) are set in every pod")
    s.add_argument("--service-account", help="service account of the pods")
    s.add_argument("--dry-run", action="store_true",
                   help="print the ConfigMap and DaskJob as YAML; contact nothing")
    s.set_defaults(func=_reporting(_cmd_submit))
    st = subparsers.add_parser("status", parents=[common], help="a submitted job's status")
    st.add_argument("job")
    st.add_argument("--wait", action="store_true",
                    help="wait until it ends; exit 1 if it failed")
    st.add_argument("--interval", type=float, default=10.0, help=argparse.SUPPRESS)
    st.set_defaults(func=_reporting(_cmd_status))
    lg = subparsers.add_parser("logs", parents=[common], help="a submitted job's runner log")
    lg.add_argument("job")
    lg.add_argument("-f", "--follow", action="store_true", help="stream until it ends")
    lg.set_defaults(func=_reporting(_cmd_logs))
