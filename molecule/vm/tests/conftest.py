"""Fixtures for the QEMU VM scenario (molecule/vm).

The VM is started by ``scripts/vm.sh start <platform name>``, which writes
``<cache>/vm/run/<name>/instance.json``::

    {"name": "llm-vm", "address": "127.0.0.1", "port": <ssh port>, "user": "root",
     "identity_file": "...", "ports": {"443": <host port>, "8000": <host port>},
     "pid": <qemu pid>, "run_dir": "..."}

All forwarded ports listen on 127.0.0.1 of the controller, so tests can reach the
guest's services "from outside" (through QEMU user networking, i.e. through the
guest firewall). A port that ufw blocks shows up as a connect *timeout*, not a refusal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(PROJECT / "molecule" / "shared"))

import netprobe  # noqa: E402  (path set just above)

DEFAULT_VM_NAME = "llm-vm"


def sandbox_cache() -> Path:
    """Same rule as scripts/vm.sh: SANDBOX_CACHE, else XDG_CACHE_HOME, else ~/.cache."""
    if os.environ.get("SANDBOX_CACHE"):
        return Path(os.environ["SANDBOX_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "private-llm-sandbox"


def vm_run_dir(name: str) -> Path:
    return sandbox_cache() / "vm" / "run" / name


def load_instance(name: str) -> dict:
    path = vm_run_dir(name) / "instance.json"
    if not path.is_file():
        pytest.fail(f"{path} missing: is the VM running? (molecule create -s vm)")
    return json.loads(path.read_text())


def name_of(host) -> str:
    """Inventory name of a testinfra host; without one, $VM_NAME or llm-vm."""
    return host.backend.get_hostname() if host is not None else os.environ.get("VM_NAME", DEFAULT_VM_NAME)


@pytest.fixture
def vm_name(request: pytest.FixtureRequest) -> str:
    """Inventory name of the host under test (falls back to $VM_NAME or llm-vm)."""
    return name_of(request.getfixturevalue("host") if "host" in request.fixturenames else None)


@pytest.fixture
def vm_instance(vm_name: str) -> dict:
    """The VM's instance.json as a dict (address, port, ports['443'|'8000'], ...)."""
    return load_instance(vm_name)


def console_tail(name: str, lines: int = 60) -> str:
    """The last lines of the guest's serial console (boot progress, kernel messages)."""
    path = vm_run_dir(name) / "console.log"
    if not path.is_file():
        return f"(no {path})"
    text = path.read_bytes().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _monitor_reply(sock: socket.socket) -> str:
    reply = b""
    while not reply.endswith(b"(qemu) "):
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply.decode("utf-8", "replace")


def qemu_status(name: str) -> str:
    """QEMU's own view of the guest ("running", "paused (io-error)", ...), from
    its monitor socket: tells a hung guest from one that QEMU stopped."""
    path = vm_run_dir(name) / "monitor.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            _monitor_reply(sock)  # greeting
            sock.sendall(b"info status\n")
            lines = _monitor_reply(sock).splitlines()
    except OSError as error:
        return f"(monitor {path}: {error})"
    return " ".join(line.strip() for line in lines if line.startswith("VM status")) or " | ".join(lines)


def host_pressure() -> str:
    """This machine's load and free memory: a starved emulator looks like a hung guest."""
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"load {' '.join(load)}, MemAvailable {meminfo['MemAvailable'].strip()}"


def guest_state(name: str) -> str:
    return (f"QEMU: {qemu_status(name)}\nthis machine: {host_pressure()}\n"
            f"--- serial console, last lines ---\n{console_tail(name)}")


@pytest.fixture(scope="module")
def reboot_guest(host):
    """Reboot the guest and wait until Ansible gets in again; a failure names
    the module's error, QEMU's view of the guest and the console's tail."""

    def reboot(timeout: int) -> None:
        try:
            result = host.ansible("ansible.builtin.reboot", f"reboot_timeout={timeout}", check=False, become=True)
        except host.ansible.AnsibleException as error:  # the module failed
            result = error.result
        except AssertionError as error:  # testinfra: `ansible` found the host unreachable
            result = {"failed": True, "msg": str(error)[-3000:]}
        if result.get("failed") or not result.get("rebooted"):
            pytest.fail(f"reboot: {result.get('msg', result)}\n{guest_state(name_of(host))}")

    return reboot


_STATE_REPORTS_LEFT = [3]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The first failing tests of a run carry the guest's state in their report:
    a guest that stopped answering leaves no other trace once it is destroyed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _STATE_REPORTS_LEFT[0] > 0:
        _STATE_REPORTS_LEFT[0] -= 1
        report.sections.append(("guest state", guest_state(name_of(getattr(item, "funcargs", {}).get("host")))))


@pytest.fixture(scope="module")
def vm_listeners(host):
    """Listeners on the gateway port and on a port no rule opens."""
    units = [netprobe.start_listener(host, port) for port in (443, 8000)]
    yield
    for unit in filter(None, units):
        host.run("systemctl stop %s", unit)


@pytest.fixture(scope="session")
def run_playbook(request):
    """Run a playbook against the scenario's inventory; fail the test on error."""
    inventory = request.config.option.ansible_inventory

    def run(playbook: str, extra_vars: dict | None = None, expect_rc: int = 0) -> subprocess.CompletedProcess:
        cmd = ["ansible-playbook", "-i", inventory, str(PROJECT / playbook)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        result = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, check=False,
                                env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "false"})
        assert result.returncode == expect_rc, result.stdout[-4000:] + result.stderr[-2000:]
        return result

    return run
