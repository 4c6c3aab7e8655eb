#!/bin/sh
# A stand-in for python:3.11-slim, for machines that cannot reach a container registry:
# Debian bookworm (debootstrap --variant=minbase) with Debian's python3.11, pip and venv,
# `python` on PATH, and this machine's CA bundle (which may hold a proxy's certificate
# authority) so that pip inside a build reaches the package index as it does here.
#
#   base.sh TAG     build the image TAG (e.g. localhost/dask-phot-base:3.11-bookworm)
#
# Needs root, debootstrap and podman. The Debian mirror is the first of this machine's apt
# sources (DEBIAN_MIRROR overrides it). deploy/docker/podman_test.py runs it when the
# Dockerfile's base cannot be pulled; `podman build --build-arg BASE_IMAGE=TAG .` then
# builds dask-phot on it.
set -eu

[ $# -eq 1 ] || { echo "usage: base.sh TAG" >&2; exit 2; }
TAG=$1
SUITE=bookworm
PACKAGES=python3.11,python3.11-venv,python3-pip,python-is-python3,ca-certificates

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n 1)
fi
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
        /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d "${TMPDIR:-/var/tmp}/dask-phot-base.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror"

# this machine's CA bundle, so that pip in a build trusts what it trusts here
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
# what the slim image leaves out too: apt's lists and caches, documentation, other locales
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/debconf/*-old "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/lintian
find "$root/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +

tar -C "$root" -c . | podman import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$TAG"
