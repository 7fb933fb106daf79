#!/usr/bin/env python3
"""Benchmarks of site.yml runs on sandbox containers (through ansible-runner,
scripts/run_playbook.py); prints its figures, asserts nothing.

  P1  one host: fresh converge vs a no-op re-run (goal: re-run changed=0 and
      <= 0.15x the converge).
  P2  no-op re-run on 8 hosts vs on 1 (goal <= 1.5x). The hosts run every
      role but vLLM's (`--skip-tags vllm`: eight CPU vLLM installs do not fit
      this 2-core machine); the figure says so.

Each run also prints where the CPU went: the controller's share (ansible-playbook
and its workers, from their resource usage) and the rest of the machine's busy
time (the hosts' modules and sshd, ssh, podman; from /proc/stat, so run it on
an otherwise quiet machine). In the sandbox the hosts share the controller's
cores; on a real site they do not.

Hosts are podman containers from the sandbox image, named bench-N, created
fresh and removed afterwards; secrets land in a temporary folder. Ansible
reaches them over SSH (--transport ssh, the default: what real hosts use,
with pipelining and a persistent connection; each container gets
openssh-server from Debian's mirror and a throwaway key before any timing),
or through `podman exec` (--transport podman: the Molecule scenarios' way;
that plugin cannot pipeline, so every task costs several podman processes).

The sandbox image carries a compiled-code cache for the zips Ansible's modules
arrive in (scripts/sandbox_zipimport_cache.py), as the test hosts do; real
hosts have none. --no-code-cache takes it off the bench hosts before any
timing, for the figure a real host gets.

Usage: bench/converge.py [p1|p2|all] [--hosts 8] [--transport ssh|podman] [--no-code-cache] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))
from run_playbook import run_playbook  # noqa: E402

IMAGE = "localhost/private-llm-sandbox:bookworm"


def podman(*args: str, check: bool = True) -> str:
    return subprocess.run(["podman", *args], check=check, capture_output=True, text=True).stdout.strip()


def create_hosts(names: list[str], workdir: Path, transport: str, reuse: bool = False,
                 code_cache: bool = True) -> None:
    for name in [] if reuse else names:
        podman("rm", "-f", "--time", "5", name, check=False)
        podman("run", "-d", "--name", name, "--hostname", name, "--systemd=always", "--cap-add", "NET_ADMIN",
               "--shm-size=1g", "-v", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro",
               IMAGE, "/sbin/init")
    for name in names:
        subprocess.run(["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
                       capture_output=True, check=False)
    if not code_cache:
        for name in names:
            podman("exec", name, "sh", "-c", "rm -rf /usr/local/lib/python3*/dist-packages/sandbox*zipimport*"
                   " /var/cache/sandbox-zipimport")
    if transport == "ssh":
        key = workdir / "bench-key"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = (workdir / "bench-key.pub").read_text()
        for name in names:
            subprocess.run(
                ["podman", "exec", "-i", name, "sh", "-c",
                 "DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server >/dev/null"
                 " && install -d -m 0700 /root/.ssh && cat > /root/.ssh/authorized_keys"
                 " && systemctl enable --now ssh"],
                input=public, text=True, capture_output=True, check=True)


def address(name: str) -> str:
    return podman("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)


def inventory(workdir: Path, names: list[str], transport: str) -> str:
    inv = workdir / "bench"
    inv.mkdir(parents=True, exist_ok=True)
    if transport == "ssh":
        hosts = "".join(f"        {n}:\n          ansible_host: {address(n)}\n" for n in names)
        connection = ("    ansible_connection: ssh\n    ansible_user: root\n"
                      f"    ansible_ssh_private_key_file: {workdir.parent / 'bench-key'}\n"
                      "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n"
                      # Eight SSH handshakes at once on two busy cores can take longer than
                      # Ansible's default 10 s; a slow start is timed, not failed.
                      "    ansible_ssh_timeout: 30\n")
    else:
        hosts = "".join(f"        {n}:\n" for n in names)
        connection = "    ansible_connection: containers.podman.podman\n"
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    llm_servers:\n      hosts:\n" + hosts
        + "    gateways:\n      hosts:\n" + hosts + "  vars:\n" + connection)
    link = inv / "group_vars"
    if not link.exists():
        link.symlink_to(PROJECT / "inventory" / "sandbox" / "group_vars")
    return str(inv / "hosts.yml")


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this bench's finished child processes, i.e. ansible-playbook
    and its workers; CPU seconds the whole machine has been busy)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return children.ru_utime + children.ru_stime, busy / os.sysconf("SC_CLK_TCK")


def run(inv: str, label: str, skip_tags: str | None = None, limit: str | None = None) -> dict:
    envvars = {"ANSIBLE_SKIP_TAGS": skip_tags} if skip_tags else {}
    before = cpu_seconds()
    summary = run_playbook("site.yml", inv, envvars=envvars, limit=limit)
    after = cpu_seconds()
    # The controller's share, and the rest: the hosts' modules and sshd, the ssh
    # connections, podman (all on this machine's cores in the sandbox).
    summary["controller_cpu_s"] = after[0] - before[0]
    summary["hosts_cpu_s"] = max(0.0, (after[1] - before[1]) - summary["controller_cpu_s"])
    totals = summary["totals"]
    print(f"  {label:34s} {summary['duration_s']:8.1f} s   hosts={len(summary['hosts'])} "
          f"changed={totals['changed']} failed={totals['failed'] + totals['unreachable']}   "
          f"CPU: controller {summary['controller_cpu_s']:.0f} s, hosts and the rest {summary['hosts_cpu_s']:.0f} s",
          flush=True)
    if summary["rc"] != 0:
        sys.exit(f"{label}: site.yml failed (status {summary['status']}): "
                 + "; ".join(summary.get("failed_tasks", [])))
    return summary


def p1(workdir: Path, keep: bool, transport: str, code_cache: bool) -> None:
    print(f"P1: one sandbox host, full site.yml (vLLM CPU install included), over {transport}, "
          f"{'with' if code_cache else 'without'} the sandbox's compiled-code cache")
    names = ["bench-1"]
    create_hosts(names, workdir, transport, code_cache=code_cache)
    try:
        inv = inventory(workdir / "p1", names, transport)
        fresh = run(inv, "fresh converge")
        noop = run(inv, "no-op re-run")
        ratio = noop["duration_s"] / fresh["duration_s"]
        print(f"  re-run / converge = {ratio:.3f}  (goal <= 0.15); re-run changed={noop['totals']['changed']} "
              "(goal 0)")
        print("  time per role, fresh converge: "
              + ", ".join(f"{r} {t:.0f}s" for r, t in fresh["role_time_s"].items()))
        print("  time per role, re-run:         "
              + ", ".join(f"{r} {t:.1f}s" for r, t in noop["role_time_s"].items()))
    finally:
        if not keep:
            for name in names:
                podman("rm", "-f", "--time", "5", name, check=False)


def p2(workdir: Path, count: int, keep: bool, transport: str, reuse: bool = False, code_cache: bool = True) -> None:
    print(f"P2: no-op re-run on {count} sandbox hosts vs 1 (every role but vLLM: --skip-tags vllm), over {transport}, "
          f"{'with' if code_cache else 'without'} the sandbox's compiled-code cache")
    print("  (the hosts form one fleet: all are vLLM hosts and gateways; the single-host run is the same"
          " inventory with --limit)")
    names = [f"bench-{i}" for i in range(1, count + 1)]
    create_hosts(names, workdir, transport, reuse, code_cache)
    try:
        inv = inventory(workdir / "p2", names, transport)
        run(inv, f"{'settle' if reuse else 'converge'} {count} hosts", "vllm")
        one = run(inv, "no-op re-run, 1 host (--limit)", "vllm", limit=names[0])
        many = run(inv, f"no-op re-run, {count} hosts", "vllm")
        print(f"  {count} hosts / 1 host = {many['duration_s'] / one['duration_s']:.2f}  (goal <= 1.5)")
        print(f"  controller CPU {count} hosts / 1 host = {many['controller_cpu_s'] / one['controller_cpu_s']:.2f}; "
              f"CPU of the whole machine {count} hosts / 1 host = "
              f"{(many['controller_cpu_s'] + many['hosts_cpu_s']) / (one['controller_cpu_s'] + one['hosts_cpu_s']):.2f} "
              f"on {os.cpu_count()} cores")
    finally:
        if not keep:
            for name in names:
                podman("rm", "-f", "--time", "5", name, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="all", choices=["p1", "p2", "all"])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--transport", choices=["ssh", "podman"], default="ssh",
                        help="how Ansible reaches the containers (default: ssh, as on real hosts)")
    parser.add_argument("--no-code-cache", dest="code_cache", action="store_false",
                        help="take the sandbox's compiled-code cache off the hosts (what a real host runs)")
    parser.add_argument("--keep", action="store_true", help="keep the containers afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="P2 on bench-N containers kept from an earlier run (--keep): no create, no fresh converge")
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(PROJECT / "sandbox" / "containers.conf"))
    workdir = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    try:
        if args.which in ("p1", "all"):
            p1(workdir, args.keep, args.transport, args.code_cache)
        if args.which in ("p2", "all"):
            p2(workdir, args.hosts, args.keep, args.transport, args.reuse, args.code_cache)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
