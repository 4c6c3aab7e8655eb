"""``dask-phot submit | status | logs``: batch runs as DaskJobs on Kubernetes.

``submit`` checks a run configuration, builds its ConfigMap and DaskJob
(:func:`dask_phot.deploy.submission_manifests`) and creates them (or, with
``--dry-run``, prints them as YAML); ``status`` and ``logs`` ask about a
submitted job. They talk to a cluster through the ``kubernetes`` client (the
``kubernetes`` extra), imported only when a command needs it; a refusal or an
unreachable API server is one line on stderr (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from dask_phot.deploy import (
    DASK_GROUP,
    DASK_VERSION,
    DASKJOB_PLURAL,
    DEFAULT_IMAGE,
    local_paths,
    submission_manifests,
    to_yaml,
)

__all__ = ["DeployError", "register"]

log = logging.getLogger(__name__)

_DONE = ("Successful", "Failed")


class DeployError(RuntimeError):
    """A submission or query that cannot be done; the message says why and what to do."""


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
                          "--context") from None
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


def _without_credentials(text: str, label: str) -> str:
    """The configuration's text without ``[storage]`` credentials (which never go into a
    manifest: the pods get theirs from ``--s3-secret`` or a cloud role)."""
    import tomllib

    import tomli_w

    from dask_phot.storage import redact

    data = tomllib.loads(text)
    storage = data.get("storage")
    if not isinstance(storage, dict) or redact(storage) == storage:
        return text
    dropped = sorted(k for k in storage if redact({k: storage[k]}) != {k: storage[k]})
    data["storage"] = redact(storage)
    print(f"note: {label}: storage {', '.join(dropped)} left out of the job's ConfigMap "
          "(credentials never go into manifests); the pods take theirs from --s3-secret "
          "or their service account's cloud role", file=sys.stderr)
    return tomli_w.dumps(data)


def _cmd_submit(args: argparse.Namespace) -> int:
    from dask_phot.config import load_config

    with open(args.config, encoding="utf-8") as f:
        text = f.read()
    config = load_config(args.config, environ={})  # fail here, not in the pod
    text = _without_credentials(text, args.config)
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
    try:
        client, default_namespace = _client(args.context)
    except DeployError as exc:
        raise DeployError(f"{exc}, or use --dry-run to print the manifests") from None
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


def _quiet_retries(func: Any) -> Any:
    """A command whose client retries are reported once, in its error (unless -v)."""
    def run(args: argparse.Namespace) -> int:
        if not args.verbose:
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        return func(args)
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
    s.add_argument("--workers", type=int, metavar="N",
                   help="workers (default: [cluster] n_workers)")
    s.add_argument("--image", default=DEFAULT_IMAGE,
                   help="container image of every pod (default: %(default)s)")
    s.add_argument("--worker-memory", default="4Gi", metavar="SIZE",
                   help="memory of each worker, Kubernetes units (default: %(default)s)")
    s.add_argument("--worker-cpu", default="1", metavar="CPU",
                   help="CPU of each worker, Kubernetes units (default: %(default)s)")
    s.add_argument("--out", help="catalog location, e.g. s3://bucket/catalog "
                                 "(default: the config's [output] path)")
    s.add_argument("--s3-secret", metavar="SECRET",
                   help="existing Secret whose keys (AWS_ACCESS_KEY_ID, "
                        "AWS_SECRET_ACCESS_KEY...) are set in every pod")
    s.add_argument("--service-account", metavar="NAME", help="service account of the pods")
    s.add_argument("--dry-run", action="store_true",
                   help="print the ConfigMap and DaskJob as YAML; contact nothing")
    s.set_defaults(func=_quiet_retries(_cmd_submit), errors=(ValueError,))
    st = subparsers.add_parser("status", parents=[common], help="a submitted job's status")
    st.add_argument("job", help="the job's name (as submit printed it)")
    st.add_argument("--wait", action="store_true",
                    help="wait until it ends; exit 1 if it failed")
    st.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                    help="with --wait: time between checks (default: %(default)s)")
    st.set_defaults(func=_quiet_retries(_cmd_status), errors=(ValueError,))
    lg = subparsers.add_parser("logs", parents=[common], help="a submitted job's runner log")
    lg.add_argument("job", help="the job's name (as submit printed it)")
    lg.add_argument("-f", "--follow", action="store_true", help="stream until it ends")
    lg.set_defaults(func=_quiet_retries(_cmd_logs), errors=(ValueError,))
