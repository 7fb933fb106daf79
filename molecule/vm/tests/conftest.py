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
from pathlib import Path

import pytest

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


@pytest.fixture
def vm_name(request: pytest.FixtureRequest) -> str:
    """Inventory name of the host under test (falls back to $VM_NAME or llm-vm)."""
    if "host" in request.fixturenames:
        return request.getfixturevalue("host").backend.get_hostname()
    return os.environ.get("VM_NAME", DEFAULT_VM_NAME)


@pytest.fixture
def vm_instance(vm_name: str) -> dict:
    """The VM's instance.json as a dict (address, port, ports['443'|'8000'], ...)."""
    return load_instance(vm_name)
