"""Private metrics: the host's exporters (node, nginx, vLLM's own)
answer only on 127.0.0.1; the gateway's metrics listener (port 9443) serves
them to the sandbox's metrics_client_cidrs (this machine, 10.88.0.1) with the
client certificate the project issued into the controller's secrets store,
and to nobody else: no certificate, a certificate of another CA, another
certificate of the project's CA, another address. A chat's canary never
shows in the metrics. Without a GPU, a dry run with the DCGM exporter on
shows its plan (NVIDIA's repository, the packages, the unit).

One scrape (module scope) serves every assertion on the metrics text."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import ssl
import urllib.request
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import netprobe
import playbook_report  # molecule/shared, on the path by conftest.py

testinfra_hosts = ["gateways"]

PORT = 9443
MODEL = "Qwen3-4B-Instruct-2507"
# Each path and metric names it must carry.
EXPECTED = {
    "node": ["node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "llm_tls_cert_not_after_seconds",
             "llm_textfile_written_seconds"],
    "nginx": ["nginx_connections_active", "nginx_http_requests_total", "nginxexporter_build_info"],
    "vllm": ["vllm:e2e_request_latency_seconds_bucket", "vllm:request_success_total", "http_requests_total"],
}
# Exporters and nginx's stub_status: loopback only.
LOOPBACK_PORTS = {9100: "node exporter", 9113: "nginx exporter", 8003: "nginx stub_status", 8000: "vLLM"}
CANARY = f"metrics-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def client_dir(secrets_dir):
    folder = secrets_dir / "metrics-client"
    assert (folder / "client.key").is_file(), f"no client key for Prometheus in {folder}"
    return folder


def tls_context(ca_file, cert=None, key=None):
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert:
        context.load_cert_chain(str(cert), str(key))
    return context


def get(address, path, context, method="GET"):
    """(status, body text) of one request to the metrics listener."""
    conn = http.client.HTTPSConnection(address, PORT, context=context, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def issue_client_cert(folder: Path, name: str, issuer_key=None, issuer_cert=None):
    """A clientAuth certificate for `name`, signed by the given CA or self-signed
    as its own CA; returns (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert else subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(issuer_key or key, hashes.SHA256()))
    slug = name.replace(" ", "-")
    (folder / f"{slug}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{slug}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return folder / f"{slug}.crt", folder / f"{slug}.key"


@pytest.fixture(scope="module")
def scraped(host_address, secrets_dir, client_dir):
    """A chat carrying the canary through the gateway, then every metrics
    path scraped once with Prometheus's certificate: {path: (status, text)}."""
    key = (secrets_dir / "api-clients" / "app").read_text().strip()
    body = json.dumps({"model": MODEL, "max_tokens": 8,
                       "messages": [{"role": "user", "content": f"Remember {CANARY}"}]}).encode()
    request = urllib.request.Request(f"https://{host_address}/v1/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, context=tls_context(secrets_dir / "gateway-ca.crt"), timeout=60) as answer:
        assert answer.status == 200
    context = tls_context(client_dir / "ca.crt", client_dir / "client.crt", client_dir / "client.key")
    return {name: get(host_address, f"/metrics/{name}", context) for name in [*EXPECTED, "dcgm"]}


def test_prometheus_gets_each_exporters_metrics_with_the_client_certificate(scraped):
    for name, names in EXPECTED.items():
        status, text = scraped[name]
        assert status == 200, (name, status, text[:200])
        missing = [metric for metric in names if f"\n{metric}" not in "\n" + text]
        assert not missing, f"/metrics/{name} lacks {missing}"


def test_the_sandbox_has_no_gpu_metrics_path(scraped):
    assert scraped["dcgm"][0] == 404


def test_the_certificates_end_and_no_volume_state_in_a_container(scraped):
    text = scraped["node"][1]
    assert 'llm_tls_cert_not_after_seconds{file="gateway.crt"}' in text
    assert 'llm_tls_cert_not_after_seconds{file="metrics.crt"}' in text
    # model_volume_enabled: false in the sandbox (a plain directory): no volume metric.
    assert "llm_model_volume_mounted" not in text


def test_a_chats_canary_is_in_no_metrics_text(scraped):
    for name, (_, text) in scraped.items():
        assert CANARY not in text, f"the canary is in /metrics/{name}"
        assert CANARY.encode().hex() not in text


def test_the_listener_refuses_a_client_without_a_certificate(host_address, client_dir):
    status, text = get(host_address, "/metrics/node", tls_context(client_dir / "ca.crt"))
    assert status == 400 and "node_cpu_seconds_total" not in text


def test_the_listener_refuses_a_certificate_of_another_ca(host_address, client_dir, tmp_path):
    cert, key = issue_client_cert(tmp_path, "private-llm metrics client")
    try:
        status, text = get(host_address, "/metrics/node", tls_context(client_dir / "ca.crt", cert, key))
    except (ssl.SSLError, ConnectionResetError):
        return  # refused in the handshake: as good
    assert status == 400 and "node_cpu_seconds_total" not in text


def test_the_listener_refuses_another_certificate_of_the_projects_ca(host_address, secrets_dir, client_dir, tmp_path):
    ca_key = serialization.load_pem_private_key((secrets_dir / "ca" / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((secrets_dir / "ca" / "ca.crt").read_bytes())
    cert, key = issue_client_cert(tmp_path, "some other client", ca_key, ca_cert)
    status, text = get(host_address, "/metrics/node", tls_context(client_dir / "ca.crt", cert, key))
    assert status == 403 and "node_cpu_seconds_total" not in text


def test_only_the_metrics_paths_answer_and_only_to_get(host_address, client_dir):
    context = tls_context(client_dir / "ca.crt", client_dir / "client.crt", client_dir / "client.key")
    for path in ("/metrics", "/metrics/", "/metrics/node/", "/v1/models", "/health", "/metrics/../metrics/node/x"):
        assert get(host_address, path, context)[0] == 404, path
    assert get(host_address, "/metrics/vllm", context, method="POST")[0] == 405


def test_a_stranger_cannot_reach_the_metrics_port(host_address, outsider):
    assert netprobe.probe_from(outsider, host_address, PORT) == "timeout"


def test_the_firewall_opens_the_metrics_port_to_the_monitoring_network_only(host):
    rules = [line for line in host.check_output("ufw status").splitlines() if line.startswith(f"{PORT}/tcp")]
    assert rules and all("10.88.0.1" in line for line in rules), rules


def test_the_exporters_listen_on_loopback_only(host):
    listening = host.check_output("ss -Hltn").splitlines()
    for port, what in LOOPBACK_PORTS.items():
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening if line.split()[3].endswith(f":{port}")}
        assert addresses == {"127.0.0.1"}, f"{what} listens on {addresses}"


def test_the_exporters_run_sandboxed_as_their_own_user(host):
    for unit in ("prometheus-node-exporter", "prometheus-nginx-exporter"):
        service = host.service(unit)
        assert service.is_running and service.is_enabled
        shown = host.check_output(f"systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p IPAddressDeny {unit}")
        assert "User=prometheus" in shown and "NoNewPrivileges=yes" in shown and "ProtectSystem=strict" in shown
        exposure = host.check_output(f"systemd-analyze security {unit}.service | tail -n 1")
        assert float(exposure.split("level for")[1].split(":")[1].split()[0]) < 3.0, exposure


def test_a_dry_run_with_the_dcgm_exporter_on_plans_its_repository_packages_and_unit(host, tmp_path):
    name = host.backend.host
    status, report = playbook_report.run_playbook(
        tmp_path, ["-i", os.environ["MOLECULE_INVENTORY_FILE"], "--limit", name, "--check", "--tags", "metrics",
                   "-e", '{"metrics_dcgm_enabled": true}', "playbooks/metrics.yml"])
    stats = report["stats"][name]
    assert status == 0 and stats["failures"] == 0, playbook_report.failed_tasks(report)
    changed = playbook_report.changed_tasks(report, name)
    for task in ("Add NVIDIA's repository signed by that key",
                 "Let apt take only DCGM's packages from that repository", "Write the DCGM exporter's unit"):
        assert any(entry.split(' : ', 1)[-1].startswith(task) for entry in changed), (task, changed)
    messages = [result.get("msg", "") for play in report["plays"] for task in play["tasks"]
                for result in [task["hosts"].get(name, {})] if isinstance(result.get("msg"), str)]
    assert any("datacenter-gpu-manager-4-cuda12" in message and "/compute/cuda/repos/debian12/x86_64/3bf863cc.pub" in message
               for message in messages), messages
    # A dry run: the host has none of it.
    assert not host.file("/etc/apt/sources.list.d/llm-dcgm.sources").exists
    assert not host.file("/etc/systemd/system/llm-dcgm-exporter.service").exists
