#!/usr/bin/python
"""Probe a host of the service from the controller: what answers, which TLS it speaks, which routes it serves."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: evidence_probe
short_description: Look at a host from the controller, as a client on the network sees it
description:
  - Runs on the controller (C(delegate_to: localhost)). Changes nothing anywhere.
  - A TCP scan of a list of ports. A port counts as reachable only when something answers on it, because
    a NAT that forwards ports (QEMU's user network) accepts a connection even when the host's firewall drops it.
  - On a gateway, every TLS protocol version and every TLS 1.2 cipher suite the client can offer, tried one by
    one; the certificate's subject, issuer and end.
  - On a gateway, the route allow-list probed over verified TLS, with and without the API key.
  - Optionally, one completion whose prompt carries a canary string, for the host-side search afterwards.
options:
  address: {description: The address the controller reaches the host on., type: str, required: true}
  ports: {description: Ports to scan (the host's own numbers)., type: list, elements: int, default: []}
  port_map:
    description:
      - Host port to the controller-side port that reaches it, for a host behind port forwarding. When set,
        only these ports are scanned (no other port can be reached through the forwarding).
    type: dict
    default: {}
  timeout: {description: Seconds to wait for each connection and answer., type: float, default: 3.0}
  tls_port: {description: The gateway's TLS port; 0 skips the TLS and route probes., type: int, default: 0}
  server_name: {description: Name sent in SNI and checked against the certificate., type: str, default: ""}
  ca_file: {description: CA bundle the route probes verify the certificate with., type: path, default: ""}
  api_key: {description: The key an API client sends., type: str, default: "", no_log: true}
  model: {description: The served model name (route and canary probes)., type: str, default: ""}
  api_routes:
    description:
      - The gateway's API allow-list, each C({path, methods}) (the gateway role's C(gateway_api_routes)). Each
        route is asked with its first method and the key (C(allowed): 2xx expected); the first GET route is
        asked once more without the key (C(needs_key): 401 expected).
    type: list
    elements: dict
    default: []
  refused_routes:
    description: Routes, each C({method, path}), the gateway must refuse even with the key (403, 404 or 405).
    type: list
    elements: dict
    default: []
  canary: {description: A string to send in one completion's prompt; empty sends none., type: str, default: ""}
"""

EXAMPLES = r"""
- name: Probe the host from the controller
  evidence_probe:
    address: 192.0.2.11
    ports: [22, 80, 443, 8000]
    tls_port: 443
    server_name: gpu01.example.internal
    ca_file: secrets/site/gateway-ca.crt
    api_key: "{{ key }}"
    api_routes:
      - {path: /v1/models, methods: [GET, HEAD]}
    refused_routes:
      - {method: GET, path: /metrics}
  delegate_to: localhost
  no_log: true
"""

RETURN = r"""
probes:
  description: C(scan), C(tls), C(routes) and C(canary) (the last three null when not probed).
  returned: always
  type: dict
"""

import datetime
import http.client
import json
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule

PROBE_REQUEST = b"HEAD / HTTP/1.0\r\n\r\n"
PROTOCOLS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
EXPECTED = {
    "allowed": lambda status: 200 <= status < 300,
    "needs_key": lambda status: status == 401,
    "refused": lambda status: status in (403, 404, 405),
}


def probe_port(address: str, port: int, timeout: float, behind_nat: bool) -> str:
    """open (something answered), closed, refused or filtered (no answer in time)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            sock.sendall(PROBE_REQUEST)
            answered = sock.recv(1)
        except socket.timeout:
            return "filtered"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "closed"
    # Behind a NAT, a connection the host refused is accepted and then closed
    # by the NAT itself: only an answer proves a listener.
    return "open" if answered or not behind_nat else "closed"


def scan(address: str, ports: list[int], port_map: dict[int, int], timeout: float) -> dict:
    checked = sorted(set(port_map) if port_map else set(ports))
    with ThreadPoolExecutor(max_workers=min(64, len(checked) or 1)) as pool:
        states = list(pool.map(lambda p: probe_port(address, port_map.get(p, p), timeout, bool(port_map)), checked))
    by_state: dict[str, list[int]] = {"open": [], "closed": [], "filtered": []}
    for port, state in zip(checked, states):
        by_state["closed" if state == "refused" else state].append(port)
    return {"address": address, "checked": checked, **by_state, "port_map": {str(k): v for k, v in port_map.items()}}


def unverified_context(version: ssl.TLSVersion, ciphers: str = "ALL:COMPLEMENTOFALL:@SECLEVEL=0") -> ssl.SSLContext:
    """A client that offers exactly one protocol version and whatever ciphers it is told."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = version
    context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_3:
        context.set_ciphers(ciphers)
    return context


def handshake(address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float):
    """(cipher name, DER certificate) of a completed handshake, or None."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name or None) as tls:
                return tls.cipher()[0], tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, ValueError):
        return None


def certificate_facts(der: bytes) -> dict:
    from cryptography import x509  # ansible-core's own dependency on the controller

    cert = x509.load_der_x509_certificate(der)
    not_after = cert.not_valid_after_utc
    left = not_after - datetime.datetime.now(datetime.timezone.utc)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": round(left.total_seconds() / 86400, 1),
    }


def tls_facts(address: str, port: int, server_name: str, timeout: float) -> dict:
    protocols, tls13_cipher, der = {}, None, None
    for name, version in PROTOCOLS.items():
        result = handshake(address, port, server_name, unverified_context(version), timeout)
        protocols[name] = result is not None
        if result:
            der = result[1] or der
            if name == "TLSv1.3":
                tls13_cipher = result[0]
    offered = [c["name"] for c in unverified_context(ssl.TLSVersion.TLSv1_2).get_ciphers()
               if c["protocol"] != "TLSv1.3"]
    accepted = [name for name in offered
                if handshake(address, port, server_name,
                             unverified_context(ssl.TLSVersion.TLSv1_2, name + ":@SECLEVEL=0"), timeout)]
    return {
        "port": port,
        "protocols": protocols,
        "tls12_ciphers": accepted if protocols.get("TLSv1.2") else [],
        "tls13_cipher": tls13_cipher,
        "certificate": certificate_facts(der) if der else None,
    }


def request(address: str, port: int, server_name: str, ca_file: str, method: str, path: str,
            headers: dict, body: bytes | None, timeout: float) -> tuple[int, bytes]:
    """One request over TLS verified with the CA file and the server name."""
    context = ssl.create_default_context(cafile=ca_file or None)
    raw = socket.create_connection((address, port), timeout=timeout)
    conn = http.client.HTTPConnection(server_name or address, port, timeout=timeout)
    conn.sock = context.wrap_socket(raw, server_hostname=server_name or address)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def planned_routes(api_routes: list[dict], refused_routes: list[dict]) -> list[dict]:
    """Each API route with its first method and the key, the first GET route without the key, and every
    refused route with the key."""
    plan = [{"method": r["methods"][0].upper(), "path": r["path"], "expect": "allowed"} for r in api_routes]
    plan += [{"method": "GET", "path": r["path"], "expect": "needs_key"}
             for r in api_routes if "GET" in [m.upper() for m in r["methods"]]][:1]
    plan += [{"method": r["method"].upper(), "path": r["path"], "expect": "refused"} for r in refused_routes]
    return plan


def request_body(model: str, path: str, text: str, max_tokens: int) -> bytes:
    """The smallest valid body for a completion route (chat or plain), else an empty JSON object."""
    if path.endswith("/chat/completions"):
        return json.dumps({"model": model, "max_tokens": max_tokens,
                           "messages": [{"role": "user", "content": text}]}).encode()
    if path.endswith("/completions"):
        return json.dumps({"model": model, "max_tokens": max_tokens, "prompt": text}).encode()
    return b"{}"


def route_probes(module: AnsibleModule, address: str, port: int) -> list[dict]:
    params = module.params
    results = []
    for route in planned_routes(params["api_routes"], params["refused_routes"]):
        method, path, expect = route["method"], route["path"], route["expect"]
        headers = {"Content-Type": "application/json"}
        if expect != "needs_key":
            headers["Authorization"] = "Bearer " + params["api_key"]
        body = request_body(params["model"], path, "ping", 1) if method == "POST" else None
        try:
            status, _ = request(address, port, params["server_name"], params["ca_file"], method, path,
                                headers, body, max(params["timeout"], 60.0))
            error = None
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            status, error = 0, f"{exc.__class__.__name__}: {exc}"
        results.append({"method": method, "path": path, "expect": expect, "status": status,
                        "ok": bool(status) and EXPECTED[expect](status), "error": error})
    return results


def send_canary(module: AnsibleModule, address: str, port: int) -> dict:
    params = module.params
    body = request_body(params["model"], "/v1/chat/completions", f"Repeat after me: {params['canary']}", 4)
    try:
        status, _ = request(address, port, params["server_name"], params["ca_file"], "POST", "/v1/chat/completions",
                            {"Authorization": "Bearer " + params["api_key"], "Content-Type": "application/json"},
                            body, 120.0)
    except (OSError, ssl.SSLError, http.client.HTTPException):
        status = 0
    return {"status": status, "found_in": []}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "address": {"type": "str", "required": True},
            "ports": {"type": "list", "elements": "int", "default": []},
            "port_map": {"type": "dict", "default": {}},
            "timeout": {"type": "float", "default": 3.0},
            "tls_port": {"type": "int", "default": 0},
            "server_name": {"type": "str", "default": ""},
            "ca_file": {"type": "path", "default": ""},
            "api_key": {"type": "str", "default": "", "no_log": True},
            "model": {"type": "str", "default": ""},
            "api_routes": {"type": "list", "elements": "dict", "default": []},
            "refused_routes": {"type": "list", "elements": "dict", "default": []},
            "canary": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        port_map = {int(k): int(v) for k, v in params["port_map"].items()}
    except (TypeError, ValueError):
        module.fail_json(msg="port_map: every key and value must be a port number")
    address = params["address"]
    probes = {"scan": scan(address, params["ports"], port_map, params["timeout"]),
              "tls": None, "routes": None, "canary": None}
    if params["tls_port"]:
        port = port_map.get(params["tls_port"], params["tls_port"])
        probes["tls"] = tls_facts(address, port, params["server_name"], params["timeout"])
        probes["tls"]["port"] = params["tls_port"]
        if params["api_routes"] or params["refused_routes"]:
            probes["routes"] = route_probes(module, address, port)
        if params["canary"]:
            probes["canary"] = send_canary(module, address, port)
    module.exit_json(changed=False, probes=probes)


if __name__ == "__main__":
    main()
