"""Run ansible-playbook from a test and read its JSON report.

The project's ansible.cfg with the JSON callback as the only output: one
report per run, with every task's result per host and the recap's figures.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def json_config(directory: Path) -> Path:
    """The project's ansible.cfg with the JSON report as the only output."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(PROJECT / "ansible.cfg")
    config["defaults"].pop("callbacks_enabled", None)
    config["defaults"].update({"stdout_callback": "ansible.builtin.json", "roles_path": str(PROJECT / "roles"),
                               "collections_path": str(PROJECT / ".ansible/collections")})
    path = directory / "ansible.cfg"
    with path.open("w") as handle:
        config.write(handle)
    return path


def run_playbook(directory: Path, args: list[str], timeout: int = 900) -> tuple[int, dict]:
    """ansible-playbook with these arguments; its exit status and its report."""
    status, report, _ = run_playbook_with_output(directory, args, timeout)
    return status, report


def run_playbook_with_output(directory: Path, args: list[str], timeout: int = 900,
                             executable: str = "ansible-playbook") -> tuple[int, dict, str]:
    """As run_playbook, and the run's whole stdout and stderr (where a secret
    must never appear)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(json_config(directory)), "ANSIBLE_FORCE_COLOR": "false"}
    for name in ("ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACKS_ENABLED", "ANSIBLE_CALLBACK_WHITELIST"):
        env.pop(name, None)
    run = subprocess.run([executable, *args], cwd=PROJECT, env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    if "{" not in run.stdout:
        raise AssertionError(f"ansible-playbook wrote no report (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return run.returncode, json.loads(run.stdout[run.stdout.index("{"):]), run.stdout + run.stderr


def changed_tasks(report: dict, host: str) -> list[str]:
    """The tasks that reported a change on this host: "play / task"."""
    return [f"{play['play']['name']} / {task['task']['name']}"
            for play in report["plays"] for task in play["tasks"]
            if task["hosts"].get(host, {}).get("changed")]


def failed_tasks(report: dict) -> list[str]:
    """The tasks that failed or found a host unreachable: "host: play / task: message"."""
    return [f"{host}: {play['play']['name']} / {task['task']['name']}: {str(result.get('msg', ''))[:500]}"
            for play in report["plays"] for task in play["tasks"]
            for host, result in task["hosts"].items() if result.get("failed") or result.get("unreachable")]
