#!/bin/sh
# The container image's install steps, in one place: the Dockerfile runs them, and
# tests/test_deploy.py::test_image_install_steps runs the same script in a fresh venv.
#
#   install.sh wheel SRC WHEELDIR     build dask-phot's wheel (only it) from SRC into WHEELDIR
#   install.sh runtime WHEELDIR VENV  make the venv VENV with that wheel and its extras
#
# Extras: kubernetes (dask-kubernetes and the kubernetes client: KubeCluster, submit,
# status, logs). S3 (s3fs) is a core dependency. PYTHON picks the interpreter
# (default python3); pip options come from the environment (the image sets
# PIP_NO_CACHE_DIR=1).
set -eu

PYTHON=${PYTHON:-python3}
EXTRAS=kubernetes

usage() {
    echo "usage: install.sh wheel SRC WHEELDIR | install.sh runtime WHEELDIR VENV" >&2
    exit 2
}

[ $# -eq 3 ] || usage
case "$1" in
    wheel)
        "$PYTHON" -m pip wheel --no-deps --wheel-dir "$3" "$2"
        ;;
    runtime)
        set -- "$2" "$3" "$(ls "$2"/dask_phot-*.whl)"
        "$PYTHON" -m venv "$2"
        "$2/bin/python" -m pip install "$3[$EXTRAS]"
        # smoke test: both commands the image is used through
        "$2/bin/dask-phot" --help >/dev/null
        "$2/bin/dask" --version
        ;;
    *)
        usage
        ;;
esac
