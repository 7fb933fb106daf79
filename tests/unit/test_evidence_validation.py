"""Bad input stops playbooks/evidence.yml before anything is measured: the
evidence role's validate.yml runs here with real ansible-playbook, and each
message names the variable and the fix.

Every case runs in one ansible-playbook run, a host of its own each
(conftest.run_cases)."""

from __future__ import annotations

import pytest

TASKS = """\
- name: Run the evidence role's checks
  ansible.builtin.include_role:
    name: evidence
    tasks_from: validate.yml
"""

ADVISORY = {"id": "SITE-1", "component": "nginx", "affected": {"introduced": "0", "fixed": "1.24.0"}}

BAD_SETTINGS = {
    "relative-reports-dir": ({"evidence_reports_dir": "reports/site"},
                             "evidence_reports_dir must be an absolute path on the controller"),
    "missing-signing-key": ({"evidence_signing_key": "/nonexistent/evidence-key"},
                            "evidence_signing_key (/nonexistent/evidence-key) is not a file on the controller"),
    "unit-not-a-service": ({"evidence_units": ["vllm.service", "nginx"]},
                           "evidence_units must list systemd service names such as vllm.service (got ['nginx'])"),
    "port-out-of-range": ({"evidence_scan_port_map": {"443": 70000}},
                          "evidence_scan_ports and evidence_scan_port_map must hold port numbers 1-65535"),
    "timeout-zero": ({"evidence_scan_timeout": 0}, "evidence_scan_timeout must be a number of seconds above 0"),
    "unknown-threshold": ({"evidence_threshold_overrides": {"lynis_minimum": 90}},
                          "evidence_threshold_overrides has unknown keys ['lynis_minimum']"),
    "thresholds-in-the-wrong-order": ({"evidence_threshold_overrides": {"lynis_index_warn": 90}},
                                      "lynis_index_warn (90) <= lynis_index_pass (80)"),
    "old-tls-name": ({"evidence_threshold_overrides": {"tls_min_version": "1.2"}},
                     "evidence_thresholds.tls_min_version must be one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"),
    "advisory-without-range": ({"evidence_advisories_extra": [{"id": "SITE-2", "component": "nginx"}]},
                               "evidence_advisories_extra: each entry needs id, component"),
    "advisory-of-unknown-component": ({"evidence_advisories_extra": [{**ADVISORY, "component": "openssl"}]},
                                      "evidence_advisories_extra: each entry needs id, component"),
}


@pytest.fixture(scope="module")
def results(run_cases, tmp_path_factory):
    key = tmp_path_factory.mktemp("key") / "evidence"
    key.write_text("not read by the checks\n")
    cases = {
        "good": {},
        "good-with-everything": {"evidence_signing_key": str(key), "evidence_advisories_extra": [ADVISORY],
                                 "evidence_scan_port_map": {"22": 2222, "443": 8443},
                                 "evidence_threshold_overrides": {"lynis_index_pass": 85}},
    }
    cases.update({name: settings for name, (settings, _) in BAD_SETTINGS.items()})
    return run_cases(TASKS, cases)


@pytest.mark.parametrize("name", ["good", "good-with-everything"])
def test_good_settings_pass(results, name):
    assert results[name].returncode == 0, results[name].output[-3000:]


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS))
def test_bad_settings_are_refused_naming_the_variable_and_the_fix(results, name):
    result = results[name]
    assert result.returncode != 0
    assert BAD_SETTINGS[name][1] in result.stdout, result.stdout[-2000:]
