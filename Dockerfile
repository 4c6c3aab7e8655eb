# syntax=docker/dockerfile:1
# dask-phot image: one image for the Dask scheduler, the workers and the job runner.
#
#   docker build -t dask-phot:0.1.0 .
#   docker run --rm dask-phot:0.1.0 dask-phot --help
#
# No ENTRYPOINT: the dask-kubernetes operator sets each container's args
# (["dask", "scheduler"], ["dask", "worker", ...], ["dask-phot", "run", ...]).
# The install steps live in deploy/docker/install.sh, which
# tests/test_deploy.py::test_image_install_steps runs in a fresh venv.

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------- build: the wheel
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHON=python
WORKDIR /src
COPY deploy/docker/install.sh /usr/local/bin/dask-phot-install
COPY pyproject.toml README.md ./
COPY dask_phot ./dask_phot
RUN dask-phot-install wheel /src /wheels

# ---------------------------------------------------------------------- runtime
FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="dask-phot" \
      org.opencontainers.image.description="Forced photometry at scale on Dask" \
      org.opencontainers.image.source="https://github.com/dask-phot/dask-phot" \
      org.opencontainers.image.licenses="BSD-3-Clause"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHON=python
COPY deploy/docker/install.sh /usr/local/bin/dask-phot-install
COPY deploy/docker/healthcheck.py /usr/local/lib/dask-phot/healthcheck.py
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    dask-phot-install runtime /wheels /opt/dask-phot
RUN groupadd --gid 1000 dask \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/dask \
       --shell /usr/sbin/nologin dask

# Everything a run writes goes under /tmp (an emptyDir in the pods, whose root
# filesystem is read-only): Dask spill, the configuration files dask-kubernetes
# writes on import, numba's cache, matplotlib, astropy (which takes XDG_* only when the
# directory exists: /tmp always does).
ENV PATH=/opt/dask-phot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DASK_TEMPORARY_DIRECTORY=/tmp \
    DASK_CONFIG=/tmp/dask \
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
