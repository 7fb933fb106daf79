"""Helpers for unit tests that run real ansible-playbook against localhost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "molecule" / "shared"))
# The ansible-playbook of the interpreter running the tests (the project venv).
_VENV_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
ANSIBLE_PLAYBOOK = str(_VENV_PLAYBOOK) if _VENV_PLAYBOOK.exists() else "ansible-playbook"


@pytest.fixture
def run_playbook(tmp_path):
    """Run a playbook body on localhost with extra vars; return the completed process."""

    def run(tasks: str, extra_vars: dict) -> subprocess.CompletedProcess:
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
             "-e", json.dumps(extra_vars)],
            cwd=PROJECT, env=env, capture_output=True, text=True, check=False,
        )

    return run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The generated test model (scripts/make-tiny-model.py); treat as read-only."""
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([sys.executable, str(PROJECT / "scripts" / "make-tiny-model.py"), str(out)],
                   check=True, capture_output=True)
    return out
