"""Decisions of the hardening role, kept in plain Python so that unit tests
(tests/unit/test_hardening_*.py) can import them directly.

- hardening_sysctl_merge / hardening_sysctl_drift: which kernel settings the
  role wants, and which of them the running kernel does not have yet.
- hardening_ufw_sysctl_updates: the lines of /etc/ufw/sysctl.conf that would
  undo those settings whenever ufw starts.
- hardening_sshd_config / hardening_ssh_lockout_problems: read `sshd -T`
  output and tell, in sentences, why the connecting user could no longer log
  in with it (the role stops before reloading sshd when there is any reason).
- hardening_authorized_keys_paths: where sshd looks for that user's keys.
- hardening_swaps / hardening_plaintext_swaps: the active swap areas, and
  those that are not the role's encrypted one.
- hardening_upgrade_blacklist: the patterns unattended-upgrades must skip.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re


# --- sysctl -------------------------------------------------------------------


def _sysctl_value(value) -> str:
    """A sysctl value as the kernel prints it: whitespace collapsed to one space."""
    if isinstance(value, bool):
        value = int(value)
    return " ".join(str(value).split())


def hardening_sysctl_merge(base: dict, extra: dict | None = None) -> dict:
    """base with extra merged over it; a None value drops the key. Values become strings."""
    merged = dict(base or {})
    merged.update(extra or {})
    return {str(k): _sysctl_value(v) for k, v in sorted(merged.items()) if v is not None}


def _parse_sysctl_output(output: str) -> dict:
    """`sysctl KEY...` output ("key = value" per line) as a dict."""
    live = {}
    for line in (output or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            live[key.strip()] = _sysctl_value(value)
    return live


def hardening_sysctl_drift(wanted: dict, live_output: str) -> list:
    """Keys whose live value differs from the wanted one (missing keys included)."""
    live = _parse_sysctl_output(live_output)
    drift = []
    for key, want in sorted(wanted.items()):
        have = live.get(key)
        if have != _sysctl_value(want):
            drift.append({"key": key, "want": _sysctl_value(want), "have": have})
    return drift


def hardening_ufw_sysctl_updates(ufw_text: str, wanted: dict) -> list:
    """Lines of ufw's sysctl file (slash or dot notation) that set one of the
    wanted keys to another value: [{"key", "regexp", "line"}] for lineinfile."""
    updates = []
    seen = set()
    for line in (ufw_text or "").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        raw_key, sep, value = stripped.partition("=")
        if not sep:
            continue
        raw_key = raw_key.strip()
        key = raw_key.replace("/", ".")
        if key in wanted and _sysctl_value(value) != _sysctl_value(wanted[key]) and key not in seen:
            seen.add(key)
            updates.append({
                "key": key,
                "regexp": r"^\s*" + re.escape(raw_key) + r"\s*=",
                "line": f"{raw_key}={_sysctl_value(wanted[key])}",
            })
    return updates


def hardening_keyvalue_updates(text: str, wanted: dict, separator: str = "\t") -> list:
    """For a "KEY VALUE" / "key = value" file (login.defs, auditd.conf): the
    keys whose active (uncommented) line is missing or holds another value, as
    [{"key", "regexp", "line"}] for lineinfile. Commented lines are left alone."""
    current = {}
    for line in (text or "").splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_]+)\s*(?:=|\s)\s*(.*?)\s*$", line)
        if match and not line.lstrip().startswith("#"):
            current[match.group(1)] = match.group(2)
    updates = []
    for key, value in wanted.items():
        value = _sysctl_value(value)
        if current.get(key) != value:
            updates.append({"key": key, "regexp": r"^\s*" + re.escape(key) + r"(\s|=)",
                            "line": f"{key}{separator}{value}"})
    return updates


# --- sshd -----------------------------------------------------------------------

# Keywords whose values `sshd -T` may print on several lines or space-separated.
_LIST_KEYWORDS = {"allowusers", "denyusers", "allowgroups", "denygroups", "authorizedkeysfile",
                  "authenticationmethods"}


def hardening_sshd_config(output: str) -> dict:
    """`sshd -T` output as {keyword: [values]} (keywords lower-case, as sshd prints them)."""
    config: dict = {}
    for line in (output or "").splitlines():
        parts = line.strip().split(None, 1)
        if not parts:
            continue
        key = parts[0].lower()
        value = parts[1] if len(parts) > 1 else ""
        values = value.split() if key in _LIST_KEYWORDS else [value]
        config.setdefault(key, []).extend(values)
    return config


def _address_matches(pattern: str, address: str | None) -> bool:
    if address is None:
        return True  # unknown source: only the user part can be judged
    if "/" in pattern:
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    return fnmatch.fnmatchcase(address, pattern)


def _matches_list(name: str, patterns: list, address: str | None = None, with_host: bool = False) -> bool:
    """sshd pattern-list semantics: some positive pattern matches and no negated one does."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        host_ok = True
        if with_host and "@" in pattern:
            pattern, host = pattern.split("@", 1)
            host_ok = _address_matches(host, address)
        if fnmatch.fnmatchcase(name, pattern) and host_ok:
            if negated:
                return False
            matched = True
    return matched


def hardening_ssh_lockout_problems(sshd_output: str, user: str, groups: list,
                                   address: str | None = None) -> list:
    """Why `user` (member of `groups`, connecting from `address`) could not log in
    with a public key under the sshd configuration printed by `sshd -T`; [] = can."""
    config = hardening_sshd_config(sshd_output)
    problems = []

    def first(key, default=""):
        return (config.get(key) or [default])[0].lower()

    if first("pubkeyauthentication", "yes") != "yes":
        problems.append("PubkeyAuthentication is off, and keys are the only way in")
    methods = config.get("authenticationmethods") or ["any"]
    if "any" not in methods and not any(set(m.split(",")) == {"publickey"} for m in methods):
        problems.append(f"AuthenticationMethods {' '.join(methods)} asks for more than a public key")
    if user == "root":
        root_login = first("permitrootlogin", "prohibit-password")
        if root_login in ("no", "forced-commands-only"):
            problems.append(f"the play connects as root and PermitRootLogin is {root_login}")
    if config.get("denyusers") and _matches_list(user, config["denyusers"], address, with_host=True):
        problems.append(f"DenyUsers {' '.join(config['denyusers'])} matches {user}")
    if config.get("allowusers") and not _matches_list(user, config["allowusers"], address, with_host=True):
        problems.append(f"AllowUsers {' '.join(config['allowusers'])} does not include {user}")
    if config.get("denygroups") and any(_matches_list(g, config["denygroups"]) for g in groups):
        problems.append(f"DenyGroups {' '.join(config['denygroups'])} matches a group of {user} ({', '.join(groups)})")
    if config.get("allowgroups") and not any(_matches_list(g, config["allowgroups"]) for g in groups):
        problems.append(f"AllowGroups {' '.join(config['allowgroups'])} includes no group of {user} ({', '.join(groups)})")
    return problems


def hardening_authorized_keys_paths(sshd_output: str, user: str, home: str) -> list:
    """The files sshd reads a user's public keys from (AuthorizedKeysFile, with
    %h, %u and %% expanded; relative paths are relative to the home directory)."""
    config = hardening_sshd_config(sshd_output)
    paths = []
    for entry in config.get("authorizedkeysfile") or [".ssh/authorized_keys", ".ssh/authorized_keys2"]:
        if entry.lower() == "none":
            continue
        path = entry.replace("%%", "\0").replace("%h", home).replace("%u", user).replace("\0", "%")
        if not path.startswith("/"):
            path = home.rstrip("/") + "/" + path
        paths.append(path)
    return paths


# --- swap ------------------------------------------------------------------------


def hardening_swaps(proc_swaps: str) -> list:
    """Active swap areas from /proc/swaps: [{"name", "type", "size_kib"}]."""
    swaps = []
    for line in (proc_swaps or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            # /proc/swaps escapes spaces in names as \040.
            swaps.append({"name": fields[0].replace("\\040", " "), "type": fields[1],
                          "size_kib": int(fields[2]) if fields[2].isdigit() else 0})
    return swaps


def hardening_plaintext_swaps(proc_swaps: str, encrypted_device: str | None = None) -> list:
    """Names of the active swap areas other than `encrypted_device` (the
    resolved /dev/dm-N of the role's encrypted swap; None: every area)."""
    return [s["name"] for s in hardening_swaps(proc_swaps) if not encrypted_device or s["name"] != encrypted_device]


def hardening_systemd_escape(name: str, path: bool = False) -> str:
    """`systemd-escape [--path] NAME`: "/dev/mapper/crypt-swap" with path=True
    gives "dev-mapper-crypt\\x2dswap" (the name of its .swap unit)."""
    if path:
        name = "/".join(part for part in name.split("/") if part) or "-"
        if name == "-":
            return name
    out = []
    for index, char in enumerate(name):
        if char == "/":
            out.append("-")
        elif char.isascii() and (char.isalnum() or char in ":_" or (char == "." and index > 0)):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


# --- unattended-upgrades -------------------------------------------------------------


def hardening_upgrade_blacklist(patterns: list, extra: list | None = None, held: list | None = None) -> list:
    """The Package-Blacklist entries: patterns, extra patterns, then each held
    package as an exact-name pattern; duplicates dropped, order kept. The
    "." and "+" of package names become [.] and [+]: no backslashes, which
    apt.conf strings would need escaped again."""
    result = []
    exact = ["^" + re.sub(r"([.+])", r"[\1]", name) + "$" for name in held or [] if name]
    for entry in list(patterns or []) + list(extra or []) + exact:
        if entry not in result:
            result.append(entry)
    return result


class FilterModule:
    """Ansible filters of the hardening role."""

    def filters(self):
        return {
            "hardening_sysctl_merge": hardening_sysctl_merge,
            "hardening_sysctl_drift": hardening_sysctl_drift,
            "hardening_ufw_sysctl_updates": hardening_ufw_sysctl_updates,
            "hardening_keyvalue_updates": hardening_keyvalue_updates,
            "hardening_sshd_config": hardening_sshd_config,
            "hardening_ssh_lockout_problems": hardening_ssh_lockout_problems,
            "hardening_authorized_keys_paths": hardening_authorized_keys_paths,
            "hardening_swaps": hardening_swaps,
            "hardening_systemd_escape": hardening_systemd_escape,
            "hardening_plaintext_swaps": hardening_plaintext_swaps,
            "hardening_upgrade_blacklist": hardening_upgrade_blacklist,
        }
