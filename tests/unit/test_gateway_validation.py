"""Bad input stops the gateway role before anything changes: its first task
file (validate.yml, imported first by tasks/main.yml) runs here with real
ansible-playbook against certificates and keys made on the spot."""

from __future__ import annotations

import datetime
import sys

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


@pytest.fixture
def pair(tmp_path):
    key = write_key(tmp_path / "site.key")
    write_cert(tmp_path / "site.crt", key)
    return tmp_path / "site.crt", tmp_path / "site.key"


def settings(**overrides):
    return {"ansible_python_interpreter": sys.executable, **overrides}


def test_defaults_pass(run_playbook):
    result = run_playbook(TASKS, settings())
    assert result.returncode == 0, result.stdout[-2000:]


def test_a_matching_certificate_and_key_file_pass(run_playbook, pair):
    cert, key = pair
    result = run_playbook(TASKS, settings(gateway_tls_cert_file=str(cert), gateway_tls_key_file=str(key)))
    assert result.returncode == 0, result.stdout[-2000:]


def test_a_key_given_as_text_passes_and_never_shows_in_the_output(run_playbook, pair):
    cert, key = pair
    pem = key.read_text()
    result = run_playbook(TASKS, settings(gateway_tls_cert_file=str(cert), gateway_tls_key_content=pem))
    assert result.returncode == 0, result.stdout[-2000:]
    body = pem.splitlines()[1]
    assert body not in result.stdout and body not in result.stderr


def test_a_certificate_without_its_key_names_both_variables(run_playbook, pair):
    cert, _ = pair
    result = run_playbook(TASKS, settings(gateway_tls_cert_file=str(cert)))
    assert result.returncode != 0
    assert "needs both gateway_tls_cert_file" in result.stdout
    assert "gateway_tls_key_file" in result.stdout and "gateway_tls_key_content" in result.stdout


def test_a_key_without_its_certificate_names_both_variables(run_playbook, pair):
    _, key = pair
    result = run_playbook(TASKS, settings(gateway_tls_key_file=str(key)))
    assert result.returncode != 0
    assert "needs both gateway_tls_cert_file" in result.stdout


def test_a_key_given_twice_is_refused(run_playbook, pair):
    cert, key = pair
    result = run_playbook(TASKS, settings(gateway_tls_cert_file=str(cert), gateway_tls_key_file=str(key),
                                          gateway_tls_key_content=key.read_text()))
    assert result.returncode != 0
    assert "exactly one of gateway_tls_key_file" in result.stdout


def test_a_certificate_that_does_not_match_its_key_is_refused(run_playbook, pair, tmp_path):
    cert, _ = pair
    other = tmp_path / "other.key"
    write_key(other)
    result = run_playbook(TASKS, settings(gateway_tls_cert_file=str(cert), gateway_tls_key_file=str(other)))
    assert result.returncode != 0
    assert f"gateway_tls_cert_file ({cert}) does not match its key (gateway_tls_key_file: {other})" in result.stdout


def test_an_expired_certificate_is_refused(run_playbook, tmp_path):
    key = write_key(tmp_path / "old.key")
    write_cert(tmp_path / "old.crt", key, days_valid=10, days_ago=20)
    result = run_playbook(TASKS, settings(gateway_tls_cert_file=str(tmp_path / "old.crt"),
                                          gateway_tls_key_file=str(tmp_path / "old.key")))
    assert result.returncode != 0
    assert "expired on" in result.stdout


def test_a_certificate_file_that_is_not_pem_is_named(run_playbook, pair, tmp_path):
    _, key = pair
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    result = run_playbook(TASKS, settings(gateway_tls_cert_file=str(junk), gateway_tls_key_file=str(key)))
    assert result.returncode != 0
    assert f"gateway_tls_cert_file ({junk}) is not a readable PEM certificate" in result.stdout


@pytest.mark.parametrize("cidrs", [["10.88.0.1/33"], ["10.88.0"], ["not-a-network"], ["2001:db8::/129"]])
def test_an_invalid_api_client_cidr_is_refused_by_name(run_playbook, cidrs):
    result = run_playbook(TASKS, settings(gateway_api_client_cidrs=["10.0.0.0/8", *cidrs]))
    assert result.returncode != 0
    assert "gateway_api_client_cidrs (default: api_client_cidrs) must be a list of networks" in result.stdout
    assert cidrs[0] in result.stdout.split("not valid:", 1)[1]


def test_valid_ipv4_and_ipv6_networks_and_addresses_pass(run_playbook):
    result = run_playbook(TASKS, settings(api_client_cidrs=["10.88.0.1/32", "10.20.0.0/16", "192.0.2.7",
                                                            "2001:db8::/48"]))
    assert result.returncode == 0, result.stdout[-2000:]


def test_a_cidr_string_instead_of_a_list_is_refused(run_playbook):
    result = run_playbook(TASKS, settings(gateway_api_client_cidrs="10.0.0.0/8"))
    assert result.returncode != 0
    assert "must be a list of networks" in result.stdout


@pytest.mark.parametrize("level", ["debug", "info"])
def test_error_log_levels_that_print_request_headers_are_refused(run_playbook, level):
    result = run_playbook(TASKS, settings(gateway_error_log_level=level))
    assert result.returncode != 0
    assert "debug and info would" in result.stdout


@pytest.mark.parametrize("paths", [["/v1;"], ["metrics"], ["/a b"], ["/v1/"]])
def test_blocked_paths_nginx_could_misread_are_refused(run_playbook, paths):
    result = run_playbook(TASKS, settings(gateway_blocked_paths=paths))
    assert result.returncode != 0
    assert "gateway_blocked_paths and" in result.stdout


def test_an_api_route_with_an_unknown_method_is_refused(run_playbook):
    result = run_playbook(TASKS, settings(gateway_api_routes=[{"path": "/v1/models", "methods": ["DELETE"]}]))
    assert result.returncode != 0
    assert "Each item of gateway_api_routes" in result.stdout


@pytest.mark.parametrize("policy", ['default-src "self"', "default-src 'self'; script-src $evil"])
def test_a_csp_that_would_break_the_nginx_line_is_refused(run_playbook, policy):
    result = run_playbook(TASKS, settings(gateway_csp=policy))
    assert result.returncode != 0
    assert "gateway_csp" in result.stdout


@pytest.mark.parametrize("names", [["chat example"], ["127.0.0.1"], ["bad_name"]])
def test_server_names_a_certificate_cannot_carry_are_refused(run_playbook, names):
    result = run_playbook(TASKS, settings(gateway_server_names=names))
    assert result.returncode != 0
    assert "gateway_server_names must be a list of DNS names" in result.stdout


def test_the_gateway_port_may_not_be_a_backend_port(run_playbook):
    result = run_playbook(TASKS, settings(gateway_port=8000))
    assert result.returncode != 0
    assert "gateway_port (8000) must differ from gateway_chainlit_port and gateway_vllm_port" in result.stdout


@pytest.mark.parametrize("overrides", [{"gateway_replica_port": 443}, {"gateway_pool_port": 8001},
                                       {"gateway_replica_port": 8002}, {"gateway_replica_port": 70000}])
def test_fleet_ports_that_clash_or_are_no_ports_are_refused_by_name(run_playbook, overrides):
    result = run_playbook(TASKS, settings(**overrides))
    assert result.returncode != 0
    assert "gateway_replica_port" in result.stdout and "gateway_pool_port" in result.stdout


@pytest.mark.parametrize("name", ["replica", "Replica.Internal", "-bad.internal", "a b.internal"])
def test_a_replica_tls_name_that_is_no_dns_name_is_refused(run_playbook, name):
    result = run_playbook(TASKS, settings(gateway_replica_tls_name=name))
    assert result.returncode != 0
    assert "gateway_replica_tls_name a lower-case DNS name" in result.stdout


@pytest.mark.parametrize("overrides", [{"gateway_replica_tries": 0}, {"gateway_replica_max_fails": 0}])
def test_health_check_settings_below_one_are_refused(run_playbook, overrides):
    result = run_playbook(TASKS, settings(**overrides))
    assert result.returncode != 0
    assert "at least 1" in result.stdout


def test_bad_api_clients_are_refused_by_name_and_their_keys_never_shown(run_playbook):
    key = "Kq7" * 12
    clients = [{"name": "claims-batch", "key": key}, {"name": "claims-batch", "rate": "fast"}]
    result = run_playbook(TASKS, settings(gateway_api_clients=clients))
    assert result.returncode != 0
    assert "gateway_api_clients[1] (claims-batch) has the name of gateway_api_clients[0]" in result.stdout
    assert "gateway_api_clients[1] (claims-batch): rate must be a rate such as 2r/s" in result.stdout
    assert key not in result.stdout + result.stderr
