#!/usr/bin/env python3
"""Run a playbook of this project through ansible-runner and print a JSON summary.

The summary: playbook, inventory, status, rc, duration (s), per-host counts
(ok, changed, failed, unreachable, skipped), totals, wall time per role
(tasks outside any role count under "(play)"), and "host: task" for each
failed or unreachable task (names only, never messages). The benchmarks under bench/
import `run_playbook` from here.

Usage: scripts/run_playbook.py [-i INVENTORY] [-e NAME=VALUE ...] [--limit HOSTS]
                               [--check] [--tags TAGS] [PLAYBOOK]   (default: site.yml)
Exit status: 0 when every host succeeded, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import ansible_runner

PROJECT = Path(__file__).resolve().parent.parent
STATS = {"ok": "ok", "changed": "changed", "failures": "failed", "dark": "unreachable", "skipped": "skipped"}


def _failed_tasks(events: list[dict]) -> list[str]:
    """"host: task" for each task that failed (errors not ignored) or could not
    reach its host. Names only: a task's message may carry data."""
    failed = []
    for event in events:
        data = event.get("event_data", {})
        if event.get("event") in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            failed.append(f"{data.get('host')}: {data.get('task')}")
    return failed


def _role_times(events: list[dict]) -> dict[str, float]:
    """Wall time per role: each task lasts from its start to the next task's
    start (or the end of the run); a task's time goes to its role."""
    marks = []
    for event in events:
        name = event.get("event")
        if name in ("playbook_on_task_start", "playbook_on_handler_task_start", "playbook_on_stats"):
            role = event.get("event_data", {}).get("role") or "(play)"
            marks.append((event.get("created"), role, name))
    times: dict[str, float] = {}
    parsed = [(datetime.fromisoformat(c).timestamp(), role, name) for c, role, name in marks if c]
    for (start, role, name), (end, _, _) in zip(parsed, parsed[1:]):
        if name != "playbook_on_stats":
            times[role] = times.get(role, 0.0) + max(0.0, end - start)
    return {role: round(seconds, 2) for role, seconds in sorted(times.items(), key=lambda kv: -kv[1])}


def run_playbook(playbook: str = "site.yml", inventory: str = "inventory/sandbox/hosts.yml",
                 extravars: dict | None = None, limit: str | None = None, check: bool = False,
                 tags: str | None = None, quiet: bool = True, envvars: dict | None = None) -> dict:
    """Run one playbook and return its summary (see the module docstring)."""
    playbook_path = (PROJECT / playbook).resolve()
    inventory_path = (PROJECT / inventory).resolve()
    private = tempfile.mkdtemp(prefix="llm-runner-")
    cmdline = ["--check", "--diff"] if check else []
    env = {"ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), **os.environ, **(envvars or {})}
    # The ansible-playbook of this interpreter's venv, whatever PATH says.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    try:
        start = time.monotonic()
        runner = ansible_runner.run(
            private_data_dir=private, project_dir=str(PROJECT), playbook=str(playbook_path),
            inventory=str(inventory_path), extravars=extravars or {}, limit=limit, tags=tags,
            cmdline=" ".join(cmdline) or None, envvars=env, quiet=quiet, suppress_env_files=True)
        duration = time.monotonic() - start
        stats = runner.stats or {}
        hosts: dict[str, dict[str, int]] = {}
        for key, label in STATS.items():
            for host, count in (stats.get(key) or {}).items():
                hosts.setdefault(host, {v: 0 for v in STATS.values()})[label] = count
        for host in stats.get("processed") or {}:
            hosts.setdefault(host, {v: 0 for v in STATS.values()})
        totals = {label: sum(h[label] for h in hosts.values()) for label in STATS.values()}
        events = list(runner.events)
        return {
            "playbook": playbook, "inventory": inventory, "check": check,
            "status": runner.status, "rc": runner.rc, "duration_s": round(duration, 2),
            "hosts": hosts, "totals": totals, "role_time_s": _role_times(events),
            "failed_tasks": _failed_tasks(events),
        }
    finally:
        shutil.rmtree(private, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("playbook", nargs="?", default="site.yml")
    parser.add_argument("-i", "--inventory", default="inventory/sandbox/hosts.yml")
    parser.add_argument("-e", "--extra-var", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--limit")
    parser.add_argument("--tags")
    parser.add_argument("--check", action="store_true", help="--check --diff")
    parser.add_argument("--show-output", action="store_true", help="stream Ansible's output to stderr")
    args = parser.parse_args(argv)
    extravars = {}
    for item in args.extra_var:
        if "=" not in item:
            parser.error(f"-e {item}: expected NAME=VALUE")
        name, value = item.split("=", 1)
        extravars[name] = value
    if args.show_output:
        sys.stdout = sys.stderr  # runner prints the play to stdout; the JSON goes to the real stdout
    summary = run_playbook(args.playbook, args.inventory, extravars, args.limit, args.check, args.tags,
                           quiet=not args.show_output)
    sys.stdout = sys.__stdout__
    print(json.dumps(summary, indent=2))
    return 0 if summary["rc"] == 0 and summary["totals"]["failed"] == 0 and summary["totals"]["unreachable"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
