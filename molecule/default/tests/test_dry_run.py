"""`site.yml --check --diff` on a converged host changes nothing, as the README
promises operators ("look before you leap"): no task reports a change or
fails. One run against the converged llm-node1 (the fresh host is in no
group of the service). `playbooks/update.yml --check` with new hash locks prints
the plan (the venvs it would switch to) and changes nothing either."""

from __future__ import annotations

import json
import os
import re

import playbook_report  # molecule/shared, on the path by conftest.py

PROJECT = playbook_report.PROJECT

testinfra_hosts = ["ansible://llm-node1"]


def test_a_dry_run_of_site_yml_on_the_converged_host_reports_no_change_and_no_failure(tmp_path):
    status, report = playbook_report.run_playbook(
        tmp_path, ["-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", "llm-node1", "--check", "--diff",
                   "site.yml"])
    stats = report["stats"]["llm-node1"]
    assert status == 0 and stats["failures"] == 0 and stats["unreachable"] == 0, stats
    assert stats["changed"] == 0, playbook_report.changed_tasks(report, "llm-node1")
    # The dry run went through every stage, not only preflight (the two
    # plays of playbooks/tang.yml are listed with no host: this scenario has
    # no Tang server).
    plays = [play["play"]["name"] for play in report["plays"]]
    assert len(plays) == 12, plays


# Runs on the host: what an update would touch, in one round trip: each
# service's link, venvs, unit file and start time, and the model link.
STATE = r"""
import hashlib, json, os, subprocess
state = {"model": os.readlink("/srv/models/Qwen3-4B-Instruct-2507/current")}
for name, root in (("vllm", "/opt/vllm"), ("chainlit", "/opt/chainlit")):
    shown = subprocess.run(["systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "--value", name + ".service"],
                           capture_output=True, text=True).stdout.strip()
    unit = open(f"/etc/systemd/system/{name}.service", "rb").read()
    state[name] = {"link": os.readlink(root + "/venv"), "venvs": sorted(os.listdir(root + "/venvs")),
                   "unit": hashlib.sha256(unit).hexdigest(), "started": shown}
print(json.dumps(state))
"""


def test_a_dry_run_of_update_yml_with_new_locks_shows_the_plan_and_changes_nothing(host, tmp_path):
    before = json.loads(host.check_output("python3 -c %s", STATE))
    # New versions of both venvs, as an operator would look at them before
    # the real update: each lock made again (the lock's text decides the
    # venv, as when lock.yml takes an index's newer dependencies).
    pins = {}
    for name in ("vllm", "chainlit"):
        spec = host.check_output(f"readlink /opt/{name}/venv").rsplit("/", 1)[1].rsplit("-", 1)[0]
        relocked = tmp_path / f"{name}.txt"
        relocked.write_text((PROJECT / f"roles/{name}/files/locks/{spec}.txt").read_text() + "# made again\n")
        pins[f"{name}_pip_lock_file"] = str(relocked)
    status, report = playbook_report.run_playbook(
        tmp_path, ["-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", "llm-node1", "--check",
                   "-e", json.dumps(pins), "playbooks/update.yml"])
    assert status == 0, playbook_report.failed_tasks(report)
    # The report's last task loops over the hosts: one message an item.
    messages = [str(item.get("msg", "")) for play in report["plays"] for task in play["tasks"]
                for result in task["hosts"].values() for item in result.get("results", [result])]
    plan = [message for message in messages if message.startswith("--check, the plan: ")]
    assert len(plan) == 1, plan
    for name in ("vllm", "chainlit"):
        serving = before[name]["link"].rsplit("/", 1)[1]
        planned = re.search(rf"{name} {re.escape(serving)} -> (\S+?)[;)]?( |$)", plan[0])
        assert planned and planned.group(1) not in before[name]["venvs"], plan[0]
    assert f"model {before['model'].rsplit('/', 1)[-1]} (unchanged)" in plan[0], plan[0]
    # Nothing moved: no venv installed, no link or unit changed, no restart.
    assert json.loads(host.check_output("python3 -c %s", STATE)) == before
