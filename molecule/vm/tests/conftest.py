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
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import testinfra

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


# Guests that stopped answering, with the reason: every later test of the run
# fails at once instead of waiting out its own timeouts on a dead guest.
GUEST_DOWN: dict[str, str] = {}
# A rebooting guest prints to its console all the way to the login prompt;
# this long without a new line (and the reboot not done), it is taken for hung.
CONSOLE_STALL_S = 240


def qemu_alive(name: str) -> bool:
    """Whether the VM's QEMU process still runs."""
    try:
        pid = int(json.loads((vm_run_dir(name) / "instance.json").read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError):
        return False
    return True


class GuestWatch:
    """Tells, while a reboot is under way, whether the guest can still come
    back: QEMU running it, no kernel panic, the console still moving."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.console = vm_run_dir(name) / "console.log"
        self.offset = self._size()
        self.moved = time.monotonic()

    def _size(self) -> int:
        return self.console.stat().st_size if self.console.is_file() else 0

    def why_dead(self) -> str | None:
        if not qemu_alive(self.name):
            return "the QEMU process is gone"
        status = qemu_status(self.name)
        if any(word in status for word in ("paused", "shutdown", "internal-error", "guest-panicked")):
            return f"QEMU stopped the guest ({status})"
        size = self._size()
        if size != self.offset:
            with open(self.console, "rb") as console:
                console.seek(self.offset)
                new = console.read().decode("utf-8", "replace")
            self.offset, self.moved = size, time.monotonic()
            if "Kernel panic" in new:
                return "the guest kernel panicked"
        elif time.monotonic() - self.moved > CONSOLE_STALL_S:
            return f"no console output for {CONSOLE_STALL_S} s and no SSH"
        return None


def reboot(host, timeout: int = 600) -> None:
    """Reboot the guest and wait until Ansible gets in again. It fails as soon
    as the guest cannot come back (QEMU gone or paused, kernel panic, console
    silent), or when the module gives up, naming the module's error, QEMU's
    view of the guest and the console's tail; the tests after it then fail
    at once (pytest_runtest_setup)."""
    name = name_of(host)
    result: dict = {}

    def run() -> None:
        try:
            result.update(host.ansible("ansible.builtin.reboot", f"reboot_timeout={timeout}",
                                       check=False, become=True))
        except host.ansible.AnsibleException as error:  # the module failed
            result.update(error.result)
        except AssertionError as error:  # testinfra: `ansible` found the host unreachable
            result.update(failed=True, msg=str(error)[-3000:])

    watch = GuestWatch(name)
    worker = threading.Thread(target=run, name="reboot", daemon=True)
    worker.start()
    dead = None
    while dead is None:
        worker.join(5)
        if not worker.is_alive():
            break
        dead = watch.why_dead()
    if dead or result.get("failed") or not result.get("rebooted"):
        GUEST_DOWN[name] = dead or "a reboot did not come back"
        message = f"{dead} (seen while the reboot was under way)" if dead else result.get("msg", result)
        pytest.fail(f"reboot: {message}\n{guest_state(name)}")


def boot_id(host) -> str:
    return host.file("/proc/sys/kernel/random/boot_id").content_string.strip()


# What modules ask to be done just before the scenario's one reboot, in the
# order they asked: (what, function). test_model_volume.py sets up its
# manual-mode volume here, and test_unlock_modes.py stops the Tang server, so
# that this one boot finds one volume's key server down.
BEFORE_SHARED_REBOOT: list[tuple[str, Callable[[], None]]] = []
# How long that reboot took, from the reboot module's start to its return.
SHARED_REBOOT: dict[str, float] = {}


@pytest.fixture(scope="session")
def guest_rebooted(request):
    """One reboot of the guest serves every test that looks at the host after
    a reboot (hardening, firewall, every volume): pytest_collection_modifyitems
    runs all the tests that come before it first. Returns the boot id from
    before the reboot."""
    host = testinfra.get_host(f"ansible://{name_of(None)}?ansible_inventory={request.config.option.ansible_inventory}")
    for _what, prepare in BEFORE_SHARED_REBOOT:
        prepare()
    before = boot_id(host)
    started = time.monotonic()
    reboot(host)
    SHARED_REBOOT["seconds"] = round(time.monotonic() - started, 1)
    assert boot_id(host) != before, "the guest answered with the boot id it had before the reboot"
    return before


# Modules whose tests after the reboot run in this order: the automatic
# unlock modes first, while their volumes wait (the Tang server comes back
# and its volume opens by itself; the TPM is cleared and the recovery
# passphrase opens its volume); the model volume unlocks and rotates; then
# the hardening suite, whose Lynis audit sees the host in its final state;
# last the evidence report, which reads that audit's result.
AFTER_REBOOT_ORDER = ["test_unlock_modes.py", "test_model_volume.py", "test_hardening.py", "test_evidence.py"]


def pytest_collection_modifyitems(items):
    """Every test before the reboot first, then the ones after it: in each
    module, the first test that uses the reboot (fixture `rebooted` or
    `guest_rebooted`) and every test after it come after the reboot; module
    order after it is AFTER_REBOOT_ORDER."""
    after: set[int] = set()
    for module in {item.path for item in items}:
        in_module = [i for i, item in enumerate(items) if item.path == module]
        first = next((i for i in in_module if {"rebooted", "guest_rebooted"} & set(items[i].fixturenames)), None)
        if first is not None:
            after.update(i for i in in_module if i >= first)

    def phase(index: int) -> tuple:
        item = items[index]
        if index not in after:
            return (0, 0, index)
        rank = AFTER_REBOOT_ORDER.index(item.path.name) if item.path.name in AFTER_REBOOT_ORDER else len(AFTER_REBOOT_ORDER)
        return (1, rank, index)

    items[:] = [items[i] for i in sorted(range(len(items)), key=phase)]


def pytest_runtest_setup(item):
    """No test waits on a guest already known to be down."""
    if GUEST_DOWN:
        pytest.fail("not run, the guest is down: " + "; ".join(f"{n}: {why}" for n, why in GUEST_DOWN.items()),
                    pytrace=False)


_STATE_REPORTS_LEFT = [3]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The first failing tests of a run carry the guest's state in their report:
    a guest that stopped answering leaves no other trace once it is destroyed.
    A test that fails with the QEMU process gone marks the guest down."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        name = name_of(getattr(item, "funcargs", {}).get("host"))
        if name not in GUEST_DOWN and not qemu_alive(name):
            GUEST_DOWN[name] = f"its QEMU process was gone when {item.name} failed"
        if _STATE_REPORTS_LEFT[0] > 0:
            _STATE_REPORTS_LEFT[0] -= 1
            report.sections.append(("guest state", guest_state(name)))


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
