"""Bad firewall input stops the play with a message naming the variable and the fix.

Every case runs in one ansible-playbook run, a host of its own each
(conftest.run_cases)."""

from __future__ import annotations

import pytest

VALIDATE = "- ansible.builtin.include_role:\n    name: firewall\n    tasks_from: validate\n"
GOOD = {"admin_cidrs": ["192.0.2.0/28", "2001:db8::/64"], "client_cidrs": ["198.51.100.0/24"]}
BAD_CIDRS = [
    ("client_cidrs", "10.0.0.300/24"),
    ("client_cidrs", "10.0.0.0"),
    ("admin_cidrs", "not-a-network"),
    ("admin_cidrs", "2001:db8::zz/64"),
]


@pytest.fixture(scope="module")
def results(run_cases):
    cases = {
        "good": GOOD,
        "no-admins": {**GOOD, "admin_cidrs": []},
        "bad-extra-rule": {**GOOD, "firewall_extra_rules": [{"port": 9100, "from": "192.0.2.0/33"}]},
        "metrics-from-everywhere": {**GOOD, "metrics_client_cidrs": ["0.0.0.0/0"]},
        "metrics-on-the-gateway-port": {**GOOD, "metrics_client_cidrs": ["192.0.2.10/32"], "firewall_metrics_port": 443},
    }
    for index, (variable, value) in enumerate(BAD_CIDRS):
        cases[f"bad-cidr-{index}"] = {**GOOD, variable: [value]}
    return run_cases(VALIDATE, cases)


def test_valid_networks_pass_validation(results):
    result = results["good"]
    assert result.returncode == 0, result.output[-3000:]


def test_empty_admin_networks_are_refused_before_any_change(results):
    result = results["no-admins"]
    assert result.returncode != 0
    assert "firewall_admin_cidrs is empty" in result.stdout
    assert "admin_cidrs" in result.stdout and "192.0.2.0/24" in result.stdout


@pytest.mark.parametrize(("index", "variable", "value"), [(i, *case) for i, case in enumerate(BAD_CIDRS)])
def test_invalid_cidr_is_named_in_the_error(results, index, variable, value):
    result = results[f"bad-cidr-{index}"]
    assert result.returncode != 0
    assert f'firewall_{variable} contains "{value}"' in result.stdout
    assert "CIDR" in result.stdout


def test_invalid_extra_rule_source_is_named_in_the_error(results):
    result = results["bad-extra-rule"]
    assert result.returncode != 0
    assert 'firewall_extra_rules contains "192.0.2.0/33"' in result.stdout


def test_metrics_open_to_every_address_are_refused(results):
    result = results["metrics-from-everywhere"]
    assert result.returncode != 0
    assert "firewall_metrics_client_cidrs (metrics_client_cidrs) holds a network of prefix length 0" in result.stdout


def test_a_metrics_port_on_the_gateway_port_is_refused(results):
    result = results["metrics-on-the-gateway-port"]
    assert result.returncode != 0
    assert "firewall_metrics_port (443) must be a port (1-65535) other than" in result.stdout


# The play's own SSH connection, as the host's facts report it (SSH_CONNECTION:
# client address, client port, server address, server port).
VALIDATE_WITH_CONNECTION = (
    "- ansible.builtin.setup:\n    gather_subset: ['!all', '!min', env]\n"
    "  environment:\n    SSH_CONNECTION: \"{{ ssh_connection }}\"\n" + VALIDATE
)
CONNECTIONS = {
    "from-an-admin-network": "192.0.2.5 50022 192.0.2.1 22",
    "from-an-admin-network-over-ipv6": "2001:db8::5 50022 2001:db8::1 22",
    "from-outside-the-admin-networks": "198.51.100.7 50022 192.0.2.1 22",
    "to-another-ssh-port": "192.0.2.5 50022 192.0.2.1 2222",
}


@pytest.fixture(scope="module")
def connection_results(run_cases):
    return run_cases(VALIDATE_WITH_CONNECTION,
                     {name: {**GOOD, "ssh_connection": connection} for name, connection in CONNECTIONS.items()})


@pytest.mark.parametrize("case", ["from-an-admin-network", "from-an-admin-network-over-ipv6"])
def test_a_connection_from_an_admin_network_passes(connection_results, case):
    result = connection_results[case]
    assert result.returncode == 0, result.output[-3000:]


def test_a_connection_the_firewall_would_cut_is_refused_naming_the_address(connection_results):
    result = connection_results["from-outside-the-admin-networks"]
    assert result.returncode != 0
    assert "from 198.51.100.7, which is not in firewall_admin_cidrs" in result.stdout
    assert "firewall_ssh_port" not in result.stdout


def test_an_ssh_port_other_than_the_one_in_use_is_refused(connection_results):
    result = connection_results["to-another-ssh-port"]
    assert result.returncode != 0
    assert "at port 2222, but firewall_ssh_port is 22" in result.stdout
    assert "not in firewall_admin_cidrs" not in result.stdout
