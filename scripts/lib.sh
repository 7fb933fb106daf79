# Shared settings for the sandbox scripts (sourced, not executed).
# shellcheck shell=bash
PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SANDBOX_CACHE="${SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/private-llm-sandbox}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PROJECT_DIR/sandbox/containers.conf}"
# Debian mirror for debootstrap: the one this machine's apt already uses.
debian_mirror() {
  local uri
  uri="$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
        | grep -v security | head -n1 | awk '{print ($1=="deb") ? $2 : $2}')"
  echo "${SANDBOX_DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
