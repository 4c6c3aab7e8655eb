#!/usr/bin/env python3
"""Build the dask-phot image and run a batch job as containers, as Kubernetes would.

    python deploy/docker/podman_test.py [--workdir DIR] [--image TAG] [--no-build] ...

Run with the Python of an environment where dask-phot[test] is installed (it renders the
specs, serves S3 and runs the reference outside containers); needs root, podman (with
runc), kubectl and, when python:3.11-slim cannot be pulled, debootstrap. Exit status:
0 passed, 1 failed, 77 skipped (the reason is the last line printed).
tests/test_container.py runs it; .ci/run installs podman, runc and debootstrap first.

1. Image. The Dockerfile's base is pulled, or else built from Debian (base.sh), then
   the image is built with podman's layer cache, pip reading this machine's index
   configuration (/etc/pip.conf, /etc/xdg/pip and the CA bundle, mounted into the build).
2. Specs. The DaskJob is ``kubectl kustomize`` of an overlay of deploy/base (the image,
   the run's config.toml as its ConfigMap, the S3 credentials as its Secret); the chart
   is rendered by Helm's Go SDK (helm-python-sdk). The dask-kubernetes operator's own
   builders turn them into the scheduler, worker and runner pods (adding the variables
   the operator sets: DASK_SCHEDULER_ADDRESS, DASK_WORKER_NAME), and pods.py turns each
   pod into ``podman run``: uid 1000, read-only root, tmpfs /tmp, no capabilities, limits.
3. Run, in a private network namespace (so that ports 8786-8788 are ours): a local S3
   server holds a simulated two-band field (702 sources, 31 cells); the scheduler, two
   workers and the runner run the batch; the scheduler's readiness probe, the image's
   HEALTHCHECK (scheduler and workers) and the dashboard are checked; a Dask client
   records the task stream (time from container start to the first finished cell, and
   each fresh worker's first cell against its later ones). Then the chart's scheduler and
   workers run the same batch. The catalogs must equal the one ``dask-phot run`` writes
   outside containers, column by column, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import podman_run

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/dask-phot:test"
UPSTREAM_BASE = "docker.io/library/python:3.11-slim"
STAND_IN_BASE = "localhost/dask-phot-base:3.11-bookworm"
SKIP = 77


class Skip(Exception):
    """The test cannot run here (the message says why)."""


def preflight() -> None:
    """Raise :class:`Skip` naming what this machine lacks."""
    if sys.platform != "linux":
        raise Skip(f"needs Linux (podman, network namespaces), not {sys.platform}")
    if os.geteuid() != 0:
        raise Skip("needs root: debootstrap for the base image, a private network namespace")
    for tool, why in (("podman", "the container engine"), ("runc", "podman's runtime here"),
                      ("kubectl", "`kubectl kustomize` renders the DaskJob")):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} is not installed ({why})")


def containers_conf(workdir: Path) -> Path:
    """podman settings for this machine: runc (crun fails on hybrid cgroups), no ulimits."""
    path = workdir / "containers.conf"
    path.write_text("# written by deploy/docker/podman_test.py\n"
                    "[containers]\n# podman's default ulimits cannot be set here\n"
                    "default_ulimits = []\n\n[engine]\nruntime = \"runc\"\n")
    return path


def ensure_base(pod: podman_run.Podman, *, rebuild: bool) -> str:
    """The Dockerfile's base: pulled if possible, else the Debian stand-in (built once)."""
    if pod.ok("image", "exists", UPSTREAM_BASE) or pod.ok("pull", "-q", UPSTREAM_BASE,
                                                          timeout=180):
        return UPSTREAM_BASE
    if pod.ok("image", "exists", STAND_IN_BASE) and not rebuild:
        return STAND_IN_BASE
    if shutil.which("debootstrap") is None:
        raise Skip(f"{UPSTREAM_BASE} cannot be pulled and debootstrap is not installed")
    print(f"{UPSTREAM_BASE} cannot be pulled: building {STAND_IN_BASE} from Debian", flush=True)
    subprocess.run(["sh", str(REPO / "deploy" / "docker" / "base.sh"), STAND_IN_BASE],
                   check=True, env=pod.env, timeout=1800)
    return STAND_IN_BASE


def build_image(pod: podman_run.Podman, base: str, image: str, *,
                cache: bool = True) -> dict[str, Any]:
    """``podman build`` of the Dockerfile (with podman's layer cache); its time and size."""
    args = ["build", "--format", "docker", "--network", "host", "--layers",
            *([] if cache else ["--no-cache"]), "--build-arg", f"BASE_IMAGE={base}",
            "-t", image]
    for path in ("/etc/pip.conf", "/etc/xdg/pip", "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.exists(path):  # pip's index configuration here, for the RUN steps
            args += ["--volume", f"{path}:{path}:ro"]
    t0 = time.perf_counter()
    pod.run(*args, str(REPO), timeout=3600, capture=False)
    seconds = time.perf_counter() - t0
    return {"image": image, "base": base, "build_seconds": round(seconds, 1),
            "size_bytes": pod.image_size(image), "base_size_bytes": pod.image_size(base)}


def run_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Everything after the build: S3, the containers, the reference run, the comparison."""
    import scenario  # this directory's module

    return scenario.run_all(Path(args.workdir), image=args.image, chart=not args.no_chart,
                            catalog_to_s3=args.catalog_to_s3, keep=args.keep)


def in_private_network(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Run the run phase in a fresh network namespace with only loopback; return its result."""
    name = f"dask-phot-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        netns = f"/run/netns/{name}"
        subprocess.run(["nsenter", f"--net={netns}", "ip", "link", "set", "lo", "up"],
                       check=True)
        # nsenter changes only the network namespace (`ip netns exec` would remount
        # /sys, hiding the cgroups podman needs)
        out = subprocess.run(["nsenter", f"--net={netns}", sys.executable, __file__,
                              *argv, "--phase", "run"], timeout=3600)
        result_path = Path(args.workdir) / "result.json"
        if out.returncode not in (0, 1) or not result_path.exists():
            raise RuntimeError(f"run phase exited with {out.returncode}")
        return json.loads(result_path.read_text())
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="where logs, catalogs and result.json go "
                                     "(default: a new temporary directory)")
    p.add_argument("--image", default=IMAGE, help=f"image tag (default {IMAGE})")
    p.add_argument("--no-build", action="store_true", help="use --image as it is")
    p.add_argument("--rebuild-base", action="store_true", help="rebuild the Debian stand-in")
    p.add_argument("--no-cache", action="store_true", help="build without podman's layer cache")
    p.add_argument("--no-chart", action="store_true", help="skip the helm chart's cluster")
    p.add_argument("--no-catalog-to-s3", dest="catalog_to_s3", action="store_false",
                   help="write the catalog to a mounted host directory instead of S3")
    p.add_argument("--host-network", action="store_true",
                   help="share this machine's network namespace (ports 8786-8788 must be "
                        "free) instead of a private one")
    p.add_argument("--keep", action="store_true", help="keep the containers after the run")
    p.add_argument("--phase", choices=["all", "run"], default="all", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build, run, compare; print a summary; 0 passed, 1 failed, 77 skipped."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.workdir is None:
        args.workdir = tempfile.mkdtemp(prefix="dask-phot-podman-")
        argv += ["--workdir", args.workdir]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CONTAINERS_CONF", str(containers_conf(workdir)))
    if args.phase == "run":
        result = run_phase(args)
        (workdir / "result.json").write_text(json.dumps(result, indent=1))
        return 0 if result["passed"] else 1
    try:
        preflight()
        pod = podman_run.Podman()
        build = None
        if not args.no_build:
            build = build_image(pod, ensure_base(pod, rebuild=args.rebuild_base), args.image,
                                cache=not args.no_cache)
        if args.host_network or shutil.which("nsenter") is None or shutil.which("ip") is None:
            result = run_phase(args)
        else:
            result = in_private_network(args, argv)
    except Skip as exc:
        print(f"skipped: {exc}")
        return SKIP
    result["build"] = build
    (workdir / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"{'passed' if result['passed'] else 'FAILED'}; details in {workdir}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
