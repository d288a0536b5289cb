#!/usr/bin/env bash
# Build the sentrycam image with buildah, where there is no Docker daemon (run as root).
#
#   scripts/container.sh            # prints the image name on stdout, progress on stderr
#
# 1. A Debian bookworm base image with python3 and python3-venv, made once with debootstrap
#    (the registry's python:3.11-slim cannot be pulled here) and kept in buildah's storage as
#    $SENTRYCAM_BASE_IMAGE; skipped when that image exists.
# 2. The repository's Dockerfile built on it (--format docker keeps the HEALTHCHECK), with this
#    machine's CA bundle as the build secret "ca" and, when $SENTRYCAM_WHEELS holds a CPU torch
#    wheel, that folder mounted read-only as the torch index, pinned to that wheel's version.
#
# Environment: SENTRYCAM_IMAGE (default localhost/sentrycam:dev), SENTRYCAM_BASE_IMAGE
# (localhost/debian-py:bookworm), SENTRYCAM_WHEELS (/opt/wheels), SENTRYCAM_CA_BUNDLE
# (/etc/ssl/certs/ca-certificates.crt), DEBIAN_MIRROR (the apt sources' first URIs: line).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${SENTRYCAM_IMAGE:-localhost/sentrycam:dev}"
BASE_IMAGE="${SENTRYCAM_BASE_IMAGE:-localhost/debian-py:bookworm}"
WHEELS="${SENTRYCAM_WHEELS:-/opt/wheels}"
CA_BUNDLE="${SENTRYCAM_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
BUILDAH=(buildah --storage-driver vfs)

say() { echo "container.sh: $*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (buildah's chroot isolation and debootstrap need it)"
for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || die "$tool is missing: make container-tools"
done

debian_mirror() {
  local mirror="${DEBIAN_MIRROR:-}"
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  echo "${mirror:-http://deb.debian.org/debian}"
}

make_base() {
  if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    say "base image $BASE_IMAGE exists: debootstrap skipped"
    return
  fi
  local start container
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT  # also when debootstrap fails
  start=$SECONDS
  say "debootstrap bookworm from $(debian_mirror) (1 to 5 minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
  container=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$container" "$work/rootfs.tar" / >/dev/null
  "${BUILDAH[@]}" commit --quiet --rm "$container" "$BASE_IMAGE" >/dev/null
  say "base image $BASE_IMAGE made in $((SECONDS - start)) s"
}

build_image() {
  local start=$SECONDS args=() wheel version
  wheel=$(find "$WHEELS" -maxdepth 1 -name 'torch-*+cpu-*.whl' 2>/dev/null | sort | tail -n 1)
  if [ -n "$wheel" ]; then
    version=$(basename "$wheel" | cut -d- -f2)  # torch-2.13.0+cpu-cp311-...whl -> 2.13.0+cpu
    args+=(--volume "$WHEELS:$WHEELS:ro" --build-arg "TORCH_INDEX=$WHEELS"
           --build-arg "TORCH_SPEC=torch==$version")
  fi
  if [ -f "$CA_BUNDLE" ]; then
    args+=(--secret "id=ca,src=$CA_BUNDLE")
  fi
  say "building $IMAGE on $BASE_IMAGE"
  "${BUILDAH[@]}" bud --quiet --format docker --isolation chroot --layers=false \
    --build-arg "BASE=$BASE_IMAGE" "${args[@]}" --tag "$IMAGE" . >&2
  say "image $IMAGE built in $((SECONDS - start)) s"
}

make_base
build_image
echo "$IMAGE"
