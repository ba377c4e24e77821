#!/usr/bin/env bash
# A stand-in for the official python:*-slim image, made from Debian's packages alone: minbase plus
# python3, python3-pip and ca-certificates, `python`/`pip` on PATH, pip allowed to install into the
# system Python (no EXTERNALLY-MANAGED marker), documentation and translations left out.
# Prints the image's name. Made once: the name carries a digest of this script, and an image of that
# name already in buildah's storage is reused. Needs root, mmdebstrap and buildah.
set -euo pipefail
suite=${DEBIAN_SUITE:-bookworm}
digest=$( (cat "$0"; echo "$suite") | sha256sum | cut -c1-12)
name=localhost/replayer-python-base:${suite}-${digest}

if buildah inspect --type image "$name" > /dev/null 2>&1; then
    echo "$name"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "debian-base: making $name with mmdebstrap (once)" >&2
mmdebstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook='ln -sf python3 "$1/usr/bin/python"; ln -sf pip3 "$1/usr/bin/pip"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
    "$suite" "$work/rootfs.tar" \
    "deb http://deb.debian.org/debian $suite main" \
    "deb http://deb.debian.org/debian $suite-updates main" \
    "deb http://deb.debian.org/debian-security $suite-security main" >&2

container=$(buildah from scratch)
buildah add --quiet "$container" "$work/rootfs.tar" / >&2
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$container" >&2
buildah commit --quiet --rm "$container" "$name" >&2
echo "$name"
