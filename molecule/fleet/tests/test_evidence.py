"""playbooks/evidence.yml across the fleet (a gateway and two vLLM replicas):
one report per host and one summary that names every host's report by its
SHA-256, each control judged by the host's own role in the fleet."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import jsonschema
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import playbook_report  # noqa: E402  (path set just above)

testinfra_hosts = ["ansible://fleet-gw"]

PROJECT = Path(__file__).resolve().parents[3]
HOSTS = ["fleet-node1", "fleet-node2", "fleet-gw"]
SCHEMAS = PROJECT / "files" / "evidence"


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("evidence-fleet")
    start = time.monotonic()
    status, recap, output = playbook_report.run_playbook_with_output(
        directory, ["-i", os.environ["MOLECULE_INVENTORY_FILE"], "-e", f"evidence_reports_dir={directory}/reports",
                    "playbooks/evidence.yml"])
    seconds = time.monotonic() - start
    runs = sorted((directory / "reports").glob("*/summary.json"))
    assert status == 0 and len(runs) == 1, playbook_report.failed_tasks(recap) or output[-3000:]
    run_dir = runs[0].parent
    summary = json.loads(runs[0].read_text())
    reports = {h: json.loads((run_dir / f"{h}.json").read_text()) for h in HOSTS}
    table = "\n".join(f"{h['host']:12} " + " ".join(f"{c}={s}" for c, s in h["statuses"].items())
                      for h in summary["hosts"])
    if os.environ.get("LLM_TEST_REPORTS"):
        Path(os.environ["LLM_TEST_REPORTS"], "evidence-fleet-summary.txt").write_text(
            f"{seconds:.0f} s for {len(HOSTS)} hosts\n{table}\n")
    return {"recap": recap, "dir": run_dir, "summary": summary, "reports": reports}


def statuses(report: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["controls"]}


def test_one_run_reports_every_host_and_changes_none(fleet_run):
    for host in HOSTS:
        stats = fleet_run["recap"]["stats"][host]
        assert stats["changed"] == 0 and stats["failures"] == 0, playbook_report.changed_tasks(fleet_run["recap"], host)
    assert sorted(h["host"] for h in fleet_run["summary"]["hosts"]) == sorted(HOSTS)


def test_the_summary_names_each_report_by_its_sha256_and_validates(fleet_run):
    jsonschema.validate(fleet_run["summary"], json.loads((SCHEMAS / "summary.schema.json").read_text()))
    schema = json.loads((SCHEMAS / "report.schema.json").read_text())
    for entry in fleet_run["summary"]["hosts"]:
        path = fleet_run["dir"] / f"{entry['host']}.json"
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        jsonschema.validate(fleet_run["reports"][entry["host"]], schema)
        assert entry["statuses"] == statuses(fleet_run["reports"][entry["host"]])
        assert (fleet_run["dir"] / f"{entry['host']}.html").is_file()
    assert (fleet_run["dir"] / "summary.html").is_file()


def test_every_host_has_the_same_controls_in_the_same_order(fleet_run):
    orders = {h: [c["id"] for c in r["controls"]] for h, r in fleet_run["reports"].items()}
    assert len({tuple(o) for o in orders.values()}) == 1, orders
    assert fleet_run["summary"]["controls"] == orders["fleet-gw"]


@pytest.mark.parametrize("name", ["fleet-node1", "fleet-node2"])
def test_a_replica_is_judged_as_a_replica(fleet_run, name):
    report = fleet_run["reports"][name]
    sockets = {(s["address"], s["port"]) for s in report["facts"]["sockets"] if s["proto"] == "tcp"}
    assert any(port == 8443 for _, port in sockets)
    assert 8443 not in report["probes"]["scan"]["open"], "the controller is not a gateway"
    assert report["probes"]["tls"] is None and report["probes"]["routes"] is None
    judged = statuses(report)
    assert judged["exposure.sockets"] == "pass" and judged["exposure.firewall"] == "pass"
    assert judged["exposure.scan"] == "pass"
    assert judged["versions.chainlit"] == "na" and judged["sandboxing.chainlit"] == "na"
    assert judged["sandboxing.vllm"] == "pass"


def test_the_gateway_is_judged_as_a_gateway(fleet_run):
    report = fleet_run["reports"]["fleet-gw"]
    judged = statuses(report)
    assert all(r["ok"] for r in report["probes"]["routes"]), report["probes"]["routes"]
    assert judged["exposure.routes"] == "pass" and judged["exposure.tls"] == "pass"
    assert judged["versions.vllm"] == "na" and judged["sandboxing.vllm"] == "na"
    assert judged["sandboxing.chainlit"] == "pass" and judged["sandboxing.nginx"] == "pass"
