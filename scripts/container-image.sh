#!/usr/bin/env bash
# Build the sandbox container image: Debian 12 with systemd as PID 1 and an
# SSH server, made with debootstrap and imported into podman (no registry
# involved). The tag carries a hash of this recipe (and of the harness's SSH
# public key), so the image is rebuilt only when the recipe changes.
# Prints the image reference on stdout.
#
# Ansible and testinfra reach the sandbox containers over SSH, as they reach
# real hosts: with pipelining and one multiplexed connection a task costs one
# SSH round trip, where `podman exec` (the podman connection cannot pipeline)
# costs three or four podman and runc processes. The key for root is made
# once into $SANDBOX_CACHE/container/id_ed25519; each container makes its own
# host keys at first boot.
#
# Like the test VM, the image carries a compiled-code cache for the zips
# Ansible's modules arrive in (scripts/sandbox_zipimport_cache.py): without it
# every task compiles Ansible's module_utils again. Real hosts do without it.
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
PACKAGES="$PACKAGES,openssh-server"

KEY="$SANDBOX_CACHE/container/id_ed25519"
ZIPIMPORT_CACHE="$(dirname "$(readlink -f "$0")")/sandbox_zipimport_cache.py"
# One build at a time: `make demo` and `make test` (its vm lane too) may ask
# for the image at once, and two first runs would each make a key and an image.
mkdir -p "$(dirname "$KEY")" && chmod 0700 "$(dirname "$KEY")"
exec 9>"$(dirname "$KEY")/.image.lock"
flock 9
if [[ ! -s "$KEY" || ! -s "$KEY.pub" ]]; then
  log "generating the sandbox containers' ssh key $KEY"
  rm -f "$KEY" "$KEY.pub"
  ssh-keygen -q -t ed25519 -N '' -C "private-llm-sandbox-container" -f "$KEY" >&2
fi
recipe_hash="$( { cat "$0" "$ZIPIMPORT_CACHE"; echo "$PACKAGES"; cat "$KEY.pub"; cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
  | sha256sum | cut -c1-12)"
image="$IMAGE_REPO:bookworm-$recipe_hash"

if podman image exists "$image"; then
  log "container image $image is cached"
  # The scenarios start containers from the floating tag: it must name the
  # image of this recipe and key, also after a build for another cache.
  podman tag "$image" "$IMAGE_REPO:bookworm"
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
python3 "$ZIPIMPORT_CACHE" "$rootfs" >/dev/null
# SSH: root logs in with the harness key only; host keys are made by each
# container at its first boot, not shared through the image.
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$KEY.pub" "$rootfs/root/.ssh/authorized_keys"
rm -f "$rootfs"/etc/ssh/ssh_host_*
cat > "$rootfs/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate this sandbox container's SSH host keys
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
UNIT
chroot "$rootfs" systemctl enable ssh-host-keys.service ssh.service >/dev/null 2>&1

log "importing into podman as $image"
tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' - "$image" >&2
podman tag "$image" "$IMAGE_REPO:bookworm"
# Drop images of older recipes. Without --force: an image a container still
# runs from (another sandbox, a demo host) stays until that container is gone.
podman images --format '{{.Repository}}:{{.Tag}}' \
  | grep "^$IMAGE_REPO:bookworm-" | grep -v "^$image\$" | xargs -r -n1 podman rmi >&2 || true
echo "$image"
