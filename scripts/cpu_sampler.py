"""Where the CPU goes while the tests run: a sampler thread for run-tests.py.

Every `interval` seconds it reads, without starting any process of its own
(but `podman ps` when a container it has not seen appears):
  - each sandbox container's CPU from its cgroup (cpuacct.usage counts every
    process that ever ran inside it, podman exec'd ones included);
  - each QEMU VM's CPU (the emulator's process, all its threads);
  - this machine's other processes, grouped by what they are (ansible,
    molecule, pytest/testinfra, chromium, podman/conmon/runc, ssh, ...): a
    process's own time plus that of the children it has reaped, so short-lived
    workers count towards the long-lived parent that waited for them;
  - the machine's total busy time (/proc/stat).
It appends one CSV row per source and interval: seconds since the start, the
steps running then, kind, name, CPU seconds in the interval and the cores
that makes. `totals()` gives the CPU seconds per source over the whole run.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

TICK = os.sysconf("SC_CLK_TCK")
CGROUP_ROOTS = [Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup/cpu,cpuacct")]
CONTAINER_ID = re.compile(r"libpod-([0-9a-f]{64})")
# What a controller-side process is, by its command line (first match wins).
PROCESS_KINDS = [
    ("ansible", re.compile(r"ansible-playbook|ansible-runner|/ansible(-[a-z]+)? |ansible\.module")),
    ("ansible-lint", re.compile(r"ansible-lint|yamllint")),
    ("molecule", re.compile(r"/molecule ")),
    ("pytest", re.compile(r"pytest|testinfra")),
    ("chromium", re.compile(r"chrom|playwright")),
    ("podman", re.compile(r"^(\S*/)?(podman|conmon|runc|netavark|aardvark|slirp4netns|catatonit)\b")),
    ("ssh", re.compile(r"^(\S*/)?(ssh|scp|sftp)\b")),
    ("pip/apt/debootstrap", re.compile(r"pip|apt|dpkg|debootstrap|mkfs|qemu-img")),
    ("python", re.compile(r"python")),
]


def _busy_seconds() -> float:
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK  # all but idle and iowait


def _container_cgroups() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in CGROUP_ROOTS:
        if root.is_dir():
            for usage in root.glob("**/libpod-*/cpuacct.usage"):
                match = CONTAINER_ID.search(str(usage))
                if match:
                    found.setdefault(match.group(1), usage)
            break
    return found


class CpuSampler(threading.Thread):
    def __init__(self, csv_path: Path, running_steps: Callable[[], list[str]], interval: float = 10.0) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self.csv_path = csv_path
        self.running_steps = running_steps
        self.interval = interval
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.names: dict[str, str] = {}  # container id -> name
        self.previous: dict[str, tuple[str, str, float, float, str]] = {}  # see _read
        self.total: dict[tuple[str, str], float] = defaultdict(float)  # (kind, name) -> CPU s
        self.lock = threading.Lock()

    # --- reading ---------------------------------------------------------------

    def _container_name(self, cid: str) -> str:
        if cid not in self.names:
            listing = subprocess.run(["podman", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
                                     capture_output=True, text=True, check=False).stdout
            self.names.update(line.split(maxsplit=1) for line in listing.splitlines() if " " in line)
        return self.names.get(cid, cid[:12])

    def _read(self) -> dict[str, tuple[str, str, float, float, str]]:
        """Per source, keyed by what identifies it for good (a container's id,
        a process's pid and start time): kind, name, its own cumulative CPU
        seconds, those of the children it has reaped, and its parent's pid."""
        now: dict[str, tuple[str, str, float, float, str]] = {
            "machine": ("machine", "busy", _busy_seconds(), 0.0, "")}
        for cid, usage in _container_cgroups().items():
            try:
                now[f"container:{cid}"] = ("container", self._container_name(cid), int(usage.read_text()) / 1e9,
                                           0.0, "")
            except (OSError, ValueError):
                pass
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                continue
            if "libpod-" in cgroup:
                continue  # counted with its container
            key = f"proc:{pid}:{fields[19]}"  # pid and start time
            own = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
            reaped = (int(fields[13]) + int(fields[14])) / TICK  # cutime, cstime
            known = self.previous.get(key)
            if known:  # classified when first seen: a zombie has no command line
                now[key] = (known[0], known[1], own, reaped, fields[1])
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            vm = re.search(r"qemu-system\S*\s.*-name (?:sandbox-)?(\S+)", cmdline)
            kind, name = ("vm", vm.group(1)) if vm else \
                ("controller", next((k for k, pattern in PROCESS_KINDS if pattern.search(cmdline)), "other"))
            now[key] = (kind, name, own, reaped, fields[1])
        return now

    def sample(self) -> None:
        now = self._read()
        elapsed = time.monotonic() - self.started
        interval: dict[tuple[str, str], float] = defaultdict(float)
        first = not self.previous
        # A child that ended since the last sample was counted up to then; its
        # parent's reaped time now holds all of it: only the rest is new.
        # Ended parents pass it on to the nearest one still running.
        counted_children: dict[str, float] = defaultdict(float)
        live_by_pid = {key.split(":")[1]: key for key in now if key.startswith("proc:")}
        ended_by_pid = {key.split(":")[1]: key for key in self.previous
                        if key.startswith("proc:") and key not in now}
        for key in ended_by_pid.values():
            _, _, own, reaped, ppid = self.previous[key]
            for _ in range(64):  # up the chain of ended parents
                if ppid in live_by_pid:
                    counted_children[live_by_pid[ppid]] += own + reaped
                    break
                if ppid not in ended_by_pid:
                    break
                ppid = self.previous[ended_by_pid[ppid]][4]
        for key, (kind, name, own, reaped, _) in now.items():
            # conmon reaps a container's init, and PID 1 conmon once it ends:
            # their reaped time is the container's CPU, already counted
            # through its cgroup (counted again, one container's whole CPU
            # showed up as "other" when it was removed).
            counts_reaped = name != "podman" and not key.startswith("proc:1:")
            known = self.previous.get(key)
            if known:
                new = own - known[2]
                if counts_reaped:
                    new += max(0.0, reaped - known[3] - counted_children[key])
            else:  # first seen now: started after the last sample (none of it counts at the first)
                new = 0.0 if first else own + (reaped if counts_reaped else 0.0)
            interval[(kind, name)] += max(0.0, new)
        self.previous = now
        steps = "+".join(self.running_steps()) or "-"
        with self.lock:
            for source, seconds in interval.items():
                self.total[source] += seconds
            new_file = not self.csv_path.exists()
            with open(self.csv_path, "a", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                if new_file:
                    writer.writerow(["elapsed_s", "steps", "kind", "name", "cpu_s", "cores"])
                for (kind, name), seconds in sorted(interval.items()):
                    if seconds >= 0.05:
                        writer.writerow([f"{elapsed:.0f}", steps, kind, name, f"{seconds:.1f}",
                                         f"{seconds / self.interval:.2f}"])

    # --- thread ------------------------------------------------------------------

    def run(self) -> None:
        self.sample()  # the baseline every later sample is measured from
        while not self.stop_event.wait(self.interval):
            try:
                self.sample()
            except Exception as error:  # noqa: BLE001 - a sampler must never stop the tests
                print(f"cpu sampler: {error}", flush=True)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        try:
            self.sample()
        except Exception as error:  # noqa: BLE001 - a sampler must never fail the tests
            print(f"cpu sampler: {error}", flush=True)

    def totals(self) -> list[tuple[str, str, float]]:
        with self.lock:
            return sorted(((k, n, s) for (k, n), s in self.total.items()), key=lambda row: -row[2])
