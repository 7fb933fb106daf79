"""The shipped Prometheus files (files/prometheus/) are what Prometheus and
its promtool accept, and the alert rules fire when they should and stay
quiet otherwise (alerts.test.yml feeds them series; promtool compares each
alert's labels and annotations at each evaluation time).

promtool comes from Debian's prometheus package, extracted into the venv by
`make setup` (scripts/setup.sh); no Prometheus server runs here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
FILES = PROJECT / "files" / "prometheus"
# Where the README tells operators to put the client certificate's files.
TLS_DIR = "/etc/prometheus/private-llm/"
JOBS = {"llm-node": "/metrics/node", "llm-nginx": "/metrics/nginx",
        "llm-vllm": "/metrics/vllm", "llm-dcgm": "/metrics/dcgm"}
ALERTS = {"LLMServiceDown", "LLMHighErrorRate", "LLMHighLatency", "LLMGPUMemoryNearlyFull", "LLMGPUTooHot",
          "LLMCertificateExpiresSoon", "LLMModelVolumeLocked", "LLMMetricsStale"}


@pytest.fixture(scope="module")
def promtool():
    found = shutil.which("promtool", path=str(Path(sys.executable).parent)) or shutil.which("promtool")
    assert found, "promtool not found: run `make setup` (it extracts it from Debian's prometheus package)"
    return found


def run(promtool, *args, cwd=FILES):
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_the_scrape_configuration_is_valid(promtool, tmp_path):
    # promtool also checks that the certificate files exist: the same
    # configuration with the folder moved to files made here.
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("")
    (tmp_path / "prometheus.yml").write_text((FILES / "prometheus.yml").read_text().replace(TLS_DIR, f"{tmp_path}/"))
    shutil.copy(FILES / "alerts.yml", tmp_path / "alerts.yml")
    result = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_job_scrapes_its_path_over_https_with_the_client_certificate():
    config = yaml.safe_load((FILES / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(JOBS)
    for name, job in jobs.items():
        assert job["metrics_path"] == JOBS[name]
        assert job["scheme"] == "https"
        assert job["tls_config"]["cert_file"] == TLS_DIR + "client.crt"
        assert job["tls_config"]["key_file"] == TLS_DIR + "client.key"
        assert job["tls_config"]["ca_file"] == TLS_DIR + "ca.crt"
        assert all(target.endswith(":9443") for group in job["static_configs"] for target in group["targets"])


def test_the_alert_rules_are_valid_and_annotated(promtool):
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = [rule for group in yaml.safe_load((FILES / "alerts.yml").read_text())["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]


def test_each_alert_fires_when_it_should_and_not_otherwise(promtool):
    tests = yaml.safe_load((FILES / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    # Every alert is proven to fire at least once...
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == ALERTS
    # ...and each test feeds a series that must not raise it (another host,
    # GPU or certificate, or a time before `for` has passed).
    result = run(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_tests_can_fail(promtool, tmp_path):
    """The same tests against rules whose thresholds are off: promtool must fail them."""
    broken = (FILES / "alerts.yml").read_text().replace("> 85", "> 95").replace("== 0\n        for: 5m", "== 0\n        for: 15m")
    assert broken != (FILES / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(FILES / "alerts.test.yml", tmp_path / "alerts.test.yml")
    result = run(promtool, "test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "LLMGPUTooHot" in result.stdout + result.stderr
