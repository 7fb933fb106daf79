#!/usr/bin/env bash
# Controller set-up: Debian packages for the test harness and a project venv with
# the pinned Ansible toolchain. Safe to run again: it only does what is missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PROJECT_DIR"

# swtpm: the emulated TPM 2.0 every test VM gets (scripts/vm.sh); swtpm-tools
# brings swtpm_setup and swtpm_ioctl (inspecting or resetting a VM's TPM by hand).
APT_PACKAGES=(podman runc debootstrap qemu-system-x86 qemu-utils swtpm swtpm-tools chromium chromium-driver
              openssh-client python3-venv iproute2 git make gnupg)
VENV="$PROJECT_DIR/.venv"
PYTHON="${PYTHON:-python3}"

die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

# --- what this machine must offer -------------------------------------------
[[ "$(uname -s)" == Linux ]] || die "the sandbox hosts need Linux (found $(uname -s))."
if [[ $EUID -ne 0 ]]; then
  die "run as root (sudo make setup): the sandbox needs rootful podman, debootstrap and apt."
fi
command -v apt-get >/dev/null || die "apt-get not found: set-up supports Debian 12 / Ubuntu 22.04+ controllers. \
Install by hand: ${APT_PACKAGES[*]}, then Python 3.11+ and: pip install -r requirements-controller.txt"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: apt-get install python3 python3-venv"

# --- Debian packages ---------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get could not install: ${missing[*]} (is a Debian mirror reachable?)"
else
  log "Debian packages present"
fi

# --- podman must work with the project's settings ---------------------------
podman info >/dev/null 2>&1 || die "podman does not work here: $(podman info 2>&1 | tail -n 3)"

# --- project venv ------------------------------------------------------------
[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
stamp="$VENV/.requirements.sha256"
want="$(sha256sum requirements-controller.txt | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "installing the pinned controller tools into $VENV"
  # --no-compile: pip would compile all ~19,000 Python files of the venv
  # (the `ansible` package's collections are most of them): 88 s instead of
  # 36 s on this machine. Python compiles what the tools import on first use
  # and keeps it (the venv is this user's).
  "$VENV/bin/pip" install -q --no-compile --disable-pip-version-check -r requirements-controller.txt \
    || die "pip could not install requirements-controller.txt (is PyPI reachable?)"
  echo "$want" > "$stamp"
else
  log "controller venv is current"
fi

# The collections come with the pinned `ansible` package (no Galaxy needed).
"$VENV/bin/ansible-galaxy" collection list community.general >/dev/null 2>&1 \
  || die "collection community.general missing from the venv; reinstall: rm -rf .venv && make setup"
# Molecule's prerun runs `ansible-galaxy collection install -r requirements.yml`
# into ansible.cfg's collections_path; with scenarios started side by side, two
# of them creating that folder at once made one fail (FileExistsError). Made here.
mkdir -p .ansible/collections/ansible_collections
# promtool (Debian's `prometheus` package) checks the shipped scrape
# configuration and alert rules in the unit tests. Only that one program is
# taken from the package, into the venv: no Prometheus server on this machine.
if [[ ! -x "$VENV/bin/promtool" ]]; then
  log "extracting promtool from Debian's prometheus package into $VENV/bin"
  workdir="$(mktemp -d)"
  (cd "$workdir" && apt-get download prometheus >/dev/null 2>&1) \
    || { apt-get update -qq && (cd "$workdir" && apt-get download prometheus >/dev/null); } \
    || die "apt-get could not download the prometheus package (for promtool)"
  dpkg-deb -x "$workdir"/prometheus_*.deb "$workdir/root"
  install -m 0755 "$workdir/root/usr/bin/promtool" "$VENV/bin/promtool"
  rm -rf "$workdir"
else
  log "promtool present"
fi
log "set-up complete"
