"""Decisions of the gateway role, kept in one place that unit tests import
directly (tests/unit/test_gateway_filters.py).

gateway_san_list(names, addresses)
    The subjectAltName entries of the server certificate: every usable DNS
    name and IP address, once each, in a stable order (names first, then
    addresses), in the "DNS:..." / "IP:..." form community.crypto takes.
    Link-local and loopback addresses are left out (no client reaches the
    gateway through them), and so are names a certificate cannot carry.

gateway_path_regex(paths)
    One nginx location regex matching each path prefix on whole segments:
    ["/v1", "/metrics"] -> ^/(?:v1|metrics)(?:/|$). /v1 matches /v1 and
    /v1/embeddings, never /v1x.

gateway_script_hashes(html)
    CSP source expressions ("sha256-...") for the inline scripts of a page,
    to allow exactly those scripts and no others.

gateway_api_client_errors(clients, allow_anywhere, backend_key)
    What is wrong with gateway_api_clients, one message per problem, each
    naming the client and the fix, never a key.

gateway_api_client_list(clients, networks, rate, burst)
    The clients with their settings filled in from the defaults (name,
    networks as nginx geo subnets, rate, burst; keys left out).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re

# A DNS name a certificate may carry: labels of letters, digits and hyphens
# (a leading "*." wildcard allowed), 253 characters at most.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}\.?$")

# What nginx's location regex may contain of a path without being changed in
# meaning: everything else is refused rather than escaped.
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")

_INLINE_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.DOTALL | re.IGNORECASE)


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    return list(value)


def _address(value):
    """The value as an ip_address, or None when it is not one."""
    text = str(value).strip()
    if "%" in text:  # fe80::1%eth0
        text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def gateway_san_list(names, addresses=None):
    """subjectAltName entries for the given names and addresses.

    Either argument may hold both kinds: a name that parses as an address is
    treated as one. Empty or unusable entries are skipped.
    """
    dns, ips = [], []
    for item in _as_list(names) + _as_list(addresses):
        if item is None:
            continue
        text = str(item).strip()
        if not text:
            continue
        address = _address(text)
        if address is not None:
            if address.is_link_local or address.is_loopback or address.is_unspecified:
                continue
            entry = f"IP:{address.compressed}"
            if entry not in ips:
                ips.append(entry)
            continue
        name = text.lower().rstrip(".")
        if len(name) > 253 or not _DNS_NAME.match(name):
            continue
        entry = f"DNS:{name}"
        if entry not in dns:
            dns.append(entry)
    return dns + ips


def gateway_path_regex(paths):
    """An nginx location regex matching any of the path prefixes on whole segments."""
    parts = []
    for path in _as_list(paths):
        text = str(path).strip()
        if not _PATH.match(text) or text == "/" or "//" in text:
            raise ValueError(f"gateway: {path!r} is not a plain absolute path (letters, digits, ._~-/)")
        part = re.escape(text.strip("/"))
        if part not in parts:
            parts.append(part)
    if not parts:
        return ""
    return "^/(?:" + "|".join(parts) + ")(?:/|$)"


def gateway_script_hashes(html):
    """CSP hashes of the inline (no src=) scripts of an HTML page, in page order."""
    hashes = []
    for match in _INLINE_SCRIPT.finditer(str(html)):
        if re.search(r"\bsrc\s*=", match.group("attrs"), re.IGNORECASE):
            continue
        digest = hashlib.sha256(match.group("body").encode("utf-8")).digest()
        source = "sha256-" + base64.b64encode(digest).decode("ascii")
        if source not in hashes:
            hashes.append(source)
    return hashes


# What an API client's entry may hold, and what its name and key may be: a
# name goes into nginx's config and log as it is; a key sits in a quoted
# nginx string (no quote, backslash, $, ; or space can get in) and is long
# enough not to be guessed.
_CLIENT_FIELDS = {"name", "key", "networks", "rate", "burst"}
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Words nginx reads as keywords where a client's name stands in its maps.
_NGINX_MAP_WORDS = {"default", "hostnames", "include", "volatile"}
_CLIENT_KEY = re.compile(r"^[A-Za-z0-9._~+/=-]{32,128}$")
_RATE = re.compile(r"^[1-9][0-9]*r/[sm]$")


def _network(value):
    """The value as an ip_network (host bits allowed), or None."""
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        return None


def gateway_api_client_errors(clients, allow_anywhere=False, backend_key=""):
    """Messages for every problem of gateway_api_clients (empty: none)."""
    if clients is None:
        return []
    if isinstance(clients, (str, bytes, dict)):
        return ["gateway_api_clients must be a list of clients, each {name, key, networks, rate, burst} "
                "(only name is required)."]
    errors, names, keys = [], {}, {}
    for index, client in enumerate(clients):
        where = f"gateway_api_clients[{index}]"
        if not isinstance(client, dict):
            errors.append(f"{where} must be a mapping such as {{name: claims-batch}}.")
            continue
        name = client.get("name")
        if isinstance(name, str) and name.lower() in _NGINX_MAP_WORDS:
            errors.append(f"{where}: the name {name} is a word nginx reads as a keyword in its maps; "
                          "choose another name.")
        elif isinstance(name, str) and _CLIENT_NAME.match(name):
            where = f"gateway_api_clients[{index}] ({name})"
            if name in names:
                errors.append(f"{where} has the name of gateway_api_clients[{names[name]}]: "
                              "each client needs a name of its own.")
            names.setdefault(name, index)
        else:
            errors.append(f"{where} needs a name of 1-64 letters, digits, - and _ (it goes into the access log).")
        unknown = sorted(set(client) - _CLIENT_FIELDS)
        if unknown:
            errors.append(f"{where} has unknown settings {', '.join(unknown)}; "
                          f"a client may set {', '.join(sorted(_CLIENT_FIELDS))}.")
        if "key" in client:
            key = client["key"]
            if not (isinstance(key, str) and _CLIENT_KEY.match(key)):
                errors.append(f"{where}: its key must be 32-128 characters of letters, digits and ._~+/=- "
                              "(or leave key out to have one generated into the secrets store).")
            elif key in keys:
                errors.append(f"{where} has the key of gateway_api_clients[{keys[key]}]: "
                              "each client needs a key of its own.")
            elif backend_key and key == backend_key:
                errors.append(f"{where} has vLLM's own key (llm_vllm_api_key) as its key: "
                              "clients must never hold it; give the client a key of its own.")
            else:
                keys[key] = index
        if "networks" in client:
            networks = client["networks"]
            if isinstance(networks, (str, bytes, dict)) or not isinstance(networks, list) or not networks:
                errors.append(f"{where}: networks must be a non-empty list such as [10.20.30.0/24].")
            else:
                parsed = [(str(n), _network(n)) for n in networks]
                bad = [text for text, network in parsed if network is None]
                if bad:
                    errors.append(f"{where}: networks holds {', '.join(bad)}, not a network or address "
                                  "such as 10.20.30.0/24 or 2001:db8::/48.")
                world = [text for text, network in parsed if network is not None and network.prefixlen == 0]
                if world and not allow_anywhere:
                    errors.append(f"{where}: networks holds {', '.join(world)}, every address on the Internet; "
                                  "name the client's networks, or set gateway_allow_api_from_anywhere: true "
                                  "if that is truly meant.")
        if "rate" in client and not (isinstance(client["rate"], str) and _RATE.match(client["rate"])):
            errors.append(f"{where}: rate must be a rate such as 2r/s or 30r/m.")
        if "burst" in client and (isinstance(client["burst"], bool) or not isinstance(client["burst"], int)
                                  or client["burst"] < 0):
            errors.append(f"{where}: burst must be a whole number, 0 or more.")
    return errors


def gateway_api_client_list(clients, networks=(), rate="10r/s", burst=20):
    """Each client as {index, name, networks, rate, burst}, defaults filled in;
    networks as nginx geo subnets. Keys stay out of this list."""
    result = []
    for index, client in enumerate(_as_list(clients)):
        own = client.get("networks") or list(_as_list(networks))
        result.append({
            "index": index,
            "name": client["name"],
            "networks": [str(network) for network in map(_network, own) if network is not None],
            "rate": client.get("rate", rate),
            "burst": int(client.get("burst", burst)),
        })
    return result


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "gateway_san_list": gateway_san_list,
            "gateway_path_regex": gateway_path_regex,
            "gateway_script_hashes": gateway_script_hashes,
            "gateway_api_client_errors": gateway_api_client_errors,
            "gateway_api_client_list": gateway_api_client_list,
        }
