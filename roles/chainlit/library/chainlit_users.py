#!/usr/bin/python
# Copyright: private-llm maintainers
# Apache License 2.0 (see the project's README)
"""Keep the chat users' password hashes (Argon2id) in a JSON file."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: chainlit_users
short_description: Keep the chat users' Argon2id password hashes in a file
description:
  - Writes O(path) as JSON C({"format": 1, "users": {"<name>": "<hash>"}})
    holding an Argon2id hash (PHC string format) of each user's password.
  - A user whose stored hash still verifies against the given password keeps
    that hash, so a re-run with the same passwords changes nothing; a new
    user or a changed password gets a fresh hash with a new salt; users no
    longer listed are removed.
  - Needs the Python C(cryptography) package 44 or later (Argon2id); run it
    with the interpreter of the Chainlit venv, which has it.
  - Passwords are never returned or logged; the result names users only.
options:
  path:
    description: The hash file.
    type: path
    required: true
  users:
    description: Users, each with C(name) and C(password).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: User name, as typed on the login page.
        type: str
        required: true
      password:
        description: The user's password in clear (from the vault).
        type: str
        required: true
        no_log: true
  memory_cost:
    description: Argon2id memory in KiB for new hashes.
    type: int
    default: 65536
  iterations:
    description: Argon2id passes for new hashes.
    type: int
    default: 3
  lanes:
    description: Argon2id parallelism for new hashes.
    type: int
    default: 4
extends_documentation_fragment: [files]
author: private-llm maintainers
"""

EXAMPLES = r"""
- name: Store the chat users' password hashes
  chainlit_users:
    path: /etc/chainlit/users.json
    users: "{{ chainlit_users }}"
    owner: root
    group: chainlit
    mode: "0640"
  vars:
    ansible_python_interpreter: /opt/chainlit/venv/bin/python
  no_log: true
"""

RETURN = r"""
added:
  description: Users who were not in the file before.
  returned: always
  type: list
  elements: str
updated:
  description: Users whose password changed (new hash).
  returned: always
  type: list
  elements: str
removed:
  description: Users removed from the file.
  returned: always
  type: list
  elements: str
"""

import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

try:
    from cryptography.exceptions import InvalidKey
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
except ImportError:  # reported by main()
    Argon2id = None


def verifies(password, encoded):
    try:
        Argon2id.verify_phc_encoded(password.encode("utf-8"), encoded)
    except (InvalidKey, ValueError, TypeError):
        return False
    return True


def read_existing(path):
    """The users object of the current file, or {} when absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    users = data.get("users") if isinstance(data, dict) else None
    return users if isinstance(users, dict) else {}


def plan(existing, users, make_hash):
    """New users object and the names added, updated, removed."""
    result, added, updated = {}, [], []
    for user in users:
        name, password = user["name"], user["password"]
        old = existing.get(name)
        if isinstance(old, str) and verifies(password, old):
            result[name] = old
            continue
        result[name] = make_hash(password)
        (updated if name in existing else added).append(name)
    removed = sorted(set(existing) - set(result))
    return result, added, updated, removed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            users=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    name=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                ),
            ),
            memory_cost=dict(type="int", default=65536),
            iterations=dict(type="int", default=3),
            lanes=dict(type="int", default=4),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    if Argon2id is None:
        module.fail_json(msg="chainlit_users needs the Python package cryptography >= 44 (Argon2id); "
                             "run it with the Chainlit venv's interpreter")
    names = [user["name"] for user in module.params["users"]]
    if len(set(names)) != len(names):
        module.fail_json(msg="chainlit_users: a user name is listed twice")

    path = module.params["path"]

    def make_hash(password):
        kdf = Argon2id(salt=os.urandom(16), length=32, memory_cost=module.params["memory_cost"],
                       iterations=module.params["iterations"], lanes=module.params["lanes"])
        return kdf.derive_phc_encoded(password.encode("utf-8"))

    existing = read_existing(path)
    users, added, updated, removed = plan(existing, module.params["users"], make_hash)
    content = json.dumps({"format": 1, "users": users}, indent=2, sort_keys=True) + "\n"

    try:
        with open(path, encoding="utf-8") as handle:
            current = handle.read()
    except OSError:
        current = None

    changed = current != content
    if changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".users-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            module.atomic_move(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    file_args = module.load_file_common_arguments(module.params)
    if os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)

    module.exit_json(changed=changed, added=added, updated=updated, removed=removed)


if __name__ == "__main__":
    main()
