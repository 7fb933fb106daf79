"""The gateway's pool entry point (tasks/pool.yml) fails loudly when it cannot
mark a replica: playbooks/update.yml must never restart a replica that the
gateways still send requests to. Run against a pool file on the controller."""

from __future__ import annotations

import pytest

POOL = """upstream gateway_vllm {
        server 10.0.0.11:8443 max_fails=1 fail_timeout=10s down; # replica node1
        server 10.0.0.12:8443 max_fails=1 fail_timeout=10s; # replica node2
        keepalive 16;
}
"""

TASKS = """- ansible.builtin.include_role:
    name: gateway
    tasks_from: pool
"""


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "nginx.conf"
    path.write_text(POOL)
    return path


def settings(pool_file, member, down):
    return {"gateway_nginx_conf": str(pool_file), "llm_gateways": ["localhost"], "gateway_pool_member": member,
            "gateway_pool_member_down": down, "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


@pytest.mark.parametrize(("member", "down"), [("node1", True), ("node2", False)])
def test_a_replica_already_in_the_wanted_state_passes_and_the_pool_is_untouched(run_playbook, pool_file, member,
                                                                                 down):
    run = run_playbook(TASKS, settings(pool_file, member, down))
    assert run.returncode == 0, run.stdout[-3000:]
    assert "changed=0" in run.stdout
    assert pool_file.read_text() == POOL


@pytest.mark.parametrize("down", [True, False])
def test_a_replica_missing_from_a_gateways_pool_fails_the_run_naming_it(run_playbook, pool_file, down):
    run = run_playbook(TASKS, settings(pool_file, "node3", down))
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "node3" in output and "0 lines for it" in output and "site.yml" in output, output[-3000:]
    assert pool_file.read_text() == POOL


def test_a_replica_named_twice_in_a_pool_fails_the_run(run_playbook, pool_file):
    pool_file.write_text(POOL.replace("keepalive", "server 10.0.0.13:8443 max_fails=1 fail_timeout=10s down;"
                                                   " # replica node1\n        keepalive"))
    run = run_playbook(TASKS, settings(pool_file, "node1", True))
    assert run.returncode != 0
    assert "2 lines for it" in run.stdout + run.stderr, (run.stdout + run.stderr)[-3000:]
