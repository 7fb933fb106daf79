"""The tests' playbook runs (molecule/shared/playbook_report.py) take the
calling scenario's executor from its ansible.cfg (Mitogen and its host key
policy), the project's own settings outside Molecule, and stock Ansible when
the caller asks for it."""

from __future__ import annotations

import configparser
import sys

import pytest

from conftest import PROJECT

sys.path.insert(0, str(PROJECT / "molecule" / "shared"))
import playbook_report  # noqa: E402  (path set just above)

SCENARIO_CFG = """# Molecule managed
[defaults]
host_key_checking = False
forks = 50
strategy_plugins = /somewhere/molecule/shared/plugins/strategy
strategy = mitogen_linear
callbacks_enabled = ansible.posix.profile_tasks
"""


def written(tmp_path, stock=False) -> configparser.SectionProxy:
    config = configparser.ConfigParser(interpolation=None)
    config.read(playbook_report.json_config(tmp_path, stock))
    return config["defaults"]


@pytest.fixture
def scenario(tmp_path, monkeypatch):
    path = tmp_path / "scenario.cfg"
    path.write_text(SCENARIO_CFG)
    monkeypatch.setenv("ANSIBLE_CONFIG", str(path))


def test_a_scenarios_run_takes_its_strategy_and_host_key_policy_and_nothing_else(tmp_path, scenario):
    defaults = written(tmp_path)
    assert (defaults["strategy"], defaults["host_key_checking"]) == ("mitogen_linear", "False")
    assert defaults["strategy_plugins"] == "/somewhere/molecule/shared/plugins/strategy"
    assert defaults["stdout_callback"] == "ansible.builtin.json"
    # The scenario's own callbacks stay out of the report; the harness's worker warm-up is in.
    assert defaults["callbacks_enabled"] == "warm_workers"
    assert defaults["callback_plugins"] == str(PROJECT / "molecule" / "shared" / "plugins" / "callback")
    assert defaults["forks"] == "50" and defaults["inventory"] == "inventory/example/hosts.yml"  # the project's


def test_stock_leaves_the_strategy_to_ansible(tmp_path, scenario):
    defaults = written(tmp_path, stock=True)
    assert not {"strategy", "strategy_plugins", "host_key_checking"} & set(defaults)
    assert defaults["callbacks_enabled"] == "warm_workers"


@pytest.mark.parametrize("config", [None, "project"])
def test_outside_molecule_the_run_has_the_projects_settings(tmp_path, monkeypatch, config):
    if config:
        monkeypatch.setenv("ANSIBLE_CONFIG", str(PROJECT / "ansible.cfg"))
    else:
        monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    assert not {"strategy", "strategy_plugins", "host_key_checking"} & set(written(tmp_path))
