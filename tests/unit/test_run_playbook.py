"""scripts/run_playbook.py runs a real playbook through ansible-runner and
reports per-host counts, the status and the time per role."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT / "scripts" / "run_playbook.py"

spec = importlib.util.spec_from_file_location("run_playbook", SCRIPT)
run_playbook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_playbook)

PLAYBOOK = """
- name: Two tasks, one change
  hosts: local
  gather_facts: false
  tasks:
    - name: Report
      ansible.builtin.debug:
        msg: hello
    - name: Change something
      ansible.builtin.command: "true"
      changed_when: true
      failed_when: {fail}
"""


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "hosts.yml").write_text(
        "local:\n  hosts:\n    box:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    return tmp_path


def test_summary_counts_ok_and_changed_per_host(workdir):
    (workdir / "play.yml").write_text(PLAYBOOK.format(fail="false"))
    summary = run_playbook.run_playbook(str(workdir / "play.yml"), str(workdir / "hosts.yml"))
    assert summary["status"] == "successful" and summary["rc"] == 0
    assert summary["hosts"]["box"] == {"ok": 2, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 0}
    assert summary["totals"]["changed"] == 1
    assert summary["duration_s"] > 0
    assert set(summary["role_time_s"]) == {"(play)"}
    assert summary["failed_tasks"] == []


def test_cli_prints_json_and_fails_when_a_host_fails(workdir):
    (workdir / "play.yml").write_text(PLAYBOOK.format(fail="true"))
    proc = subprocess.run([sys.executable, str(SCRIPT), "-i", str(workdir / "hosts.yml"), str(workdir / "play.yml")],
                          capture_output=True, text=True, check=False, cwd=PROJECT)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "failed"
    assert summary["hosts"]["box"]["failed"] == 1
    assert summary["failed_tasks"] == ["box: Change something"]


def test_role_time_splits_wall_time_between_tasks_of_each_role():
    events = [
        {"event": "playbook_on_task_start", "created": "2026-01-01T00:00:00.000000", "event_data": {"role": "vllm"}},
        {"event": "runner_on_ok", "created": "2026-01-01T00:00:01.000000", "event_data": {"role": "vllm"}},
        {"event": "playbook_on_task_start", "created": "2026-01-01T00:00:03.500000", "event_data": {}},
        {"event": "playbook_on_handler_task_start", "created": "2026-01-01T00:00:04.000000",
         "event_data": {"role": "vllm"}},
        {"event": "playbook_on_stats", "created": "2026-01-01T00:00:10.000000", "event_data": {}},
    ]
    assert run_playbook._role_times(events) == {"vllm": 9.5, "(play)": 0.5}
