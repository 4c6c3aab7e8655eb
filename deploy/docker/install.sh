#!/bin/sh
# The container image's install steps, in one place: the Dockerfile runs them, and
# tests/test_deploy.py::test_image_install_steps runs the same script in a fresh venv.
#
#   install.sh wheel SRC WHEELDIR        build dask-phot's wheel (only it) from SRC into WHEELDIR
#   install.sh deps PYPROJECT VENV       make the venv VENV with the dependencies that
#                                        PYPROJECT declares for dask-phot[$EXTRAS], not
#                                        dask-phot itself (a layer that code changes keep)
#   install.sh package WHEELDIR VENV     install the wheel into VENV without dependencies;
#                                        check that VENV's dependencies are consistent
#   install.sh kernels VENV CACHE        compile dask-phot's numba kernels into CACHE
#                                        (dask_phot.warmup), then check in a fresh process
#                                        that they all load from it
#
# EXTRAS (default "dashboard": Bokeh, for the scheduler's dashboard) is a comma-separated
# list of dask-phot extras; add "kubernetes" for `dask-phot submit` or KubeCluster. S3
# (s3fs) is a core dependency. The venv has no pip: PYTHON's pip (default python3)
# installs into it (pip --python). pip options come from the environment (the image
# sets PIP_NO_CACHE_DIR=1).
set -eu

PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS-dashboard}

usage() {
    echo "usage: install.sh wheel SRC WHEELDIR | deps PYPROJECT VENV | package WHEELDIR VENV" \
         "| kernels VENV CACHE" >&2
    exit 2
}

# The requirements of dask-phot[$EXTRAS] listed in a pyproject.toml (extras that name
# dask-phot's own extras are expanded), one per line.
requirements() {
    "$PYTHON" - "$1" "$EXTRAS" <<'EOF'
import re
import sys
import tomllib

path, wanted = sys.argv[1], [e.strip() for e in sys.argv[2].split(",") if e.strip()]
with open(path, "rb") as f:
    project = tomllib.load(f)["project"]
extras = project.get("optional-dependencies", {})
own = re.compile(rf"^{re.escape(project['name'])}\[([^\]]*)\]\s*$")
out, seen = list(project.get("dependencies", [])), set()
while wanted:
    extra = wanted.pop()
    if extra in seen:
        continue
    if extra not in extras:
        sys.exit(f"install.sh: {path} has no extra {extra!r} (it has {sorted(extras)})")
    seen.add(extra)
    for req in extras[extra]:
        match = own.match(req)
        if match:
            wanted += [e.strip() for e in match[1].split(",")]
        else:
            out.append(req)
print("\n".join(out))
EOF
}

[ $# -eq 3 ] || usage
case "$1" in
    wheel)
        "$PYTHON" -m pip wheel --no-deps --wheel-dir "$3" "$2"
        ;;
    deps)
        reqs=$(mktemp)
        requirements "$2" >"$reqs"
        "$PYTHON" -m venv --without-pip "$3"
        "$PYTHON" -m pip --python "$3/bin/python" install -r "$reqs"
        rm -f "$reqs"
        # the dependencies' own test suites (~150 MB): no process in the image runs them.
        # astropy/tests stays: `import astropy` imports its test runner.
        find "$3/lib" -type d -name tests ! -path "*/site-packages/astropy/tests" -prune \
            -exec rm -rf {} +
        ;;
    package)
        set -- "$2" "$3" "$(ls "$2"/dask_phot-*.whl)"
        "$PYTHON" -m pip --python "$2/bin/python" install --no-deps "$3"
        "$PYTHON" -m pip --python "$2/bin/python" check
        # smoke test: both commands the image is used through
        "$2/bin/dask-phot" --help >/dev/null
        "$2/bin/dask" --version
        ;;
    kernels)
        NUMBA_CACHE_DIR=$3 "$2/bin/python" -c \
            "from dask_phot.warmup import warm_up; print(warm_up())"
        # a fresh process must load every kernel from the cache and compile none
        NUMBA_CACHE_DIR=$3 "$2/bin/python" -c "if True:
            from dask_phot.warmup import cache_stats, warm_up
            warm_up()
            stats = cache_stats()
            print(stats)
            assert stats.hits and not stats.misses, f'kernels not all cached: {stats}'"
        chmod -R a+rX "$3"
        ;;
    *)
        usage
        ;;
esac
