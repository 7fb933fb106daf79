"""roles/llm entry point venv_switch, run for real on folders here: once a
venv answered, <root>/venv links it, the newest llm_venvs_kept venvs that
served (by when each started serving) stay, and the others and those that
never served go; under --check nothing on disk changes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TASKS = """\
- name: Switch to the venv that answered
  ansible.builtin.include_role:
    name: llm
    tasks_from: venv_switch
"""

SERVED = ".llm-venv-served"


@pytest.fixture
def root(tmp_path) -> Path:
    """Four venvs: a, b, c served (in that order, c last), d never did; the
    link names b, the venv that served before c was installed."""
    venvs = tmp_path / "opt" / "venvs"
    for age, name in enumerate(["a", "b", "c", "d"]):
        venv = venvs / name
        (venv / "bin").mkdir(parents=True)
        (venv / ".llm-venv-complete").write_text("")
        if name != "d":
            marker = venv / SERVED
            marker.write_text("")
            os.utime(marker, (1_000_000 + age * 100, 1_000_000 + age * 100))
    (tmp_path / "opt" / "venv").symlink_to(venvs / "b")
    return tmp_path / "opt"


def switch(run_playbook, root, venv, kept, *extra):
    return run_playbook(TASKS, {"llm_venv_root": str(root), "llm_venv": str(root / "venvs" / venv),
                                "llm_venvs_kept": kept, "ansible_python_interpreter": sys.executable}, *extra)


def test_the_newest_venvs_that_served_stay_and_those_that_never_served_go(run_playbook, root):
    result = switch(run_playbook, root, "c", 2)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(p.name for p in (root / "venvs").iterdir()) == ["b", "c"]
    assert os.readlink(root / "venv") == str(root / "venvs" / "c")


def test_keeping_one_keeps_only_the_venv_that_serves(run_playbook, root):
    result = switch(run_playbook, root, "c", 1)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(p.name for p in (root / "venvs").iterdir()) == ["c"]


def test_a_new_venv_that_answered_is_marked_and_keeps_the_newest_before_it(run_playbook, root):
    (root / "venvs" / "e" / "bin").mkdir(parents=True)
    result = switch(run_playbook, root, "e", 2)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(p.name for p in (root / "venvs").iterdir()) == ["c", "e"]
    assert (root / "venvs" / "e" / SERVED).exists()


def test_check_mode_plans_the_switch_to_a_venv_not_yet_there_and_changes_nothing(run_playbook, root):
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    result = switch(run_playbook, root, "new", 2, "--check")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "changed=" in result.stdout and "changed=0" not in result.stdout, result.stdout[-3000:]
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    assert os.readlink(root / "venv") == str(root / "venvs" / "b")
