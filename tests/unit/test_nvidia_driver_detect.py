"""A host in llm_servers without an NVIDIA GPU stops at the role's first,
read-only step with a message that says why and what to do; test hosts may
opt out. Runs the role's real detection against this machine's own /sys."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The module runs on "localhost": with the test run's own Python.
PYTHON = {"ansible_python_interpreter": sys.executable}
DETECT = "- ansible.builtin.include_role:\n    name: nvidia_driver\n    tasks_from: detect\n"


def _has_nvidia_gpu() -> bool:
    for device in Path("/sys/bus/pci/devices").glob("*"):
        try:
            if (device / "vendor").read_text().strip() == "0x10de" and \
                    (device / "class").read_text().strip().startswith(("0x0300", "0x0302")):
                return True
        except OSError:
            continue
    return False


pytestmark = pytest.mark.skipif(_has_nvidia_gpu(), reason="this machine has an NVIDIA GPU")


def test_host_without_gpu_fails_before_any_change_with_the_way_out(run_playbook):
    result = run_playbook(DETECT, {**PYTHON, "nvidia_driver_require_gpu": True})
    assert result.returncode != 0
    assert "No NVIDIA GPU found on localhost's PCI bus" in result.stdout
    assert "nvidia_driver_require_gpu: false" in result.stdout
    assert "changed=0" in result.stdout


def test_test_host_without_gpu_may_go_on_when_allowed(run_playbook):
    result = run_playbook(DETECT, {**PYTHON, "nvidia_driver_require_gpu": False})
    assert result.returncode == 0, result.stdout + result.stderr
