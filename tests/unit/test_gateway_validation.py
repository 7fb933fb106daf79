"""Bad input stops the gateway role before anything changes: its first task
file (validate.yml, imported first by tasks/main.yml) runs here with real
ansible-playbook against certificates and keys made on the spot.

Every case runs in one ansible-playbook run, a host of its own each
(conftest.run_cases)."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TASKS = """\
- name: Run the gateway role's checks
  ansible.builtin.include_role:
    name: gateway
    tasks_from: validate.yml
"""


def write_key(path):
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


def write_cert(path, key, days_valid=30, days_ago=0):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat.example.internal")])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days_ago)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days_valid))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("chat.example.internal")]), critical=False)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


BAD_CIDRS = [["10.88.0.1/33"], ["10.88.0"], ["not-a-network"], ["2001:db8::/129"]]
LOUD_LOG_LEVELS = ["debug", "info"]
MISREAD_PATHS = [["/v1;"], ["metrics"], ["/a b"], ["/v1/"]]
BREAKING_CSPS = ['default-src "self"', "default-src 'self'; script-src $evil"]
BAD_SERVER_NAMES = [["chat example"], ["127.0.0.1"], ["bad_name"]]
CLASHING_PORTS = [{"gateway_replica_port": 443}, {"gateway_pool_port": 8001},
                  {"gateway_replica_port": 8002}, {"gateway_replica_port": 70000}]
BAD_TLS_NAMES = ["replica", "Replica.Internal", "-bad.internal", "a b.internal"]
LOW_HEALTH_SETTINGS = [{"gateway_replica_tries": 0}, {"gateway_replica_max_fails": 0}]
BAD_METRICS = [
    ({"metrics_client_cidrs": ["0.0.0.0/0"]}, "gateway_metrics_client_cidrs (default: metrics_client_cidrs) must be"),
    ({"metrics_client_cidrs": ["not-a-network"]}, "gateway_metrics_client_cidrs (default: metrics_client_cidrs) must be"),
    ({"metrics_client_cidrs": ["192.0.2.10/32"], "gateway_metrics_port": 443},
     "gateway_metrics_port (443) and gateway_metrics_status_port"),
    ({"metrics_client_cidrs": ["192.0.2.10/32"], "gateway_metrics_client_name": "bad/name"},
     "gateway_metrics_client_name must be"),
]
BAD_USAGE_LOGS = [
    ({"gateway_usage_log": "/var/log/usage.log"}, "gateway_usage_log must be a file in a folder of its own"),
    ({"gateway_usage_log": "/tmp/llm/usage.log"}, "gateway_usage_log must be a file in a folder of its own"),
    ({"gateway_usage_log_retention_days": 0}, "gateway_usage_log_retention_days must be a number of days"),
    ({"gateway_usage_log_max_size": "lots"}, "gateway_usage_log_max_size must be a size"),
    ({"gateway_usage_log_max_files": 0}, "gateway_usage_log_max_size must be a size"),
]
CLIENT_KEY = "Kq7" * 12


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A certificate and its key, another key, an expired pair, a file that is no certificate."""
    folder = tmp_path_factory.mktemp("tls")
    key = write_key(folder / "site.key")
    write_cert(folder / "site.crt", key)
    write_key(folder / "other.key")
    old = write_key(folder / "old.key")
    write_cert(folder / "old.crt", old, days_valid=10, days_ago=20)
    (folder / "junk.crt").write_text("not a certificate\n")
    return folder


@pytest.fixture(scope="module")
def results(run_cases, files):
    cert, key = str(files / "site.crt"), str(files / "site.key")
    cases = {
        "defaults": {},
        "cert-and-key": {"gateway_tls_cert_file": cert, "gateway_tls_key_file": key},
        "key-as-text": {"gateway_tls_cert_file": cert, "gateway_tls_key_content": (files / "site.key").read_text()},
        "cert-without-key": {"gateway_tls_cert_file": cert},
        "key-without-cert": {"gateway_tls_key_file": key},
        "key-twice": {"gateway_tls_cert_file": cert, "gateway_tls_key_file": key,
                      "gateway_tls_key_content": (files / "site.key").read_text()},
        "cert-of-another-key": {"gateway_tls_cert_file": cert, "gateway_tls_key_file": str(files / "other.key")},
        "expired-cert": {"gateway_tls_cert_file": str(files / "old.crt"),
                         "gateway_tls_key_file": str(files / "old.key")},
        "cert-not-pem": {"gateway_tls_cert_file": str(files / "junk.crt"), "gateway_tls_key_file": key},
        "good-networks": {"api_client_cidrs": ["10.88.0.1/32", "10.20.0.0/16", "192.0.2.7", "2001:db8::/48"]},
        "cidr-string": {"gateway_api_client_cidrs": "10.0.0.0/8"},
        "route-method": {"gateway_api_routes": [{"path": "/v1/models", "methods": ["DELETE"]}]},
        "gateway-port-is-backend-port": {"gateway_port": 8000},
        "bad-api-clients": {"gateway_api_clients": [{"name": "claims-batch", "key": CLIENT_KEY},
                                                    {"name": "claims-batch", "rate": "fast"}]},
    }
    for index, cidrs in enumerate(BAD_CIDRS):
        cases[f"bad-cidr-{index}"] = {"gateway_api_client_cidrs": ["10.0.0.0/8", *cidrs]}
    for level in LOUD_LOG_LEVELS:
        cases[f"log-level-{level}"] = {"gateway_error_log_level": level}
    for index, paths in enumerate(MISREAD_PATHS):
        cases[f"blocked-paths-{index}"] = {"gateway_blocked_paths": paths}
    for index, policy in enumerate(BREAKING_CSPS):
        cases[f"csp-{index}"] = {"gateway_csp": policy}
    for index, names in enumerate(BAD_SERVER_NAMES):
        cases[f"server-names-{index}"] = {"gateway_server_names": names}
    for index, overrides in enumerate(CLASHING_PORTS):
        cases[f"fleet-ports-{index}"] = overrides
    for index, name in enumerate(BAD_TLS_NAMES):
        cases[f"replica-tls-name-{index}"] = {"gateway_replica_tls_name": name}
    for index, overrides in enumerate(LOW_HEALTH_SETTINGS):
        cases[f"health-{index}"] = overrides
    for index, (overrides, _) in enumerate(BAD_USAGE_LOGS):
        cases[f"usage-log-{index}"] = overrides
    cases["usage-log-off"] = {"gateway_usage_log": ""}
    for index, (overrides, _) in enumerate(BAD_METRICS):
        cases[f"metrics-{index}"] = overrides
    cases["metrics-good"] = {"metrics_client_cidrs": ["192.0.2.10/32", "2001:db8::/64"]}
    return run_cases(TASKS, cases)


def test_defaults_pass(results):
    result = results["defaults"]
    assert result.returncode == 0, result.output[-3000:]


def test_a_matching_certificate_and_key_file_pass(results):
    result = results["cert-and-key"]
    assert result.returncode == 0, result.output[-3000:]


def test_a_key_given_as_text_passes_and_never_shows_in_the_output(results, files):
    result = results["key-as-text"]
    assert result.returncode == 0, result.output[-3000:]
    body = (files / "site.key").read_text().splitlines()[1]
    assert body not in result.output


def test_a_certificate_without_its_key_names_both_variables(results):
    result = results["cert-without-key"]
    assert result.returncode != 0
    assert "needs both gateway_tls_cert_file" in result.stdout
    assert "gateway_tls_key_file" in result.stdout and "gateway_tls_key_content" in result.stdout


def test_a_key_without_its_certificate_names_both_variables(results):
    result = results["key-without-cert"]
    assert result.returncode != 0
    assert "needs both gateway_tls_cert_file" in result.stdout


def test_a_key_given_twice_is_refused(results):
    result = results["key-twice"]
    assert result.returncode != 0
    assert "exactly one of gateway_tls_key_file" in result.stdout


def test_a_certificate_that_does_not_match_its_key_is_refused(results, files):
    result = results["cert-of-another-key"]
    assert result.returncode != 0
    cert, other = files / "site.crt", files / "other.key"
    assert f"gateway_tls_cert_file ({cert}) does not match its key (gateway_tls_key_file: {other})" in result.stdout


def test_an_expired_certificate_is_refused(results):
    result = results["expired-cert"]
    assert result.returncode != 0
    assert "expired on" in result.stdout


def test_a_certificate_file_that_is_not_pem_is_named(results, files):
    result = results["cert-not-pem"]
    assert result.returncode != 0
    assert f"gateway_tls_cert_file ({files / 'junk.crt'}) is not a readable PEM certificate" in result.stdout


@pytest.mark.parametrize("index, cidrs", list(enumerate(BAD_CIDRS)))
def test_an_invalid_api_client_cidr_is_refused_by_name(results, index, cidrs):
    result = results[f"bad-cidr-{index}"]
    assert result.returncode != 0
    assert "gateway_api_client_cidrs (default: api_client_cidrs) must be a list of networks" in result.stdout
    assert cidrs[0] in result.stdout.split("not valid:", 1)[1]


def test_valid_ipv4_and_ipv6_networks_and_addresses_pass(results):
    result = results["good-networks"]
    assert result.returncode == 0, result.output[-3000:]


def test_a_cidr_string_instead_of_a_list_is_refused(results):
    result = results["cidr-string"]
    assert result.returncode != 0
    assert "must be a list of networks" in result.stdout


@pytest.mark.parametrize("level", LOUD_LOG_LEVELS)
def test_error_log_levels_that_print_request_headers_are_refused(results, level):
    result = results[f"log-level-{level}"]
    assert result.returncode != 0
    assert "debug and info would" in result.stdout


@pytest.mark.parametrize("index, paths", list(enumerate(MISREAD_PATHS)))
def test_blocked_paths_nginx_could_misread_are_refused(results, index, paths):
    result = results[f"blocked-paths-{index}"]
    assert result.returncode != 0
    assert "gateway_blocked_paths and" in result.stdout


def test_an_api_route_with_an_unknown_method_is_refused(results):
    result = results["route-method"]
    assert result.returncode != 0
    assert "Each item of gateway_api_routes" in result.stdout


@pytest.mark.parametrize("index, policy", list(enumerate(BREAKING_CSPS)))
def test_a_csp_that_would_break_the_nginx_line_is_refused(results, index, policy):
    result = results[f"csp-{index}"]
    assert result.returncode != 0
    assert "gateway_csp" in result.stdout


@pytest.mark.parametrize("index, names", list(enumerate(BAD_SERVER_NAMES)))
def test_server_names_a_certificate_cannot_carry_are_refused(results, index, names):
    result = results[f"server-names-{index}"]
    assert result.returncode != 0
    assert "gateway_server_names must be a list of DNS names" in result.stdout


def test_the_gateway_port_may_not_be_a_backend_port(results):
    result = results["gateway-port-is-backend-port"]
    assert result.returncode != 0
    assert "gateway_port (8000) must differ from gateway_chainlit_port and gateway_vllm_port" in result.stdout


@pytest.mark.parametrize("index, overrides", list(enumerate(CLASHING_PORTS)))
def test_fleet_ports_that_clash_or_are_no_ports_are_refused_by_name(results, index, overrides):
    result = results[f"fleet-ports-{index}"]
    assert result.returncode != 0
    assert "gateway_replica_port" in result.stdout and "gateway_pool_port" in result.stdout


@pytest.mark.parametrize("index, name", list(enumerate(BAD_TLS_NAMES)))
def test_a_replica_tls_name_that_is_no_dns_name_is_refused(results, index, name):
    result = results[f"replica-tls-name-{index}"]
    assert result.returncode != 0
    assert "gateway_replica_tls_name a lower-case DNS name" in result.stdout


@pytest.mark.parametrize("index, overrides", list(enumerate(LOW_HEALTH_SETTINGS)))
def test_health_check_settings_below_one_are_refused(results, index, overrides):
    result = results[f"health-{index}"]
    assert result.returncode != 0
    assert "at least 1" in result.stdout


def test_bad_api_clients_are_refused_by_name_and_their_keys_never_shown(results):
    result = results["bad-api-clients"]
    assert result.returncode != 0
    assert "gateway_api_clients[1] (claims-batch) has the name of gateway_api_clients[0]" in result.stdout
    assert "gateway_api_clients[1] (claims-batch): rate must be a rate such as 2r/s" in result.stdout
    assert CLIENT_KEY not in result.output


@pytest.mark.parametrize("index", range(len(BAD_USAGE_LOGS)))
def test_a_usage_log_outside_its_own_log_folder_or_without_a_bound_is_refused(results, index):
    result = results[f"usage-log-{index}"]
    assert result.returncode != 0
    assert BAD_USAGE_LOGS[index][1] in result.stdout


def test_the_usage_log_may_be_turned_off(results):
    assert results["usage-log-off"].returncode == 0, results["usage-log-off"].stdout[-2000:]


@pytest.mark.parametrize("index", range(len(BAD_METRICS)))
def test_bad_metrics_networks_ports_or_client_name_are_refused_by_name(results, index):
    result = results[f"metrics-{index}"]
    assert result.returncode != 0
    assert BAD_METRICS[index][1] in result.stdout


def test_metrics_for_the_prometheus_servers_networks_pass(results):
    assert results["metrics-good"].returncode == 0, results["metrics-good"].stdout[-2000:]
