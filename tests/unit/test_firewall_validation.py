"""Bad firewall input stops the play with a message naming the variable and the fix."""

from __future__ import annotations

import pytest

VALIDATE = "- ansible.builtin.include_role:\n    name: firewall\n    tasks_from: validate\n"
GOOD = {"admin_cidrs": ["192.0.2.0/28", "2001:db8::/64"], "client_cidrs": ["198.51.100.0/24"]}


def test_valid_networks_pass_validation(run_playbook):
    result = run_playbook(VALIDATE, GOOD)
    assert result.returncode == 0, result.stdout + result.stderr


def test_empty_admin_networks_are_refused_before_any_change(run_playbook):
    result = run_playbook(VALIDATE, {**GOOD, "admin_cidrs": []})
    assert result.returncode != 0
    assert "firewall_admin_cidrs is empty" in result.stdout
    assert "admin_cidrs" in result.stdout and "192.0.2.0/24" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("client_cidrs", "10.0.0.300/24"),
        ("client_cidrs", "10.0.0.0"),
        ("admin_cidrs", "not-a-network"),
        ("admin_cidrs", "2001:db8::zz/64"),
    ],
)
def test_invalid_cidr_is_named_in_the_error(run_playbook, variable, value):
    result = run_playbook(VALIDATE, {**GOOD, variable: [value]})
    assert result.returncode != 0
    assert f'firewall_{variable} contains "{value}"' in result.stdout
    assert "CIDR" in result.stdout


def test_invalid_extra_rule_source_is_named_in_the_error(run_playbook):
    rules = [{"port": 9100, "from": "192.0.2.0/33"}]
    result = run_playbook(VALIDATE, {**GOOD, "firewall_extra_rules": rules})
    assert result.returncode != 0
    assert 'firewall_extra_rules contains "192.0.2.0/33"' in result.stdout
