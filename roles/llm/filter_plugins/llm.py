"""Hash locks of the service venvs (roles/llm/tasks/lock.yml writes them,
tasks/venv.yml installs from them), in one place the unit tests import
directly (tests/unit/test_llm_lock.py).

A lock is a pip requirements file with a header of comment lines:

    # specs: chainlit==2.12.0 openai==3.57.0      the pins it was made for
    # excluded: torchvision                       names left out on purpose
    # python: 3.11 x86_64                         where it was resolved
    name==version --hash=sha256:<hex>             one line per file
    wheel==0.45.1 --hash=sha256:<hex>  # build tool

Build tools are what the venv needs to build the source archives of the
lock; venv.yml installs them first, then the rest without build isolation,
so that nothing unhashed is fetched.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^#\s*(specs|excluded|python):[ \t]*(.*)$")
_ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)\s+--hash=sha256:(?P<sha256>[0-9a-f]{64})"
    r"\s*(?P<build>#\s*build tool)?\s*$"
)
_REPORT_HASH = re.compile(r"^sha256=([0-9a-f]{64})$")


def llm_package_name(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", str(name)).lower()


def llm_lock_parse(text: str) -> dict:
    """The header and the entries of a lock; `errors` lists each line that is
    neither (a lock is made, not written by hand)."""
    header = {"specs": None, "excluded": [], "python": ""}
    entries, errors = [], []
    for number, line in enumerate(str(text).splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        match = _HEADER.match(stripped)
        if match:
            key, value = match.groups()
            header[key] = value.strip() if key == "python" else value.split()
            continue
        if stripped.startswith("#"):
            continue
        match = _ENTRY.match(stripped)
        if not match:
            errors.append(f"line {number} is not 'name==version --hash=sha256:<64 hex>': {stripped[:80]}")
            continue
        entries.append({
            "name": llm_package_name(match["name"]),
            "version": match["version"],
            "sha256": match["sha256"],
            "build": bool(match["build"]),
        })
    if header["specs"] is None:
        errors.append("no '# specs:' line (the pins the lock was made for)")
    names = [entry["name"] for entry in entries]
    errors.extend(f"{name} is locked twice" for name in sorted({n for n in names if names.count(n) > 1}))
    return {
        "specs": header["specs"] or [],
        "excluded": header["excluded"],
        "python": header["python"],
        "entries": entries,
        "errors": errors,
    }


def llm_lock_requirements(lock: dict, build: bool) -> str:
    """The requirements file pip gets: the build tools only, or everything."""
    lines = [
        f"{entry['name']}=={entry['version']} --hash=sha256:{entry['sha256']}"
        for entry in lock["entries"]
        if entry["build"] or not build
    ]
    return "".join(line + "\n" for line in lines)


def llm_lock_report_entries(report: dict) -> list:
    """Each file of a `pip install --dry-run --report` with its sha256;
    fails on a file pip has no sha256 for (then nothing can check it)."""
    entries, missing = [], []
    for item in report.get("install", []):
        info = item.get("download_info", {})
        match = _REPORT_HASH.match(str(info.get("archive_info", {}).get("hash", "")))
        name = llm_package_name(item["metadata"]["name"])
        if not match:
            missing.append(f"{name} ({info.get('url', 'no url')})")
            continue
        entries.append({
            "name": name,
            "version": item["metadata"]["version"],
            "sha256": match.group(1),
            "wheel": str(info.get("url", "")).endswith(".whl"),
        })
    if missing:
        from ansible.errors import AnsibleFilterError

        raise AnsibleFilterError(
            "pip reported no sha256 for: " + ", ".join(missing)
            + ". Install from an index or a wheelhouse that gives one (PyPI, a local folder of files)."
        )
    return sorted(entries, key=lambda entry: entry["name"])


def llm_lock_mismatch(lock: dict, specs: list, excluded: list) -> list:
    """Why a lock does not fit the pins a role is set to install (empty when
    it does): the pins and the excluded names must be those it was made
    for, and every pinned name==version must be one of its entries."""
    problems = list(lock["errors"])
    wanted = [str(spec).strip() for spec in specs]
    if sorted(lock["specs"]) != sorted(wanted):
        problems.append(f"it was made for {' '.join(lock['specs']) or 'nothing'}, the pins are {' '.join(wanted)}")
    if sorted(map(llm_package_name, lock["excluded"])) != sorted(map(llm_package_name, excluded)):
        problems.append(
            f"it leaves out {' '.join(lock['excluded']) or 'nothing'}, the role removes {' '.join(excluded) or 'nothing'}"
        )
    locked = {(entry["name"], entry["version"]) for entry in lock["entries"] if not entry["build"]}
    for spec in wanted:
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", spec)
        if match and (llm_package_name(match[1]), match[2]) not in locked:
            problems.append(f"{spec} is not among its entries")
    return problems


class FilterModule:
    """Ansible filters of the llm role."""

    def filters(self):
        return {
            "llm_package_name": llm_package_name,
            "llm_lock_parse": llm_lock_parse,
            "llm_lock_requirements": llm_lock_requirements,
            "llm_lock_report_entries": llm_lock_report_entries,
            "llm_lock_mismatch": llm_lock_mismatch,
        }
