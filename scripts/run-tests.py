#!/usr/bin/env python3
"""Run every check of the project in order and print one summary.

Steps: yamllint, ansible-lint, syntax checks, unit tests, then each Molecule
scenario step by step (the same sequence as `molecule test`), timing each step.
A scenario's hosts are destroyed even when a step fails. The run ends with its
profile: every step's time (also in steps.csv in the reports folder), the ten
slowest test cases, and where the CPU went (containers, VMs, the controller's
processes), sampled every 10 s into cpu.csv in the reports folder
(scripts/cpu_sampler.py). The last line has the form
"summary: N passed, N failed", counting pytest test cases and harness steps.

The lanes in LANES run side by side (their output lines prefixed with the
scenario's name, "lint" or "unit"); the steps of one lane run one after
another. The items of CHECKS_LANE run from the start in a lane of their
own that yields the CPU to the others. The scenarios of LATE_LANES get their
first steps done at once and the rest once another lane is done. --serial
runs everything in one lane.

Usage: scripts/run-tests.py [--scenario NAME ...] [--serial] [--skip-lint] [--skip-unit] [--no-molecule]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import os
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))
from cpu_sampler import CpuSampler  # noqa: E402

MAKE_STEPS = PROJECT / ".cache" / "make-steps.csv"
SCENARIOS = ["default", "fleet", "vm"]
# Two lanes side by side: the container scenarios one after the other, and
# the VM. Each scenario's hosts, ports and controller secrets store are its
# own (inventory/sandbox's llm_secrets_dir gives each Molecule scenario a
# store of its own), so they could run three abreast, and did: but the
# machine is CPU-bound either way, and three lanes on two cores cost more
# CPU for the same work (CI's run of 1e42fda had spent 9123 CPU-s when it
# was stopped at its 90 minutes, the VM's lane starved to half a core and
# still in its verify; the clean-clone run of 90ef530, two lanes: the whole
# `make test` in 8113 CPU-s, green). The unit tests and lint run in a third
# lane that yields the CPU (TAIL_NICENESS). --serial runs everything in one
# lane.
LANES = [["default"], ["vm"]]
# Lanes that run their PRESTAGED_STEPS at once and the rest once another lane
# is done. The fleet ran after the default scenario, in its lane: in the
# clean-clone run of 165de66 the VM's lane ended at 1700 s and the unit tests
# and lint at 1240, the fleet's 640 s began at 1780, and the machine was a
# third idle from 1600 s to the end (the fleet's converge and verify use
# little more than a core). Now its converge starts when the first lane ends.
LATE_LANES = [["fleet"]]
CHECKS_LANE = ["unit", "lint"]
MOLECULE_SEQUENCE = ["destroy", "syntax", "create", "prepare", "converge", "idempotence", "verify"]
# Built (or found in the cache) by the scenario's lane before its first step:
# on a machine without the cache the VM image takes about 3 minutes, which the
# container lane need not wait for.
# The vm scenario's Tang host is a sandbox container: its image comes first.
SCENARIO_IMAGES = {"vm": ["sh", "-c", "scripts/container-image.sh && scripts/vm-image.sh"]}
# fleet's tests re-run site.yml after a rolling update and require changed=0
# on every host; a separate idempotence step would only repeat that (and
# cost CI minutes it does not have).
SKIPPED_STEPS = {"fleet": {"idempotence"}}
# Steps run with Ansible's own executor instead of Mitogen (the scenarios'
# strategy): the default scenario's idempotence step re-runs site.yml as users
# run it, so stock Ansible must find the host that Mitogen converged converged.
STOCK_ANSIBLE_STEPS = {("default", "idempotence")}
STOCK_ANSIBLE = {"ANSIBLE_STRATEGY": "linear"}
# The QEMU guest boots (create) before the container scenarios converge: its
# first boot beside two converging container scenarios took over 4 min (both
# cores busy, systemd's units starting at emulated speed) where it takes under
# one on a quiet machine. The containers' own destroy, syntax, create and
# prepare steps run meanwhile.
BOOT_FIRST = ("vm", "create")
# The unit tests and lint (CHECKS_LANE) run from the start, beside both
# lanes, and yield the CPU to them: they take what the lanes leave idle (the
# clean-clone run of eaea68f left 657 of 8973 core-seconds idle, while they
# waited for a lane to be free and then ran 350 s at the end, after both
# lanes). Nice alone would not do:
# the kernel schedules each session (autogroup) and each container cgroup
# as one entity, so they run in a session of their own whose autogroup is
# niced. (Out of the run's process group, they end when their output pipe
# does: an interrupted run stops them at their next line.)
TAIL_NICENESS = 10
WAITS_FOR_BOOT = {"converge"}
# A later scenario of the same lane gets these steps done while the lane
# waits for that boot (the default scenario's prepare ended 55 s before the
# VM was up in CI's run of 0b9630a); they took 65 s of the lane after the
# default scenario's destroy.
PRESTAGED_STEPS = ["destroy", "syntax", "create", "prepare"]


def _yielding(cmd: list[str]) -> list[str]:
    """The command, run so that it yields the CPU: in the session of its own
    that Popen(start_new_session=True) gives it, the shell niced its session's
    autogroup (where the kernel has autogroups) and the command itself."""
    return ["sh", "-c", f'echo {TAIL_NICENESS} 2>/dev/null >/proc/self/autogroup; exec nice -n {TAIL_NICENESS} "$@"',
            "sh", *cmd]


class Run:
    def __init__(self, reports: Path) -> None:
        self.reports = reports
        self.steps: list[tuple[str, bool, float]] = []
        self.running: list[str] = []
        self.started = time.monotonic()
        self.step_starts: list[float] = []
        # What `make demo` and `make images` took in this checkout since the
        # last run (scripts/timed.sh): the profile starts with them.
        self.make_steps: list[tuple[str, bool, float]] = []
        if MAKE_STEPS.is_file():
            for row in csv.reader(MAKE_STEPS.read_text().splitlines()):
                if len(row) == 3:
                    self.make_steps.append((row[0], row[1] == "ok", float(row[2])))

    def step(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
             log: str | None = None, prefix: str = "", yielding: bool = False) -> bool:
        """Run one step; with `log`, its output is also kept in the reports
        folder (the scenario tests search the converge output for secrets);
        `prefix` marks its lines on the console."""
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        start = time.monotonic()
        self.running.append(name)
        started_at = start - self.started
        with subprocess.Popen(_yielding(cmd) if yielding else cmd, cwd=PROJECT, env={**os.environ, **(env or {})},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=yielding) as proc:
            assert proc.stdout is not None
            with open(self.reports / log if log else os.devnull, "wb") as kept:
                for line in proc.stdout:
                    sys.stdout.buffer.write(prefix.encode() + line)
                    sys.stdout.buffer.flush()
                    kept.write(line)
        elapsed = time.monotonic() - start
        self.running.remove(name)
        ok = proc.returncode == 0
        self.steps.append((name, ok, elapsed))
        self.step_starts.append(started_at)
        print(f"=== {name}: {'ok' if ok else 'FAILED'} in {elapsed:.1f}s", flush=True)
        return ok

    def pytest_counts(self) -> tuple[int, int, int]:
        passed = failed = skipped = 0
        for report in sorted(self.reports.glob("*.xml")):
            for suite in ET.parse(report).getroot().iter("testsuite"):
                tests = int(suite.get("tests", 0))
                bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                skip = int(suite.get("skipped", 0))
                passed += tests - bad - skip
                failed += bad
                skipped += skip
        return passed, failed, skipped

    def slowest_cases(self, count: int = 10) -> list[tuple[float, str, str]]:
        """(seconds, report, test case) of the slowest pytest cases of the run."""
        cases = []
        for report in sorted(self.reports.glob("*.xml")):
            for case in ET.parse(report).getroot().iter("testcase"):
                name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
                cases.append((float(case.get("time", 0) or 0), report.stem, name))
        return sorted(cases, reverse=True)[:count]

    def write_steps_csv(self) -> Path:
        path = self.reports / "steps.csv"
        with open(path, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["step", "ok", "started_s", "seconds"])
            for name, ok, elapsed in self.make_steps:
                writer.writerow([name, int(ok), "", f"{elapsed:.1f}"])
            for (name, ok, elapsed), started_at in zip(self.steps, self.step_starts):
                writer.writerow([name, int(ok), f"{started_at:.0f}", f"{elapsed:.1f}"])
        return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="Molecule scenario(s) to run")
    parser.add_argument("--serial", action="store_true", help="run everything one after another")
    parser.add_argument("--skip-lint", action="store_true")
    parser.add_argument("--skip-unit", action="store_true")
    parser.add_argument("--no-molecule", action="store_true", help="lint and unit tests only")
    args = parser.parse_args()

    started = time.monotonic()
    reports = Path(tempfile.mkdtemp(prefix="llm-test-reports-"))
    run = Run(reports)
    sampler = CpuSampler(reports / "cpu.csv", lambda: list(run.running))
    sampler.start()
    env = {"LLM_TEST_REPORTS": str(reports)}

    def lint(prefix: str = "") -> None:
        run.step("lint: yamllint", ["yamllint", "--strict", "."], prefix=prefix, yielding=True)
        run.step("lint: ansible-lint", ["ansible-lint", "--profile", "production"], prefix=prefix, yielding=True)
        for inventory in ("inventory/example/hosts.yml", "inventory/sandbox/hosts.yml"):
            run.step(f"syntax: site.yml with {inventory}",
                     ["ansible-playbook", "--syntax-check", "-i", inventory, "site.yml"], prefix=prefix,
                     yielding=True)

    def unit(prefix: str = "") -> None:
        # Most unit tests run ansible-playbook (CPU-bound): one worker per
        # core, each test file on one worker in file order (some build on
        # the one before).
        run.step("unit tests", ["pytest", "-q", "-n", "auto", "--dist", "loadfile", "tests/unit",
                                f"--junitxml={reports}/unit.xml"], prefix=prefix, yielding=True)

    checks = {"lint": lint, "unit": unit}

    booted = threading.Event()

    # Scenarios whose PRESTAGED_STEPS all passed ahead of their turn.
    prestaged: set[str] = set()

    def scenario_run(scenario: str, prefix: str = "", later: list[str] | None = None,
                     background: list[threading.Thread] | None = None) -> None:
        try:
            scenario_steps(scenario, prefix, later or [], background)
        finally:
            if scenario == BOOT_FIRST[0]:
                booted.set()  # also when the VM failed before or at its boot

    def molecule_step(scenario: str, action: str, prefix: str) -> bool:
        stock = (scenario, action) in STOCK_ANSIBLE_STEPS
        return run.step(f"molecule {scenario}: {action}" + (" (stock Ansible)" if stock else ""),
                        ["molecule", action, "-s", scenario], {**env, **STOCK_ANSIBLE} if stock else env,
                        log=f"molecule-{scenario}-{action}.log", prefix=prefix)

    def prestage(scenarios: list[str]) -> None:
        for scenario in scenarios:
            prefix = f"[{scenario}] "
            if all(molecule_step(scenario, action, prefix) for action in PRESTAGED_STEPS):
                prestaged.add(scenario)

    def scenario_steps(scenario: str, prefix: str, later: list[str],
                       background: list[threading.Thread] | None) -> None:
        # A scenario's own image first, in its lane (`make test` builds only
        # what every lane needs before they start).
        if scenario in SCENARIO_IMAGES and not run.step(f"images: {scenario}", SCENARIO_IMAGES[scenario],
                                                        prefix=prefix):
            return
        done = set(PRESTAGED_STEPS) if scenario in prestaged else set()
        try:
            for action in [a for a in MOLECULE_SEQUENCE if a not in SKIPPED_STEPS.get(scenario, set()) | done]:
                if scenario != BOOT_FIRST[0] and action in WAITS_FOR_BOOT and not booted.is_set():
                    prestage(later)
                    booted.wait()
                if not molecule_step(scenario, action, prefix):
                    break
                if (scenario, action) == BOOT_FIRST:
                    booted.set()
        finally:
            destroy = functools.partial(run.step, f"molecule {scenario}: destroy",
                                        ["molecule", "destroy", "-s", scenario], env,
                                        log=f"molecule-{scenario}-destroy-last.log", prefix=prefix)
            if background is None:
                destroy()
            else:
                background.append(threading.Thread(target=destroy, name=f"destroy {scenario}"))
                background[-1].start()

    chosen = {name for name, skipped in (("lint", args.skip_lint), ("unit", args.skip_unit)) if not skipped}
    if not args.no_molecule:
        chosen |= set(args.scenario or SCENARIOS)
    if BOOT_FIRST[0] not in chosen or args.serial:
        booted.set()  # nothing to wait for, or one lane (the wait would never end)
    check_items = [item for item in CHECKS_LANE if item in chosen]
    lanes = [[item for item in lane if item in chosen] for lane in LANES]
    late_lanes = [[item for item in lane if item in chosen] for lane in LATE_LANES]
    if args.serial:
        lanes, late_lanes = [[item for lane in lanes + late_lanes for item in lane]], []
    lanes = [lane for lane in lanes if lane]
    late_lanes = [lane for lane in late_lanes if lane]
    if not lanes:
        lanes, late_lanes = late_lanes[:1] or [[]], late_lanes[1:]
    if len(lanes) + len(late_lanes) == 1:
        lanes[0] += check_items  # after the one lane's scenarios
    elif check_items:
        lanes.append(check_items)  # a lane of their own, from the start
    # Set when the first lane that does not wait is done (LATE_LANES).
    lane_done = threading.Event()

    def lane_run(lane: list[str], parallel: bool, late: bool = False) -> None:
        # Beside another lane, a scenario with another after it gets that
        # one's early steps done while it waits for the VM's boot, and is
        # destroyed beside it (the default scenario's destroy took 69 s of
        # the lane, most of it the disk dropping its containers' layers).
        # A late lane gets its own early steps done at once, then waits.
        scenarios = [item for item in lane if item not in checks]
        background: list[threading.Thread] = []
        try:
            if late:
                prestage(scenarios[:1])
                lane_done.wait()
            for item in lane:
                prefix = f"[{item}] " if parallel else ""
                if item in checks:
                    checks[item](prefix)
                    continue
                later = scenarios[scenarios.index(item) + 1:] if parallel else []
                scenario_run(item, prefix, later, background if later else None)
            for thread in background:
                thread.join()
        finally:
            if not late:
                lane_done.set()

    parallel = len(lanes) + len(late_lanes) > 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(lanes) + len(late_lanes)) as pool:
        futures = [pool.submit(lane_run, lane, parallel) for lane in lanes]
        futures += [pool.submit(lane_run, lane, parallel, True) for lane in late_lanes]
        for done in futures:
            done.result()

    sampler.stop()
    wall = time.monotonic() - started
    print("\n=== timings (also in steps.csv)")
    for name, ok, elapsed in run.make_steps:
        print(f"{'ok    ' if ok else 'FAILED'} {elapsed:8.1f}s  {name}  (make, before this run)")
    for name, ok, elapsed in run.steps:
        print(f"{'ok    ' if ok else 'FAILED'} {elapsed:8.1f}s  {name}")
    total = sum(elapsed for _, _, elapsed in run.steps)
    before = sum(elapsed for _, _, elapsed in run.make_steps)
    print(f"total {total:.1f}s of steps added up, {wall:.1f}s wall clock"
          + (f"; {before + wall:.1f}s with the make steps before it" if before else ""))
    print("\n=== the ten slowest test cases")
    for seconds, report, name in run.slowest_cases():
        print(f"{seconds:8.1f}s  {report}: {name}")
    print(f"\n=== CPU seconds over the run, per source ({wall:.0f}s wall clock x 2 cores = {2 * wall:.0f}; "
          "every 10 s in cpu.csv)")
    for kind, name, seconds in sampler.totals():
        if seconds >= 1:
            print(f"{seconds:8.0f}  {kind:10s} {name}")
    run.write_steps_csv()
    MAKE_STEPS.unlink(missing_ok=True)
    print(f"reports: {reports}")

    tests_passed, tests_failed, skipped = run.pytest_counts()
    steps_passed = sum(1 for _, ok, _ in run.steps if ok)
    steps_failed = len(run.steps) - steps_passed
    print(f"pytest test cases: {tests_passed} passed, {tests_failed} failed, {skipped} skipped; "
          f"harness steps: {steps_passed} passed, {steps_failed} failed")
    print(f"summary: {tests_passed + steps_passed} passed, {tests_failed + steps_failed} failed")
    return 0 if tests_failed + steps_failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
