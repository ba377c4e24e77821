#!/usr/bin/env bash
# `make image`: build the Dockerfile into IMAGE (default replayer:VERSION) and print its size.
#
#   docker   where a Docker daemon answers: `docker build`, base PYTHON_IMAGE (default: the Dockerfile's).
#   buildah  otherwise (no daemon needed; `buildah bud --isolation chroot`, root). When PYTHON_IMAGE is
#            not given and the official Python image cannot be pulled, the base is made from Debian's
#            packages with mmdebstrap (debian-base.sh) once and kept in buildah's storage.
#
# Environment: IMAGE, PYTHON_IMAGE, BUILDER=docker|buildah, DEBIAN_SUITE (default bookworm).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=deploy/image

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
IMAGE=${IMAGE:-replayer:${version}}
official=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)

builder=${BUILDER:-}
if [[ -z $builder ]]; then
    if command -v docker > /dev/null && docker info > /dev/null 2>&1; then
        builder=docker
    elif command -v buildah > /dev/null; then
        builder=buildah
    else
        echo "make image: neither a Docker daemon nor buildah here (apt-get install buildah mmdebstrap)" >&2
        exit 2
    fi
fi

started=$SECONDS
if [[ $builder == docker ]]; then
    docker build --build-arg "PYTHON_IMAGE=${PYTHON_IMAGE:-$official}" -t "$IMAGE" .
    size="$(($(docker image inspect --format '{{.Size}}' "$IMAGE") / 1000000)) MB"
else
    if [[ -z ${PYTHON_IMAGE:-} ]]; then
        # fully qualified: buildah's short-name resolution may ask before it pulls
        qualified=docker.io/library/$official
        if buildah inspect --type image "$qualified" > /dev/null 2>&1 \
            || timeout 120 buildah pull --quiet "$qualified" > /dev/null 2>&1; then
            PYTHON_IMAGE=$qualified
        else
            echo "make image: $official cannot be pulled here; using a Debian base made with mmdebstrap" >&2
            PYTHON_IMAGE=$("$here/debian-base.sh")
        fi
    fi
    # The host's CA bundle: pip inside the build reaches the package index through it (a proxy's
    # certificate, say). Mounted for the build only; the image keeps its own.
    bundle=/etc/ssl/certs/ca-certificates.crt
    volumes=()
    [[ -f $bundle ]] && volumes=(--volume "$bundle:$bundle:ro")
    # --iidfile: the size of exactly this build (`buildah images NAME` lists every image of that name,
    # an earlier build's among them); --rm and --force-rm: no intermediate container is left behind.
    iid=$(mktemp)
    trap 'rm -f "$iid"' EXIT
    buildah bud --isolation chroot --network host --layers --rm --force-rm --format docker \
        "${volumes[@]}" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --iidfile "$iid" --tag "$IMAGE" .
    size=$(buildah images --noheading --no-trunc --format '{{.ID}} {{.Size}}' \
        | awk -v id="$(sed 's/^sha256://' "$iid")" '$1 == id || $1 == "sha256:" id { $1 = ""; sub(/^ /, ""); print; exit }')
fi
echo "image: $IMAGE from ${PYTHON_IMAGE:-$official} by $builder, size $size, built in $((SECONDS - started)) s"
