"""The chainlit_users module (roles/chainlit/library) run by real
ansible-playbook on this machine: it stores Argon2id hashes only, keeps a
hash while the password still verifies (a re-run changes nothing), re-hashes
a changed password, drops users no longer listed, and never shows a password."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

TASK = """\
- name: Store the users
  chainlit_users:
    path: "{{ users_path }}"
    users: "{{ users }}"
    mode: "0640"
    memory_cost: 1024
    iterations: 1
    lanes: 1
  register: result
  no_log: true
- name: Show what changed
  ansible.builtin.debug:
    msg: "RESULT {{ {'changed': result.changed, 'added': result.added, 'updated': result.updated,
                     'removed': result.removed} | to_json }}"
"""

ALICE = {"name": "alice", "password": "alice-secret-password-1"}
BOB = {"name": "bob", "password": "bob-secret-password-22"}


@pytest.fixture
def store(run_playbook, tmp_path, monkeypatch):
    monkeypatch.setenv("ANSIBLE_LIBRARY", str(__import__("pathlib").Path(__file__).resolve().parents[2]
                                              / "roles" / "chainlit" / "library"))
    path = tmp_path / "users.json"

    def run(users, check=False):
        tasks = TASK if not check else TASK.replace("  register: result", "  check_mode: true\n  register: result")
        result = run_playbook(tasks, {"ansible_python_interpreter": sys.executable,
                                      "users_path": str(path), "users": users})
        assert result.returncode == 0, result.stdout + result.stderr
        for user in users:
            assert user["password"] not in result.stdout + result.stderr
        line = next(l for l in result.stdout.splitlines() if "RESULT " in l)
        return json.loads(line.split("RESULT ", 1)[1].rstrip('"').replace('\\"', '"'))

    return path, run


def hashes(path):
    return json.loads(path.read_text())["users"]


def test_first_run_writes_argon2id_hashes_only(store):
    path, run = store
    assert run([ALICE, BOB]) == {"changed": True, "added": ["alice", "bob"], "updated": [], "removed": []}
    stored = hashes(path)
    assert sorted(stored) == ["alice", "bob"]
    assert all(h.startswith("$argon2id$v=19$") for h in stored.values())
    text = path.read_text()
    assert ALICE["password"] not in text and BOB["password"] not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_same_passwords_again_change_nothing(store):
    path, run = store
    run([ALICE, BOB])
    before = path.read_bytes()
    assert run([ALICE, BOB]) == {"changed": False, "added": [], "updated": [], "removed": []}
    assert path.read_bytes() == before


def test_changed_password_gets_a_new_hash_and_the_others_keep_theirs(store):
    path, run = store
    run([ALICE, BOB])
    before = hashes(path)
    result = run([ALICE, {"name": "bob", "password": "bob-new-password-333"}])
    assert result == {"changed": True, "added": [], "updated": ["bob"], "removed": []}
    after = hashes(path)
    assert after["alice"] == before["alice"] and after["bob"] != before["bob"]


def test_user_no_longer_listed_is_removed(store):
    path, run = store
    run([ALICE, BOB])
    assert run([ALICE]) == {"changed": True, "added": [], "updated": [], "removed": ["bob"]}
    assert list(hashes(path)) == ["alice"]


def test_check_mode_reports_without_writing(store):
    path, run = store
    assert run([ALICE], check=True)["changed"] is True
    assert not path.exists()
