"""Bad input stops the chainlit role before anything changes: its first task
file (validate.yml, imported first by tasks/main.yml) runs here with real
ansible-playbook, and each message names the variable and the fix, never a
password.

Every case runs in one ansible-playbook run, a host of its own each
(conftest.run_cases)."""

from __future__ import annotations

import pytest

TASKS = """\
- name: Run the chainlit role's checks
  ansible.builtin.include_role:
    name: chainlit
    tasks_from: validate.yml
"""

USERS = [{"name": "alice", "password": "alice-password-1234"}]


def settings(**overrides):
    return {"chainlit_api_key": "k" * 48, "chainlit_auth_secret": "s" * 64, "chainlit_users": USERS, **overrides}


BAD_SETTINGS = [
    ({"chainlit_host": "0.0.0.0"}, "chainlit_host must be loopback"),
    ({"chainlit_public_origin": "https://chat.example.org/"}, "it is https://chat.example.org/"),
    ({"chainlit_extra_env": {"DATABASE_URL": "postgres://x"}}, "chainlit_extra_env must be a mapping and may not set"),
    ({"chainlit_max_tokens": 9000}, "chainlit_max_tokens (9000) must be between 1 and"),
    ({"chainlit_openai_base_url": "http://10.1.2.3:8000/v1"}, "add that host's address to chainlit_ip_address_allow"),
    ({"chainlit_auth_mode": "header", "chainlit_auth_header": "X Bad"}, "chainlit_auth_header must be a header name"),
    ({"chainlit_api_key": "short"}, "chainlit_api_key (vLLM's key, vault_vllm_api_key) must be at least 16"),
    ({"chainlit_venvs_kept": 0}, "chainlit_venvs_kept must be 1 or more (got 0)"),
    ({"chainlit_gate_user": "mallory"}, "chainlit_gate_user (mallory) must be one of the users who may log in: a name "
                                        "of chainlit_users"),
    ({"chainlit_auth_mode": "header", "chainlit_header_users": ["alice"], "chainlit_gate_user": "bob"},
     "chainlit_gate_user (bob) must be one of the users who may log in: a name of chainlit_header_users"),
    # A pin without its hash lock, and the shipped lock under other pins.
    ({"chainlit_package_spec": "chainlit==2.11.0"},
     "chainlit_pip_locked is on, but there is no hash lock chainlit_pip_lock_path"),
    ({"chainlit_extra_packages": ["openai==1.25.0", "cryptography==50.0.2"]},
     "does not fit chainlit_package_spec and chainlit_extra_packages: it was made for chainlit==2.12.0 "
     "openai==3.57.0 cryptography==50.0.2, the pins are chainlit==2.12.0 openai==1.25.0 cryptography==50.0.2; "
     "openai==1.25.0 is not among its entries. Make it again with playbooks/lock.yml --tags chainlit."),
]


@pytest.fixture(scope="module")
def results(run_cases):
    cases = {
        "good": settings(),
        "user-without-password": settings(chainlit_users=[*USERS, {"name": "bob"}]),
        "short-password": settings(chainlit_users=[{"name": "carol", "password": "tooShort77"}]),
        "no-users": settings(chainlit_users=[]),
        "duplicate-user": settings(chainlit_users=USERS + USERS),
        "remote-model-host-allowed": settings(chainlit_openai_base_url="http://10.1.2.3:8000/v1",
                                              chainlit_ip_address_allow=["localhost", "10.1.2.3"]),
        "header-mode-without-users": settings(chainlit_auth_mode="header", chainlit_users=[]),
        "gate-user-of-the-users": settings(chainlit_gate_user="alice"),
        "new-pin-without-hashes": settings(chainlit_package_spec="chainlit==2.11.0", chainlit_pip_locked=False),
    }
    for index, (overrides, _) in enumerate(BAD_SETTINGS):
        cases[f"bad-{index}"] = settings(**overrides)
    return run_cases(TASKS, cases)


def test_good_settings_pass(results):
    result = results["good"]
    assert result.returncode == 0, result.output[-3000:]


def test_user_without_password_is_named_with_the_fix(results):
    result = results["user-without-password"]
    assert result.returncode != 0
    assert "chainlit_users entry 2 (bob)" in result.stdout
    assert "vault_chainlit_password_bob" in result.stdout


def test_short_password_is_refused_without_showing_it(results):
    result = results["short-password"]
    assert result.returncode != 0
    assert "chainlit_users entry 1 (carol)" in result.stdout and "at least 12 characters" in result.stdout
    # Nowhere in the run's output (the case's settings are set with no_log).
    assert "tooShort77" not in result.output


def test_password_mode_without_users_is_refused(results):
    result = results["no-users"]
    assert result.returncode != 0
    assert "chainlit_users is empty" in result.stdout


def test_duplicate_user_is_refused(results):
    result = results["duplicate-user"]
    assert result.returncode != 0
    assert "lists a name twice" in result.stdout
    assert USERS[0]["password"] not in result.output


@pytest.mark.parametrize("index, words", [(i, words) for i, (_, words) in enumerate(BAD_SETTINGS)])
def test_bad_setting_is_named(results, index, words):
    result = results[f"bad-{index}"]
    assert result.returncode != 0
    assert words in result.stdout


def test_remote_model_host_is_accepted_once_allowed(results):
    result = results["remote-model-host-allowed"]
    assert result.returncode == 0, result.output[-3000:]


def test_header_mode_needs_no_users(results):
    result = results["header-mode-without-users"]
    assert result.returncode == 0, result.output[-3000:]


def test_a_gate_user_among_the_chat_users_is_accepted(results):
    result = results["gate-user-of-the-users"]
    assert result.returncode == 0, result.output[-3000:]


def test_a_new_pin_without_a_lock_passes_when_hash_locking_is_off(results):
    result = results["new-pin-without-hashes"]
    assert result.returncode == 0, result.output[-3000:]
