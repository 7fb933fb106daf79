"""Fixtures for the container scenario's testinfra tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import testinfra

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import netprobe  # noqa: E402  (path set just above)

# A port no service of the project uses: the firewall tests listen on it on
# every address to prove that only the firewall keeps strangers out.
PROBE_PORT = 8999


@pytest.fixture(scope="module")
def outsider():
    """The container outside every allowed network (see molecule.yml)."""
    return testinfra.get_host("podman://outsider")


@pytest.fixture(scope="module")
def secrets_dir(host):
    """The controller-side secrets store of this inventory (llm_secrets_dir)."""
    return Path(host.ansible("debug", "var=llm_secrets_dir", check=False)["llm_secrets_dir"])


@pytest.fixture(scope="module")
def host_address(host):
    """The service host's IPv4 address on the podman bridge."""
    addresses = [a for a in host.interface("eth0").addresses if ":" not in a]
    assert addresses, "the service host has no IPv4 address on eth0"
    return addresses[0]


@pytest.fixture(scope="module")
def listeners(host):
    """Something listening on the gateway port and on a port nobody may reach."""
    units = [netprobe.start_listener(host, port) for port in (443, PROBE_PORT)]
    yield
    for unit in filter(None, units):
        host.run("systemctl stop %s", unit)
