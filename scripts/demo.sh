#!/usr/bin/env bash
# `make demo`: create (or reuse) the local sandbox host and converge it with
# site.yml, exactly as a real site would be, then print where to reach it.
#   scripts/demo.sh          create/update the sandbox host
#   scripts/demo.sh destroy  remove it
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PROJECT_DIR"

NAME=llm-demo
# Its fixed address on podman's bridge; Ansible reaches it over SSH there
# (inventory/sandbox/hosts.yml), as it reaches real hosts.
ADDRESS=10.88.200.10

if [[ "${1:-}" == destroy ]]; then
  podman rm -f --time 10 "$NAME" >/dev/null 2>&1 || true
  log "sandbox host $NAME removed"
  exit 0
fi

image="$(scripts/container-image.sh)"
# A container whose processes died with the machine (or the session that
# started it) can still be recorded as running; podman cannot exec into it.
# The sandbox host holds nothing that is not rebuilt by site.yml, so such a
# stale one is replaced.
if podman container exists "$NAME" &&
   [[ "$(podman inspect -f '{{.State.Running}}' "$NAME")" == true ]] &&
   ! podman exec "$NAME" true >/dev/null 2>&1; then
  log "sandbox host $NAME is recorded as running but does not answer; recreating it"
  podman rm -f --time 10 "$NAME" >/dev/null
fi
if podman container exists "$NAME" && [[ "$(podman inspect -f '{{.Image}}' "$NAME")" != \
     "$(podman image inspect -f '{{.Id}}' "$image")" ]]; then
  log "sandbox image changed; recreating $NAME"
  podman rm -f --time 10 "$NAME" >/dev/null
fi
# Hybrid cgroups (CI machines): the container's systemd gets the cgroup2 tree
# too, so that it sees a unit's last process go (molecule/shared/containers-create.yml).
CGROUP2_VOLUME=()
[[ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" == cgroup2fs ]] &&
  CGROUP2_VOLUME=(-v /sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw)
if ! podman container exists "$NAME"; then
  log "creating sandbox host $NAME from $image"
  mkdir -p -m 0700 "$SANDBOX_CACHE/pip"  # pip's downloads, shared by the sandbox hosts
  # --restart=always: a reboot inside (playbooks/update.yml) restarts the
  # container, as a machine would boot again.
  podman run -d --name "$NAME" --hostname "$NAME" --systemd=always --restart=always \
    --ip "$ADDRESS" --cap-add NET_ADMIN --shm-size=1g \
    -v "$SANDBOX_CACHE/pip:/var/cache/sandbox-pip" \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro \
    "${CGROUP2_VOLUME[@]}" "$image" /sbin/init >/dev/null
elif [[ "$(podman inspect -f '{{.State.Running}}' "$NAME")" != true ]]; then
  podman start "$NAME" >/dev/null
fi
state=""
for _ in $(seq 60); do  # systemd's bus appears a moment after the container starts
  state="$(podman exec "$NAME" systemctl is-system-running --wait 2>/dev/null || true)"
  [[ -n "$state" && "$state" != offline ]] && break
  sleep 1
done
[[ "$state" == running || "$state" == degraded ]] ||
  { log "sandbox host did not boot (systemd state: ${state:-no answer}); see: podman logs $NAME"; exit 1; }

for _ in $(seq 30); do  # sshd starts with the rest of the boot; give it a moment
  timeout 5 bash -c "exec 3<>/dev/tcp/$ADDRESS/22" 2>/dev/null && break
  sleep 1
done

log "converging $NAME with site.yml"
ansible-playbook -i inventory/sandbox/hosts.yml site.yml

address="$ADDRESS"
cat <<MSG

  Sandbox host $NAME is up at $address and converged with site.yml: firewall,
  NVIDIA driver pins (no GPU here, so no driver), the tiny test model staged
  and verified under /srv/models (a plain directory: containers cannot open
  LUKS; the vm scenario proves the encrypted volume), vLLM (CPU build) serving
  it as Qwen3-4B-Instruct-2507, Chainlit, and the TLS gateway in front.

  Chat:      https://$address/
             user demo, password in secrets/sandbox/chainlit-user-demo
             trust the sandbox CA: secrets/sandbox/gateway-ca.crt
             (the model is a tiny random one: replies are gibberish, but real)
  API:       curl --cacert secrets/sandbox/gateway-ca.crt \\
               -H "Authorization: Bearer \$(cat secrets/sandbox/api-clients/app)" \\
               https://$address/v1/models
  Shell:     podman exec -it $NAME bash   (or: ssh -i $SANDBOX_CACHE/container/id_ed25519 root@$address)
  Remove:    make demo-destroy

MSG
