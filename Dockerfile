# syntax=docker/dockerfile:1
# dask-phot image: one image for the Dask scheduler, the workers and the job runner.
#
#   docker build -t dask-phot:0.1.0 .
#   docker run --rm dask-phot:0.1.0 dask-phot --help
#
# Build arguments:
#   BASE_IMAGE  the Python base image (default python:3.11-slim). Where no registry can
#               be reached, deploy/docker/base.sh builds a stand-in from Debian.
#   EXTRAS      dask-phot extras to install (default "dashboard": the Dask dashboard).
#               Add "kubernetes" for an image that also runs `dask-phot submit | status
#               | logs` or `--scheduler kubernetes` (KubeCluster): +~230 MB.
#
# No ENTRYPOINT: the dask-kubernetes operator sets each container's args
# (["dask", "scheduler"], ["dask", "worker", ...], ["dask-phot", "run", ...]).
# The install steps live in deploy/docker/install.sh, which
# tests/test_deploy.py::test_image_install_steps runs in a fresh venv;
# deploy/docker/podman_test.py builds this image and runs the DaskJob's and the chart's
# containers from it (tests/test_container.py).

ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim

# ---------------------------------------------------------------------- build: the wheel
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHON=python
WORKDIR /src
COPY deploy/docker/install.sh /usr/local/bin/dask-phot-install
COPY pyproject.toml README.md ./
COPY dask_phot ./dask_phot
RUN dask-phot-install wheel /src /wheels

# ---------------------------------------------------------------------- runtime
# Layers from the least to the most often changed: a change to dask_phot/ rebuilds
# only the wheel, the package layer and the compiled kernels, never the dependencies.
FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dask-phot" \
      org.opencontainers.image.description="Forced photometry at scale on Dask" \
      org.opencontainers.image.source="https://github.com/dask-phot/dask-phot" \
      org.opencontainers.image.licenses="BSD-3-Clause"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHON=python
RUN groupadd --gid 1000 dask \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/dask \
       --shell /usr/sbin/nologin dask
COPY deploy/docker/healthcheck.py /usr/local/lib/dask-phot/healthcheck.py
COPY deploy/docker/install.sh /usr/local/bin/dask-phot-install
# 1. the dependencies alone (what pyproject.toml declares for dask-phot[EXTRAS])
ARG EXTRAS=dashboard
COPY pyproject.toml /usr/local/share/dask-phot/pyproject.toml
RUN dask-phot-install deps /usr/local/share/dask-phot/pyproject.toml /opt/dask-phot
# 2. dask-phot itself, without dependencies. Copied, not bind-mounted from the build
#    stage: podman (buildah 1.28) would reuse a cached RUN whose mounted wheel changed.
COPY --from=build /wheels/ /usr/local/share/dask-phot/wheels/
RUN dask-phot-install package /usr/local/share/dask-phot/wheels /opt/dask-phot
# 3. its numba kernels, compiled once (dask_phot.warmup): every worker copies them into
#    NUMBA_CACHE_DIR before it joins its scheduler (numba ignores a cache directory it
#    cannot write to, and the root filesystem is read-only)
RUN dask-phot-install kernels /opt/dask-phot /opt/dask-phot/numba-cache

# Everything a run writes goes under /tmp (an emptyDir in the pods, whose root
# filesystem is read-only): Dask spill, the configuration files dask-kubernetes
# writes on import, numba's cache, matplotlib, astropy (which takes XDG_* only when the
# directory exists: /tmp always does).
ENV PATH=/opt/dask-phot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DASK_TEMPORARY_DIRECTORY=/tmp \
    DASK_CONFIG=/tmp/dask \
    DASK_DISTRIBUTED__WORKER__PRELOAD='["dask_phot.warmup"]' \
    DASK_PHOT_NUMBA_CACHE=/opt/dask-phot/numba-cache \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp \
    XDG_CONFIG_HOME=/tmp

USER 1000:1000
WORKDIR /home/dask
# scheduler comm, scheduler dashboard, worker dashboard
EXPOSE 8786 8787 8788
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/dask-phot/healthcheck.py"]
CMD ["dask-phot", "--help"]
