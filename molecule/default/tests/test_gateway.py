"""The TLS gateway (nginx) is the only door: port 443 with TLS 1.2/1.3 and a
certificate from the private CA kept on the controller; Chainlit at /; the
vLLM API only on its three allow-listed routes and only for
api_client_cidrs; every other vLLM route 404; security headers on every
response; an access log without query strings.

HTTPS requests come from this machine (the controller, 10.88.0.1: in
client_cidrs and api_client_cidrs of the sandbox), verified against the CA
certificate the role left in the controller's secrets store. Requests that
must come from an address outside api_client_cidrs run on the service host
itself, to its own address (loopback traffic passes the firewall). The API
key is read from the host's root-only environment file and never printed.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import socket
import ssl
import time
import uuid
import warnings
from pathlib import Path

import pytest

import netprobe
import playbook_report  # molecule/shared, on the path by conftest.py

testinfra_hosts = ["gateways"]

PORT = 443
METRICS_PORT = 9443
METRICS_CLIENT_CA = "/etc/nginx/tls/metrics-client-ca.crt"
MODEL = "Qwen3-4B-Instruct-2507"
VLLM_ENV = "/etc/vllm/vllm.env"
TLS_DIR = "/etc/nginx/tls"
ACCESS_LOG = "/var/log/nginx/gateway-access.log"
CLIENTS_FILE = "/etc/nginx/api-clients.conf"
# The sandbox inventory's API clients (inventory/sandbox/group_vars/gateways.yml):
# batch is held to 6 requests a minute with a burst of 1.
CLIENTS = ("app", "notebook", "batch")
ERROR_LOG = "/var/log/nginx/error.log"
USAGE_LOG = "/var/log/llm-usage/usage.log"
USAGE_ROTATION = "/etc/logrotate.d/llm-usage"

# vLLM routes that must never be reachable through the gateway, with or
# without the key (method, path).
BLOCKED_ROUTES = [
    ("GET", "/metrics"), ("GET", "/health"), ("GET", "/version"), ("GET", "/ping"), ("POST", "/ping"),
    ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json"), ("GET", "/load"),
    ("POST", "/tokenize"), ("POST", "/detokenize"), ("POST", "/invocations"),
    ("POST", "/pause"), ("POST", "/resume"), ("GET", "/is_paused"), ("POST", "/update_weights"),
    ("POST", "/pooling"), ("POST", "/score"), ("POST", "/rerank"), ("POST", "/classify"),
    ("POST", "/v1/embeddings"), ("POST", "/v1/responses"), ("POST", "/v1/score"), ("POST", "/v1/rerank"),
    ("POST", "/v1/audio/transcriptions"), ("POST", "/v1/load_lora_adapter"), ("GET", "/v1/models/" + MODEL),
    ("POST", "/v2/rerank"), ("POST", "/reset_prefix_cache"), ("POST", "/sleep"), ("POST", "/wake_up"),
    ("POST", "/collective_rpc"), ("POST", "/start_profile"), ("POST", "/scale_elastic_ep"),
    ("GET", "/server_info"),
    # The allow-listed paths spelled differently: never forwarded as they are.
    ("POST", "/v1/chat/completions/"), ("GET", "/v1/models/"), ("GET", "/v1/models/../../metrics"),
    ("GET", "/%6detrics"), ("GET", "//metrics"), ("POST", "/v1/chat/completions/../../../tokenize"),
]

# Routes that answer on vLLM itself (checked directly on the host): the 404s
# through the gateway are the gateway's doing, not a route vLLM lacks.
LIVE_ON_VLLM = [("GET", "/metrics"), ("GET", "/health"), ("GET", "/version"), ("POST", "/tokenize")]


# --- fixtures -----------------------------------------------------------------

@pytest.fixture(scope="module")
def ca_file(secrets_dir):
    path = secrets_dir / "gateway-ca.crt"
    assert path.is_file(), f"the role left no CA certificate for clients at {path}"
    return str(path)


@pytest.fixture(scope="module")
def vllm_key(host):
    """vLLM's own key, as the host holds it (no client is given it)."""
    for line in host.file(VLLM_ENV).content_string.splitlines():
        if line.startswith("VLLM_API_KEY="):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"no VLLM_API_KEY in {VLLM_ENV}")


@pytest.fixture(scope="module")
def client_keys(secrets_dir):
    """Each API client's key (gateway_api_clients of the sandbox inventory),
    as generated into the controller's secrets store."""
    keys = {name: (secrets_dir / "api-clients" / name).read_text().strip() for name in CLIENTS}
    assert all(len(key) >= 32 for key in keys.values()), "a client key is missing or short"
    return keys


@pytest.fixture(scope="module")
def api_key(client_keys):
    """The key an API client sends: the sandbox's client `app`."""
    return client_keys["app"]


@pytest.fixture(scope="module")
def tls(ca_file):
    """A client context that trusts only the project's CA."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture(scope="module")
def gateway(host_address, tls):
    """request(method, path, ...) -> (status, headers dict (lower-case names), body bytes)."""

    def request(method, path, headers=None, body=None, timeout=60):
        conn = http.client.HTTPSConnection(host_address, PORT, context=tls, timeout=timeout)
        try:
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            conn.putrequest(method, path, skip_accept_encoding=True, skip_host="Host" in all_headers)
            data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
            if data is not None:
                all_headers["Content-Length"] = str(len(data))
            for name, value in all_headers.items():
                conn.putheader(name, value)
            conn.endheaders(data)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    return request


def bearer(key):
    return {"Authorization": "Bearer " + key}


def chat_body(content="Hello", max_tokens=8, stream=False):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}


# Runs on the service host: one HTTPS request to the gateway, from the host's
# own address (not in api_client_cidrs), with the key read there. Prints the
# status. argv: address, method, path.
ON_HOST_CLIENT = r"""
import http.client, ssl, sys
key = ""
for line in open("%s"):
    if line.startswith("VLLM_API_KEY="):
        key = line.split("=", 1)[1].strip()
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conn = http.client.HTTPSConnection(sys.argv[1], %d, context=ctx, timeout=30)
body = b'{"model": "x", "messages": []}' if sys.argv[2] == "POST" else None
conn.request(sys.argv[2], sys.argv[3], body=body, headers={"Authorization": "Bearer " + key,
             "Content-Type": "application/json"})
print(conn.getresponse().status)
""" % (VLLM_ENV, PORT)

# Runs on the service host: one request straight to vLLM on loopback with the
# key. Prints the status. argv: method, path.
ON_HOST_VLLM = r"""
import http.client, sys
key = ""
for line in open("%s"):
    if line.startswith("VLLM_API_KEY="):
        key = line.split("=", 1)[1].strip()
conn = http.client.HTTPConnection("127.0.0.1", 8000, timeout=30)
body = b'{"model": "%s", "prompt": "hi"}' if sys.argv[1] == "POST" else None
conn.request(sys.argv[1], sys.argv[2], body=body, headers={"Authorization": "Bearer " + key,
             "Content-Type": "application/json"})
print(conn.getresponse().status)
""" % (VLLM_ENV, MODEL)


def status_from_host(host, address, method, path):
    result = host.run("python3 -c %s %s %s %s", ON_HOST_CLIENT, address, method, path)
    assert result.rc == 0, result.stderr[-500:]
    return int(result.stdout.strip())


def handshake(address, context, server_hostname=None):
    with socket.create_connection((address, PORT), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=server_hostname or address) as tls_sock:
            return tls_sock.version(), tls_sock.cipher(), tls_sock.session, tls_sock.getpeercert()


def legacy_context(version=None, ciphers="ALL:@SECLEVEL=0"):
    """A client willing to speak what the gateway must refuse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers(ciphers)
        if version is not None:
            context.minimum_version = version
            context.maximum_version = version
    return context


# --- listening ports ------------------------------------------------------------

def test_nginx_is_enabled_and_running(host):
    nginx = host.service("nginx")
    assert nginx.is_enabled
    assert nginx.is_running


def test_only_the_gateway_and_metrics_ports_listen_beyond_loopback(host):
    loopback = ("127.", "::1", "[::1]")
    exposed = set()
    for sock in host.socket.get_listening_sockets():
        if not sock.startswith(("tcp://", "udp://")):
            continue
        address, _, port = sock.split("://", 1)[1].rpartition(":")
        if not address.startswith(loopback):
            exposed.add((sock.split("://")[0], int(port)))
    # sshd is the firewall role's business (22 from admin_cidrs) where installed;
    # the metrics listener (metrics_client_cidrs, client certificates) is the sandbox's.
    assert exposed - {("tcp", 22)} == {("tcp", PORT), ("tcp", METRICS_PORT)}, exposed


def test_nothing_listens_on_port_80_even_behind_the_firewall(host, host_address):
    assert not host.socket("tcp://80").is_listening
    # From the host itself loopback traffic bypasses the firewall: a refusal
    # proves there is no listener, not just a dropped packet.
    assert netprobe.probe_from(host, "127.0.0.1", 80) == "refused"
    assert netprobe.probe_from(host, host_address, 80) == "refused"


def test_port_80_is_closed_to_clients(host_address):
    assert netprobe.probe(host_address, 80) in {"timeout", "refused"}


def test_nginx_workers_run_as_www_data(host):
    workers = [p for p in host.process.filter(comm="nginx") if "worker process" in p.args]
    assert workers
    assert {p.user for p in workers} == {"www-data"}


# --- TLS --------------------------------------------------------------------------

@pytest.mark.parametrize("version,name", [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")])
def test_tls12_and_tls13_handshakes_verify_against_the_private_ca(host_address, ca_file, version, name):
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = context.maximum_version = version
    negotiated, cipher, _, _ = handshake(host_address, context)
    assert negotiated == name
    assert cipher[0].startswith(("TLS_", "ECDHE-"))


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls10_and_tls11_are_refused_by_the_server(host_address, version):
    context = legacy_context(getattr(ssl.TLSVersion, version))
    with pytest.raises(ssl.SSLError) as refused:
        handshake(host_address, context)
    # The server's protocol_version alert, not a client that could not try.
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value


@pytest.mark.parametrize("ciphers", [
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",          # no AEAD
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256",    # no AEAD
    "AES128-GCM-SHA256:AES256-GCM-SHA384",                  # no forward secrecy
    "DHE-RSA-AES128-GCM-SHA256",                            # finite-field DH
])
def test_tls12_suites_without_ecdhe_and_aead_are_refused(host_address, ciphers):
    context = legacy_context(ssl.TLSVersion.TLSv1_2, ciphers + ":@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        handshake(host_address, context)
    assert refused.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", refused.value


def test_tls12_with_an_ecdhe_aead_suite_is_accepted(host_address):
    context = legacy_context(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    assert handshake(host_address, context)[0] == "TLSv1.2"


def test_http2_is_offered(host_address, ca_file):
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((host_address, PORT), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname=host_address) as tls_sock:
            assert tls_sock.selected_alpn_protocol() == "h2"


def test_tls12_sessions_get_no_session_ticket(host_address, ca_file):
    context = ssl.create_default_context(cafile=ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    _, _, session, _ = handshake(host_address, context)
    assert not session.has_ticket


def test_certificate_names_the_inventory_host_and_its_address(host, host_address, tls):
    _, _, _, cert = handshake(host_address, tls)
    sans = cert["subjectAltName"]
    assert ("IP Address", host_address) in sans
    # Verifies (hostname check on) for the inventory name as well.
    name = host.backend.host if hasattr(host.backend, "host") else host.check_output("hostname")
    assert ("DNS", name) in sans
    handshake(host_address, tls, server_hostname=name)


def test_certificate_is_a_server_leaf_signed_by_the_controllers_ca(host, secrets_dir):
    text = host.check_output("openssl x509 -in %s -noout -text", f"{TLS_DIR}/gateway.crt")
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication" in text
    ca_subject = host.check_output("printf '%%s' %s | openssl x509 -noout -subject",
                                   (secrets_dir / "ca" / "ca.crt").read_text())
    issuer = host.check_output("openssl x509 -in %s -noout -issuer", f"{TLS_DIR}/gateway.crt")
    assert issuer.split("=", 1)[1] == ca_subject.split("=", 1)[1]


def test_server_key_is_root_only_on_the_host(host):
    key = host.file(f"{TLS_DIR}/gateway.key")
    assert key.is_file and key.user == "root" and key.group == "root" and key.mode == 0o600
    folder = host.file(TLS_DIR)
    assert folder.user == "root" and folder.mode == 0o700
    cert = host.file(f"{TLS_DIR}/gateway.crt")
    assert cert.user == "root" and cert.mode == 0o644


def test_server_key_never_left_the_host(host, secrets_dir):
    body = "".join(host.file(f"{TLS_DIR}/gateway.key").content_string.split("\n")[1:-2])
    assert len(body) > 40
    for path in secrets_dir.rglob("*"):
        if path.is_file():
            assert body not in path.read_text(errors="replace").replace("\n", ""), f"server key found in {path}"


def test_ca_key_stays_on_the_controller_owner_only(secrets_dir):
    ca_dir = secrets_dir / "ca"
    assert (ca_dir.stat().st_mode & 0o777) == 0o700
    assert ((ca_dir / "ca.key").stat().st_mode & 0o777) == 0o600
    assert (secrets_dir / "gateway-ca.crt").read_bytes() == (ca_dir / "ca.crt").read_bytes()


def test_ca_is_in_no_trust_store_only_in_the_metrics_listeners_client_check(host, secrets_dir):
    ca_body = "".join((secrets_dir / "ca" / "ca.crt").read_text().split("\n")[1:-2])
    bundle = host.file("/etc/ssl/certs/ca-certificates.crt").content_string.replace("\n", "")
    assert ca_body not in bundle
    # The one copy: what the metrics listener checks Prometheus's client
    # certificate against (metrics_client_cidrs is set in the sandbox).
    found = host.run("grep -rlF %s /etc /usr/local/share/ca-certificates", ca_body[:64]).stdout.split()
    assert found == [METRICS_CLIENT_CA], found
    uses = [line.strip() for line in host.file("/etc/nginx/nginx.conf").content_string.splitlines()
            if METRICS_CLIENT_CA in line]
    assert uses == [f"ssl_client_certificate {METRICS_CLIENT_CA};"], uses


# --- headers ----------------------------------------------------------------------

def csp_directives(header):
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


@pytest.mark.parametrize("method,path,auth", [
    ("GET", "/", False), ("GET", "/v1/models", True), ("GET", "/metrics", True),
    ("GET", "/v1/chat/completions", True), ("GET", "/no-such-page", False),
])
def test_every_response_carries_the_security_headers(gateway, api_key, method, path, auth):
    _, headers, _ = gateway(method, path, headers=bearer(api_key) if auth else None)
    assert re.fullmatch(r"max-age=\d{7,}", headers["strict-transport-security"])
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert "camera=()" in headers["permissions-policy"] and "microphone=()" in headers["permissions-policy"]
    assert "content-security-policy" in headers
    assert headers["server"] == "nginx"  # no version


def test_content_security_policy_keeps_the_page_self_contained(gateway):
    _, headers, _ = gateway("GET", "/")
    csp = csp_directives(headers["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'self'"]
    assert csp["form-action"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"]
    for directive, sources in csp.items():
        for source in sources:
            # Only keywords, hashes and data:/blob: — no scheme or host that
            # would let the page talk to another origin.
            assert source.startswith("'") or source in {"data:", "blob:"}, (directive, source)


# --- the API allow-list -----------------------------------------------------------------

def test_models_route_lists_the_model_for_an_allowed_client_with_the_key(gateway, api_key):
    status, _, body = gateway("GET", "/v1/models", headers=bearer(api_key))
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == [MODEL]


def test_api_without_or_with_a_wrong_key_is_refused(gateway):
    assert gateway("GET", "/v1/models")[0] == 401
    assert gateway("GET", "/v1/models", headers=bearer("wrong-key-0123456789"))[0] == 401
    assert gateway("GET", "/v1/models", headers=bearer(uuid.uuid4().hex * 2))[0] == 401
    assert gateway("POST", "/v1/chat/completions", body=chat_body())[0] == 401


# --- API clients, one key each (gateway_api_clients) -------------------------------

def test_each_api_client_is_served_with_its_own_key(gateway, client_keys):
    for name in ("app", "notebook"):
        status, _, body = gateway("POST", "/v1/chat/completions", headers=bearer(client_keys[name]),
                                  body=chat_body(max_tokens=2))
        assert status == 200, (name, body[:300])


def test_vllms_own_key_is_refused_at_the_gateway_but_taken_by_vllm_itself(host, gateway, vllm_key):
    assert gateway("GET", "/v1/models", headers=bearer(vllm_key))[0] == 401
    assert gateway("POST", "/v1/chat/completions", headers=bearer(vllm_key), body=chat_body())[0] == 401
    # The key is vLLM's: on the host, straight to vLLM, it works.
    result = host.run("python3 -c %s %s %s", ON_HOST_VLLM, "GET", "/v1/models")
    assert result.stdout.strip() == "200", result.stdout + result.stderr[-300:]


def test_one_client_is_rate_limited_while_another_is_not(gateway, client_keys):
    batch = [gateway("GET", "/v1/models", headers=bearer(client_keys["batch"]))[0] for _ in range(4)]
    app = [gateway("GET", "/v1/models", headers=bearer(client_keys["app"]))[0] for _ in range(4)]
    assert batch[0] == 200 and 429 in batch, batch
    assert app == [200] * 4, app


def test_the_access_log_names_the_api_client_and_no_key(host, gateway, client_keys, vllm_key):
    page = f"/{uuid.uuid4().hex}"  # a line of its own to find
    assert gateway("GET", "/v1/models", headers=bearer(client_keys["notebook"]))[0] == 200
    gateway("GET", page)
    time.sleep(0.5)
    log = host.file(ACCESS_LOG).content_string
    models = [line for line in log.splitlines() if '"GET /v1/models HTTP/1.1" 200' in line]
    assert models and models[-1].endswith(" notebook"), models[-1:]
    # A request without a client's key (the chat's) names no client.
    assert [line for line in log.splitlines() if page in line][-1].endswith(" -")
    assert not [key for key in (*client_keys.values(), vllm_key) if key in log], "a key is in the access log"


# --- The usage audit log (gateway_usage_log) ---------------------------------------

def usage_lines(host, after=0):
    """The usage log's lines (parsed), from line number `after` on."""
    return [json.loads(line) for line in host.file(USAGE_LOG).content_string.splitlines()[after:]]


def stream_usage(raw):
    """The last usage object of a streamed reply (server-sent events)."""
    events = [json.loads(line[6:]) for line in raw.decode().splitlines()
              if line.startswith("data: {")]
    return [event["usage"] for event in events if event.get("usage")][-1]


def test_usage_log_has_a_line_per_api_request_with_client_route_status_and_token_counts(
        host, gateway, client_keys, vllm_key):
    canary = f"usage-canary-{uuid.uuid4().hex}"
    before = len(usage_lines(host))
    status, _, body = gateway("POST", "/v1/chat/completions", headers=bearer(client_keys["notebook"]),
                              body=chat_body(f"Say {canary}", max_tokens=5))
    assert status == 200, body[:300]
    plain = json.loads(body)["usage"]
    # A stream whose client did not ask for usage (vllm_force_include_usage).
    status, _, raw = gateway("POST", "/v1/completions", headers=bearer(client_keys["app"]),
                             body={"model": MODEL, "prompt": f"Say {canary}", "max_tokens": 4,
                                   "temperature": 0, "stream": True})
    assert status == 200, raw[:300]
    streamed = stream_usage(raw)
    assert gateway("GET", "/v1/models", headers=bearer("wrong-key-0123456789abcdef0123456789"))[0] == 401
    time.sleep(0.5)
    lines = usage_lines(host, before)
    assert [(line["kind"], line["who"], line["route"], line["status"]) for line in lines] == [
        ("api", "notebook", "/v1/chat/completions", 200),
        ("api", "app", "/v1/completions", 200),
        ("api", "-", "/v1/models", 401),
    ], lines
    assert (lines[0]["prompt_tokens"], lines[0]["completion_tokens"]) == (
        plain["prompt_tokens"], plain["completion_tokens"])
    assert (lines[1]["prompt_tokens"], lines[1]["completion_tokens"]) == (
        streamed["prompt_tokens"], streamed["completion_tokens"])
    assert plain["prompt_tokens"] > 0 and 0 < streamed["completion_tokens"] <= 4
    assert (lines[2]["prompt_tokens"], lines[2]["completion_tokens"]) == (None, None)
    assert all(line["seconds"] >= 0 and line["time"] for line in lines)
    text = host.file(USAGE_LOG).content_string
    assert canary not in text, "chat text is in the usage log"
    assert not [key for key in (*client_keys.values(), vllm_key) if key in text], "a key is in the usage log"


def test_usage_log_is_root_only_and_rotated_with_its_retention_and_size_bound(host, gateway, client_keys):
    folder, log = host.file("/var/log/llm-usage"), host.file(USAGE_LOG)
    assert (folder.user, folder.group, folder.mode) == ("root", "root", 0o700)
    assert (log.user, log.group, log.mode) == ("root", "root", 0o600)
    rotation = host.file(USAGE_ROTATION).content_string
    for setting in ("daily", "maxage 180", "maxsize 100M", "rotate 400", "compress", "create 0600 root root"):
        assert re.search(rf"^\s*{setting}$", rotation, re.M), setting
    # A rotation now: the old lines move to a root-only file, nginx writes on
    # in a new one once its reload (asynchronous) has taken effect; until
    # then the old workers still write to the rotated file. No line is lost.
    before = len(usage_lines(host))
    assert before > 0
    assert host.run("logrotate --force %s", USAGE_ROTATION).rc == 0
    rotated = host.check_output("ls %s-*", USAGE_LOG).split()
    assert rotated and all(host.file(path).mode == 0o600 for path in rotated)
    newest = [path for path in rotated if not path.endswith(".gz")]  # delaycompress
    assert len(newest) == 1, rotated
    sent, deadline = 0, time.monotonic() + 20
    while not host.file(USAGE_LOG).content_string and time.monotonic() < deadline:
        assert gateway("GET", "/v1/models", headers=bearer(client_keys["app"]))[0] == 200
        sent += 1
        time.sleep(0.5)
    lines = usage_lines(host)
    assert lines and all(line["who"] == "app" for line in lines), lines
    assert host.file(newest[0]).content_string.count("\n") == before + sent - len(lines)
    log = host.file(USAGE_LOG)
    assert (log.user, log.group, log.mode) == ("root", "root", 0o600)


def test_client_keys_and_vllms_key_are_only_in_the_root_only_clients_file(host, client_keys, vllm_key):
    clients = host.file(CLIENTS_FILE)
    assert (clients.user, clients.group, clients.mode) == ("root", "root", 0o600)
    text = clients.content_string
    assert all(key in text for key in client_keys.values()) and vllm_key in text
    others = host.run("find /etc/nginx /var/log/nginx -type f ! -path %s -exec cat {} +", CLIENTS_FILE).stdout
    assert not [key for key in (*client_keys.values(), vllm_key) if key in others], \
        "a key is in another file of /etc/nginx or /var/log/nginx"
    assert not [key for key in client_keys.values() if key in host.run("ps -eo args").stdout]


def test_client_keys_are_in_no_ansible_output(client_keys):
    """The converge and idempotence runs' output (kept by run-tests.py) never
    shows a client's key (the clients file is written with no_log)."""
    reports = os.environ.get("LLM_TEST_REPORTS")
    if not reports:
        pytest.skip("LLM_TEST_REPORTS is not set: run through scripts/run-tests.py (make test)")
    for step in ("converge", "idempotence"):
        text = Path(reports, f"molecule-default-{step}.log").read_text(errors="replace")
        assert "TASK [gateway : Write the API clients and their keys]" in text, step
        if [key for key in client_keys.values() if key in text]:
            pytest.fail(f"a client key appears in the {step} output")


def test_chat_completion_through_the_gateway_returns_tokens(gateway, api_key):
    status, _, body = gateway("POST", "/v1/chat/completions", headers=bearer(api_key), body=chat_body())
    assert status == 200
    assert json.loads(body)["usage"]["completion_tokens"] > 0


def test_completions_route_returns_tokens(gateway, api_key):
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    status, _, raw = gateway("POST", "/v1/completions", headers=bearer(api_key), body=body)
    assert status == 200
    assert json.loads(raw)["usage"]["completion_tokens"] > 0


def test_streamed_chat_comes_through_the_gateway_as_server_sent_events(host_address, tls, api_key):
    conn = http.client.HTTPSConnection(host_address, PORT, context=tls, timeout=120)
    body = json.dumps({**chat_body("Count to ten.", max_tokens=64, stream=True),
                       "min_tokens": 64, "ignore_eos": True}).encode()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={**bearer(api_key), "Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    events = [line[6:].strip() for line in response.fp if line.startswith(b"data: ")]
    conn.close()
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len(chunks) > 10


def test_api_locations_pass_streams_unbuffered(host):
    # The tiny CPU model writes a whole reply in a fraction of a second, too
    # fast to tell buffered from unbuffered delivery by timing; so this reads
    # the configuration nginx actually runs (nginx -T) instead.
    conf = host.check_output("nginx -T 2>/dev/null")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models"):
        block = re.search(r"location = %s \{(.*?)\n        \}" % re.escape(path), conf, re.S)
        assert block, path
        assert "proxy_buffering off;" in block.group(1), path
        assert "proxy_pass http://gateway_vllm%s;" % path in block.group(1), path


def test_api_is_refused_to_clients_outside_api_client_cidrs(host, host_address):
    # The host's own address and loopback are not in api_client_cidrs; the
    # key is right, so only the gateway's client check can refuse it.
    assert status_from_host(host, host_address, "GET", "/v1/models") == 403
    assert status_from_host(host, "127.0.0.1", "GET", "/v1/models") == 403
    assert status_from_host(host, host_address, "POST", "/v1/chat/completions") == 403


def test_api_routes_refuse_other_methods(gateway, api_key):
    assert gateway("GET", "/v1/chat/completions", headers=bearer(api_key))[0] == 405
    assert gateway("DELETE", "/v1/completions", headers=bearer(api_key))[0] == 405
    assert gateway("POST", "/v1/models", headers=bearer(api_key), body={})[0] == 405


@pytest.mark.parametrize("method,path", BLOCKED_ROUTES)
def test_vllm_routes_outside_the_allow_list_answer_404_even_with_the_key(gateway, api_key, method, path):
    body = {"model": MODEL, "prompt": "hi", "input": "hi"} if method == "POST" else None
    status, _, raw = gateway(method, path, headers=bearer(api_key), body=body)
    assert status == 404, (path, raw[:200])


@pytest.mark.parametrize("method,path", LIVE_ON_VLLM)
def test_blocked_routes_do_answer_on_vllm_itself(host, method, path):
    result = host.run("python3 -c %s %s %s", ON_HOST_VLLM, method, path)
    assert result.rc == 0, result.stderr[-300:]
    assert result.stdout.strip() == "200"


def test_request_bodies_over_the_limit_are_refused(gateway, api_key):
    big = b"x" * (5 * 1024 * 1024)
    assert gateway("POST", "/v1/chat/completions", headers=bearer(api_key), body=big)[0] == 413


def test_client_forwarding_headers_do_not_reach_the_backend_as_sent(host, gateway, api_key):
    # vLLM trusts X-Forwarded-For from loopback (uvicorn proxy headers); a
    # forged one must not make a client look like someone else. The
    # gateway's own header replaces it; the request still works.
    status, _, _ = gateway("GET", "/v1/models", headers={**bearer(api_key), "X-Forwarded-For": "10.99.99.99",
                                                         "Forwarded": "for=10.99.99.99", "Host": "evil.example"})
    assert status == 200
    conf = host.file("/etc/nginx/nginx.conf").content_string
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert 'proxy_set_header Forwarded "";' in conf
    assert "proxy_set_header Host 127.0.0.1;" in conf


# --- logs -------------------------------------------------------------------------

def test_access_log_records_paths_but_no_query_strings_or_agents(host, gateway, api_key):
    canary = uuid.uuid4().hex
    gateway("GET", f"/v1/models?secret={canary}", headers={**bearer(api_key), "User-Agent": f"agent-{canary}"})
    gateway("GET", f"/?q={canary}", headers={"User-Agent": f"agent-{canary}", "Referer": f"https://x/{canary}"})
    gateway("POST", f"/v1/chat/completions?x={canary}", headers=bearer(api_key),
            body=chat_body(f"canary {canary}", max_tokens=2))
    time.sleep(0.5)
    log = host.file(ACCESS_LOG).content_string
    assert "GET /v1/models HTTP/1.1" in log  # the log is live
    assert "POST /v1/chat/completions HTTP/1.1" in log
    assert canary not in log
    assert canary not in host.file(ERROR_LOG).content_string


def test_logs_are_not_readable_by_other_local_users(host):
    folder = host.file("/var/log/nginx")
    assert folder.user == "root" and folder.group == "adm"
    assert folder.mode & 0o007 == 0


def test_error_log_level_keeps_request_lines_out(host):
    # Below crit, nginx logs failed requests with their query string and Referer.
    conf = host.file("/etc/nginx/nginx.conf").content_string
    levels = re.findall(r"^\s*error_log\s+\S+\s+(\w+);", conf, re.M)
    assert levels and set(levels) <= {"crit", "alert", "emerg"}, levels


# --- limits -----------------------------------------------------------------------

def test_api_bursts_beyond_the_limit_get_429(host_address, tls, api_key):
    conn = http.client.HTTPSConnection(host_address, PORT, context=tls, timeout=30)
    statuses = []
    try:
        for _ in range(60):
            conn.request("GET", "/v1/models", headers=bearer(api_key))
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    assert statuses[0] == 200
    assert 429 in statuses, statuses
    time.sleep(3)  # let the bucket drain for the tests after this one


def test_login_posts_beyond_the_limit_get_429_but_the_login_page_does_not(gateway):
    pages = [gateway("GET", "/login")[0] for _ in range(12)]
    assert 429 not in pages
    posts = [gateway("POST", "/login", headers={"Content-Type": "application/x-www-form-urlencoded"},
                     body=b"username=nobody&password=wrong")[0] for _ in range(12)]
    assert 429 in posts, posts


# --- service ----------------------------------------------------------------------

def test_configuration_passes_nginx_t(host):
    assert host.run("nginx -t -q").rc == 0


def test_debians_default_site_is_gone(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_nginx_service_is_sandboxed(host):
    assert host.file("/etc/systemd/system/nginx.service.d/hardening.conf").exists
    score = host.check_output("systemd-analyze security nginx.service | tail -1")
    exposure = float(re.search(r"level for nginx\.service: ([0-9.]+)", score).group(1))
    assert exposure <= 3.0, score


# --- Chainlit behind the gateway (site.yml runs the chainlit role on gateways) ---

@pytest.fixture(scope="module")
def chainlit(host):
    assert host.service("chainlit").is_running, "chainlit.service is not running behind the gateway"


def test_chat_page_is_served_through_the_gateway(chainlit, gateway):
    status, headers, body = gateway("GET", "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b'<div id="root">' in body


def test_every_inline_script_of_the_chat_page_is_allowed_by_the_csp(chainlit, gateway):
    # Chainlit's page carries small inline scripts; the CSP allows them by
    # hash (gateway_csp_script_hashes). A Chainlit upgrade or a changed page
    # changes the hashes: this names the ones to set.
    plugin = Path(__file__).resolve().parents[3] / "roles" / "gateway" / "filter_plugins" / "gateway.py"
    spec = importlib.util.spec_from_file_location("gateway_filters", plugin)
    filters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(filters)
    status, headers, body = gateway("GET", "/login")
    assert status == 200
    allowed = csp_directives(headers["content-security-policy"])["script-src"]
    needed = filters.gateway_script_hashes(body.decode())
    assert [h for h in needed if f"'{h}'" not in allowed] == [], "set gateway_csp_script_hashes to %s" % needed


def test_chainlit_websocket_upgrades_through_the_gateway(chainlit, host_address, tls):
    with socket.create_connection((host_address, PORT), timeout=10) as sock:
        with tls.wrap_socket(sock, server_hostname=host_address) as tls_sock:
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            tls_sock.sendall((f"GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host_address}\r\n"
                              f"Origin: https://{host_address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
            head = tls_sock.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 101"), head[:200]


# --- last: a client removed, another's key rotated, then the clients restored -----

def test_a_removed_client_is_refused_while_the_others_work_and_one_key_rotates_alone(
        host, gateway, client_keys, secrets_dir, tmp_path):
    """playbooks/rotate-secrets.yml rotates the client `app` alone while the
    inventory no longer lists `notebook`: notebook's key is refused, app's
    old key too, app's new key and batch's key work, nothing else changed.
    playbooks/gateway.yml with the inventory's clients then brings notebook
    back with its key (kept on the controller). Last in this module: the keys
    the fixtures read before are app's old one."""
    vllm_env = host.file(VLLM_ENV).content_string
    without_notebook = [{"name": "app"}, {"name": "batch", "rate": "6r/m", "burst": 1}]
    status, report = playbook_report.run_playbook(
        tmp_path, ["-i", os.environ["MOLECULE_INVENTORY_FILE"], "--tags", "rotate,gateway",
                   "-e", json.dumps({"rotate_api_clients": ["app"], "gateway_api_clients": without_notebook}),
                   "playbooks/rotate-secrets.yml"])
    assert status == 0, playbook_report.failed_tasks(report)
    new_app = (secrets_dir / "api-clients" / "app").read_text().strip()
    assert len(new_app) >= 32 and new_app != client_keys["app"]
    assert not list((secrets_dir / "api-clients").glob("*.previous")), "the retired key was left behind"
    assert (secrets_dir / "api-clients" / "batch").read_text().strip() == client_keys["batch"]
    assert host.file(VLLM_ENV).content_string == vllm_env, "vLLM's key changed with a client's"
    models = ("GET", "/v1/models")
    assert gateway(*models, headers=bearer(client_keys["notebook"]))[0] == 401
    assert gateway(*models, headers=bearer(client_keys["app"]))[0] == 401
    assert gateway(*models, headers=bearer(new_app))[0] == 200
    assert gateway(*models, headers=bearer(client_keys["batch"]))[0] == 200

    status, report = playbook_report.run_playbook(
        tmp_path, ["-i", os.environ["MOLECULE_INVENTORY_FILE"], "playbooks/gateway.yml"])
    assert status == 0, playbook_report.failed_tasks(report)
    assert gateway(*models, headers=bearer(client_keys["notebook"]))[0] == 200
    assert gateway(*models, headers=bearer(new_app))[0] == 200
