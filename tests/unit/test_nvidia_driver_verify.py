"""Once the driver is loaded, the role's nvidia-smi check passes only when
every GPU is healthy (and, if set, the expected number is there); otherwise
the play fails showing nvidia-smi's own output. Runs the role's real
verify tasks against a stand-in nvidia-smi that prints the sample outputs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "nvidia" / "smi"

VERIFY = """\
- ansible.builtin.include_role:
    name: nvidia_driver
    tasks_from: verify
- ansible.builtin.debug:
    msg: "FACTS {{ {'count': nvidia_driver_gpu_count, 'models': nvidia_driver_gpu_models,
      'memory': nvidia_driver_gpu_memory_mib, 'version': nvidia_driver_version,
      'ready': nvidia_driver_ready} | to_json }}"
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """Put an nvidia-smi first on PATH that prints a sample and exits with rc."""

    def install(sample: str, rc: int = 0):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        script = bin_dir / "nvidia-smi"
        script.write_text(f"#!/bin/sh\ncat '{DATA / sample}'\nexit {rc}\n")
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")

    return install


def verify_vars(gpus_on_bus: int, expected: int = 0) -> dict:
    return {
        "ansible_python_interpreter": sys.executable,
        "nvidia_driver_install_packages": True,
        "nvidia_driver_reboot_pending": False,
        "nvidia_driver_persistence_mode": True,
        "nvidia_driver_pci_gpus": [{"address": f"0000:{n:02x}:00.0"} for n in range(gpus_on_bus)],
        "nvidia_driver_expected_gpu_count": expected,
    }


def test_eight_healthy_gpus_pass_and_become_facts(run_playbook, fake_smi):
    fake_smi("8x-h100-sxm.txt")
    result = run_playbook(VERIFY, verify_vars(8, expected=8))
    assert result.returncode == 0, result.stdout
    assert '\\"count\\": 8' in result.stdout
    assert '\\"memory\\": [81559, 81559, 81559, 81559, 81559, 81559, 81559, 81559]' in result.stdout
    assert '\\"version\\": \\"580.95.05\\"' in result.stdout and '\\"ready\\": true' in result.stdout


def test_missing_gpus_fail_the_play_with_nvidia_smis_output(run_playbook, fake_smi):
    fake_smi("single-h100.txt")
    result = run_playbook(VERIFY, verify_vars(8, expected=8))
    assert result.returncode != 0
    assert "does not show 8 healthy GPUs" in result.stdout
    assert "(8 on the PCI bus)" in result.stdout
    assert "NVIDIA H100 PCIe, 81559, 00000000:17:00.0" in result.stdout


def test_gpu_in_a_bad_state_fails_the_play_even_without_an_expected_count(run_playbook, fake_smi):
    fake_smi("bad-state.txt")
    result = run_playbook(VERIFY, verify_vars(8))
    assert result.returncode != 0
    assert "does not show only healthy GPUs" in result.stdout
    assert "[Unknown Error]" in result.stdout and "Unable to determine the device handle" in result.stdout


def test_driver_that_does_not_load_fails_the_play_with_the_reason(run_playbook, fake_smi):
    fake_smi("version-mismatch.txt", rc=18)
    result = run_playbook(VERIFY, verify_vars(1))
    assert result.returncode != 0
    assert "rc=18" in result.stdout and "Driver/library version mismatch" in result.stdout


def test_no_check_and_pci_count_while_a_reboot_is_pending(run_playbook, fake_smi):
    fake_smi("version-mismatch.txt", rc=18)  # would fail if it ran
    result = run_playbook(VERIFY, {**verify_vars(4, expected=4), "nvidia_driver_reboot_pending": True})
    assert result.returncode == 0, result.stdout
    assert '\\"count\\": 4' in result.stdout and '\\"ready\\": false' in result.stdout


@pytest.mark.skipif(shutil.which("dpkg-query") is None or Path("/proc/driver/nvidia").exists(),
                    reason="needs a Debian-family machine without the NVIDIA driver")
def test_pending_reboot_is_announced_and_not_done_when_not_allowed(run_playbook):
    # This machine has no NVIDIA driver installed or loaded: as a GPU host
    # right after a first install would look, a reboot is due.
    tasks = "- ansible.builtin.include_role:\n    name: nvidia_driver\n    tasks_from: reboot\n"
    result = run_playbook(tasks, {"ansible_python_interpreter": sys.executable,
                                  "nvidia_driver_install_packages": True,
                                  "nvidia_driver_reboot_allowed": False,
                                  "nvidia_driver_reboot_timeout": 1800})
    assert result.returncode == 0, result.stdout
    assert "REBOOT PENDING on localhost" in result.stdout
    assert "the nvidia-smi check is skipped" in result.stdout
    assert "changed=0" in result.stdout  # a reboot would count as a change
