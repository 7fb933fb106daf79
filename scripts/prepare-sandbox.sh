#!/usr/bin/env bash
# What `make demo` and `make test` need before a sandbox host can be made:
# the wheelhouse (scripts/wheelhouse.sh) and the container image
# (scripts/container-image.sh), built side by side. On a machine without the
# cache both wait mostly on the network and the disk (pip's downloads,
# debootstrap's), one after the other 145 + 97 s on this 2-core machine; with
# the cache each is a check of a second or two. Fails when either fails; each
# step's time goes to .cache/make-steps.csv (scripts/timed.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/timed.sh 'make wheelhouse' scripts/wheelhouse.sh >/dev/null &
wheels=$!
scripts/timed.sh 'images: container' scripts/container-image.sh >/dev/null
image=$?
wait "$wheels"
wheels=$?
failed=""
((wheels)) && failed+=" the wheelhouse"
((image)) && failed+=" the container image"
[[ -z "$failed" ]] || { echo "prepare-sandbox: could not make$failed (see above)" >&2; exit 1; }
