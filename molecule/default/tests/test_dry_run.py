"""`site.yml --check --diff` on a converged host changes nothing, as the README
promises operators ("look before you leap"): no task reports a change or
fails. One run against the converged llm-node1 (the fresh host is in no
group of the service)."""

from __future__ import annotations

import os

import playbook_report  # molecule/shared, on the path by conftest.py

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
