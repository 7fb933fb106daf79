"""Judge a host's measured facts against the project's security goals, in
plain Python so that unit tests (tests/unit/test_evidence_report.py) can
import it directly.

Filters
-------
- ``evidence_report(facts, probes, context)``: the per-host report
  (``schema: "llm-evidence/1"``, files/evidence/report.schema.json). ``facts``
  is the ``evidence`` dict of the evidence_facts module, ``probes`` the
  ``probes`` dict of evidence_probe (the canary's ``found_in`` filled in by
  the host-side search), ``context`` the host's settings: host, groups,
  thresholds (the role's ``evidence_thresholds``, every name required),
  require_encryption, volume_expected, unlock_mode, header_backups,
  expected_public_ports, expected_reachable_ports, units, advisories,
  usage_log_expected, canary_enabled. Every control id of
  ``evidence_control_ids(context.units)`` is always present, ``na`` where it
  does not apply, so that the fleet table has the same rows for every host.
- ``evidence_summary(reports, sha256s, inventory, generated_at)``: the fleet
  summary (``schema: "llm-evidence-summary/1"``,
  files/evidence/summary.schema.json). ``reports`` is a list of per-host
  reports, ``sha256s`` the SHA-256 of each host's JSON file, either a list in
  the same order or a dict host -> digest; ``inventory`` the inventory's name;
  ``generated_at`` the UTC time of the run (ISO 8601 text; empty: now). Result::

      {schema, generated_at, inventory,
       hosts: [{host, file: "<host>.json", sha256, summary: {pass, warn, fail, na},
                statuses: {control id: status}}],
       controls: [control ids, in report order],
       titles: {control id: title}}      # for the page's row headers

  Hosts are sorted by name; ``controls`` is the union of every host's ids
  (sandboxing ids may differ between hosts), grouped by area as in a report,
  within an area in the order first seen.
- ``evidence_control_ids(units)``: the control ids of a report, in order.
- ``evidence_version_compare(a, b, scheme)``: -1, 0 or 1; scheme ``pep440``
  (pip components: vllm, chainlit) or ``debian`` (nginx, kernel,
  nvidia_driver), as ``version_scheme(component)`` picks it.
- ``evidence_advisories_for(component, version, advisories, features)``: the
  advisories of files/evidence/advisories.yml that apply to an installed
  version, and those that cannot be decided (see ``match_advisories``).

The Debian order is Debian policy's (section 5.6.12): epoch, then upstream
version, then Debian revision; inside each, runs of non-digits compare
character by character with ``~`` before everything (even the end of the
string) and letters before other characters, runs of digits compare as
numbers.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from packaging.version import InvalidVersion, Version

try:  # The filter runs under Ansible; the unit tests import it without needing Ansible.
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]


REPORT_SCHEMA = "llm-evidence/1"
SUMMARY_SCHEMA = "llm-evidence-summary/1"
STATUSES = ("pass", "warn", "fail", "na")
_RANK = {"na": 0, "pass": 1, "warn": 2, "fail": 3}

AREA_ENCRYPTION = "Encryption at rest"
AREA_EXPOSURE = "Exposure"
AREA_SANDBOXING = "Service sandboxing"
AREA_VERSIONS = "Versions and advisories"
AREA_LOGGING = "Logging"
AREA_HOST = "Host"
AREAS = (AREA_ENCRYPTION, AREA_EXPOSURE, AREA_SANDBOXING, AREA_VERSIONS, AREA_LOGGING, AREA_HOST)

COMPONENTS = ("vllm", "chainlit", "nginx", "kernel", "nvidia_driver")
PIP_COMPONENTS = ("vllm", "chainlit")

THRESHOLD_NAMES = (
    "unit_exposure_pass", "unit_exposure_warn", "certificate_days_warn", "certificate_days_fail",
    "lynis_index_pass", "lynis_index_warn", "pending_security_warn", "pending_security_fail",
    "apt_lists_max_age_days", "last_upgrade_max_age_days", "tls_min_version", "luks_ciphers",
    "luks_min_key_bits", "luks_pbkdfs", "journald_storage", "journald_min_retention_days",
)
# Thresholds that may be left out.
OPTIONAL_THRESHOLD_NAMES = ("unit_exposure_pass_by_unit",)

# Ids before and after the per-unit sandboxing controls. privacy.canary (the
# end-to-end test that no chat content is kept) sits with the logging controls,
# in the "Logging" area.
_IDS_BEFORE_UNITS = (
    "encryption.luks", "encryption.unlock", "encryption.header_backup",
    "exposure.sockets", "exposure.firewall", "exposure.scan", "exposure.tls", "exposure.certificate",
    "exposure.routes",
)
_IDS_AFTER_UNITS = (
    "versions.vllm", "versions.chainlit", "versions.nginx", "versions.kernel", "versions.nvidia_driver",
    "logging.journald", "logging.content", "logging.audit", "privacy.canary",
    "host.core_dumps", "host.swap", "host.updates", "host.lynis",
)


# --- small helpers ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """value as plain JSON types (dict, list, str, int, float, bool, None), so that
    the report is the same JSON whatever wrapper types the caller's data had."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value[:])
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    return str(value)


def _dict(value: Any) -> dict:
    """value when it is a mapping, else an empty dict (a fact that was null)."""
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list:
    """value when it is a list, else an empty list."""
    return list(value) if isinstance(value, (list, tuple)) else []


def _ints(values: Any) -> list[int]:
    """A list of port numbers (given as numbers or digit strings), sorted, duplicates dropped."""
    result = set()
    for item in _list(values):
        try:
            result.add(int(item))
        except (TypeError, ValueError):
            continue
    return sorted(result)


def _number(value: Any) -> float | None:
    """value as a float, or None when it is not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(number: float) -> str:
    """A number without a useless ".0"."""
    return str(int(number)) if float(number).is_integer() else str(number)


def _parse_time(text: Any) -> datetime.datetime | None:
    """An ISO 8601 time ("...Z" or with an offset) as an aware datetime, or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _worst(statuses: list[str]) -> str:
    """The most severe of some statuses (pass when there are none)."""
    return max(statuses or ["pass"], key=lambda status: _RANK[status])


def _control(cid: str, area: str, title: str, status: str, measured: Any, expected: str, why: str,
             findings: list[str] | None = None) -> dict:
    """One control of the report. A pass carries no findings; a warn or fail at
    least one; a na one sentence saying why it does not apply."""
    findings = [str(item) for item in (findings or [])]
    if status == "pass":
        findings = []
    elif status in ("warn", "fail") and not findings:
        findings = [f"{title}: not met."]
    return {"id": cid, "area": area, "title": title, "status": status, "measured": _plain(measured),
            "expected": expected, "why": why, "findings": findings}


def _unit_short(unit: str) -> str:
    """A unit's name without ".service" (the suffix of a sandboxing control id)."""
    unit = str(unit)
    return unit[: -len(".service")] if unit.endswith(".service") else unit


def evidence_control_ids(units: list | None = None) -> list[str]:
    """The ids of a report's controls, in the report's order, for these units."""
    return (list(_IDS_BEFORE_UNITS) + [f"sandboxing.{_unit_short(unit)}" for unit in _list(units)]
            + list(_IDS_AFTER_UNITS))


# --- version order ------------------------------------------------------------------


def _debian_char_weight(char: str) -> int:
    """Weight of one character of a non-digit run in the Debian order: "~"
    lowest, then the end of the run, then letters (by ASCII), then everything
    else (by ASCII, after all letters)."""
    if char == "~":
        return -1
    if char == "":
        return 0
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


def _debian_compare_part(left: str, right: str) -> int:
    """Compare an upstream version or a Debian revision: alternate runs of
    non-digits (character weights) and runs of digits (numbers)."""
    i = j = 0
    while i < len(left) or j < len(right):
        # Non-digit runs, one character at a time; the shorter run is padded
        # with the end weight (which "~" still sorts below).
        while (i < len(left) and not left[i].isdigit()) or (j < len(right) and not right[j].isdigit()):
            a = left[i] if i < len(left) and not left[i].isdigit() else ""
            b = right[j] if j < len(right) and not right[j].isdigit() else ""
            weight_a, weight_b = _debian_char_weight(a), _debian_char_weight(b)
            if weight_a != weight_b:
                return -1 if weight_a < weight_b else 1
            i += 1 if a else 0
            j += 1 if b else 0
        # Digit runs as numbers (an empty run is 0).
        start_i, start_j = i, j
        while i < len(left) and left[i].isdigit():
            i += 1
        while j < len(right) and right[j].isdigit():
            j += 1
        number_a = int(left[start_i:i] or "0")
        number_b = int(right[start_j:j] or "0")
        if number_a != number_b:
            return -1 if number_a < number_b else 1
    return 0


def _debian_split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) of a Debian version string."""
    text = str(version).strip()
    if not text:
        raise ValueError("an empty Debian version")
    epoch = 0
    if ":" in text:
        head, text = text.split(":", 1)
        if not head.isdigit():
            raise ValueError(f"{version!r}: the epoch is not a number")
        epoch = int(head)
    upstream, sep, revision = text.rpartition("-")
    if not sep:
        upstream, revision = text, ""
    if not upstream:
        raise ValueError(f"{version!r}: no upstream version")
    if not re.fullmatch(r"[A-Za-z0-9.+~:-]+", upstream) or not re.fullmatch(r"[A-Za-z0-9.+~]*", revision):
        raise ValueError(f"{version!r}: characters a Debian version cannot have")
    return epoch, upstream, revision


def debian_version_compare(left: str, right: str) -> int:
    """-1, 0 or 1 as left sorts before, the same as, or after right in Debian's
    order (dpkg --compare-versions). Raises ValueError on a malformed version."""
    epoch_a, upstream_a, revision_a = _debian_split(left)
    epoch_b, upstream_b, revision_b = _debian_split(right)
    if epoch_a != epoch_b:
        return -1 if epoch_a < epoch_b else 1
    return _debian_compare_part(upstream_a, upstream_b) or _debian_compare_part(revision_a, revision_b)


def pep440_version_compare(left: str, right: str) -> int:
    """-1, 0 or 1 in PEP 440's order (pip). Raises ValueError on a malformed version."""
    try:
        a, b = Version(str(left)), Version(str(right))
    except InvalidVersion as exc:
        raise ValueError(str(exc)) from exc
    return (a > b) - (a < b)


def version_scheme(component: str) -> str:
    """The version order of a component: pep440 for the pip-installed ones, debian otherwise."""
    return "pep440" if component in PIP_COMPONENTS else "debian"


def evidence_version_compare(left: str, right: str, scheme: str = "debian") -> int:
    """Compare two versions in the given scheme (``pep440`` or ``debian``)."""
    if scheme == "pep440":
        return pep440_version_compare(left, right)
    if scheme == "debian":
        return debian_version_compare(left, right)
    raise AnsibleFilterError(f"evidence_version_compare: unknown scheme {scheme!r} (pep440 or debian)")


# --- advisories ----------------------------------------------------------------------


def _advisory_ranges(advisory: Mapping) -> list[dict]:
    """The affected ranges of an advisory: ``affected`` is one {introduced, fixed}
    or a list of them (a fix backported to several branches)."""
    affected = advisory.get("affected")
    ranges = [affected] if isinstance(affected, Mapping) else _list(affected)
    return [{"introduced": str(r.get("introduced", "0") or "0"),
             "fixed": None if r.get("fixed") in (None, "") else str(r.get("fixed"))} for r in ranges]


def check_advisories(advisories: Any) -> list[dict]:
    """The advisory list, checked: each entry needs an id, a known component,
    at least one affected range and an impact. A malformed list is an error,
    never a silent pass."""
    problems, checked = [], []
    for index, advisory in enumerate(_list(advisories)):
        where = f"advisory #{index + 1}"
        if not isinstance(advisory, Mapping):
            problems.append(f"{where} is not a mapping")
            continue
        where = f"advisory {advisory.get('id') or '#' + str(index + 1)}"
        if not advisory.get("id"):
            problems.append(f"{where} has no id")
        if advisory.get("component") not in COMPONENTS:
            problems.append(f"{where}: component must be one of {', '.join(COMPONENTS)}")
        ranges = _advisory_ranges(advisory)
        if not ranges:
            problems.append(f"{where} has no affected range")
        if not advisory.get("impact"):
            problems.append(f"{where} has no impact line")
        scheme = version_scheme(str(advisory.get("component")))
        for bound in ranges:
            for value in (bound["introduced"], bound["fixed"]):
                if value is None:
                    continue
                try:
                    evidence_version_compare(value, value, scheme)
                except ValueError:
                    problems.append(f"{where}: {value!r} is not a {scheme} version")
        checked.append(advisory)
    if advisories is not None and not isinstance(advisories, (list, tuple)):
        problems.append("the advisories are not a list")
    if problems:
        raise AnsibleFilterError("evidence: the advisory list is malformed: " + "; ".join(problems))
    return checked


def match_advisories(component: str, version: str, advisories: Any, features: Mapping | None = None) -> dict:
    """Which advisories of ``component`` apply to an installed ``version``.

    Returns ``{applies: [...], undecided: [...], checked: n}``: an advisory
    applies when the version lies in one of its ranges (introduced inclusive,
    fixed exclusive; no fix = every version from introduced on) and, when it
    names ``requires_feature``, that feature is on (``features[name]`` true).
    It is undecided when the version cannot be compared, or the version is in
    range but the feature could not be measured (null). Each entry is
    ``{id, impact, fixed, range}``: ``fixed`` is the end of the range the
    version is in (the fix for its branch), null when there is none yet;
    ``reason`` is added for undecided ones."""
    scheme = version_scheme(component)
    features = _dict(features)
    applies, undecided, checked = [], [], 0
    for advisory in check_advisories(advisories):
        if advisory.get("component") != component:
            continue
        checked += 1
        ranges = _advisory_ranges(advisory)
        listed_fix = advisory.get("fixed")
        entry = {"id": str(advisory["id"]), "impact": str(advisory.get("impact", "")),
                 "fixed": None if listed_fix in (None, "") else str(listed_fix)}
        try:
            hit = next((r for r in ranges
                        if evidence_version_compare(version, r["introduced"], scheme) >= 0
                        and (r["fixed"] is None or evidence_version_compare(version, r["fixed"], scheme) < 0)), None)
        except ValueError:
            undecided.append({**entry, "range": None, "reason": f"version {version!r} cannot be compared ({scheme})"})
            continue
        if hit is None:
            continue
        # The fix for the installed branch: the matching range's end (a
        # backport), which the top-level "fixed" only repeats for one range.
        entry["range"] = hit
        entry["fixed"] = hit["fixed"]
        feature = advisory.get("requires_feature")
        if feature:
            state = features.get(str(feature))
            if state is None:
                undecided.append({**entry, "reason": f"applies only with {feature} on, which could not be measured"})
                continue
            if state is not True:
                continue
        applies.append(entry)
    return {"applies": applies, "undecided": undecided, "checked": checked}


def evidence_advisories_for(component: str, version: str, advisories: list, features: dict | None = None) -> dict:
    """Filter form of ``match_advisories``."""
    return match_advisories(component, version, advisories, features)


def _range_text(bound: Mapping | None) -> str:
    """An affected range in words: ">= 2.12.0, no fix yet", "< 0.27.0"."""
    if not bound:
        return ""
    low = "" if bound["introduced"] in ("0", "") else f">= {bound['introduced']}"
    high = f"< {bound['fixed']}" if bound["fixed"] else "no fix yet"
    return ", ".join(part for part in (low, high) if part)


# --- time spans --------------------------------------------------------------------

# systemd.time(7): units of a time span ("m" is minutes, "M" months).
_SPAN_SECONDS = {
    "us": 1e-6, "usec": 1e-6, "µs": 1e-6, "μs": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    "M": 2629800, "month": 2629800, "months": 2629800,
    "y": 31557600, "year": 31557600, "years": 31557600,
}


def timespan_days(text: Any) -> float | None:
    """A systemd time span ("1month", "2w 3d", "90d", "3600") in days. None for
    no limit ("0", "infinity", empty); ValueError when it is not a time span."""
    if text is None:
        return None
    value = str(text).strip()
    if value in ("", "0", "infinity"):
        return None
    total, position = 0.0, 0
    for match in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-zµμ]*)", value):
        if match.start() != position or match.group(2) not in _SPAN_SECONDS:
            raise ValueError(f"{text!r} is not a systemd time span")
        total += float(match.group(1)) * _SPAN_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value) or position == 0:
        raise ValueError(f"{text!r} is not a systemd time span")
    return total / 86400 if total else None


# --- the controls -------------------------------------------------------------------

_AUTOMATIC_TOKENS = {"clevis": "clevis", "systemd-tpm2": "tpm2"}
_MODE_FAMILY = {"keyfile": "keyfile", "manual": "manual", "none": "manual", "fido2": "manual",
                "clevis": "automatic", "tang": "automatic", "nbde": "automatic", "tpm2": "automatic",
                "tang+tpm2": "automatic"}


def _unlock_mode(volume: Mapping) -> str:
    """How a volume is unlocked at boot, from its crypttab line and LUKS2 tokens:
    keyfile (crypttab names a key file: systemd-cryptsetup uses it before any
    token), clevis or tpm2 (automatic, by a token; roles/model_volume opens
    these from a unit of its own, with no crypttab line), fido2 (a security
    key, present in person), manual (no key: a passphrase typed in, or no
    crypttab line and no token)."""
    kinds = [str(token.get("kind")) for token in _list(volume.get("tokens")) if isinstance(token, Mapping)]
    crypttab = _dict(volume.get("crypttab"))
    if crypttab.get("present") and crypttab.get("key") not in (None, "", "none", "-"):
        return "keyfile"
    for kind in kinds:
        if kind in _AUTOMATIC_TOKENS:
            return _AUTOMATIC_TOKENS[kind]
    return "fido2" if crypttab.get("present") and "systemd-fido2" in kinds else "manual"


def _mode_bits(mode: Any) -> int | None:
    """An octal mode text ("0400") as a number, or None."""
    try:
        return int(str(mode), 8)
    except (TypeError, ValueError):
        return None


def _luks_volumes(facts: Mapping) -> list[dict]:
    """The measured LUKS volumes (entries of facts.luks)."""
    return [volume for volume in _list(facts.get("luks")) if isinstance(volume, Mapping)]


def _check_luks(facts: Mapping, context: Mapping, limits: Mapping) -> dict:
    """encryption.luks: each volume present, LUKS2, an allowed cipher, a key of at least luks_min_key_bits;
    passphrase slots (not bound to a token) with an allowed PBKDF (else warn). No volume: fail when
    encryption is required, else warn; na on a host that keeps no weights (no volume expected, no vLLM)."""
    title = "Model volume is LUKS2 with a strong cipher"
    why = ("The model volume holds the weights and the services' state; when a disk leaves the site (stolen, "
           "sent back under warranty, sold), only LUKS2 encryption with a strong cipher and a slow passphrase "
           "hash keeps what is on it unreadable.")
    ciphers = [str(c) for c in _list(limits["luks_ciphers"])]
    pbkdfs = [str(p) for p in _list(limits["luks_pbkdfs"])]
    min_bits = int(limits["luks_min_key_bits"])
    expected = (f"every model volume present and LUKS2, cipher {' or '.join(ciphers)}, a key of at least "
                f"{min_bits} bits, passphrase key slots hashed with {' or '.join(pbkdfs)} (slots opened by a "
                "token hold a random key and may use any hash)")
    volumes = _luks_volumes(facts)
    holds_weights = bool(context.get("volume_expected")) or bool(_dict(facts.get("versions")).get("vllm"))
    if not volumes and not holds_weights:
        return _control("encryption.luks", AREA_ENCRYPTION, title, "na", {"volumes": [], "vllm_installed": False},
                        expected, why, ["No model volume is expected and vLLM is not installed: this host keeps "
                                        "no model weights."])
    if not volumes:
        missing = "no encrypted model volume on this host"
        if context.get("require_encryption", True):
            return _control("encryption.luks", AREA_ENCRYPTION, title, "fail", {"volumes": []}, expected, why,
                            [f"{missing}: the weights lie on an unencrypted disk"])
        return _control("encryption.luks", AREA_ENCRYPTION, title, "warn", {"volumes": []}, expected, why,
                        [f"{missing} (allowed here: encryption is not required for this host)"])
    measured, findings, statuses = [], [], []
    for volume in volumes:
        name = volume.get("name") or volume.get("device")
        token_slots = {str(slot) for token in _list(volume.get("tokens")) if isinstance(token, Mapping)
                       for slot in _list(token.get("keyslots"))}
        slots = [slot for slot in _list(volume.get("keyslots")) if isinstance(slot, Mapping)]
        passphrase_pbkdfs = sorted({str(slot.get("pbkdf")) for slot in slots
                                    if str(slot.get("id")) not in token_slots and slot.get("pbkdf")})
        measured.append({"name": name, "device": volume.get("device"), "present": volume.get("present"),
                         "is_luks": volume.get("is_luks"), "version": volume.get("version"),
                         "cipher": volume.get("cipher"), "key_bits": volume.get("key_bits"),
                         "passphrase_pbkdfs": passphrase_pbkdfs, "open": volume.get("open"),
                         "mount": volume.get("mount")})
        if not volume.get("present"):
            statuses.append("fail")
            findings.append(f"{name}: device {volume.get('device') or '(none given)'} was not found")
            continue
        if not volume.get("is_luks"):
            statuses.append("fail")
            findings.append(f"{name}: {volume.get('device')} is not LUKS-encrypted")
            continue
        if volume.get("version") != 2:
            statuses.append("fail")
            findings.append(f"{name}: LUKS version {volume.get('version')}, not LUKS2")
        if volume.get("cipher") not in ciphers:
            statuses.append("fail")
            findings.append(f"{name}: cipher {volume.get('cipher')} is not one of {', '.join(ciphers)}")
        bits = _number(volume.get("key_bits"))
        if bits is None or bits < min_bits:
            statuses.append("fail")
            findings.append(f"{name}: a {volume.get('key_bits')}-bit key, below {min_bits} bits")
        weak = [pbkdf for pbkdf in passphrase_pbkdfs if pbkdf not in pbkdfs]
        if weak:
            statuses.append("warn")
            findings.append(f"{name}: passphrase key slots use {', '.join(weak)}, which makes guessing the "
                            f"passphrase cheaper than {' or '.join(pbkdfs)}")
    return _control("encryption.luks", AREA_ENCRYPTION, title, _worst(statuses), {"volumes": measured},
                    expected, why, findings)


def _check_unlock(facts: Mapping, context: Mapping) -> dict:
    """encryption.unlock: the measured unlock mode. manual, clevis, tpm2: pass; keyfile: warn unless the
    key lies on an encrypted file system; a key file readable by others, or left on an unencrypted file
    system beside an automatic unlock: fail; measured mode other than configured: warn."""
    title = "The volume's key is kept apart from the disk"
    why = ("Encryption protects the data only while the key is kept apart from it: a key stored unprotected on "
           "the same machine lets whoever takes the whole machine read the volume.")
    expected = ("manual (a passphrase at unlock time) or an automatic unlock (Clevis/Tang, TPM2) with no key "
                "file left on an unencrypted file system; a key file (keyfile mode) is root-only and only warns, "
                "since it protects a lone stolen data disk but not the whole machine; the mode measured is the "
                "one configured")
    volumes = [volume for volume in _luks_volumes(facts) if volume.get("is_luks")]
    if not volumes:
        return _control("encryption.unlock", AREA_ENCRYPTION, title, "na", {"volumes": []}, expected, why,
                        ["No LUKS volume on this host, so there is no key to keep."])
    configured = str(context.get("unlock_mode") or "")
    measured, findings, statuses = [], [], []
    for volume in volumes:
        name = volume.get("name") or volume.get("device")
        mode = _unlock_mode(volume)
        key_file = volume.get("key_file") if isinstance(volume.get("key_file"), Mapping) else None
        crypttab = _dict(volume.get("crypttab"))
        measured.append({"name": name, "mode": mode, "crypttab_key": crypttab.get("key"),
                         "tokens": sorted({str(t.get("kind")) for t in _list(volume.get("tokens"))
                                           if isinstance(t, Mapping)}),
                         "key_file": key_file})
        key_exists = bool(key_file and key_file.get("exists"))
        on_encrypted_fs = bool(key_file and key_file.get("encrypted_fs"))
        bits = _mode_bits(key_file.get("mode")) if key_exists and key_file else None
        if key_exists and (bits is None or bits & 0o077):
            statuses.append("fail")
            findings.append(f"{name}: key file {key_file.get('path')} has mode {key_file.get('mode')}: "
                            "others than root can read the key")
        if mode == "keyfile":
            if not key_exists:
                statuses.append("warn")
                findings.append(f"{name}: crypttab names key file {crypttab.get('key')}, which does not exist: "
                                "the volume will not open at boot")
            elif not on_encrypted_fs:
                statuses.append("warn")
                findings.append(f"{name}: key on the root file system: protects a lone stolen data disk, "
                                "not a stolen machine")
        elif mode in ("clevis", "tpm2"):
            if key_exists and not on_encrypted_fs:
                statuses.append("fail")
                findings.append(f"{name}: unlocked automatically ({mode}), yet key file {key_file.get('path')} "
                                "is still on an unencrypted file system: it opens the volume without the "
                                f"{mode} binding")
        family = _MODE_FAMILY.get(mode, mode)
        if configured and _MODE_FAMILY.get(configured, configured) != family:
            statuses.append("warn")
            findings.append(f"{name}: configured unlock mode is {configured}, measured {mode}")
    return _control("encryption.unlock", AREA_ENCRYPTION, title, _worst(statuses),
                    {"configured": configured or None, "volumes": measured}, expected, why, findings)


def _check_header_backup(facts: Mapping, context: Mapping) -> dict:
    """encryption.header_backup: a header backup in the secrets store for each LUKS volume (else warn)."""
    title = "A LUKS header backup is kept off the host"
    why = ("The LUKS header holds the only copies of the volume's wrapped keys: if it is damaged, no key or "
           "passphrase can decrypt the data any more, so a copy kept off the host is the only way back.")
    expected = "a header backup of every LUKS volume in the controller's secrets store"
    volumes = [volume for volume in _luks_volumes(facts) if volume.get("is_luks")]
    if not volumes:
        return _control("encryption.header_backup", AREA_ENCRYPTION, title, "na", {"volumes": {}}, expected, why,
                        ["No LUKS volume on this host, so there is no header to back up."])
    backups = _dict(context.get("header_backups"))
    measured = {str(v.get("name")): bool(backups.get(str(v.get("name")))) for v in volumes}
    missing = [name for name, present in measured.items() if not present]
    findings = [f"{name}: no header backup in the secrets store; a damaged header would lose the volume"
                for name in missing]
    return _control("encryption.header_backup", AREA_ENCRYPTION, title, "warn" if missing else "pass",
                    {"volumes": measured}, expected, why, findings)


def _is_loopback(address: Any) -> bool:
    """Whether a listening address is a loopback one (127.0.0.0/8, ::1, ::ffff:127.x)."""
    text = str(address or "").strip().strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# Client sockets that listen by nature: DHCP replies come to the client's port.
_DHCP_CLIENT_PORTS = {("udp", 68), ("udp", 546)}


def _check_sockets(facts: Mapping, context: Mapping) -> dict:
    """exposure.sockets: every listener on a non-loopback address is on an expected public port."""
    title = "Only the expected ports listen beyond loopback"
    why = ("Every service that listens on a network address can be attacked from that network; services meant "
           "only for this machine must listen on loopback, so that a firewall mistake cannot expose them.")
    public = _ints(context.get("expected_public_ports"))
    expected = (f"listeners on non-loopback addresses only on ports {', '.join(map(str, public)) or '(none)'} "
                "(a DHCP client's UDP port 68/546 is not counted)")
    sockets = facts.get("sockets")
    if not isinstance(sockets, list):
        return _control("exposure.sockets", AREA_EXPOSURE, title, "warn", None, expected, why,
                        ["The listening sockets could not be read (ss)."])
    listeners, unexpected, ignored = [], [], []
    for sock in sockets:
        if not isinstance(sock, Mapping) or _is_loopback(sock.get("address")):
            continue
        address = str(sock.get("address"))
        address = f"[{address}]" if ":" in address and not address.startswith("[") else address
        text = f"{sock.get('proto')} {address}:{sock.get('port')} {sock.get('process') or '?'}"
        port = _ints([sock.get("port")])
        if (str(sock.get("proto")), port[0] if port else None) in _DHCP_CLIENT_PORTS:
            ignored.append(text)
            continue
        listeners.append(text)
        if not port or port[0] not in public:
            unexpected.append(text)
    measured = {"non_loopback": listeners, "unexpected": unexpected}
    if ignored:
        measured["dhcp_clients"] = ignored
    findings = [f"{text} listens on the network but its port is not an expected public one" for text in unexpected]
    return _control("exposure.sockets", AREA_EXPOSURE, title, "fail" if unexpected else "pass",
                    measured, expected, why, findings)


def _check_firewall(facts: Mapping, context: Mapping) -> dict:
    """exposure.firewall: ufw installed and active, incoming default deny/reject, every inbound
    ALLOW/LIMIT rule for an expected public port (a rule without a port opens every port)."""
    title = "The firewall refuses by default and opens only the expected ports"
    why = ("The firewall is the second line behind the services' own bindings: it must refuse everything by "
           "default and let in only the ports this host is meant to serve.")
    public = _ints(context.get("expected_public_ports"))
    expected = (f"ufw active, incoming default deny or reject, ALLOW/LIMIT rules only for ports "
                f"{', '.join(map(str, public)) or '(none)'}")
    ufw = facts.get("ufw")
    if not isinstance(ufw, Mapping):
        return _control("exposure.firewall", AREA_EXPOSURE, title, "fail", None, expected, why,
                        ["The firewall's state could not be read."])
    findings = []
    allowed, unexpected = [], []
    for rule in _list(ufw.get("rules")):
        if not isinstance(rule, Mapping):
            continue
        action = str(rule.get("action") or "").upper()
        if not (action.startswith("ALLOW") or action.startswith("LIMIT")) or "OUT" in action or "FWD" in action:
            continue
        text = f"{rule.get('to')} {action} from {rule.get('from')}{' (v6)' if rule.get('v6') else ''}"
        port = _ints([rule.get("port")])
        if port:
            allowed.append(port[0])
        if not port or port[0] not in public:
            unexpected.append(text)
    if not ufw.get("installed"):
        findings.append("ufw is not installed")
    elif not ufw.get("active"):
        findings.append("ufw is installed but not active: nothing is filtered")
    if ufw.get("installed") and ufw.get("default_incoming") not in ("deny", "reject"):
        findings.append(f"the default for incoming traffic is {ufw.get('default_incoming')}, not deny or reject")
    findings += [f"rule {text} opens a port that is not an expected public one" for text in unexpected]
    measured = {"installed": ufw.get("installed"), "active": ufw.get("active"),
                "default_incoming": ufw.get("default_incoming"), "default_routed": ufw.get("default_routed"),
                "allowed_ports": sorted(set(allowed)), "unexpected_rules": unexpected}
    return _control("exposure.firewall", AREA_EXPOSURE, title, "fail" if findings else "pass",
                    measured, expected, why, findings)


def _check_scan(probes: Mapping, context: Mapping) -> dict:
    """exposure.scan: the ports that answered the controller are all expected to be reachable."""
    title = "From the controller, only the expected ports answer"
    why = ("This is an outsider's view: the controller tried the host's ports over the network, and only the "
           "ports meant to be reachable may answer, whatever the configuration files say.")
    reachable = _ints(context.get("expected_reachable_ports"))
    expected = f"open ports a subset of {', '.join(map(str, reachable)) or '(none)'}"
    scan = probes.get("scan")
    if not isinstance(scan, Mapping):
        return _control("exposure.scan", AREA_EXPOSURE, title, "na", None, expected, why,
                        ["No port scan was run for this host."])
    open_ports = _ints(scan.get("open"))
    unexpected = [port for port in open_ports if port not in reachable]
    measured = {"address": scan.get("address"), "checked": len(_list(scan.get("checked"))), "open": open_ports,
                "unexpected": unexpected}
    findings = [f"port {port} answers at {scan.get('address')} but is not expected to be reachable"
                for port in unexpected]
    return _control("exposure.scan", AREA_EXPOSURE, title, "fail" if unexpected else "pass",
                    measured, expected, why, findings)


_TLS_ORDER = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_TLS_ALIASES = {"TLSv1.0": "TLSv1"}
_AEAD_MARKERS = ("GCM", "CHACHA20-POLY1305", "CCM")


def _check_tls(probes: Mapping, limits: Mapping) -> dict:
    """exposure.tls: no protocol below tls_min_version; every TLS 1.2 suite ECDHE with AEAD."""
    title = "The gateway speaks only current TLS with forward secrecy"
    why = ("Prompts, replies and API keys cross the network inside TLS; old protocol versions and ciphers without "
           "forward secrecy or authenticated encryption let a network attacker read or alter them.")
    minimum = _TLS_ALIASES.get(str(limits["tls_min_version"]), str(limits["tls_min_version"]))
    if minimum not in _TLS_ORDER:
        raise AnsibleFilterError(f"evidence: tls_min_version {minimum!r} is not one of {', '.join(_TLS_ORDER)}")
    expected = (f"no protocol below {minimum}; every TLS 1.2 cipher suite with ECDHE key exchange and AEAD "
                "(GCM, ChaCha20-Poly1305)")
    tls = probes.get("tls")
    if not isinstance(tls, Mapping):
        return _control("exposure.tls", AREA_EXPOSURE, title, "na", None, expected, why,
                        ["This host serves no TLS endpoint that was probed (not a gateway)."])
    protocols = {_TLS_ALIASES.get(str(k), str(k)): bool(v) for k, v in _dict(tls.get("protocols")).items()}
    floor = _TLS_ORDER.index(minimum)
    old = [name for name in _TLS_ORDER[:floor] if protocols.get(name)]
    weak = [cipher for cipher in _list(tls.get("tls12_ciphers"))
            if not (str(cipher).startswith("ECDHE-") and any(marker in str(cipher) for marker in _AEAD_MARKERS))]
    findings = [f"{name} is accepted" for name in old]
    findings += [f"TLS 1.2 cipher suite {cipher} lacks ECDHE key exchange or authenticated encryption"
                 for cipher in weak]
    if not any(protocols.get(name) for name in _TLS_ORDER[floor:]):
        findings.append(f"no protocol at or above {minimum} was accepted")
    measured = {"port": tls.get("port"), "accepted": [name for name in _TLS_ORDER if protocols.get(name)],
                "tls12_ciphers": _list(tls.get("tls12_ciphers")), "tls13_cipher": tls.get("tls13_cipher"),
                "weak_ciphers": weak}
    return _control("exposure.tls", AREA_EXPOSURE, title, "fail" if findings else "pass",
                    measured, expected, why, findings)


def _check_certificate(probes: Mapping, limits: Mapping) -> dict:
    """exposure.certificate: days left against certificate_days_warn / certificate_days_fail."""
    title = "The gateway's certificate is far from expiry"
    why = ("When the certificate expires, clients either stop working or get used to clicking through "
           "warnings, which removes the protection against someone impersonating the service.")
    warn_days, fail_days = _number(limits["certificate_days_warn"]), _number(limits["certificate_days_fail"])
    expected = (f"at least {_fmt(warn_days)} days of validity left (warn below {_fmt(warn_days)} days, "
                f"fail below {_fmt(fail_days)})")
    certificate = _dict(probes.get("tls")).get("certificate")
    if not isinstance(certificate, Mapping):
        return _control("exposure.certificate", AREA_EXPOSURE, title, "na", None, expected, why,
                        ["No TLS certificate was probed on this host."])
    days = _number(certificate.get("days_left"))
    measured = {"subject": certificate.get("subject"), "issuer": certificate.get("issuer"),
                "not_after": certificate.get("not_after"), "days_left": certificate.get("days_left")}
    if days is None:
        return _control("exposure.certificate", AREA_EXPOSURE, title, "warn", measured, expected, why,
                        ["The certificate's end of validity could not be read."])
    if days < 0:
        return _control("exposure.certificate", AREA_EXPOSURE, title, "fail", measured, expected, why,
                        [f"the certificate expired {_fmt(-days)} days ago"])
    if days < fail_days:
        return _control("exposure.certificate", AREA_EXPOSURE, title, "fail", measured, expected, why,
                        [f"the certificate expires in {_fmt(days)} days (below {_fmt(fail_days)})"])
    if days < warn_days:
        return _control("exposure.certificate", AREA_EXPOSURE, title, "warn", measured, expected, why,
                        [f"the certificate expires in {_fmt(days)} days (below {_fmt(warn_days)})"])
    return _control("exposure.certificate", AREA_EXPOSURE, title, "pass", measured, expected, why)


_EXPECT_TEXT = {"allowed": "allowed (2xx)", "refused": "refused (403, 404 or 405)",
                "needs_key": "refused without the API key (401)"}


def _check_routes(probes: Mapping) -> dict:
    """exposure.routes: every probed route answered as expected."""
    title = "The gateway lets through only the allowed API routes"
    why = ("vLLM's own API key covers only some of its routes; the gateway must pass only the intended API and "
           "refuse the rest (tokenize, metrics, documentation, admin routes) before they reach vLLM.")
    expected = "every allowed route answers with the key, refuses without it, and every other route is refused"
    routes = [route for route in _list(probes.get("routes")) if isinstance(route, Mapping)]
    if not routes:
        return _control("exposure.routes", AREA_EXPOSURE, title, "na", None, expected, why,
                        ["No gateway routes were probed on this host."])
    measured = [{"method": r.get("method"), "path": r.get("path"), "expect": r.get("expect"),
                 "status": r.get("status"), "ok": bool(r.get("ok"))} for r in routes]
    findings = []
    for route in routes:
        if route.get("ok"):
            continue
        got = route.get("status") or route.get("error") or "no answer"
        findings.append(f"{route.get('method')} {route.get('path')}: expected "
                        f"{_EXPECT_TEXT.get(str(route.get('expect')), route.get('expect'))}, got {got}")
    return _control("exposure.routes", AREA_EXPOSURE, title, "fail" if findings else "pass",
                    measured, expected, why, findings)


_UNIT_WHY = {
    "vllm": ("vLLM holds every prompt and reply in memory and loads code shipped with models; if it is "
             "compromised, its systemd sandbox decides whether the attacker also gets the rest of the host."),
    "chainlit": ("Chainlit handles users' sessions, chat text and uploaded files; its systemd sandbox keeps a "
                 "flaw in the web application from reaching the model files, keys and the rest of the host."),
    "nginx": ("nginx is the service the network talks to and it reads the TLS private key; its systemd sandbox "
              "limits what an attacker gains from a flaw in it."),
}
_UNIT_WHY_DEFAULT = ("systemd's sandboxing limits what a compromised service can read, write and do on the host; "
                     "this service runs next to the model and its users' data, so its reach should be small.")


def _check_unit(unit: str, facts: Mapping, limits: Mapping) -> dict:
    """sandboxing.<unit>: systemd-analyze security's exposure against unit_exposure_pass (or the unit's own
    limit in the optional unit_exposure_pass_by_unit) / unit_exposure_warn."""
    short = _unit_short(unit)
    cid = f"sandboxing.{short}"
    title = f"{unit} runs in a tight systemd sandbox"
    why = _UNIT_WHY.get(short, _UNIT_WHY_DEFAULT)
    own = (limits.get("unit_exposure_pass_by_unit") or {}).get(unit)
    pass_at = _number(own if own is not None else limits["unit_exposure_pass"])
    warn_at = max(_number(limits["unit_exposure_warn"]), pass_at)
    expected = (f"exposure score of systemd-analyze security at most {_fmt(pass_at)} (0 = fully confined, "
                f"10 = not confined); warn up to {_fmt(warn_at)}, fail above")
    found = next((u for u in _list(facts.get("units")) if isinstance(u, Mapping) and u.get("unit") == unit), None)
    if found is not None and found.get("present") is None:
        return _control(cid, AREA_SANDBOXING, title, "warn", {"unit": unit, "present": None}, expected, why,
                        [f"whether {unit} is installed could not be told (systemctl)"])
    if found is None or not found.get("present"):
        return _control(cid, AREA_SANDBOXING, title, "na", {"unit": unit, "present": False}, expected, why,
                        [f"{unit} is not installed on this host."])
    exposure = _number(found.get("exposure"))
    measured = {"unit": unit, "active": found.get("active"), "exposure": found.get("exposure")}
    if exposure is None:
        return _control(cid, AREA_SANDBOXING, title, "warn", measured, expected, why,
                        [f"{unit}'s exposure could not be measured (systemd-analyze security)"])
    if exposure <= pass_at:
        return _control(cid, AREA_SANDBOXING, title, "pass", measured, expected, why)
    status = "warn" if exposure <= warn_at else "fail"
    limit = pass_at if status == "warn" else warn_at
    return _control(cid, AREA_SANDBOXING, title, status, measured, expected, why,
                    [f"{unit}: exposure {_fmt(exposure)}, above {_fmt(limit)}"])


_VERSION_INFO = {
    "vllm": ("vLLM", "Published vLLM vulnerabilities include leaks of one user's output to another, ways past "
                     "the API key and ways to hang the engine; a release with a known advisory leaves a documented "
                     "way in."),
    "chainlit": ("Chainlit", "Published Chainlit vulnerabilities include reading files of the server, requests "
                             "to internal addresses and taking over other users' sessions; a release with a known "
                             "advisory leaves a documented way in."),
    "nginx": ("nginx", "nginx is the service that the users' network talks to; a version with a known "
                       "vulnerability is the first thing an attacker scanning the network tries."),
    "kernel": ("Linux kernel", "The kernel enforces every other boundary on the host (users, sandboxes, "
                               "firewall); a known kernel flaw can turn any foothold into full control."),
    "nvidia_driver": ("NVIDIA driver", "The GPU driver runs inside the kernel and is reachable from the service's "
                                       "processes; a known flaw in it can let a compromised service take over "
                                       "the host or read another process's GPU memory."),
}


def _check_version(component: str, facts: Mapping, advisories: list) -> dict:
    """versions.<component>: fail when an advisory applies, warn when one may (undecided)."""
    cid = f"versions.{component}"
    label, why = _VERSION_INFO[component]
    title = f"{label} has no known applicable advisory"
    expected = ("the installed version outside every affected range of the project's advisory list "
                f"(files/evidence/advisories.yml; {version_scheme(component)} version order)")
    installed = _dict(facts.get("versions")).get(component)
    if not isinstance(installed, Mapping) or not installed.get("version"):
        if component == "kernel" and _dict(facts.get("os")).get("container"):
            reason = "The kernel belongs to the machine that runs this container."
        elif component == "kernel":
            reason = "The running kernel's package version could not be read."
        else:
            reason = f"{label} is not installed on this host."
        return _control(cid, AREA_VERSIONS, title, "na", None, expected, why, [reason])
    version = str(installed.get("version"))
    result = match_advisories(component, version, advisories, _dict(facts.get("features")))
    measured = {"name": installed.get("name"), "version": version, "advisories_checked": result["checked"],
                "applicable": [entry["id"] for entry in result["applies"]],
                "undecided": [entry["id"] for entry in result["undecided"]]}
    findings = []
    for entry in result["applies"]:
        fix = f"fixed in {entry['fixed']}" if entry["fixed"] else "no fix yet"
        findings.append(f"{entry['id']} ({_range_text(entry.get('range'))}): {entry['impact']}; {fix}")
    for entry in result["undecided"]:
        findings.append(f"{entry['id']} may apply: {entry['reason']}")
    status = "fail" if result["applies"] else "warn" if result["undecided"] else "pass"
    return _control(cid, AREA_VERSIONS, title, status, measured, expected, why, findings)


def _check_journald(facts: Mapping, limits: Mapping) -> dict:
    """logging.journald: storage among journald_storage, age limit not below journald_min_retention_days."""
    title = "System logs survive reboots and are kept long enough"
    why = ("System logs are the record of who did what and when; they must survive a reboot and be kept long "
           "enough to investigate an incident after it is noticed.")
    storages = [str(s) for s in _list(limits["journald_storage"])]
    min_days = _number(limits["journald_min_retention_days"])
    expected = (f"journald storage {' or '.join(storages)} (auto counts as persistent when /var/log/journal "
                f"exists); entries not deleted by age before {_fmt(min_days)} days (MaxRetentionSec unset or "
                f"at least {_fmt(min_days)} days)")
    journald = facts.get("journald")
    if not isinstance(journald, Mapping):
        return _control("logging.journald", AREA_LOGGING, title, "warn", None, expected, why,
                        ["journald's settings could not be read."])
    findings, status = [], "pass"
    if journald.get("storage") is None:
        status = "warn"
        findings.append("journald's configuration could not be read; judged by its default, Storage=auto")
    storage = str(journald.get("storage") or "auto")
    effective = storage
    if storage == "auto":
        effective = "persistent" if journald.get("persistent_dir") else "volatile"
    if effective not in storages:
        status = "fail"
        findings.append(f"journald storage is {storage} (in effect {effective}), not {' or '.join(storages)}")
    try:
        days = timespan_days(journald.get("max_retention"))
    except ValueError:
        days = None
        status = _worst([status, "warn"])
        findings.append(f"MaxRetentionSec {journald.get('max_retention')!r} could not be read")
    if days is not None and days < min_days:
        status = "fail"
        findings.append(f"entries are deleted after {journald.get('max_retention')} ({days:.1f} days), "
                        f"before {_fmt(min_days)} days")
    measured = {"storage": journald.get("storage"), "effective": effective,
                "persistent_dir": journald.get("persistent_dir"), "max_retention": journald.get("max_retention"),
                "max_retention_days": None if days is None else round(days, 1),
                "system_max_use": journald.get("system_max_use")}
    return _control("logging.journald", AREA_LOGGING, title, status, measured, expected, why, findings)


def _uses_variable(text: str, variable: str) -> bool:
    """Whether an nginx log_format uses a variable ("$request" or "${request}";
    "$request_time" is another variable)."""
    name = re.escape(variable.lstrip("$"))
    return re.search(r"\$(?:" + name + r"(?![A-Za-z0-9_])|\{" + name + r"\})", text) is not None


def _check_content(facts: Mapping, context: Mapping) -> dict:
    """logging.content: no content variables in nginx's log formats, vLLM request logging off, the
    usage log (where expected) owned by root with mode 0600 or stricter."""
    title = "No chat content is written to logs"
    why = ("Prompts and replies can hold personal or confidential data; copied into access logs or vLLM's "
           "request log they would outlive the conversation and reach anyone who reads logs, and the usage log "
           "(who used the model, not what they asked) must be readable by root alone.")
    usage_expected = bool(context.get("usage_log_expected"))
    expected = ("no request content variables ($request_body, $request, $args, cookies, Authorization, ...) in "
                "any nginx log_format; vLLM's --enable-log-requests off"
                + ("; the usage log present, owned by root, mode 0600 or stricter" if usage_expected else ""))
    gateway = _dict(facts.get("gateway_logging"))
    vllm = _dict(facts.get("vllm_logging"))
    usage = facts.get("usage_log") if isinstance(facts.get("usage_log"), Mapping) else None
    if not gateway.get("nginx") and vllm.get("request_logging") is None and not usage_expected:
        return _control("logging.content", AREA_LOGGING, title, "na", None, expected, why,
                        ["Neither nginx nor vLLM runs here and no usage log is expected."])
    findings, statuses = [], []
    variables = [str(v) for v in _list(gateway.get("content_variables"))] if gateway.get("nginx") else []
    if gateway.get("nginx") and gateway.get("content_variables") is None:
        statuses.append("warn")
        findings.append("nginx's configuration could not be read (nginx -T): its log formats are unknown")
    if variables:
        formats = [name for name, text in _dict(gateway.get("log_formats")).items()
                   if any(_uses_variable(str(text), variable) for variable in variables)]
        statuses.append("fail")
        findings.append(f"nginx logs request content ({', '.join(variables)})"
                        + (f" in log_format {', '.join(formats)}" if formats else ""))
    if vllm.get("request_logging") is True:
        statuses.append("fail")
        findings.append("vLLM runs with --enable-log-requests: requests are written to its log")
    usage_measured = None
    if usage_expected:
        usage_measured = usage
        if not usage or not usage.get("exists"):
            statuses.append("warn")
            findings.append(f"the usage log {usage.get('path')} does not exist" if usage
                            else "the usage log's state could not be read")
        else:
            bits = _mode_bits(usage.get("mode"))
            if bits is None or bits & 0o177:
                statuses.append("fail")
                findings.append(f"the usage log {usage.get('path')} has mode {usage.get('mode')}, wider than 0600")
            if usage.get("owner") != "root":
                statuses.append("fail")
                findings.append(f"the usage log {usage.get('path')} is owned by {usage.get('owner')}, not root")
    measured = {"nginx": bool(gateway.get("nginx")), "content_variables": variables,
                "access_logs": _list(gateway.get("access_logs")),
                "vllm_request_logging": vllm.get("request_logging"), "usage_log": usage_measured}
    return _control("logging.content", AREA_LOGGING, title, _worst(statuses), measured, expected, why, findings)


def _check_audit(facts: Mapping) -> dict:
    """logging.audit: auditd running with rules loaded; na in a container."""
    title = "The kernel audit log watches the sensitive files"
    why = ("The kernel's audit log records changes to the model files, the service settings and the audit "
           "rules themselves, so that tampering leaves a trace the intruder cannot quietly remove.")
    expected = "auditd running with at least one rule loaded"
    audit = facts.get("audit")
    if not isinstance(audit, Mapping):
        return _control("logging.audit", AREA_LOGGING, title, "warn", None, expected, why,
                        ["The audit state could not be read."])
    if not audit.get("applicable"):
        return _control("logging.audit", AREA_LOGGING, title, "na", {"applicable": False}, expected, why,
                        ["Kernel auditing belongs to the machine that runs this container."])
    rules = [str(rule) for rule in _list(audit.get("rules"))]
    findings, status = [], "pass"
    if not audit.get("running"):
        status = "fail"
        findings.append("auditd is not running: nothing is recorded")
    if audit.get("rules") is None and audit.get("running"):
        status = _worst([status, "warn"])
        findings.append("the loaded audit rules could not be read (auditctl -l)")
    elif not rules:
        status = "fail"
        findings.append("no audit rules are loaded")
    measured = {"running": audit.get("running"), "rule_count": len(rules), "rules": rules}
    return _control("logging.audit", AREA_LOGGING, title, status, measured, expected, why, findings)


def _check_canary(probes: Mapping, context: Mapping) -> dict:
    """privacy.canary: the canary prompt accepted and found in no file; na when not run."""
    title = "A test prompt leaves no trace on the host"
    why = ("This tests the privacy promise end to end: a unique marker was sent as a chat prompt and the host's "
           "logs and service folders were searched for it; finding it anywhere means conversations are written "
           "to disk.")
    expected = "the canary prompt accepted by the gateway and found in no file on the host"
    canary = probes.get("canary")
    if not isinstance(canary, Mapping):
        reason = ("The canary test is off for this run." if not context.get("canary_enabled")
                  else "No canary was sent to this host (not a gateway).")
        return _control("privacy.canary", AREA_LOGGING, title, "na", None, expected, why, [reason])
    found = [str(path) for path in _list(canary.get("found_in"))]
    status_code = canary.get("status")
    measured = {"status": status_code, "found_in": found}
    if found:
        return _control("privacy.canary", AREA_LOGGING, title, "fail", measured, expected, why,
                        [f"the canary was found in {path}" for path in found])
    code = _number(status_code)
    if code is None or not 200 <= code < 300:
        return _control("privacy.canary", AREA_LOGGING, title, "warn", measured, expected, why,
                        [f"the canary prompt was not accepted (status {status_code}), so finding it nowhere "
                         "proves little"])
    return _control("privacy.canary", AREA_LOGGING, title, "pass", measured, expected, why)


def _core_pattern_discards(pattern: str, storage: Any) -> bool:
    """Whether the kernel's core_pattern sends cores nowhere: a pipe to false or
    true, or to systemd-coredump while it stores nothing."""
    if not pattern.startswith("|"):
        return False
    program = pattern[1:].split()[0] if pattern[1:].split() else ""
    name = program.rsplit("/", 1)[-1]
    if name in ("false", "true"):
        return True
    return name == "systemd-coredump" and storage == "none"


def _check_core_dumps(facts: Mapping) -> dict:
    """host.core_dumps: two layers, DefaultLimitCORE=0 for services and a core_pattern that stores
    nothing; both: pass, one: warn, none: fail (in a container only the first counts); suid_dumpable 0."""
    title = "Crashing services write no memory to disk"
    why = ("When a process crashes, a core dump writes its whole memory to disk; for vLLM and Chainlit that "
           "memory holds prompts, replies and keys, which would then sit in a file long after the conversation.")
    expected = ("services' core limit 0 (DefaultLimitCORE=0) and a kernel core_pattern that stores nothing "
                "(a pipe to /bin/false, or systemd-coredump with Storage=none), fs.suid_dumpable 0; in a "
                "container the kernel settings are the host's and only the core limit counts")
    core = facts.get("core_dumps")
    if not isinstance(core, Mapping):
        return _control("host.core_dumps", AREA_HOST, title, "warn", None, expected, why,
                        ["The core dump settings could not be read."])
    in_container = bool(_dict(facts.get("os")).get("container"))
    pattern = str(core.get("core_pattern") or "")
    discards = _core_pattern_discards(pattern, core.get("coredump_storage"))
    limited = str(core.get("default_limit_core")) == "0"
    limit_text = core.get("default_limit_core") if core.get("default_limit_core") is not None else "unknown"
    measured = {"core_pattern": core.get("core_pattern"), "coredump_storage": core.get("coredump_storage"),
                "default_limit_core": core.get("default_limit_core"), "suid_dumpable": core.get("suid_dumpable"),
                "pattern_discards": discards, "services_limited": limited, "container": in_container}
    findings, status = [], "pass"
    if not discards and not limited:
        status = "fail"
        findings.append(f"services may dump core (DefaultLimitCORE={limit_text}) and the "
                        f"kernel's core_pattern {pattern!r} keeps the dump")
    elif not limited:
        status = "warn"
        findings.append(f"services may dump core (DefaultLimitCORE={limit_text}); only the "
                        "kernel's core_pattern discards the dump")
    elif not discards and not in_container:
        status = "warn"
        findings.append(f"the kernel's core_pattern {pattern!r} would keep a dump of a process that raised "
                        "its own core limit")
    if not in_container and core.get("suid_dumpable") not in (0, "0"):
        status = _worst([status, "warn"])
        findings.append(f"fs.suid_dumpable is {core.get('suid_dumpable')}, not 0: privileged processes may dump core")
    return _control("host.core_dumps", AREA_HOST, title, status, measured, expected, why, findings)


def _check_swap(facts: Mapping) -> dict:
    """host.swap: every swap area on dm-crypt; na in a container (the swap is the host's)."""
    title = "No memory is swapped to an unencrypted disk"
    why = ("Memory that is swapped out is written to disk and stays there after power-off; unencrypted swap can "
           "keep prompts, replies and keys that should only ever have lived in memory.")
    expected = "no swap, or every swap area on dm-crypt"
    if _dict(facts.get("os")).get("container"):
        return _control("host.swap", AREA_HOST, title, "na", None, expected, why,
                        ["Swap belongs to the machine that runs this container."])
    swaps = facts.get("swap")
    if not isinstance(swaps, list):
        return _control("host.swap", AREA_HOST, title, "warn", None, expected, why,
                        ["The swap areas could not be read."])
    measured = [{"device": s.get("device"), "encrypted": s.get("encrypted")} for s in swaps if isinstance(s, Mapping)]
    plain = [s["device"] for s in measured if not s["encrypted"]]
    findings = [f"swap on {device} is not encrypted" for device in plain]
    return _control("host.swap", AREA_HOST, title, "fail" if plain else "pass", measured, expected, why, findings)


def _check_updates(facts: Mapping, limits: Mapping) -> dict:
    """host.updates: a security source, pending security updates against pending_security_warn /
    _fail, package lists and the last upgrade recent enough."""
    title = "Security updates are fetched and installed"
    why = ("Most intrusions use flaws for which a fix was already published; a host that does not fetch and "
           "install Debian's security updates stays open to them.")
    warn_n, fail_n = int(limits["pending_security_warn"]), int(limits["pending_security_fail"])
    lists_max, upgrade_max = _number(limits["apt_lists_max_age_days"]), _number(limits["last_upgrade_max_age_days"])
    expected = (f"a Debian security source configured; fewer than {warn_n} pending security updates (warn from "
                f"{warn_n}, fail from {fail_n}); package lists at most {_fmt(lists_max)} days old; an upgrade "
                f"within the last {_fmt(upgrade_max)} days")
    updates = facts.get("updates")
    if not isinstance(updates, Mapping):
        return _control("host.updates", AREA_HOST, title, "warn", None, expected, why,
                        ["The update state could not be read."])
    pending = [str(name) for name in _list(updates.get("pending_security"))]
    findings, statuses = [], []
    if updates.get("pending_security") is None:
        statuses.append("warn")
        findings.append("the pending updates could not be computed (apt-get -s dist-upgrade)")
    if not updates.get("security_sources"):
        statuses.append("fail")
        findings.append("no Debian security repository is configured: security fixes never arrive")
    if len(pending) >= fail_n:
        statuses.append("fail")
    elif len(pending) >= warn_n:
        statuses.append("warn")
    if len(pending) >= warn_n:
        shown = ", ".join(pending[:10]) + (", ..." if len(pending) > 10 else "")
        findings.append(f"{len(pending)} security updates pending: {shown}")
    lists_age = _number(updates.get("lists_age_days"))
    if lists_age is None:
        statuses.append("warn")
        findings.append("the package lists were never downloaded: pending updates cannot be known")
    elif lists_age > lists_max:
        statuses.append("warn")
        findings.append(f"the package lists are {lists_age:.1f} days old (more than {_fmt(lists_max)}): "
                        "the pending count may miss recent fixes")
    collected = _parse_time(facts.get("collected_at")) or datetime.datetime.now(datetime.timezone.utc)
    last = _parse_time(updates.get("last_upgrade"))
    upgrade_age = None if last is None else round((collected - last).total_seconds() / 86400, 1)
    if last is None:
        statuses.append("warn")
        findings.append("no package upgrade is recorded in apt's history")
    elif upgrade_age > upgrade_max:
        statuses.append("warn")
        findings.append(f"the last upgrade was {upgrade_age:.1f} days ago (more than {_fmt(upgrade_max)})")
    measured = {"security_sources": updates.get("security_sources"), "pending": updates.get("pending"),
                "pending_security": pending, "lists_age_days": updates.get("lists_age_days"),
                "last_upgrade": updates.get("last_upgrade"), "last_upgrade_age_days": upgrade_age}
    return _control("host.updates", AREA_HOST, title, _worst(statuses), measured, expected, why, findings)


def _check_lynis(facts: Mapping, limits: Mapping) -> dict:
    """host.lynis: hardening index against lynis_index_pass / _warn, warnings warn; na without a report."""
    title = "Lynis rates the host's hardening well"
    why = ("Lynis is an independent, widely used audit of a Linux system's hardening; its score and warnings "
           "are a second opinion that does not depend on this project's own checks.")
    pass_at, warn_at = _number(limits["lynis_index_pass"]), _number(limits["lynis_index_warn"])
    expected = (f"hardening index at least {_fmt(pass_at)} (warn from {_fmt(warn_at)} to below "
                f"{_fmt(pass_at)}, fail below {_fmt(warn_at)}) and no Lynis warnings")
    lynis = _dict(facts.get("lynis"))
    if not lynis.get("installed"):
        return _control("host.lynis", AREA_HOST, title, "na", None, expected, why, ["Lynis is not installed."])
    if not lynis.get("report_present"):
        return _control("host.lynis", AREA_HOST, title, "na", {"installed": True, "report_present": False},
                        expected, why, ["Lynis has not written a report on this host yet."])
    index = _number(lynis.get("hardening_index"))
    warnings = [str(w) for w in _list(lynis.get("warnings"))]
    measured = {"report_time": lynis.get("report_time"), "hardening_index": lynis.get("hardening_index"),
                "warnings": warnings}
    findings, statuses = [], []
    if index is None:
        statuses.append("warn")
        findings.append("the report has no hardening index")
    elif index < warn_at:
        statuses.append("fail")
        findings.append(f"hardening index {_fmt(index)}, below {_fmt(warn_at)}")
    elif index < pass_at:
        statuses.append("warn")
        findings.append(f"hardening index {_fmt(index)}, below {_fmt(pass_at)}")
    if warnings:
        statuses.append("warn")
        findings += [f"Lynis warning {w}" for w in warnings]
    return _control("host.lynis", AREA_HOST, title, _worst(statuses), measured, expected, why, findings)


# --- the report and the summary ----------------------------------------------------------


def _thresholds(context: Mapping) -> dict:
    """context.thresholds, every name present (a missing one is an error, so a
    typo in an override cannot silently drop a check)."""
    limits = _dict(context.get("thresholds"))
    missing = [name for name in THRESHOLD_NAMES if name not in limits]
    if missing:
        raise AnsibleFilterError(f"evidence_report: context.thresholds lacks {', '.join(missing)}")
    return dict(limits)


def evidence_report(facts: dict, probes: dict | None, context: dict) -> dict:
    """The host's report: every control judged, in the order of evidence_control_ids."""
    facts, probes, context = _dict(facts), _dict(probes), _dict(context)
    limits = _thresholds(context)
    advisories = check_advisories(context.get("advisories") or [])
    units = [str(unit) for unit in _list(context.get("units"))]
    controls = [
        _check_luks(facts, context, limits),
        _check_unlock(facts, context),
        _check_header_backup(facts, context),
        _check_sockets(facts, context),
        _check_firewall(facts, context),
        _check_scan(probes, context),
        _check_tls(probes, limits),
        _check_certificate(probes, limits),
        _check_routes(probes),
        *[_check_unit(unit, facts, limits) for unit in units],
        *[_check_version(component, facts, advisories) for component in COMPONENTS],
        _check_journald(facts, limits),
        _check_content(facts, context),
        _check_audit(facts),
        _check_canary(probes, context),
        _check_core_dumps(facts),
        _check_swap(facts),
        _check_updates(facts, limits),
        _check_lynis(facts, limits),
    ]
    summary = {status: sum(1 for c in controls if c["status"] == status) for status in STATUSES}
    return {
        "schema": REPORT_SCHEMA,
        "host": str(context.get("host") or ""),
        "groups": [str(group) for group in _list(context.get("groups"))],
        "collected_at": facts.get("collected_at"),
        "summary": summary,
        "controls": controls,
        "facts": _plain(facts),
        "probes": _plain(probes),
    }


_GROUP_RANK = {"encryption": 0, "exposure": 1, "sandboxing": 2, "versions": 3, "logging": 4, "privacy": 4, "host": 5}


def evidence_summary(reports: list, sha256s: list | dict, inventory: str, generated_at: str | None = None) -> dict:
    """The fleet summary of some host reports (see the module's docstring)."""
    reports = [report for report in _list(reports) if isinstance(report, Mapping)]
    if isinstance(sha256s, Mapping):
        digests = {str(host): str(digest) for host, digest in sha256s.items()}
    else:
        listed = _list(sha256s)
        if len(listed) != len(reports):
            raise AnsibleFilterError(f"evidence_summary: {len(reports)} reports but {len(listed)} SHA-256 digests")
        digests = {str(report.get("host")): str(digest) for report, digest in zip(reports, listed)}
    if not generated_at:
        generated_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    titles: dict[str, str] = {}
    hosts = []
    for report in sorted(reports, key=lambda r: str(r.get("host"))):
        host = str(report.get("host"))
        if host not in digests:
            raise AnsibleFilterError(f"evidence_summary: no SHA-256 for {host}'s report")
        statuses = {}
        for control in _list(report.get("controls")):
            cid = str(control.get("id"))
            statuses[cid] = str(control.get("status"))
            titles.setdefault(cid, str(control.get("title")))
        hosts.append({"host": host, "file": f"{host}.json", "sha256": digests[host].lower(),
                      "summary": {status: int(_dict(report.get("summary")).get(status, 0)) for status in STATUSES},
                      "statuses": statuses})
    # Union of ids: grouped as in a report (encryption, exposure, sandboxing,
    # versions, logging and privacy, host), within a group in the order first
    # seen (hosts by name), so that the page's rows fall under their area.
    seen: list[str] = []
    for host in hosts:
        seen += [cid for cid in host["statuses"] if cid not in seen]
    order = sorted(seen, key=lambda cid: (_GROUP_RANK.get(cid.split(".", 1)[0], len(_GROUP_RANK)), seen.index(cid)))
    return {"schema": SUMMARY_SCHEMA, "generated_at": str(generated_at), "inventory": str(inventory),
            "hosts": hosts, "controls": order, "titles": {cid: titles[cid] for cid in order}}


class FilterModule:
    """Ansible filters of the evidence role."""

    def filters(self):
        return {
            "evidence_report": evidence_report,
            "evidence_summary": evidence_summary,
            "evidence_control_ids": evidence_control_ids,
            "evidence_version_compare": evidence_version_compare,
            "evidence_advisories_for": evidence_advisories_for,
        }
