"""The Tang server (roles/tang_server on llm-vm-tang, a container with
systemd): the guest gets a signed advertisement across the network, the
firewall admits only the GPU host's side, tangd runs sandboxed, and its keys
are readable by _tang only."""

from __future__ import annotations

import json
import re

import pytest
import testinfra

testinfra_hosts = ["ansible://llm-vm-tang"]

PORT = 7500


@pytest.fixture(scope="module")
def guest(request):
    return testinfra.get_host(f"ansible://llm-vm?ansible_inventory={request.config.option.ansible_inventory}")


def test_guest_gets_a_signed_advertisement_across_the_network(guest):
    adv = json.loads(guest.check_output("curl -sf --max-time 20 http://10.88.200.30:%s/adv", str(PORT)))
    assert adv["payload"] and (adv.get("signatures") or adv.get("signature")), adv


def test_tangd_listens_only_on_its_port_not_on_debians_port_80(host):
    assert host.socket(f"tcp://0.0.0.0:{PORT}").is_listening or host.socket(f"tcp://:::{PORT}").is_listening
    assert not host.socket("tcp://0.0.0.0:80").is_listening and not host.socket("tcp://:::80").is_listening


def test_firewall_admits_tang_from_the_gpu_hosts_side_only(host):
    status = host.check_output("ufw status verbose")
    assert "Default: deny (incoming)" in status
    rules = [line.split() for line in status.splitlines() if line.startswith(f"{PORT}/tcp")]
    assert rules and all(rule[1:3] == ["ALLOW", "IN"] and rule[3] == "10.88.0.1" for rule in rules), rules


def test_tangd_runs_sandboxed(host):
    exposure = host.check_output("systemd-analyze security --no-pager tangd@probe.service | tail -n 1")
    level = re.search(r"tangd@probe\.service:\s+([0-9.]+)", exposure)
    assert level and float(level.group(1)) <= 2.0, exposure


def test_keys_are_readable_by_tang_only(host):
    folder = host.file("/var/lib/tang")
    assert folder.user == "_tang" and folder.mode == 0o750
    keys = host.check_output("find /var/lib/tang -name '*.jwk'").split()
    assert len(keys) >= 2
    for key in keys:
        item = host.file(key)
        assert item.user == "_tang" and item.mode == 0o440, key
