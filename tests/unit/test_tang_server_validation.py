"""Bad Tang settings stop the play before any change, with a message naming
the variable and the fix: the tang_server role's own checks, the shared Tang
port (roles/llm) and the Tang servers' firewall sources (roles/firewall).

Every case runs in one ansible-playbook run, a host of its own each
(conftest.run_cases); the one case about inventory groups has its own run."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ANSIBLE_PLAYBOOK, PROJECT

TANG = "- ansible.builtin.include_role:\n    name: tang_server\n    tasks_from: validate\n"
# roles/llm checks the host's system first: its facts.
LLM = ("- ansible.builtin.setup:\n    gather_subset: [min]\n"
       "- ansible.builtin.include_role:\n    name: llm\n    tasks_from: validate\n")
# The firewall's checks on a Tang server: the case's host is the one Tang server.
FIREWALL = "- ansible.builtin.include_role:\n    name: firewall\n    tasks_from: validate\n"
FIREWALL_GOOD = {"admin_cidrs": ["192.0.2.0/28"], "client_cidrs": [], "firewall_tang_sources": ["10.20.0.11", "10.20.0.0/24"]}


@pytest.fixture(scope="module")
def tang(run_cases):
    return run_cases(TANG, {
        "good": {},
        "good-ipv6-listener": {"tang_server_listen_address": "2001:db8::5"},
        "own-port": {"tang_server_port": 7501},
        "on-sshd-port": {"llm_tang_port": 22},
        "listener-by-name": {"tang_server_listen_address": "tang.example.internal"},
    })


@pytest.fixture(scope="module")
def llm(run_cases):
    return run_cases(LLM, {"good": {}, "on-the-gateway-port": {"llm_tang_port": 443}, "not-a-port": {"llm_tang_port": 70000}})


@pytest.fixture(scope="module")
def firewall(run_cases):
    def tang_server(name, **settings):
        return {**FIREWALL_GOOD, "llm_tang_servers": [name], **settings}

    return run_cases(FIREWALL, {
        "fw-good": tang_server("fw-good"),
        "fw-no-sources": tang_server("fw-no-sources", firewall_tang_sources=[]),
        "fw-everyone": tang_server("fw-everyone", firewall_tang_sources=["0.0.0.0/0"]),
        "fw-by-name": tang_server("fw-by-name", firewall_tang_sources=["gpu01.example.internal"]),
        "fw-not-a-tang-server": {**FIREWALL_GOOD, "firewall_tang_sources": []},
    })


def test_valid_tang_settings_pass(tang):
    assert tang["good"].returncode == 0, tang["good"].output[-3000:]
    assert tang["good-ipv6-listener"].returncode == 0, tang["good-ipv6-listener"].output[-3000:]


def test_a_tang_port_of_its_own_is_refused_for_the_shared_one(tang):
    result = tang["own-port"]
    assert result.returncode != 0
    assert "tang_server_port (7501) and firewall_tang_port (7500) must both be llm_tang_port (7500)" in result.stdout
    assert "Set llm_tang_port (roles/llm)" in result.stdout


def test_a_tang_port_on_sshd_is_refused(tang):
    result = tang["on-sshd-port"]
    assert result.returncode != 0
    assert "tang_server_port (22) is sshd's port" in result.stdout


def test_a_listen_address_that_is_not_an_address_is_refused(tang):
    result = tang["listener-by-name"]
    assert result.returncode != 0
    assert 'tang_server_listen_address must be an IP address of this host' in result.stdout
    assert "tang.example.internal" in result.stdout


def test_the_shared_tang_port_must_be_a_free_port(llm):
    assert llm["good"].returncode == 0, llm["good"].output[-3000:]
    assert llm["on-the-gateway-port"].returncode != 0
    assert "llm_tang_port (443) is already the port of another service" in llm["on-the-gateway-port"].stdout
    assert llm["not-a-port"].returncode != 0
    assert "llm_replica_port and llm_tang_port must be ports (1-65535)" in llm["not-a-port"].stdout


def test_a_tang_server_firewall_needs_its_clients_addresses(firewall):
    assert firewall["fw-good"].returncode == 0, firewall["fw-good"].output[-3000:]
    assert firewall["fw-not-a-tang-server"].returncode == 0, firewall["fw-not-a-tang-server"].output[-3000:]
    for case in ("fw-no-sources", "fw-everyone", "fw-by-name"):
        result = firewall[case]
        assert result.returncode != 0, case
        assert f"{case} is a Tang server (tang_servers), but firewall_tang_sources" in result.stdout
        assert "or set firewall_tang_sources to the addresses the GPU hosts' connections come from" in result.stdout


def test_a_gpu_host_is_refused_as_a_tang_server(tmp_path):
    """A Tang server in llm_servers would travel with the disks it unlocks."""
    inventory = {"all": {"children": {
        "llm_servers": {"hosts": {"gpu-and-tang": {}, "gpu-and-tang-test": {"tang_server_allow_on_llm_server": True}}},
        "tang_servers": {"hosts": {"gpu-and-tang": {}, "gpu-and-tang-test": {}}}},
        "vars": {"ansible_connection": "local"}}}
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    (tmp_path / "play.yml").write_text("- hosts: tang_servers\n  gather_facts: false\n  tasks:\n"
                                       "    - ansible.builtin.include_role:\n        name: tang_server\n"
                                       "        tasks_from: validate\n")
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.json"), str(tmp_path / "play.yml")],
                         cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
    assert "gpu-and-tang: it is a vLLM host (llm_servers) and a Tang server (tang_servers)" in run.stdout
    assert "tang_server_allow_on_llm_server: true" in run.stdout
    assert "gpu-and-tang-test" in run.stdout and "failed=0" in run.stdout.split("gpu-and-tang-test")[-1]
