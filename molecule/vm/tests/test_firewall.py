"""The firewall seen from outside the VM, through QEMU's forwarded ports:
SSH and the gateway port answer, a port with a listener but no rule is dropped."""

from __future__ import annotations

import netprobe

# The VM only: the scenario's Tang host (llm-vm-tang) has tests of its own.
testinfra_hosts = ["ansible://llm-vm"]


def test_ssh_answers_through_the_firewall(vm_instance):
    assert netprobe.probe("127.0.0.1", vm_instance["port"]) == "open"


def test_gateway_port_is_open_to_the_client_network(vm_instance, vm_listeners):
    assert netprobe.probe("127.0.0.1", vm_instance["ports"]["443"]) == "open"


def test_port_without_a_rule_is_dropped(host, vm_instance, vm_listeners):
    assert host.socket("tcp://:::8000").is_listening  # only the firewall stands between
    assert netprobe.probe("127.0.0.1", vm_instance["ports"]["8000"], timeout=6) == "timeout"


def test_ufw_is_active_in_the_guest(host):
    status = host.check_output("ufw status verbose")
    assert "Status: active" in status
    assert "Default: deny (incoming)" in status
