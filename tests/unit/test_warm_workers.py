"""The test harness's warm_workers callback (molecule/shared/plugins/callback):
a worker that Ansible forks after a play started with it enabled finds the
parent's heap frozen and the filter plugins imported by the parent before the
fork; without it, neither. What the worker sees is told by a filter plugin of
this test's own, which Jinja runs in the worker that templates the task."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ANSIBLE_PLAYBOOK, PROJECT

sys.path.insert(0, str(PROJECT / "molecule" / "shared"))
import playbook_report  # noqa: E402  (path set just above)

PROBE_FILTER = '''
import gc, os

IMPORTED_IN = os.getpid()  # the process that loaded this filter file


def worker_view(_):
    return {"frozen": gc.get_freeze_count(), "pid": os.getpid(), "imported_in": IMPORTED_IN}


class FilterModule:
    def filters(self):
        return {"worker_view": worker_view}
'''

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Look from the worker
      ansible.builtin.debug:
        msg: "{{ 0 | worker_view }}"
"""


def worker_view(tmp_path, callbacks: str) -> dict:
    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / "probe.py").write_text(PROBE_FILTER)
    (tmp_path / "play.yml").write_text(PLAY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FILTER_PLUGINS": str(tmp_path / "filters"), "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
           "ANSIBLE_CALLBACK_PLUGINS": str(playbook_report.HARNESS_CALLBACKS), "ANSIBLE_CALLBACKS_ENABLED": callbacks}
    run = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml")],
                         env=env, capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{"):])
    return report["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]


def test_a_worker_forked_after_the_warm_up_has_a_frozen_heap_and_the_plugins_loaded(tmp_path):
    view = worker_view(tmp_path, "warm_workers")
    # The filter files (this one among them) were loaded by the parent, before the fork.
    assert view["imported_in"] != view["pid"], view
    assert view["frozen"] > 10000, view


def test_without_it_a_worker_finds_neither(tmp_path):
    view = worker_view(tmp_path, "ansible.posix.timer")
    assert view["imported_in"] == view["pid"] and view["frozen"] == 0, view
