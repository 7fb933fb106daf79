#!/usr/bin/env bash
# Build (or reuse) the cached Debian 12 base image for the QEMU/TCG test VMs.
#
#   scripts/vm-image.sh            # prints the image path on the last stdout line
#
# Cache layout (${SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/private-llm-sandbox}/vm/):
#   id_ed25519{,.pub}                ssh key for root in every VM (generated once, reused)
#   bookworm-<hash>.raw              sparse 6G ext4 root filesystem (no partition table)
#   bookworm-<hash>.vmlinuz/.initrd  kernel and initrd for direct kernel boot
#
# <hash> covers this script, sandbox_zipimport_cache.py, the mirror, the ssh public key and the host apt
# configuration copied into the guest, so the image is rebuilt only when one of those
# changes. Images of other hashes are removed after a successful build. Logs go to stderr.
#
# Needs root (debootstrap, chroot) and: debootstrap, mkfs.ext4 (e2fsprogs >= 1.43), ssh-keygen.
# Environment: SANDBOX_CACHE, SANDBOX_DEBIAN_MIRROR (default: the host's apt mirror, see
#              scripts/lib.sh), VM_IMAGE_SIZE (default 6G), VM_IMAGE_FORCE=1 (rebuild).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # SANDBOX_CACHE, debian_mirror
log() { printf '[%s vm-image] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VM_DIR="$SANDBOX_CACHE/vm"
SUITE=bookworm
MIRROR="$(debian_mirror)"
SIZE="${VM_IMAGE_SIZE:-6G}"
PACKAGES=(
  systemd-sysv udev linux-image-amd64 openssh-server python3 python3-apt sudo
  iproute2 dbus kmod ca-certificates netbase cryptsetup cryptsetup-bin e2fsprogs
  ufw procps iptables python3-cryptography
  # debootstrap does not resolve virtual packages: python3-cryptography needs
  # python3-cffi-backend-api-{min,max}, provided by:
  python3-cffi-backend
  # The hardening role's packages, kernel ones included (a VM has its own
  # kernel), and Lynis for the audit test: baked in so a converge under TCG
  # does not download and unpack them. The role still installs them on real hosts.
  auditd apparmor acct unattended-upgrades needrestart debsums apt-listchanges
  libpam-tmpdir libpam-pwquality lynis
  # Automatic unlock of the model volume (model_volume_unlock_mode tang, tpm2,
  # tang+tpm2): clevis with its LUKS, TPM2 and systemd parts, tpm2-tools and
  # the TSS2 library that reaches the kernel's /dev/tpmrm0 (scripts/vm.sh
  # gives each VM an emulated TPM 2.0). Not clevis-initramfs (the data volume
  # is unlocked after boot, not from the initrd) and not tang (the Tang host
  # is a container of its own, molecule/vm).
  clevis clevis-luks clevis-tpm2 clevis-systemd tpm2-tools libtss2-tcti-device0 curl
)

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
ZIPIMPORT_CACHE="$(dirname "$SELF")/sandbox_zipimport_cache.py"

mkdir -p "$VM_DIR"
chmod 0700 "$VM_DIR"

# --- ssh key (reused across images and runs) ------------------------------------------
KEY="$VM_DIR/id_ed25519"
if [[ ! -s "$KEY" || ! -s "$KEY.pub" ]]; then
  log "generating ssh key $KEY"
  rm -f "$KEY" "$KEY.pub"
  ssh-keygen -q -t ed25519 -N '' -C "private-llm-sandbox-vm" -f "$KEY" >&2
fi

# --- host apt configuration that goes into the guest ----------------------------------
# Only files apt actually reads (*.list / *.sources); "*.disabled-*" leftovers stay out.
apt_files() {
  local f
  [[ -f /etc/apt/sources.list ]] && echo /etc/apt/sources.list
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
           /etc/apt/apt.conf.d/*; do
    [[ -f "$f" ]] && echo "$f"
  done
  return 0
}
mapfile -t APT_FILES < <(apt_files)

# --- recipe hash ----------------------------------------------------------------------
recipe_hash() {
  {
    cat "$SELF" "$ZIPIMPORT_CACHE"
    cat "$KEY.pub"
    printf '%s\n' "$MIRROR" "$SIZE"
    local f
    for f in "${APT_FILES[@]}"; do
      printf '== %s\n' "$f"
      cat "$f"
    done
  } | sha256sum | cut -c1-12
}
HASH="$(recipe_hash)"
BASE="$VM_DIR/$SUITE-$HASH"
IMAGE="$BASE.raw"

# Serialize builds (two `vm.sh start` at once must not both debootstrap).
exec 9>"$VM_DIR/.image.lock"
flock 9

if [[ -s "$IMAGE" && -s "$BASE.vmlinuz" && -s "$BASE.initrd" && "${VM_IMAGE_FORCE:-0}" != 1 ]]; then
  log "cached image $IMAGE"
  echo "$IMAGE"
  exit 0
fi

[[ $EUID -eq 0 ]] || die "building the image needs root (debootstrap/chroot)"
for tool in debootstrap mkfs.ext4 chroot truncate; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install debootstrap e2fsprogs)"
done

WORK="$(mktemp -d "$VM_DIR/.build-$HASH.XXXXXX")"
ROOTFS="$WORK/rootfs"

# Unmount everything below the rootfs (debootstrap/our chroot steps mount proc, sys, dev)
# before deleting anything, so that rm -rf never walks into the host's /dev or /sys.
unmount_below() {
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}
cleanup() {
  local rc=$?
  unmount_below "$ROOTFS"
  if ((rc != 0)) && [[ -f "$ROOTFS/debootstrap/debootstrap.log" ]]; then
    cp "$ROOTFS/debootstrap/debootstrap.log" "$VM_DIR/debootstrap-failed.log" || true
    log "debootstrap log kept in $VM_DIR/debootstrap-failed.log"
  fi
  if awk -v r="$ROOTFS" 'index($2, r) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    log "mounts left below $ROOTFS; not deleting $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
log "debootstrap $SUITE ($MIRROR) into $ROOTFS"
include="$(IFS=,; echo "${PACKAGES[*]}")"
debootstrap --variant=minbase --include="$include" "$SUITE" "$ROOTFS" "$MIRROR" >&2
log "debootstrap done in $((SECONDS - t0)) s"

# --- configuration ----------------------------------------------------------------------
# apt: the host's sources and apt.conf.d (the mirror the host can reach).
rm -f "$ROOTFS"/etc/apt/sources.list "$ROOTFS"/etc/apt/sources.list.d/*
for f in "${APT_FILES[@]}"; do
  install -D -m 0644 "$f" "$ROOTFS$f"
done

cat >"$ROOTFS/etc/fstab" <<'EOF'
/dev/vda  /  ext4  errors=remount-ro  0  1
EOF

echo sandbox-vm >"$ROOTFS/etc/hostname"
cat >"$ROOTFS/etc/hosts" <<'EOF'
127.0.0.1 localhost
127.0.1.1 sandbox-vm
::1       localhost ip6-localhost ip6-loopback
EOF
echo 'LANG=C.UTF-8' >"$ROOTFS/etc/default/locale"

# Network: systemd-networkd, DHCP on every ethernet NIC (QEMU user networking).
mkdir -p "$ROOTFS/etc/systemd/network"
cat >"$ROOTFS/etc/systemd/network/80-dhcp.network" <<'EOF'
[Match]
Type=ether

[Network]
DHCP=ipv4
EOF

# ssh: root by key only.
install -d -m 0700 "$ROOTFS/root/.ssh"
install -m 0600 "$KEY.pub" "$ROOTFS/root/.ssh/authorized_keys"
mkdir -p "$ROOTFS/etc/ssh/sshd_config.d"
cat >"$ROOTFS/etc/ssh/sshd_config.d/10-sandbox-vm.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF

# Ansible's modules arrive as zips, and zipimport compiles their Python on
# every task (~2 s of each task under TCG): a compiled-code cache in the guest
# only, keyed by the source's hash (scripts/sandbox_zipimport_cache.py).
python3 "$ZIPIMPORT_CACHE" "$ROOTFS" >/dev/null

# Serial console: root autologin on ttyS0 (console.log / debugging with -serial pty).
mkdir -p "$ROOTFS/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$ROOTFS/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
EOF

# No interactive first-boot prompts on the console (empty machine-id => "first boot").
ln -sf /dev/null "$ROOTFS/etc/systemd/system/systemd-firstboot.service"

# Small initrd: only what mounting /dev/vda (virtio, ext4) needs. Unpacking and
# coldplugging the default MODULES=most initrd costs seconds per boot under TCG.
echo 'MODULES=list' >"$ROOTFS/etc/initramfs-tools/conf.d/sandbox-vm.conf"
printf '%s\n' virtio_pci virtio_blk virtio_rng ext4 crc32c_generic \
  >>"$ROOTFS/etc/initramfs-tools/modules"

# Chroot steps: rebuild the initrd, enable networkd, fetch package lists (so
# roles can install right away).
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
mount --rbind /dev "$ROOTFS/dev"
mount --make-rslave "$ROOTFS/dev"
chroot "$ROOTFS" update-initramfs -u -k all >&2
chroot "$ROOTFS" systemctl enable systemd-networkd.service >&2
chroot "$ROOTFS" systemctl enable serial-getty@ttyS0.service >&2 || true
chroot "$ROOTFS" apt-get -q update >&2
chroot "$ROOTFS" apt-get clean >&2
unmount_below "$ROOTFS/dev"
unmount_below "$ROOTFS/proc"

rm -f "$ROOTFS/etc/resolv.conf"
echo 'nameserver 10.0.2.3' >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id"
rm -rf "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/*

# --- kernel, initrd, filesystem image ---------------------------------------------------
vmlinuz="$(find "$ROOTFS/boot" -maxdepth 1 -type f -name 'vmlinuz-*' | sort -V | tail -n1)"
initrd="$(find "$ROOTFS/boot" -maxdepth 1 -type f -name 'initrd.img-*' | sort -V | tail -n1)"
[[ -n "$vmlinuz" ]] || die "no kernel in $ROOTFS/boot"
[[ -n "$initrd" ]] || die "no initrd in $ROOTFS/boot"
cp "$vmlinuz" "$WORK/vmlinuz"
cp "$initrd" "$WORK/initrd"

log "mkfs.ext4 -d ($SIZE sparse)"
t1=$SECONDS
truncate -s "$SIZE" "$WORK/root.raw"
mkfs.ext4 -q -F -L sandbox-root -d "$ROOTFS" "$WORK/root.raw" >&2
log "mkfs done in $((SECONDS - t1)) s"

# Atomic publish: kernel/initrd first, the image last (its presence means "complete").
mv -f "$WORK/vmlinuz" "$BASE.vmlinuz"
mv -f "$WORK/initrd" "$BASE.initrd"
mv -f "$WORK/root.raw" "$IMAGE"

# Drop images of other recipes (a running VM keeps its open backing file until it stops).
for old in "$VM_DIR/$SUITE"-*.raw "$VM_DIR/$SUITE"-*.vmlinuz "$VM_DIR/$SUITE"-*.initrd; do
  [[ -e "$old" ]] || continue
  case "$old" in "$BASE".*) continue ;; esac
  log "removing old $old"
  rm -f "$old"
done

log "built $IMAGE in $((SECONDS - t0)) s"
echo "$IMAGE"
