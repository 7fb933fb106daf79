"""Bad settings stop the hardening role before it changes anything: its
first task file (validate.yml, imported first by tasks/main.yml) runs here
with real ansible-playbook on localhost, and each failure names the variable.

Every case runs in one ansible-playbook run, a host of its own each
(conftest.run_cases); a case's host name stands where the messages name
the host."""

from __future__ import annotations

import pytest

TASKS = """\
- name: Gather the facts the checks read (distribution, environment, user)
  ansible.builtin.setup:
    gather_subset: [min]

- name: Run the hardening role's checks
  ansible.builtin.include_role:
    name: hardening
    tasks_from: validate.yml
"""


BAD_SETTINGS = [
    ({"hardening_swap_mode": "plain"}, "hardening_swap_mode must be absent or encrypted"),
    ({"hardening_swap_mode": "encrypted"}, "encrypted needs hardening_swap_device"),
    ({"hardening_swap_mode": "encrypted", "hardening_swap_device": "/dev/sdb2"}, "never /dev/sdX"),
    ({"hardening_swap_mode": "encrypted", "hardening_swap_device": "/dev/disk/by-id/virtio-llm-data",
      "model_volume_device": "/dev/disk/by-id/virtio-llm-data"}, "never the\nmodel volume"),
    ({"hardening_swap_mode": "encrypted", "hardening_swap_device": "/var/swap.img",
      "hardening_swap_file_size": "lots"}, "hardening_swap_file_size is a size"),
    ({"hardening_journald_storage": "auto"}, "hardening_journald_storage must be persistent or volatile"),
    ({"hardening_journald_max_retention": "forever"}, "hardening_journald_max_retention (forever) must be a time span"),
    ({"hardening_journald_max_use": "a lot"}, "hardening_journald_max_use"),
    ({"hardening_ssh_permit_root_login": "yes"}, "never a\nroot password"),
    ({"hardening_ssh_admin_group": "SSH Admins"}, "hardening_ssh_admin_group is a group name"),
    ({"hardening_ssh_ciphers": []}, "ciphers, MACs and key exchange algorithms are non-empty lists"),
    ({"hardening_ssh_macs": ["hmac-sha2-256, hmac-md5"]}, "non-empty lists of algorithm names"),
    ({"hardening_ssh_extra_settings": {"PasswordAuthentication": "yes"}}, "may not set password"),
    ({"hardening_sysctls_extra": {"kernel sysrq": 1}}, "hardening_sysctls_extra is a mapping of sysctl names"),
    ({"hardening_core_pattern": "|false"}, "|/absolute/program"),
    ({"hardening_blacklisted_modules": ["usb-storage; rm -rf /"]}, "hardening_blacklisted_modules holds module names"),
    ({"hardening_auditd_extra_watches": [{"path": "etc/vllm", "key": "x"}]}, "every audit watch has an\nabsolute path"),
    ({"hardening_auditd_extra_watches": [{"path": "/etc/x", "key": "a key"}]}, "a key of letters"),
    ({"hardening_auditd_extra_watches": [{"path": "/etc/x", "key": "k", "permissions": "rm"}]}, "permissions made of"),
    ({"hardening_unattended_upgrades_reboot_time": "3am"}, "hardening_unattended_upgrades_reboot_time is HH:MM"),
    ({"hardening_needrestart_mode": "x"}, "hardening_needrestart_mode is l, a or i"),
]


@pytest.fixture(scope="module")
def results(run_cases):
    cases = {
        "defaults": {},
        "root-over-ssh": {"ansible_user": "root", "hardening_connection_is_ssh": True,
                          "hardening_ssh_permit_root_login": "no"},
        "admin-over-ssh": {"ansible_user": "admin", "hardening_connection_is_ssh": True,
                           "hardening_ssh_permit_root_login": "no"},
        # As on a distribution the role has no security archive for.
        "unknown-distribution": {"hardening_security_origins": {}},
        "unknown-distribution-with-origins": {"hardening_security_origins": {},
                                              "hardening_unattended_upgrades_origins": ["origin=Example"]},
    }
    for index, (overrides, _) in enumerate(BAD_SETTINGS):
        cases[f"bad-{index}"] = overrides
    return run_cases(TASKS, cases)


def collapsed(text):
    """Ansible folds long messages: compare with whitespace collapsed."""
    return " ".join(text.split())


def test_defaults_pass(results):
    result = results["defaults"]
    assert result.returncode == 0, result.output[-3000:]


@pytest.mark.parametrize("index, message", [(i, message) for i, (_, message) in enumerate(BAD_SETTINGS)])
def test_bad_setting_fails_naming_the_variable(results, index, message):
    result = results[f"bad-{index}"]
    assert result.returncode != 0
    assert collapsed(message) in collapsed(result.stdout), result.stdout[-3000:]


def test_root_over_ssh_with_root_login_off_fails_before_any_change(results):
    result = results["root-over-ssh"]
    assert result.returncode != 0
    assert "This play logs in to root-over-ssh as root over SSH" in collapsed(result.stdout)


def test_root_login_off_is_fine_for_an_admin_user(results):
    result = results["admin-over-ssh"]
    assert result.returncode == 0, result.output[-3000:]


def test_a_distribution_without_known_security_origins_needs_its_own(results):
    result = results["unknown-distribution"]
    assert result.returncode != 0
    assert "set hardening_unattended_upgrades_origins" in collapsed(result.stdout)
    result = results["unknown-distribution-with-origins"]
    assert result.returncode == 0, result.output[-3000:]
