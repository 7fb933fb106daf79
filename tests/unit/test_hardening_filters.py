"""Decisions of the hardening role (roles/hardening/filter_plugins/hardening.py):
which sysctls drift, which ufw lines would undo them, when an sshd
configuration would lock out the connecting user, which swap is plaintext,
and what unattended-upgrades must skip."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "roles" / "hardening" / "filter_plugins"))

import hardening  # noqa: E402  (path set just above)

# `sshd -T -C user=root,...` of Debian 12's OpenSSH 9.2 with the role's drop-in (abridged).
SSHD_T = """\
port 22
permitrootlogin without-password
pubkeyauthentication yes
passwordauthentication no
kbdinteractiveauthentication no
authenticationmethods publickey
allowgroups ssh-admins
authorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2
maxauthtries 3
"""


def with_lines(*lines: str, base: str = SSHD_T) -> str:
    """SSHD_T with some keywords replaced (or added)."""
    keys = {line.split()[0] for line in lines}
    kept = [line for line in base.splitlines() if line.split()[0] not in keys]
    return "\n".join(kept + list(lines)) + "\n"


# --- sysctl ------------------------------------------------------------------------------


def test_sysctl_merge_lets_extra_override_and_drop_keys():
    merged = hardening.hardening_sysctl_merge(
        {"net.ipv4.conf.all.rp_filter": 1, "kernel.sysrq": 0, "kernel.kptr_restrict": 2},
        {"net.ipv4.conf.all.rp_filter": 2, "kernel.sysrq": None, "vm.swappiness": 1})
    assert merged == {"net.ipv4.conf.all.rp_filter": "2", "kernel.kptr_restrict": "2", "vm.swappiness": "1"}


def test_sysctl_drift_names_only_the_keys_that_differ():
    live = "kernel.kptr_restrict = 0\nkernel.dmesg_restrict = 1\nkernel.core_pattern = core\n"
    drift = hardening.hardening_sysctl_drift(
        {"kernel.kptr_restrict": "2", "kernel.dmesg_restrict": "1", "kernel.core_pattern": "|/bin/false"}, live)
    assert [d["key"] for d in drift] == ["kernel.core_pattern", "kernel.kptr_restrict"]
    assert drift[1] == {"key": "kernel.kptr_restrict", "want": "2", "have": "0"}


def test_sysctl_missing_from_the_kernel_counts_as_drift():
    drift = hardening.hardening_sysctl_drift({"dev.tty.ldisc_autoload": "0"}, "")
    assert drift == [{"key": "dev.tty.ldisc_autoload", "want": "0", "have": None}]


def test_sysctl_values_with_tabs_compare_equal():
    live = "net.ipv4.ip_local_port_range = 32768\t60999\n"
    assert hardening.hardening_sysctl_drift({"net.ipv4.ip_local_port_range": "32768 60999"}, live) == []


def test_no_drift_when_the_kernel_has_every_value():
    live = "kernel.sysrq = 0\nfs.suid_dumpable = 0\n"
    assert hardening.hardening_sysctl_drift({"kernel.sysrq": 0, "fs.suid_dumpable": "0"}, live) == []


# Debian 12's /etc/ufw/sysctl.conf (the lines that matter).
UFW_SYSCTL = """\
# Uncomment this to allow this host to route packets between interfaces
#net/ipv4/ip_forward=1
net/ipv4/conf/default/accept_redirects=0
net/ipv4/conf/all/accept_redirects=0
net/ipv4/icmp_echo_ignore_broadcasts=1
net/ipv4/conf/all/log_martians=0
net/ipv4/conf/default/log_martians=0
net/ipv6/conf/all/accept_redirects=0
"""


def test_ufw_lines_that_would_undo_the_settings_are_found():
    wanted = {"net.ipv4.conf.all.log_martians": "1", "net.ipv4.conf.default.log_martians": "1",
              "net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.ip_forward": "0"}
    updates = hardening.hardening_ufw_sysctl_updates(UFW_SYSCTL, wanted)
    assert [u["line"] for u in updates] == ["net/ipv4/conf/all/log_martians=1", "net/ipv4/conf/default/log_martians=1"]
    assert re.match(updates[0]["regexp"], "net/ipv4/conf/all/log_martians=0")
    assert not re.match(updates[0]["regexp"], "net/ipv4/conf/all/log_martians_x=0")


def test_ufw_file_in_agreement_needs_no_change():
    aligned = UFW_SYSCTL.replace("log_martians=0", "log_martians=1")
    wanted = {"net.ipv4.conf.all.log_martians": "1", "net.ipv4.conf.default.log_martians": "1"}
    assert hardening.hardening_ufw_sysctl_updates(aligned, wanted) == []


def test_keyvalue_updates_change_only_differing_active_lines():
    login_defs = "# UMASK is the default umask\nUMASK\t\t022\nPASS_MAX_DAYS\t365\n#SHA_CRYPT_MIN_ROUNDS 5000\n"
    updates = hardening.hardening_keyvalue_updates(
        login_defs, {"UMASK": "027", "PASS_MAX_DAYS": 365, "SHA_CRYPT_MIN_ROUNDS": 5000})
    assert [u["line"] for u in updates] == ["UMASK\t027", "SHA_CRYPT_MIN_ROUNDS\t5000"]
    assert re.match(updates[0]["regexp"], "UMASK\t\t022")
    assert not re.match(updates[1]["regexp"], "#SHA_CRYPT_MIN_ROUNDS 5000")


def test_keyvalue_updates_with_an_equals_separator():
    auditd = "max_log_file = 8\nnum_logs = 5\nmax_log_file_action = ROTATE\n"
    updates = hardening.hardening_keyvalue_updates(auditd, {"max_log_file": 8, "num_logs": 10}, separator=" = ")
    assert updates == [{"key": "num_logs", "regexp": r"^\s*num_logs(\s|=)", "line": "num_logs = 10"}]


# --- sshd --------------------------------------------------------------------------------------


def test_admin_in_the_allowed_group_can_log_in():
    assert hardening.hardening_ssh_lockout_problems(SSHD_T, "root", ["root", "ssh-admins"]) == []


def test_user_outside_allowgroups_is_reported():
    problems = hardening.hardening_ssh_lockout_problems(SSHD_T, "alice", ["alice", "sudo"])
    assert problems == ["AllowGroups ssh-admins includes no group of alice (alice, sudo)"]


def test_root_login_refused_is_reported_for_root_only():
    config = with_lines("permitrootlogin no")
    assert hardening.hardening_ssh_lockout_problems(config, "root", ["ssh-admins"]) == [
        "the play connects as root and PermitRootLogin is no"]
    assert hardening.hardening_ssh_lockout_problems(config, "alice", ["ssh-admins"]) == []


def test_forced_commands_only_root_cannot_run_the_play():
    config = with_lines("permitrootlogin forced-commands-only")
    assert "PermitRootLogin is forced-commands-only" in hardening.hardening_ssh_lockout_problems(
        config, "root", ["ssh-admins"])[0]


def test_allowusers_elsewhere_in_sshd_config_is_reported():
    config = with_lines("allowusers bob carol@10.0.0.0/8")
    problems = hardening.hardening_ssh_lockout_problems(config, "alice", ["ssh-admins"], "10.1.2.3")
    assert problems == ["AllowUsers bob carol@10.0.0.0/8 does not include alice"]


def test_allowusers_with_a_host_part_matches_the_source_address():
    config = with_lines("allowusers alice@10.0.0.0/8")
    assert hardening.hardening_ssh_lockout_problems(config, "alice", ["ssh-admins"], "10.1.2.3") == []
    assert hardening.hardening_ssh_lockout_problems(config, "alice", ["ssh-admins"], "192.0.2.7") != []


def test_denygroups_and_negated_patterns_are_honoured():
    denied = with_lines("denygroups sudo")
    assert "DenyGroups sudo matches a group of alice" in hardening.hardening_ssh_lockout_problems(
        denied, "alice", ["ssh-admins", "sudo"])[0]
    negated = with_lines("allowgroups ssh-* !ssh-guests")
    assert hardening.hardening_ssh_lockout_problems(negated, "alice", ["ssh-admins"]) == []
    assert hardening.hardening_ssh_lockout_problems(negated, "guest", ["ssh-guests"]) != []


def test_pubkey_off_or_extra_factors_are_reported():
    assert "PubkeyAuthentication is off" in hardening.hardening_ssh_lockout_problems(
        with_lines("pubkeyauthentication no"), "root", ["ssh-admins"])[0]
    assert "asks for more than a public key" in hardening.hardening_ssh_lockout_problems(
        with_lines("authenticationmethods publickey,keyboard-interactive"), "root", ["ssh-admins"])[0]
    assert hardening.hardening_ssh_lockout_problems(
        with_lines("authenticationmethods publickey,password publickey"), "root", ["ssh-admins"]) == []


def test_authorized_keys_paths_expand_tokens_and_relative_paths():
    config = with_lines("authorizedkeysfile .ssh/authorized_keys /etc/ssh/keys/%u %h/.ssh/k2 none")
    assert hardening.hardening_authorized_keys_paths(config, "alice", "/home/alice") == [
        "/home/alice/.ssh/authorized_keys", "/etc/ssh/keys/alice", "/home/alice/.ssh/k2"]


# --- swap --------------------------------------------------------------------------------------

PROC_SWAPS = """\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/dm-1                               partition\t4194300\t\t0\t\t-2
/swap\\040file                            file\t\t1048572\t\t0\t\t-3
"""


def test_swaps_are_read_from_proc_swaps():
    swaps = hardening.hardening_swaps(PROC_SWAPS)
    assert swaps == [{"name": "/dev/dm-1", "type": "partition", "size_kib": 4194300},
                     {"name": "/swap file", "type": "file", "size_kib": 1048572}]


def test_every_swap_but_the_encrypted_one_is_plaintext():
    assert hardening.hardening_plaintext_swaps(PROC_SWAPS, "/dev/dm-1") == ["/swap file"]
    assert hardening.hardening_plaintext_swaps(PROC_SWAPS) == ["/dev/dm-1", "/swap file"]
    assert hardening.hardening_plaintext_swaps("Filename\tType\tSize\tUsed\tPriority\n") == []


def test_systemd_escape_matches_systemd_escape_path():
    assert hardening.hardening_systemd_escape("/dev/mapper/crypt-swap", path=True) == "dev-mapper-crypt\\x2dswap"
    assert hardening.hardening_systemd_escape("crypt-swap") == "crypt\\x2dswap"
    assert hardening.hardening_systemd_escape("/var/lib/swap.img", path=True) == "var-lib-swap.img"


# --- unattended-upgrades ------------------------------------------------------------------------


def test_upgrade_blacklist_adds_held_packages_as_exact_names():
    blacklist = hardening.hardening_upgrade_blacklist(
        ["^nvidia-", "^libcuda"], ["^mysite-"], ["nvidia-smi", "libstdc++6", "libc6.1"])
    assert blacklist == ["^nvidia-", "^libcuda", "^mysite-", "^nvidia-smi$", "^libstdc[+][+]6$", "^libc6[.]1$"]
    assert "\\" not in "".join(blacklist)


def test_upgrade_blacklist_patterns_match_only_their_package():
    blacklist = hardening.hardening_upgrade_blacklist([], [], ["libc6.1"])
    assert re.match(blacklist[0], "libc6.1")
    assert not re.match(blacklist[0], "libc6x1")
    assert not re.match(blacklist[0], "libc6.1-dev")


def test_driver_blacklist_fallback_is_the_nvidia_driver_roles_default():
    # The hardening play does not see the nvidia_driver role's defaults (another
    # play): its fallback list must be the same, and name the same variable.
    import yaml

    driver = yaml.safe_load((PROJECT / "roles" / "nvidia_driver" / "defaults" / "main.yml").read_text())
    text = (PROJECT / "roles" / "hardening" / "defaults" / "main.yml").read_text()
    expression = yaml.safe_load(text)["hardening_unattended_upgrades_blacklist"]
    assert "nvidia_driver_unattended_upgrades_blacklist" in expression
    fallback = re.search(r"default\((\[.*?\])\)", expression, re.S).group(1)
    assert yaml.safe_load(fallback) == driver["nvidia_driver_unattended_upgrades_blacklist"]
