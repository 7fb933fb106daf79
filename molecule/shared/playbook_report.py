"""Run ansible-playbook from a test and read its JSON report.

The project's ansible.cfg with the JSON callback as the only output: one
report per run, with every task's result per host and the recap's figures.
Under Molecule the run takes the scenario's executor (Mitogen, from the
scenario's ansible.cfg), as its converge did: `site.yml --check` on the
converged sandbox host took 65 s instead of 128 (demo host, 40baaab). The
scenarios' idempotence step is where stock Ansible is proven
(scripts/run-tests.py); a caller may ask for it with stock=True.
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
# The test harness's own callback plugins (this folder holds nothing else: Ansible
# imports every .py file of a callback folder).
HARNESS_CALLBACKS = PROJECT / "molecule/shared/plugins/callback"


# What a run takes from the calling scenario's ansible.cfg: its strategy
# (Mitogen's, a plugin of molecule/shared) and, with it, its host key policy
# (the scenarios' containers get new host keys on addresses known_hosts has
# seen; Mitogen's SSH enforces known_hosts unless told not to).
SCENARIO_EXECUTOR = ("strategy", "strategy_plugins", "host_key_checking")


def scenario_executor() -> dict[str, str]:
    """The executor settings of the Molecule scenario's ansible.cfg
    (ANSIBLE_CONFIG in a verify step); none outside Molecule."""
    scenario = configparser.ConfigParser(interpolation=None)
    path = os.environ.get("ANSIBLE_CONFIG", "")
    if not path or Path(path).resolve() == (PROJECT / "ansible.cfg").resolve() or not scenario.read(path):
        return {}
    defaults = scenario["defaults"] if scenario.has_section("defaults") else {}
    return {key: defaults[key] for key in SCENARIO_EXECUTOR if key in defaults}


def json_config(directory: Path, stock: bool = False) -> Path:
    """The project's ansible.cfg with the JSON report as the only output,
    and the scenario's executor unless stock."""
    config = configparser.ConfigParser(interpolation=None)
    config.read(PROJECT / "ansible.cfg")
    config["defaults"].update({"stdout_callback": "ansible.builtin.json", "roles_path": str(PROJECT / "roles"),
                               "collections_path": str(PROJECT / ".ansible/collections"),
                               # In place of the project's callbacks (they would print around the report):
                               # cheaper forked workers (plugins/callback/warm_workers.py), stock or not.
                               "callback_plugins": str(HARNESS_CALLBACKS), "callbacks_enabled": "warm_workers"})
    if not stock:
        config["defaults"].update(scenario_executor())
    path = directory / "ansible.cfg"
    with path.open("w") as handle:
        config.write(handle)
    return path


def run_playbook(directory: Path, args: list[str], timeout: int = 900, stock: bool = False) -> tuple[int, dict]:
    """ansible-playbook with these arguments; its exit status and its report."""
    status, report, _ = run_playbook_with_output(directory, args, timeout, stock=stock)
    return status, report


def run_playbook_with_output(directory: Path, args: list[str], timeout: int = 900,
                             executable: str = "ansible-playbook", stock: bool = False) -> tuple[int, dict, str]:
    """As run_playbook, and the run's whole stdout and stderr (where a secret
    must never appear)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(json_config(directory, stock)), "ANSIBLE_FORCE_COLOR": "false"}
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
