"""Helpers for unit tests that run real ansible-playbook against localhost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "molecule" / "shared"))
import playbook_report  # noqa: E402 (molecule/shared: ansible-playbook with a JSON report)

# The ansible-playbook of the interpreter running the tests (the project venv).
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"


@pytest.fixture
def run_playbook(tmp_path):
    """Run a playbook body on localhost with extra vars (and further
    ansible-playbook arguments); return the completed process."""

    def run(tasks: str, extra_vars: dict, *args: str) -> subprocess.CompletedProcess:
        playbook = tmp_path / "play.yml"
        playbook.write_text(
            "- hosts: localhost\n  gather_facts: false\n  tasks:\n" + textwrap.indent(tasks, "    ")
        )
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"),
            "ANSIBLE_NOCOLOR": "1",
        }
        return subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook),
             "-e", json.dumps(extra_vars), *args],
            cwd=PROJECT, env=env, capture_output=True, text=True, check=False,
        )

    return run


@dataclass(frozen=True)
class CaseResult:
    """One case of a batch: `returncode` is 0 when its host failed no task,
    `stdout` the messages its tasks returned (assert and fail messages,
    debug output) in order, `output` the whole run's stdout and stderr (all
    cases: what a secret must never appear in)."""

    returncode: int
    stdout: str
    output: str


def _messages(result) -> list[str]:
    """The `msg` strings of a task result, loop items included."""
    found = []
    if isinstance(result, dict):
        if isinstance(result.get("msg"), str):
            found.append(result["msg"])
        for item in result.get("results") or []:
            found += _messages(item)
    return found


@pytest.fixture(scope="session")
def run_cases(tmp_path_factory):
    """Run a playbook body once for many cases: one inventory host per case,
    all on this machine (connection local), in one ansible-playbook run.

    Each case's settings become facts of its host before the tasks run, so
    they take precedence over role defaults and role vars as extra vars
    would; the host's name is the case's name. A case whose check fails
    stops only its own host. Returns {case name: CaseResult}."""

    def run(tasks: str, cases: dict[str, dict]) -> dict[str, CaseResult]:
        folder = tmp_path_factory.mktemp("cases")
        hosts = {}
        for name, case in cases.items():
            connection = {key: value for key, value in case.items() if key.startswith("ansible_")}
            hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                           **connection,
                           "case_settings": {k: v for k, v in case.items() if not k.startswith("ansible_")}}
        (folder / "hosts.json").write_text(json.dumps({"all": {"hosts": hosts}}))
        (folder / "play.yml").write_text(
            "- hosts: all\n  gather_facts: false\n  tasks:\n"
            "    - name: Take the case's settings\n"
            "      ansible.builtin.set_fact:\n"
            "        \"{{ item.key }}\": \"{{ item.value }}\"\n"
            "      loop: \"{{ case_settings | dict2items }}\"\n"
            "      no_log: true\n"
            + textwrap.indent(tasks, "    ")
        )
        _, report, output = playbook_report.run_playbook_with_output(
            folder, ["-i", str(folder / "hosts.json"), str(folder / "play.yml")], executable=ANSIBLE_PLAYBOOK)
        results = {}
        for name in cases:
            stats = report["stats"].get(name, {})
            messages = [message for play in report["plays"] for task in play["tasks"]
                        for message in _messages(task["hosts"].get(name))]
            failed = stats.get("failures", 0) + stats.get("unreachable", 0) > 0 or not stats
            results[name] = CaseResult(2 if failed else 0, "\n".join(messages), output)
        return results

    return run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The generated test model (scripts/make-tiny-model.py); treat as read-only."""
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "make-tiny-model.py"), str(out)],
                   check=True, capture_output=True)
    return out
