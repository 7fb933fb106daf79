#!/usr/bin/env bash
# Build the sandbox container image: Debian 12 with systemd as PID 1, made with
# debootstrap and imported into podman (no registry involved). The tag carries a
# hash of this recipe, so the image is rebuilt only when the recipe changes.
# Prints the image reference on stdout.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

IMAGE_REPO="localhost/private-llm-sandbox"
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,netbase,kmod,gpg"
# What roles/hardening installs in a container (hardening_packages and
# unattended-upgrades; auditd, acct and AppArmor belong to the machine's
# kernel and stay out): baked in so a converge does not download them. The
# role still installs them on real hosts.
PACKAGES="$PACKAGES,unattended-upgrades,needrestart,debsums,apt-listchanges,libpam-tmpdir,libpam-pwquality"
recipe_hash="$( { cat "$0"; echo "$PACKAGES"; cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | sha256sum | cut -c1-12)"
image="$IMAGE_REPO:bookworm-$recipe_hash"

if podman image exists "$image"; then
  log "container image $image is cached"
  echo "$image"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/llm-sandbox-rootfs.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
log "debootstrap bookworm into $rootfs (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$(debian_mirror)" > "$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Same apt configuration as this machine (mirror, validity settings).
rm -f "$rootfs/etc/apt/sources.list"
cp -a /etc/apt/sources.list.d/*.sources "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
cp -a /etc/apt/sources.list "$rootfs/etc/apt/" 2>/dev/null || true
cp -a /etc/apt/apt.conf.d/99* "$rootfs/etc/apt/apt.conf.d/" 2>/dev/null || true
# unattended-upgrades switches itself on when installed; the image stays as
# built until roles/hardening turns the daily runs on (it rewrites this file).
printf '%s\n' 'APT::Periodic::Update-Package-Lists "0";' 'APT::Periodic::Unattended-Upgrade "0";' \
  > "$rootfs/etc/apt/apt.conf.d/20auto-upgrades"
# A container is not a console: no gettys; machine-id made at first boot.
: > "$rootfs/etc/machine-id"
rm -f "$rootfs/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
chroot "$rootfs" systemctl mask systemd-udevd.service systemd-udev-trigger.service \
  systemd-modules-load.service sys-kernel-config.mount getty@tty1.service >/dev/null 2>&1 || true
chroot "$rootfs" apt-get clean

log "importing into podman as $image"
tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >&2
podman tag "$image" "$IMAGE_REPO:bookworm"
# Drop images of older recipes. Without --force: an image a container still
# runs from (another sandbox, a demo host) stays until that container is gone.
podman images --format '{{.Repository}}:{{.Tag}}' \
  | grep "^$IMAGE_REPO:bookworm-" | grep -v "^$image\$" | xargs -r -n1 podman rmi >&2 || true
echo "$image"
