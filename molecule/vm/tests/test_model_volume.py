"""The model volume is LUKS2 on the data disk, unlocks at boot with its key file,
keeps its data across re-converges and reboots, rotates keys safely, and in
manual mode stays locked after a reboot until playbooks/unlock.yml opens it.

The tests run in file order: state checks, then a re-converge with changed
settings, then the scenario's one reboot (shared with the other suites, see
conftest.py; the manual volume is set up just before it), then unlock and
rotation.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from conftest import BEFORE_SHARED_REBOOT, SHARED_REBOOT

# The VM only: the scenario's Tang host (llm-vm-tang) has tests of its own.
testinfra_hosts = ["ansible://llm-vm"]

DEVICE = "/dev/disk/by-id/virtio-llm-data"
MAPPER = "llm-models"
MOUNT = "/srv/models"
KEYFILE = f"/etc/cryptsetup-keys.d/{MAPPER}.key"
MANUAL_PASSPHRASE = "manual-test-" + secrets.token_hex(8)
MARKER = secrets.token_hex(16)
# The boot id in which the manual volume was set up (once, just before the reboot).
MANUAL_SET_UP: list[str] = []


@pytest.fixture(scope="module")
def controller_secrets(host):
    # The scenario's llm_secrets_dir (inventory/sandbox's rule), the host's folder in it.
    store = host.ansible("debug", "var=llm_secrets_dir", check=False)["llm_secrets_dir"]
    return Path(store) / host.backend.get_hostname()


def luks_uuid(host):
    return host.check_output("cryptsetup luksUUID %s", DEVICE)


def test_data_disk_carries_a_luks2_header(host):
    dump = host.check_output("cryptsetup luksDump %s", DEVICE)
    assert re.search(r"^Version:\s+2$", dump, re.M), dump[:300]
    assert "argon2id" in dump


def test_volume_is_open_and_mounted_nodev_nosuid_noexec(host):
    assert "is active" in host.check_output("cryptsetup status %s", MAPPER)
    mount = host.mount_point(MOUNT)
    assert mount.exists
    assert mount.device == f"/dev/mapper/{MAPPER}"
    assert mount.filesystem == "ext4"
    assert {"nodev", "nosuid", "noexec"} <= set(mount.options)


def test_key_file_is_root_only_and_listed_in_crypttab(host):
    key = host.file(KEYFILE)
    assert key.user == "root" and key.group == "root" and key.mode == 0o400
    assert host.file(Path(KEYFILE).parent.as_posix()).mode == 0o700
    crypttab = host.file("/etc/crypttab").content_string
    assert any(line.split()[:3] == [MAPPER, f"UUID={luks_uuid(host)}", KEYFILE] for line in crypttab.splitlines())


def test_key_and_header_backup_are_kept_on_the_controller_0600(controller_secrets):
    for name in ("model-volume.key", f"luks-header-{MAPPER}.img"):
        path = controller_secrets / name
        assert path.is_file(), path
        assert path.stat().st_mode & 0o777 == 0o600
    assert (controller_secrets / f"luks-header-{MAPPER}.img").stat().st_size > 1024 * 1024


def test_key_is_not_left_in_the_host_copy_of_the_header_backup(host):
    assert not host.file(f"/run/luks-header-{MAPPER}.img").exists


def test_reconverge_with_changed_settings_and_force_flag_keeps_the_data(host, run_playbook):
    host.run_expect([0], "sh -c 'echo %s > %s/marker && sync'", MARKER, MOUNT)
    before = luks_uuid(host)
    run_playbook("playbooks/model-volume.yml", {
        "model_volume_force_format": True,  # must not touch a volume its key opens
        "model_volume_cipher": "aes-cbc-essiv:sha256",
        "model_volume_keysize": 256,
        "model_volume_fstype": "ext4",
    })
    assert luks_uuid(host) == before
    assert host.file(f"{MOUNT}/marker").content_string.strip() == MARKER


def test_foreign_filesystem_is_never_formatted_without_the_force_flag(host, run_playbook):
    # A loop file with an ext4 filesystem on it stands in for a disk with data.
    host.run_expect([0], "sh -c 'truncate -s 32M /var/lib/foreign.img && mkfs.ext4 -q -F /var/lib/foreign.img'")
    result = run_playbook("playbooks/model-volume.yml", {
        "model_volume_device": "", "model_volume_loop_file": "/var/lib/foreign.img",
        "model_volume_mapper_name": "foreign-test", "model_volume_mount_path": "/srv/foreign-test",
    }, expect_rc=2)
    output = result.stdout + result.stderr
    assert "already holds data (signature: ext4)" in output and "model_volume_force_format" in output
    assert "ext4" in host.check_output("blkid -p -o value -s TYPE /var/lib/foreign.img")
    # Refused before any change: not even a key file was written for it.
    assert not host.file("/etc/cryptsetup-keys.d/foreign-test.key").exists
    host.run("sh -c 'losetup -j /var/lib/foreign.img -O NAME -n | xargs -r losetup -d; rm -f /var/lib/foreign.img'")


@pytest.fixture(scope="module", autouse=True)
def manual_volume_before_the_reboot(host, run_playbook):
    """The manual-mode volume is set up just before the scenario's one reboot
    (conftest.py BEFORE_SHARED_REBOOT), whichever module's test asks for the
    reboot first."""
    def set_up() -> None:
        run_playbook("molecule/vm/tests/playbooks/manual-volume.yml", {"manual_test_passphrase": MANUAL_PASSPHRASE})
        host.run_expect([0], "sh -c 'echo %s > /srv/manual-test/marker && sync'", MARKER)
        MANUAL_SET_UP.append(host.file("/proc/sys/kernel/random/boot_id").content_string.strip())
    # pytest makes a module's fixtures again when the run comes back to the
    # module after the reboot: by then there is nothing to ask for.
    if not SHARED_REBOOT:
        BEFORE_SHARED_REBOOT.append(("set up the manual-mode volume", set_up))


@pytest.fixture(scope="module")
def rebooted(guest_rebooted):
    """The scenario's one reboot, with the manual volume set up before it:
    these are the tests after the reboot."""
    assert MANUAL_SET_UP == [guest_rebooted], "the manual volume was not set up in the boot before the reboot"
    return True


def test_keyfile_volume_is_unlocked_and_mounted_after_reboot(host, rebooted):
    assert "is active" in host.check_output("cryptsetup status %s", MAPPER)
    assert host.mount_point(MOUNT).exists
    assert host.file(f"{MOUNT}/marker").content_string.strip() == MARKER


def test_service_needing_the_keyfile_volume_runs_after_reboot(host, rebooted):
    assert host.service("keyfile-volume-reader").is_running


def test_firewall_is_back_after_reboot(host, rebooted):
    assert "Status: active" in host.check_output("ufw status")


def test_manual_volume_stays_locked_after_reboot(host, rebooted):
    assert host.run("cryptsetup status llm-manual-test").rc != 0
    assert not host.mount_point("/srv/manual-test").exists
    assert not host.service("manual-volume-reader").is_running


def test_unlock_playbook_opens_mounts_and_starts_the_service(host, rebooted, run_playbook):
    run_playbook("playbooks/unlock.yml", {
        "model_volume_device": "", "model_volume_loop_file": "/var/lib/llm-manual-test.img",
        "model_volume_mapper_name": "llm-manual-test", "model_volume_mount_path": "/srv/manual-test",
        "model_volume_unlock_mode": "manual", "model_volume_passphrase": MANUAL_PASSPHRASE,
        "model_volume_dependent_services": ["manual-volume-reader.service"],
    })
    assert host.mount_point("/srv/manual-test").exists
    assert host.file("/srv/manual-test/marker").content_string.strip() == MARKER
    assert host.service("manual-volume-reader").is_running


def test_passphrase_is_never_stored_on_the_host(host):
    found = host.run("grep -rlF %s /etc /root /var/lib /srv", MANUAL_PASSPHRASE)
    assert found.stdout.strip() == ""


def _opens(host, key: str) -> bool:
    path = "/root/key-under-test"
    host.run_expect([0], "sh -c 'umask 077 && printf %%s %s > %s'", key, path)
    try:
        return host.run("cryptsetup open --test-passphrase --key-file %s %s", path, DEVICE).rc == 0
    finally:
        host.run("rm -f %s", path)


def test_key_rotation_replaces_the_key_and_keeps_the_data(host, run_playbook, controller_secrets):
    old_key = (controller_secrets / "model-volume.key").read_text().strip()
    assert _opens(host, old_key)
    run_playbook("playbooks/rotate-volume-key.yml")
    new_key = (controller_secrets / "model-volume.key").read_text().strip()
    assert new_key != old_key
    assert _opens(host, new_key)
    assert not _opens(host, old_key)
    assert host.file(KEYFILE).content_string == new_key
    assert not host.file(KEYFILE + ".old").exists and not host.file(KEYFILE + ".next").exists
    assert host.file(f"{MOUNT}/marker").content_string.strip() == MARKER
