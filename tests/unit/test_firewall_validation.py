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
