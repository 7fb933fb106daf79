"""playbooks/evidence.yml on the VM (a real kernel): the encryption, audit,
core dump, swap, firewall and Lynis figures of the report are those these
tests read on the guest themselves, and the run changes nothing.

One run, after the scenario's reboot and after the hardening suite's Lynis
audit (conftest.py orders it last), so the report reads that audit's result.
The controller reaches the guest only through QEMU's forwarded ports: the
scan is given them (evidence_scan_port_map)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import jsonschema
import pytest

PROJECT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(PROJECT / "molecule" / "shared"))

import playbook_report  # noqa: E402  (path set just above)
from conftest import load_instance  # noqa: E402  (molecule/vm/tests/conftest.py)

# The VM only: the scenario's Tang host (llm-vm-tang) has tests of its own.
testinfra_hosts = ["ansible://llm-vm"]

DEVICE = "/dev/disk/by-id/virtio-llm-data"
KEYFILE = "/etc/cryptsetup-keys.d/llm-models.key"
SCHEMA = PROJECT / "files" / "evidence" / "report.schema.json"


@pytest.fixture(scope="module")
def evidence(host, guest_rebooted, request, tmp_path_factory):
    """The report of one evidence run against the guest, and the run's recap."""
    directory = tmp_path_factory.mktemp("evidence-vm")
    instance = load_instance(host.backend.get_hostname())
    port_map = {"22": instance["port"], **instance["ports"]}
    extra = {"evidence_reports_dir": str(directory / "reports"), "evidence_scan_port_map": port_map}
    start = time.monotonic()
    status, recap, output = playbook_report.run_playbook_with_output(
        directory, ["-i", request.config.option.ansible_inventory, "-e", json.dumps(extra), "playbooks/evidence.yml"])
    seconds = time.monotonic() - start
    reports = os.environ.get("LLM_TEST_REPORTS")
    if reports:
        Path(reports, "evidence-vm-seconds.txt").write_text(f"{seconds:.0f}\n")
    name = host.backend.get_hostname()
    found = sorted((directory / "reports").glob(f"*/{name}.json"))
    assert status == 0 and len(found) == 1, playbook_report.failed_tasks(recap) or output[-3000:]
    report = json.loads(found[0].read_text())
    return {"recap": recap, "name": name, "report": report,
            "controls": {c["id"]: c for c in report["controls"]}}


def test_the_evidence_run_changes_nothing_on_the_guest(evidence):
    stats = evidence["recap"]["stats"][evidence["name"]]
    assert stats["changed"] == 0 and stats["failures"] == 0, playbook_report.changed_tasks(
        evidence["recap"], evidence["name"])


def test_the_vm_report_validates_against_its_schema(evidence):
    jsonschema.validate(evidence["report"], json.loads(SCHEMA.read_text()))


def test_the_luks_figures_are_those_of_the_volume_header(host, evidence):
    header = json.loads(host.check_output("cryptsetup luksDump --dump-json-metadata %s", DEVICE))
    luks = evidence["report"]["facts"]["luks"][0]
    segment = header["segments"]["0"]
    assert luks["is_luks"] and luks["version"] == 2 and luks["open"]
    assert luks["cipher"] == segment["encryption"]
    assert sorted(s["id"] for s in luks["keyslots"]) == sorted(header["keyslots"])
    assert {s["pbkdf"] for s in luks["keyslots"]} == {s["kdf"]["type"] for s in header["keyslots"].values()}
    assert luks["key_bits"] == next(iter(header["keyslots"].values()))["key_size"] * 8
    assert evidence["controls"]["encryption.luks"]["status"] == "pass"
    assert evidence["controls"]["encryption.header_backup"]["status"] == "pass"


def test_the_keyfile_mode_is_reported_with_its_limit(host, evidence):
    luks = evidence["report"]["facts"]["luks"][0]
    assert luks["crypttab"]["key"] == KEYFILE
    assert luks["key_file"]["exists"] and luks["key_file"]["mode"] == host.check_output("stat -c 0%%a %s", KEYFILE)
    assert luks["key_file"]["encrypted_fs"] is False
    unlock = evidence["controls"]["encryption.unlock"]
    assert unlock["status"] == "warn" and unlock["findings"]


def test_the_audit_rules_are_those_auditctl_lists(host, evidence):
    audit = evidence["report"]["facts"]["audit"]
    assert audit["applicable"] and audit["running"]
    assert audit["rules"] == host.check_output("auditctl -l").splitlines()
    assert evidence["controls"]["logging.audit"]["status"] == "pass"


def test_the_core_dump_and_swap_settings_are_the_kernels(host, evidence):
    facts = evidence["report"]["facts"]
    assert facts["core_dumps"]["core_pattern"] == host.check_output("sysctl -n kernel.core_pattern")
    assert facts["core_dumps"]["suid_dumpable"] == int(host.check_output("sysctl -n fs.suid_dumpable"))
    swaps = host.file("/proc/swaps").content_string.strip().splitlines()[1:]
    assert len(facts["swap"]) == len(swaps)
    assert evidence["controls"]["host.core_dumps"]["status"] == "pass"
    assert evidence["controls"]["host.swap"]["status"] == "pass"


def test_the_firewall_and_the_scan_match_the_guest(host, evidence):
    ufw = evidence["report"]["facts"]["ufw"]
    assert ufw["active"] and ufw["default_incoming"] == "deny"
    shown = [line for line in host.check_output("ufw status").splitlines() if "ALLOW" in line]
    assert len(ufw["rules"]) == len(shown)
    scan = evidence["report"]["probes"]["scan"]
    assert set(scan["checked"]) == {22, 443, 8000} and 22 in scan["open"] and 8000 not in scan["open"]
    assert evidence["controls"]["exposure.firewall"]["status"] == "pass"
    assert evidence["controls"]["exposure.scan"]["status"] == "pass"


def test_the_lynis_figures_are_those_of_its_last_report(host, evidence):
    lynis = evidence["report"]["facts"]["lynis"]
    if not host.file("/var/log/lynis-report.dat").exists:
        assert evidence["controls"]["host.lynis"]["status"] == "na"
        pytest.skip("no Lynis report on the guest (LLM_LYNIS=0)")
    report = host.file("/var/log/lynis-report.dat").content_string
    index = int(re.search(r"^hardening_index=(\d+)$", report, re.M).group(1))
    assert lynis["hardening_index"] == index
    assert lynis["warnings"] == ["|".join(w.split("|")[:2]) for w in re.findall(r"^warning\[\]=(.*)$", report, re.M)]
    assert evidence["controls"]["host.lynis"]["status"] in ({"pass", "warn"} if index >= 80 else {"warn", "fail"})
