#!/usr/bin/env bash
# QEMU (TCG) test VMs on top of the cached base image from scripts/vm-image.sh.
#
#   scripts/vm.sh start NAME        boot (or reuse) VM NAME, wait for ssh, print instance.json
#   scripts/vm.sh stop NAME         power it off and remove its run dir (idempotent); the
#                                   console log is kept in $LLM_TEST_REPORTS when that is set
#   scripts/vm.sh ssh NAME [CMD..]  ssh into it as root
#   scripts/vm.sh wait NAME [SECS]  wait until ssh answers again (e.g. after a guest reboot)
#   scripts/vm.sh status NAME       print instance.json and exit 0 if running, else exit 1
#
# Run dir: ${SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/private-llm-sandbox}/vm/run/NAME/
#   overlay.qcow2   root disk, /dev/vda (qcow2 overlay backed by the base raw image)
#   data.qcow2      blank data disk, /dev/vdb = /dev/disk/by-id/virtio-llm-data
#   console.log     serial console; monitor.sock (QEMU's human monitor); qemu.pid; instance.json
#   tpm/            the guest's emulated TPM 2.0 (swtpm): its state (tpm2-00.permall), the
#                   control socket swtpm.sock, swtpm.pid and swtpm.log. swtpm starts before
#                   qemu and lives as long as the VM: a guest reboot (a reset inside the same
#                   qemu) keeps the TPM and its state, so PCRs and TPM-sealed secrets survive it.
#                   `stop` ends it; a fresh `start` begins with a blank TPM.
#
# instance.json: {"name", "address": "127.0.0.1", "port": <ssh port>, "user": "root",
#                 "identity_file", "ports": {"443": <host port>, "8000": <host port>}, "pid",
#                 "run_dir", "tpm_state": <run dir>/tpm}
# All forwarded ports listen on 127.0.0.1 only.
#
# Environment: SANDBOX_CACHE, VM_MEMORY (MiB, default 3072), VM_CPUS (default 1:
#              beside busy containers a second vCPU's lock waits cost CPU:
#              the same guest commands took 191 CPU-s with two vCPUs, 171
#              with one; Lynis is the exception, 930 s with one vCPU and a
#              whole core against 372 s with two on a quiet machine),
#              VM_NICE (default -10: the niceness of the emulator's autogroup;
#              an emulated guest does everything 15-20x slower, so it gets the
#              core it asks for before the containers and the controller do:
#              beside two busy processes those commands took 281 s and
#              171 CPU-s at nice 0, 142 s and 143 CPU-s at -10; empty leaves
#              it at 0),
#              VM_CPU_MODEL (default Westmere: SSE4.2 and AES-NI, no AVX;
#              under TCG the guest's glibc and OpenSSL then take their SSE
#              paths, which QEMU emulates faster than AVX2 and SHA-NI: on a
#              quiet machine 400 programs started in 12.0 s instead of 13.0
#              with -cpu max, a Python script ran in 1.5 s instead of 1.7,
#              SHA-256 1.8x as fast; AES-XTS the same),
#              VM_DATA_SIZE (default 2G), VM_BOOT_TIMEOUT (s, default 900: the
#              first boot beside two converging container scenarios, both
#              cores busy, took over 4 min, apparmor and auditd starting at
#              emulated speed; on a quiet machine it is 20-40 s).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"   # SANDBOX_CACHE
BOOT_TIMEOUT="${VM_BOOT_TIMEOUT:-900}"
log() { printf '[%s vm] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

VM_DIR="$SANDBOX_CACHE/vm"
KEY="$VM_DIR/id_ed25519"
GUEST_PORTS=(443 8000)
SSH_OPTS=(
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes
  -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=5
)

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

run_dir() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad VM name '$1'"
  echo "$VM_DIR/run/$1"
}

# PID of the qemu of this run dir, if it is alive (and really is that qemu).
qemu_pid() {
  local dir="$1" pid
  [[ -s "$dir/qemu.pid" ]] || return 1
  pid="$(tr -dc '0-9' <"$dir/qemu.pid")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
  echo "$pid"
}

# PID of the swtpm of this run dir, if it is alive (and really is that swtpm).
swtpm_pid() {
  local dir="$1" pid
  [[ -s "$dir/tpm/swtpm.pid" ]] || return 1
  pid="$(tr -dc '0-9' <"$dir/tpm/swtpm.pid")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/tpm" || return 1
  echo "$pid"
}

kill_swtpm() {
  local dir="$1" pid i
  pid="$(swtpm_pid "$dir")" || return 0
  log "stopping swtpm pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 25; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "swtpm pid $pid did not exit, killing"
  kill -KILL "$pid" 2>/dev/null || true
}

# Start the VM's emulated TPM 2.0 (a daemon with its state in $dir/tpm/) and
# wait for its control socket; qemu connects to that socket (-tpmdev emulator).
start_swtpm() {
  local dir="$1" i
  kill_swtpm "$dir"
  mkdir -p "$dir/tpm"
  chmod 0700 "$dir/tpm"
  rm -f "$dir/tpm/swtpm.sock" "$dir/tpm/swtpm.pid"
  swtpm socket --tpm2 \
    --tpmstate "dir=$dir/tpm,mode=0600" \
    --ctrl "type=unixio,path=$dir/tpm/swtpm.sock,mode=0600" \
    --log "file=$dir/tpm/swtpm.log,level=1" \
    --pid "file=$dir/tpm/swtpm.pid" \
    --daemon 2>>"$dir/tpm/swtpm.log" || die "swtpm would not start (see $dir/tpm/swtpm.log)"
  for ((i = 0; i < 50; i++)); do
    [[ -S "$dir/tpm/swtpm.sock" ]] && swtpm_pid "$dir" >/dev/null && return 0
    sleep 0.1
  done
  die "swtpm gave no control socket (see $dir/tpm/swtpm.log)"
}

json_get() {  # json_get FILE KEY  -> value (top-level key)
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ssh_port_of() {
  local dir="$1"
  [[ -s "$dir/instance.json" ]] || die "no instance.json in $dir (is the VM running?)"
  json_get "$dir/instance.json" port
}

ssh_ok() {  # ssh_ok PORT
  timeout 20 ssh "${SSH_OPTS[@]}" -i "$KEY" -p "$1" root@127.0.0.1 true >/dev/null 2>&1
}

wait_ssh() {  # wait_ssh DIR PORT TIMEOUT
  local dir="$1" port="$2" timeout="$3" start=$SECONDS
  while ((SECONDS - start < timeout)); do
    if ssh_ok "$port"; then
      log "ssh up on 127.0.0.1:$port after $((SECONDS - start)) s"
      return 0
    fi
    qemu_pid "$dir" >/dev/null || { log "qemu exited"; return 1; }
    sleep 2
  done
  log "no ssh on 127.0.0.1:$port after ${timeout} s"
  return 1
}

kill_qemu() {
  local dir="$1" pid i
  pid="$(qemu_pid "$dir")" || return 0
  log "stopping qemu pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "qemu pid $pid did not exit, killing"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 25; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
}

cmd_start() {
  local name="$1" dir base kernel initrd ssh_port pid attempt hostfwd p
  dir="$(run_dir "$name")"
  local timeout="$BOOT_TIMEOUT"

  # Already running and answering: reuse it (makes `start` idempotent).
  if qemu_pid "$dir" >/dev/null && [[ -s "$dir/instance.json" ]] &&
     ssh_ok "$(json_get "$dir/instance.json" port)"; then
    log "$name already running"
    cat "$dir/instance.json"
    return 0
  fi
  kill_qemu "$dir"
  kill_swtpm "$dir"
  rm -rf "$dir"

  base="$("$SCRIPT_DIR/vm-image.sh" | tail -n1)"
  [[ -s "$base" ]] || die "vm-image.sh gave no image"
  kernel="${base%.raw}.vmlinuz"
  initrd="${base%.raw}.initrd"

  mkdir -p "$dir"
  chmod 0700 "$dir"
  qemu-img create -q -f qcow2 -F raw -b "$base" "$dir/overlay.qcow2" >&2
  qemu-img create -q -f qcow2 "$dir/data.qcow2" "${VM_DATA_SIZE:-2G}" >&2

  # QEMU's monitor (`info status` tells a hung guest from a paused one), where
  # the socket path fits a unix socket name (108 bytes).
  local -a monitor=(-monitor none)
  if ((${#dir} < 90)); then
    monitor=(-monitor "unix:$dir/monitor.sock,server=on,wait=off")
  fi
  # The TPM's control socket has no such fallback: the VM needs its TPM.
  ((${#dir} < 90)) || die "run dir $dir is too long for swtpm's unix socket (108 bytes): use a shorter SANDBOX_CACHE"

  # Free ports can be raced away between probing and qemu's bind: retry with new ones.
  for attempt in 1 2 3; do
    declare -A fwd=()
    ssh_port="$(free_port)"
    hostfwd="hostfwd=tcp:127.0.0.1:$ssh_port-:22"
    for p in "${GUEST_PORTS[@]}"; do
      fwd[$p]="$(free_port)"
      hostfwd+=",hostfwd=tcp:127.0.0.1:${fwd[$p]}-:$p"
    done
    rm -f "$dir/qemu.pid" "$dir/console.log"
    # A fresh swtpm per attempt: one that a failed qemu connected to may
    # not take a second connection.
    start_swtpm "$dir"
    local t0=$SECONDS
    # mitigations=off: an emulated CPU does not speculate, so the guest
    # kernel's Spectre defences (retpolines, buffer clearing and barriers
    # on every entry and context switch) guard nothing here, and under TCG
    # they cost a fifth to a third of the guest's time: the same guest
    # started 400 programs in 22 s instead of 27, ran a Python script in
    # 3.7 s instead of 6.0 and booted with a short benchmark in 75 s
    # instead of 96. Nothing the project sets or measures depends on them.
    if qemu-system-x86_64 \
         -name "sandbox-$name" \
         -accel tcg -cpu "${VM_CPU_MODEL:-Westmere}" -m "${VM_MEMORY:-3072}" -smp "${VM_CPUS:-1}" \
         -nodefaults -display none -vga none "${monitor[@]}" \
         -serial "file:$dir/console.log" \
         -kernel "$kernel" -initrd "$initrd" \
         -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 cryptomgr.notests mitigations=off" \
         -drive "file=$dir/overlay.qcow2,if=none,id=root,format=qcow2,discard=unmap" \
         -device virtio-blk-pci,drive=root,serial=llm-root \
         -drive "file=$dir/data.qcow2,if=none,id=data,format=qcow2,discard=unmap" \
         -device virtio-blk-pci,drive=data,serial=llm-data \
         -netdev "user,id=net0,$hostfwd" \
         -device virtio-net-pci,netdev=net0 \
         -device virtio-rng-pci \
         -chardev "socket,id=chrtpm,path=$dir/tpm/swtpm.sock" \
         -tpmdev emulator,id=tpm0,chardev=chrtpm \
         -device tpm-crb,tpmdev=tpm0 \
         -pidfile "$dir/qemu.pid" -daemonize 2>"$dir/qemu.err"; then
      break
    fi
    log "qemu failed to start (attempt $attempt): $(cat "$dir/qemu.err")"
    kill_swtpm "$dir"
    ((attempt < 3)) || die "qemu would not start"
  done
  pid="$(qemu_pid "$dir")" || { kill_swtpm "$dir"; die "qemu is not running (see $dir/console.log)"; }
  # -daemonize made QEMU a session leader: its autogroup is its own, and the
  # kernel shares the CPU between autogroups and cgroups, not processes.
  local nice="${VM_NICE--10}"
  if [[ -n "$nice" && -w "/proc/$pid/autogroup" ]]; then
    echo "$nice" >"/proc/$pid/autogroup" 2>/dev/null || log "could not set the emulator's autogroup to nice $nice"
  fi
  log "qemu pid $pid, ssh on 127.0.0.1:$ssh_port, booting (TCG, $(cat "/proc/$pid/autogroup" 2>/dev/null || echo 'no autogroup'))"

  if ! wait_ssh "$dir" "$ssh_port" "$timeout"; then
    log "console tail:"; tail -n 30 "$dir/console.log" >&2 || true
    kill_qemu "$dir"
    kill_swtpm "$dir"
    die "VM $name did not come up; run dir kept: $dir"
  fi
  log "boot->ssh $((SECONDS - t0)) s"

  local ports_json="" sep=""
  for p in "${GUEST_PORTS[@]}"; do
    ports_json+="$sep\"$p\": ${fwd[$p]}"
    sep=", "
  done
  cat >"$dir/instance.json.tmp" <<EOF
{
  "name": "$name",
  "address": "127.0.0.1",
  "port": $ssh_port,
  "user": "root",
  "identity_file": "$KEY",
  "ports": {$ports_json},
  "pid": $pid,
  "run_dir": "$dir",
  "tpm_state": "$dir/tpm"
}
EOF
  mv -f "$dir/instance.json.tmp" "$dir/instance.json"
  cat "$dir/instance.json"
}

cmd_stop() {
  local dir
  dir="$(run_dir "$1")"
  kill_qemu "$dir"
  kill_swtpm "$dir"
  # The serial console is the one record of a guest that stopped answering:
  # keep it with the test reports before the run dir goes.
  if [[ -n "${LLM_TEST_REPORTS:-}" && -s "$dir/console.log" ]]; then
    cp -f "$dir/console.log" "$LLM_TEST_REPORTS/vm-$1-console.log" || true
  fi
  rm -rf "$dir"
}

cmd_ssh() {
  local dir port
  dir="$(run_dir "$1")"
  shift
  port="$(ssh_port_of "$dir")"
  exec ssh "${SSH_OPTS[@]}" -i "$KEY" -p "$port" root@127.0.0.1 "$@"
}

cmd_wait() {
  local dir port
  dir="$(run_dir "$1")"
  port="$(ssh_port_of "$dir")"
  wait_ssh "$dir" "$port" "${2:-$BOOT_TIMEOUT}"
}

cmd_status() {
  local dir
  dir="$(run_dir "$1")"
  if ! qemu_pid "$dir" >/dev/null || [[ ! -s "$dir/instance.json" ]]; then
    log "$1 not running"
    return 1
  fi
  cat "$dir/instance.json"
}

[[ $# -ge 2 ]] || usage
cmd="$1"
shift
case "$cmd" in
  start) cmd_start "$1" ;;
  stop) cmd_stop "$1" ;;
  ssh) cmd_ssh "$@" ;;
  wait) cmd_wait "$@" ;;
  status) cmd_status "$1" ;;
  *) usage ;;
esac
