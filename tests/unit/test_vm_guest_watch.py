"""The VM suite stops waiting on a guest that cannot come back: a reboot is
failed as soon as QEMU is gone, the kernel panics or the console falls
silent, and the tests after it fail at once instead of timing out one by one.
A stand-in process plays QEMU here; QEMU's own "paused" status comes from its
monitor (conftest.qemu_status, read on a real paused VM when it was written)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def vm_conftest(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_CACHE", str(tmp_path))
    spec = importlib.util.spec_from_file_location("vm_conftest", PROJECT / "molecule/vm/tests/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def guest(tmp_path):
    """A stand-in for a VM's run dir: instance.json naming a live process
    (instead of QEMU) and a console log; the process is ended by the test
    that wants QEMU gone."""
    run_dir = tmp_path / "vm" / "run" / "llm-vm"
    run_dir.mkdir(parents=True)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (run_dir / "instance.json").write_text(json.dumps({"name": "llm-vm", "pid": process.pid}))
    (run_dir / "console.log").write_text("[  OK  ] Reached target Reboot.\n")
    yield run_dir, process
    process.kill()
    process.wait()


def test_a_guest_that_keeps_printing_is_not_taken_for_dead(vm_conftest, guest):
    run_dir, _ = guest
    watch = vm_conftest.GuestWatch("llm-vm")
    with open(run_dir / "console.log", "a") as console:
        console.write("[    1.2] Linux version 6.1.0\n")
    assert watch.why_dead() is None


def test_a_reboot_is_given_up_at_once_when_qemu_is_gone(vm_conftest, guest):
    _, process = guest
    watch = vm_conftest.GuestWatch("llm-vm")
    process.kill()
    process.wait()
    assert watch.why_dead() == "the QEMU process is gone"


def test_a_kernel_panic_on_the_console_ends_the_wait(vm_conftest, guest):
    run_dir, _ = guest
    watch = vm_conftest.GuestWatch("llm-vm")
    with open(run_dir / "console.log", "a") as console:
        console.write("[    2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    assert watch.why_dead() == "the guest kernel panicked"


def test_a_console_silent_past_the_stall_limit_ends_the_wait(vm_conftest, guest, monkeypatch):
    monkeypatch.setattr(vm_conftest, "CONSOLE_STALL_S", 0)
    watch = vm_conftest.GuestWatch("llm-vm")
    assert watch.why_dead() == "no console output for 0 s and no SSH"


def test_tests_after_a_dead_guest_fail_at_once(vm_conftest):
    vm_conftest.pytest_runtest_setup(None)  # nothing known to be down: runs
    vm_conftest.GUEST_DOWN["llm-vm"] = "the QEMU process is gone"
    with pytest.raises(pytest.fail.Exception, match="the guest is down: llm-vm: the QEMU process is gone"):
        vm_conftest.pytest_runtest_setup(None)
