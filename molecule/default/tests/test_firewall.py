"""The firewall denies by default, admits only the configured networks, and
does so for IPv4 and IPv6 — checked from the host's rules and from outside."""

from __future__ import annotations

from conftest import PROBE_PORT
import netprobe

testinfra_hosts = ["llm_servers"]

ADMIN_CIDRS = ["10.88.0.1"]  # molecule.yml: admin_cidrs / client_cidrs (ufw prints /32 bare)


def ufw_status(host):
    return host.check_output("ufw status verbose")


def test_ufw_is_active_with_deny_incoming_and_logging(host):
    status = ufw_status(host)
    assert "Status: active" in status
    assert "Default: deny (incoming), allow (outgoing), deny (routed)" in status
    assert "Logging: on (low)" in status


def test_ufw_starts_at_boot(host):
    assert host.service("ufw").is_enabled
    assert host.file("/etc/ufw/ufw.conf").contains("^ENABLED=yes")


def test_ipv6_is_filtered_too(host):
    assert host.file("/etc/default/ufw").contains("^IPV6=yes")
    policies = host.check_output("ip6tables -S INPUT")
    assert "-P INPUT DROP" in policies
    assert "ufw6-user-input" in host.check_output("ip6tables -S")


def test_ssh_and_gateway_rules_name_only_the_configured_networks(host):
    rules = [line for line in ufw_status(host).splitlines() if "ALLOW IN" in line or "LIMIT IN" in line]
    assert any(line.startswith("22/tcp") and "10.88.0.1" in line for line in rules), rules
    assert any(line.startswith("443/tcp") and "10.88.0.1" in line for line in rules), rules
    for line in rules:
        assert "Anywhere" not in line.split("IN", 1)[1], f"rule open to anyone: {line}"
        # 9443: the metrics listener, for metrics_client_cidrs (test_metrics.py).
        assert line.split()[0] in {"22/tcp", "443/tcp", "9443/tcp"}, f"unexpected open port: {line}"


def test_client_network_reaches_the_gateway_port(host, host_address, listeners):
    assert netprobe.probe(host_address, 443) == "open"


def test_port_outside_the_policy_is_dropped_for_everyone(host, host_address, listeners, outsider):
    # A listener runs on every address of this port, so only the firewall can
    # make this time out. (vLLM's 8000 listens on loopback only: test_vllm.py.)
    assert host.socket(f"tcp://:::{PROBE_PORT}").is_listening
    assert netprobe.probe(host_address, PROBE_PORT) == "timeout"
    assert netprobe.probe_from(outsider, host_address, PROBE_PORT) == "timeout"


def test_host_outside_client_networks_cannot_reach_the_gateway_port(host, host_address, listeners, outsider):
    assert netprobe.probe_from(outsider, host_address, 443) == "timeout"
