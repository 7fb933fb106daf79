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


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "gateway_san_list": gateway_san_list,
            "gateway_path_regex": gateway_path_regex,
            "gateway_script_hashes": gateway_script_hashes,
        }
