"""A static `import_role` brings the role's argument check, a task Ansible
tags `always`: it runs under any `--tags`, with the import's `when`. A `when`
that reads a registered result must therefore say what happens when the task
that registers it did not run (`x is defined and ...`). CI's run of 027c303
failed `site.yml --tags firewall` and `rotate-secrets.yml --tags
rotate,gateway` on `'vllm_installed' is undefined` for want of this."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

from conftest import PROJECT

IMPORT_ROLE = {"ansible.builtin.import_role", "import_role"}


def task_files() -> list[Path]:
    files = sorted(PROJECT.glob("roles/*/tasks/*.yml")) + sorted(PROJECT.glob("roles/*/handlers/*.yml"))
    return files + sorted(PROJECT.glob("playbooks/*.yml")) + [PROJECT / "site.yml"]


def tasks_in(node):
    """Every task mapping in a task file or playbook, blocks and plays opened."""
    if isinstance(node, list):
        for item in node:
            yield from tasks_in(item)
    elif isinstance(node, dict):
        if not {"hosts", "block"} & set(node):
            yield node
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            yield from tasks_in(node.get(key))


@functools.cache
def all_tasks() -> tuple[tuple[Path, dict], ...]:
    """Every task of the project, each file read once for the whole module."""
    return tuple((path, task) for path in task_files() for task in tasks_in(yaml.safe_load(path.read_text()) or []))


def registered() -> set[str]:
    return {task["register"] for _, task in all_tasks() if isinstance(task.get("register"), str)}


def unguarded(condition: str, names: set[str]) -> set[str]:
    used = {name for name in names if re.search(rf"\b{re.escape(name)}\b", condition)}
    return {name for name in used if not re.search(rf"\b{re.escape(name)}\s+is\s+defined\b", condition)}


def test_static_role_imports_guard_every_registered_result_they_read():
    names = registered()
    offenders = []
    for path, task in all_tasks():
        if IMPORT_ROLE & set(task):
            conditions = task.get("when", [])
            for condition in conditions if isinstance(conditions, list) else [conditions]:
                missing = unguarded(str(condition), names)
                if missing:
                    offenders.append(f"{path.relative_to(PROJECT)}: {task.get('name')}: {sorted(missing)}")
    assert not offenders, offenders


def test_the_check_finds_an_unguarded_result_and_accepts_a_guarded_one():
    names = {"vllm_installed"}
    assert unguarded("vllm_installed.rc != 0", names) == {"vllm_installed"}
    assert unguarded("vllm_installed is defined and vllm_installed.rc != 0", names) == set()
    assert unguarded("vllm_port > 0", names) == set()


def test_the_projects_static_role_imports_are_seen():
    imports = [path.name for path, task in all_tasks() if IMPORT_ROLE & set(task)]
    assert imports.count("install.yml") >= 2, imports  # vLLM's and Chainlit's byte-compile imports
