"""The automatic unlock modes, in a real guest with an emulated TPM 2.0 (swtpm)
and a real Tang server (the scenario's llm-vm-tang, Debian's tang set up by
playbooks/tang.yml, reached through QEMU's user networking).

Two loop-backed volumes beside the scenario's key-file volume: one made in
keyfile mode that then changes to tang mode (a marker written before the
change must survive it), and one in tpm2 mode; each with a unit, enabled at
boot, that needs it. In file order:
  before the scenario's one reboot: the mode change, the bindings, a second
    run with nothing to change, and a Tang key rotation;
  that reboot (conftest.py), with the Tang server stopped just before it:
    SSH answers and the boot completes, the Tang volume stays closed and its
    unit down; the Tang server started again at once, the Tang volume (bound
    by the rotation) opens by itself and its unit starts (its failed attempts
    cost the emulated guest 20-90 s of CPU each, so it is not kept waiting);
    the TPM volume has opened at boot and its unit runs, with no human;
  the TPM cleared, the TPM volume closed and its unlock unit started again
    (what a boot does for it): it stays closed; the recovery passphrase opens
    it (playbooks/unlock.yml); a re-run binds the cleared TPM again;
  last, the guest's root disk (qcow2 overlay: every block the guest wrote) is
    searched for each volume key, slot key and recovery passphrase.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from pathlib import Path

import pytest
import testinfra
from conftest import BEFORE_SHARED_REBOOT, SHARED_REBOOT, vm_run_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "roles" / "model_volume" / "filter_plugins"))
import model_volume  # noqa: E402  (the role's filter plugin: how it reads a header's bindings)

testinfra_hosts = ["ansible://llm-vm"]

CLEVIS_PLAYBOOK = "molecule/vm/tests/playbooks/clevis-volumes.yml"
TANG_HOST = "llm-vm-tang"
TANG_URL = "http://10.88.200.30:7500"
TANG = {"mapper": "llm-tang-test", "file": "/var/lib/llm-tang-test.img", "mount": "/srv/tang-test",
        "reader": "tang-volume-reader.service", "mode": "tang"}
TPM = {"mapper": "llm-tpm-test", "file": "/var/lib/llm-tpm-test.img", "mount": "/srv/tpm-test",
       "reader": "tpm-volume-reader.service", "mode": "tpm2"}
MARKER = secrets.token_hex(16)
SECRET_FILE = "/run/unlock-test-secret"  # tmpfs: nothing of it reaches a disk


def volume_vars(volume: dict) -> dict:
    """The model_volume settings of a test volume, for the day-2 playbooks."""
    return {"model_volume_device": "", "model_volume_loop_file": volume["file"],
            "model_volume_mapper_name": volume["mapper"], "model_volume_mount_path": volume["mount"],
            "model_volume_unlock_mode": volume["mode"], "model_volume_dependent_services": [volume["reader"]]}


def loop_device(host, volume: dict) -> str:
    device = host.check_output("losetup --associated %s --noheadings --output NAME", volume["file"]).strip()
    assert device, f"{volume['file']} is not attached to a loop device"
    return device.splitlines()[0]


def bindings(host, device: str) -> list[dict]:
    """The volume's Clevis bindings, read from its header as the role reads
    them (test_bindings_follow_the_mode_and_open_through_clevis checks that
    this is what `clevis luks list` prints)."""
    return model_volume.model_volume_clevis_tokens(header(host, device))


def clevis_luks_list(host, device: str) -> list[dict]:
    """What Clevis's own `clevis luks list` prints (8 s a call in the guest)."""
    found = []
    for line in host.check_output("clevis luks list -d %s", device).splitlines():
        match = re.match(r"^\s*(\d+):\s+(\S+)\s+'(.*)'\s*$", line)
        if match:
            found.append({"slot": int(match.group(1)), "pin": match.group(2), "config": json.loads(match.group(3))})
    return found


def slot_opens(host, device: str, slot: int) -> bool:
    """Clevis decrypts the slot's key (Tang answers, the TPM unseals) and that key opens the slot."""
    return host.run("bash -c 'set -o pipefail; clevis luks pass -d %s -s %s | "
                    "cryptsetup open --test-passphrase --key-slot %s --key-file - %s'",
                    device, str(slot), str(slot), device).rc == 0


def opens_with(host, device: str, secret: str) -> bool:
    host.run_expect([0], "sh -c 'umask 077 && printf %%s %s > %s'", secret, SECRET_FILE)
    try:
        return host.run("cryptsetup open --test-passphrase --key-file %s %s", SECRET_FILE, device).rc == 0
    finally:
        host.run("rm -f %s", SECRET_FILE)


def volume_key_hex(host, device: str, passphrase: str) -> str:
    """The volume key in hex, read from the header with the passphrase into
    tmpfs and removed at once. (The kernel's table names a keyring entry, not
    the key: `dmsetup table --showkeys` does not show it for LUKS2.)"""
    dump = "/run/unlock-test-volume-key"
    host.run_expect([0], "sh -c 'umask 077 && printf %%s %s > %s'", passphrase, SECRET_FILE)
    try:
        host.run_expect([0], "cryptsetup luksDump --dump-volume-key --batch-mode --key-file %s --volume-key-file %s %s",
                        SECRET_FILE, dump, device)
        key = host.check_output("od -An -tx1 -v %s | tr -d ' \\n'", dump)
    finally:
        host.run("rm -f %s %s", SECRET_FILE, dump)
    assert re.fullmatch(r"[0-9a-f]{64,128}", key), f"not a volume key: {len(key)} characters"
    return key


def header(host, device: str) -> dict:
    return json.loads(host.check_output("cryptsetup luksDump --dump-json-metadata %s", device))


def is_open(host, volume: dict) -> bool:
    return host.run("cryptsetup status %s", volume["mapper"]).rc == 0


def recap_changed(output: str, name: str = "llm-vm") -> int:
    match = re.search(rf"^{re.escape(name)}\s*:.*\bchanged=(\d+)", output, re.M)
    assert match, output[-2000:]
    return int(match.group(1))


def unlock_seconds(host, volume: dict) -> float:
    """Seconds from the kernel's start to the unlock unit's "opened" line, this boot."""
    journal = host.check_output("journalctl -b -o short-monotonic --no-pager -u llm-volume-unlock-%s.service",
                                volume["mapper"])
    opened = [line for line in journal.splitlines() if f"opened {volume['mapper']}" in line]
    assert opened, journal[-2000:]
    return float(re.match(r"^\[\s*([\d.]+)\]", opened[-1]).group(1))


@pytest.fixture(scope="module")
def tang_host(request):
    return testinfra.get_host(f"ansible://{TANG_HOST}?ansible_inventory={request.config.option.ansible_inventory}")


@pytest.fixture(scope="module")
def store(host):
    path = host.ansible("debug", "var=llm_secrets_dir", check=False)["llm_secrets_dir"]
    return Path(path) / host.backend.get_hostname()


@pytest.fixture(scope="module")
def mode_change(host, tang_host, run_playbook, record_testsuite_property):
    """The Tang test volume in keyfile mode with a marker, then the change to
    tang mode (and the TPM volume made in tpm2 mode). Asks for the Tang
    server to be stopped just before the scenario's one reboot."""
    BEFORE_SHARED_REBOOT.append(("stop the Tang server",
                                 lambda: tang_host.run_expect([0], "systemctl stop tangd.socket")))
    started = time.monotonic()
    run_playbook(CLEVIS_PLAYBOOK, {"clevis_phase": "keyfile"})
    made = time.monotonic()
    for volume in (TANG,):
        host.run_expect([0], "sh -c 'echo %s > %s/marker && sync'", MARKER, volume["mount"])
    device = loop_device(host, TANG)
    before = {"uuid": host.check_output("cryptsetup luksUUID %s", device), "keyfile_slots": header(host, device)["keyslots"]}
    assert host.file(f"/etc/cryptsetup-keys.d/{TANG['mapper']}.key").exists
    run_playbook(CLEVIS_PLAYBOOK, {"clevis_phase": "automatic"})
    host.run_expect([0], "sh -c 'echo %s > %s/marker && sync'", MARKER, TPM["mount"])
    record_testsuite_property("keyfile_volume_s", round(made - started, 1))
    record_testsuite_property("mode_change_and_tpm_volume_s", round(time.monotonic() - made, 1))
    return before


def test_keyfile_to_tang_change_keeps_the_data_and_removes_the_key_file(host, mode_change):
    device = loop_device(host, TANG)
    assert host.check_output("cryptsetup luksUUID %s", device) == mode_change["uuid"]
    assert host.file(f"{TANG['mount']}/marker").content_string.strip() == MARKER
    assert not host.file(f"/etc/cryptsetup-keys.d/{TANG['mapper']}.key").exists
    # No crypttab line: systemd would ask for a passphrase at boot. The mount
    # waits for the unlock unit (noauto), and a boot never waits for it (nofail).
    crypttab = [line.split() for line in host.file("/etc/crypttab").content_string.splitlines()]
    assert not [fields for fields in crypttab if fields and fields[0] == TANG["mapper"]], crypttab
    fstab = [line.split() for line in host.file("/etc/fstab").content_string.splitlines()]
    mount = next(fields for fields in fstab if len(fields) > 3 and fields[1] == TANG["mount"])
    assert {"nofail", "noauto", "nodev", "nosuid", "noexec"} <= set(mount[3].split(",")), mount


def test_each_volume_keeps_exactly_a_recovery_slot_and_one_clevis_binding(host, mode_change):
    for volume in (TANG, TPM):
        meta = header(host, loop_device(host, volume))
        tokens = list(meta["tokens"].values())
        assert [token["type"] for token in tokens] == ["clevis"], tokens
        token_slots = set(tokens[0]["keyslots"])
        assert len(meta["keyslots"]) == 2 and len(set(meta["keyslots"]) - token_slots) == 1, meta["keyslots"]


def test_bindings_follow_the_mode_and_open_through_clevis(host, mode_change):
    tang_device, tpm_device = loop_device(host, TANG), loop_device(host, TPM)
    for device in (tang_device, tpm_device):
        # The role reads the bindings from the header's JSON: the same as Clevis's own listing.
        assert [{key: binding[key] for key in ("slot", "pin", "config")} for binding in bindings(host, device)] \
            == clevis_luks_list(host, device)
    (tang_binding,) = bindings(host, tang_device)
    assert tang_binding["pin"] == "sss" and tang_binding["config"]["t"] == 1
    assert [server["url"] for server in tang_binding["config"]["pins"]["tang"]] == [TANG_URL]
    (tpm_binding,) = bindings(host, tpm_device)
    (tpm2,) = tpm_binding["config"]["pins"]["tpm2"]
    assert tpm2["pcr_ids"] == "7" and tpm2["pcr_bank"] == "sha256", tpm_binding
    assert slot_opens(host, tang_device, tang_binding["slot"])
    assert slot_opens(host, tpm_device, tpm_binding["slot"])


def test_recovery_passphrases_are_kept_0600_on_the_controller_and_open_their_volumes(host, store, mode_change):
    for volume in (TANG, TPM):
        path = store / f"luks-recovery-{volume['mapper']}.passphrase"
        assert path.stat().st_mode & 0o777 == 0o600
        assert opens_with(host, loop_device(host, volume), path.read_text().strip())
    assert not opens_with(host, loop_device(host, TPM), (store / f"luks-recovery-{TANG['mapper']}.passphrase").read_text().strip())


def test_header_backups_from_before_and_after_the_change_are_on_the_controller(store, mode_change):
    before = store / f"luks-header-{TANG['mapper']}-before-tang.img"
    after = store / f"luks-header-{TANG['mapper']}.img"
    for path in (before, after):
        assert path.read_bytes()[:6] == b"LUKS\xba\xbe" and path.stat().st_mode & 0o777 == 0o600, path
    # The backup from before holds the key file's slot; the current one the binding's token.
    assert b'"clevis"' not in before.read_bytes()[:65536] and b'"clevis"' in after.read_bytes()[:65536]


def test_second_run_with_nothing_to_change_reports_no_change(host, run_playbook, mode_change):
    result = run_playbook(CLEVIS_PLAYBOOK, {"clevis_phase": "automatic"})
    assert recap_changed(result.stdout) == 0, result.stdout[-3000:]


def _old_token_decrypts(host) -> bool:
    return host.run("bash -c 'set -o pipefail; jose fmt -j /run/old-tang-token.json -Og jwe -o- "
                    "| jose jwe fmt -i- -c | clevis decrypt > /dev/null'").rc == 0


def test_tang_key_rotation_rebinds_the_volume_and_retires_the_old_key(host, tang_host, run_playbook, mode_change,
                                                                      record_property):
    device = loop_device(host, TANG)
    token_id = next(iter(header(host, device)["tokens"]))
    host.run_expect([0], "sh -c 'umask 077 && cryptsetup token export --token-id %s %s > /run/old-tang-token.json'",
                    str(token_id), device)
    assert _old_token_decrypts(host), "the saved binding did not decrypt before the rotation"
    keys_before = set(tang_host.check_output("ls /var/lib/tang").split())
    started = time.monotonic()
    run_playbook("playbooks/rotate-tang-keys.yml", volume_vars(TANG))
    record_property("tang_rotation_s", round(time.monotonic() - started, 1))
    keys_after = set(tang_host.check_output("ls -A /var/lib/tang").split())
    assert keys_after and not keys_after & keys_before, (keys_before, keys_after)
    assert not [name for name in keys_after if name.startswith(".")], keys_after
    (binding,) = bindings(host, device)
    assert slot_opens(host, device, binding["slot"])
    assert not _old_token_decrypts(host), "the binding from before the rotation still decrypts"
    host.run("rm -f /run/old-tang-token.json")


# --- after the scenario's shared reboot: Tang stopped, TPM intact ------------------------------


# The tests after the reboot use no fixture of the module's tests before it:
# pytest ends a module's fixtures when the run moves on to another module,
# so such a fixture would be made again after the reboot (`mode_change`
# would change the volumes once more).


@pytest.fixture(scope="module")
def tang_down_at_boot(tang_host):
    """The scenario's one reboot (conftest.py) happens with the Tang server
    stopped (BEFORE_SHARED_REBOOT, asked for by `mode_change`); the Tang
    server is started again when this module is done, whatever happened."""
    yield
    tang_host.run("systemctl start tangd.socket")


def test_host_boots_to_ssh_with_the_tang_volume_locked_and_its_unit_down(host, vm_instance, guest_rebooted,
                                                                           tang_down_at_boot, record_property):
    import subprocess

    # A new SSH connection, and the boot finished (multi-user.target reached,
    # within 3 min of the reboot module's return) while the Tang volume is locked.
    fresh = subprocess.run(["ssh", "-p", str(vm_instance["port"]), "-o", "StrictHostKeyChecking=no",
                            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ControlPath=none",
                            "-o", "ConnectTimeout=20", "-o", "IdentitiesOnly=yes", "-i", vm_instance["identity_file"],
                            f"root@{vm_instance['address']}",
                            "for i in $(seq 180); do systemctl is-active --quiet multi-user.target && break; sleep 1; done;"
                            " systemctl is-active multi-user.target"],
                           capture_output=True, text=True, timeout=300, check=False)
    assert fresh.returncode == 0 and fresh.stdout.strip() == "active", fresh.stdout + fresh.stderr
    assert not is_open(host, TANG)
    assert not host.mount_point(TANG["mount"]).exists
    assert not host.service(TANG["reader"]).is_running
    # Still trying, not given up, and saying so in the journal.
    unit = f"llm-volume-unlock-{TANG['mapper']}.service"
    assert host.service(unit).is_running
    journal = ""
    for _ in range(60):  # its first attempt may still be under way
        journal = host.check_output("journalctl -b --no-pager -u %s", unit)
        if f"{TANG['mapper']} is still locked" in journal:
            break
        time.sleep(2)
    assert f"{TANG['mapper']} is still locked" in journal, journal[-2000:]
    # It asked the Tang server and, with no answer, made no Clevis attempt.
    assert f"0 of its Tang servers answer, 1 needed ({TANG_URL})" in journal, journal[-2000:]
    assert "Error communicating with server" not in journal, journal[-2000:]
    assert is_open(host, {"mapper": "llm-models"}), "the key-file volume must still open at boot"
    # Nothing of the volumes failed at boot (their audit reloads included).
    failed = host.check_output("systemctl list-units --failed --no-legend --plain 'llm-*' '*.mount'")
    assert failed == "", failed
    record_property("shared_reboot_s", SHARED_REBOOT.get("seconds"))


def wait_until_open_and_read(host, volume: dict, seconds: int) -> float:
    """Seconds until the volume is open and its reader runs (or `seconds`
    passed). Under emulation one Clevis attempt takes 20-90 s of the guest's
    one CPU; on a real host it takes well under a second."""
    started = time.monotonic()
    while time.monotonic() - started < seconds and not (is_open(host, volume) and host.service(volume["reader"]).is_running):
        time.sleep(2)
    return round(time.monotonic() - started, 1)


def test_tang_volume_opens_by_itself_once_tang_is_back(host, tang_host, guest_rebooted, tang_down_at_boot,
                                                       record_property):
    # Its binding is the one made by the key rotation before the reboot.
    assert not is_open(host, TANG)
    tang_host.run_expect([0], "systemctl start tangd.socket")
    waited = wait_until_open_and_read(host, TANG, 300)
    record_property("tang_back_to_reader_running_s", waited)
    assert is_open(host, TANG) and host.service(TANG["reader"]).is_running, f"not open {waited} s after Tang came back"
    assert host.file(f"{TANG['mount']}/marker").content_string.strip() == MARKER


def test_tpm2_volume_opens_at_boot_and_its_unit_runs(host, guest_rebooted, tang_down_at_boot, record_property):
    waited = wait_until_open_and_read(host, TPM, 300)
    assert is_open(host, TPM) and host.mount_point(TPM["mount"]).exists, f"not open {waited} s after the boot"
    assert host.file(f"{TPM['mount']}/marker").content_string.strip() == MARKER
    assert host.service(TPM["reader"]).is_running
    record_property("tpm2_unlocked_s_after_kernel_start", unlock_seconds(host, TPM))


# --- the TPM cleared: the TPM volume stays closed; the recovery passphrase opens it -------------


@pytest.fixture(scope="module")
def tpm_cleared(host, guest_rebooted, tang_down_at_boot):
    """The TPM cleared (a new storage seed: what it sealed before is lost, as
    with a new mainboard), then the TPM volume closed and its unlock unit
    started again: what a boot does for this volume (it has no crypttab line;
    the unit is all that opens it)."""
    host.run_expect([0], "tpm2_clear")
    device = loop_device(host, TPM)
    (binding,) = bindings(host, device)
    assert not slot_opens(host, device, binding["slot"])
    unit = f"llm-volume-unlock-{TPM['mapper']}.service"
    host.run_expect([0], "systemctl stop %s %s", TPM["reader"], unit)
    host.run_expect([0], "systemctl stop %s", host.check_output("systemd-escape --path --suffix=mount %s", TPM["mount"]))
    host.run_expect([0], "cryptsetup close %s", TPM["mapper"])
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    host.run_expect([0], "systemctl start %s", unit)
    return {"unit": unit, "since": since}


def test_tpm_volume_stays_closed_once_the_tpm_is_cleared(host, tpm_cleared):
    journal = ""
    for _ in range(150):  # the unit's first failed attempt (up to 90 s under emulation)
        journal = host.check_output("journalctl --no-pager -u %s --since %s", tpm_cleared["unit"], tpm_cleared["since"])
        if f"{TPM['mapper']} is still locked" in journal:
            break
        time.sleep(2)
    assert f"{TPM['mapper']} is still locked" in journal, journal[-2000:]
    assert host.service(tpm_cleared["unit"]).is_running
    assert not is_open(host, TPM) and not host.mount_point(TPM["mount"]).exists
    assert not host.service(TPM["reader"]).is_running


def test_recovery_passphrase_opens_the_tpm_volume_through_unlock_playbook(host, run_playbook, tpm_cleared,
                                                                          record_property):
    started = time.monotonic()
    run_playbook("playbooks/unlock.yml", volume_vars(TPM))
    record_property("unlock_playbook_s", round(time.monotonic() - started, 1))
    assert is_open(host, TPM) and host.mount_point(TPM["mount"]).exists
    assert host.file(f"{TPM['mount']}/marker").content_string.strip() == MARKER
    assert host.service(TPM["reader"]).is_running


def test_rerun_binds_the_cleared_tpm_again(host, run_playbook, tpm_cleared):
    run_playbook(CLEVIS_PLAYBOOK, {"clevis_phase": "tpm"})
    device = loop_device(host, TPM)
    (binding,) = bindings(host, device)
    assert slot_opens(host, device, binding["slot"])
    assert len(header(host, device)["keyslots"]) == 2


def test_no_volume_key_lies_on_the_guests_unencrypted_disk(host, store, tpm_cleared):
    """Every block the guest wrote to its root disk is in its qcow2 overlay
    (the base image was built before any key existed)."""
    wanted: dict[str, bytes] = {}
    for volume in (TANG, TPM):
        device = loop_device(host, volume)
        wanted[f"{volume['mapper']} recovery passphrase"] = \
            (store / f"luks-recovery-{volume['mapper']}.passphrase").read_text().strip().encode()
        for binding in bindings(host, device):
            wanted[f"{volume['mapper']} slot {binding['slot']} key"] = \
                host.check_output("clevis luks pass -d %s -s %s", device, str(binding["slot"])).encode()
        volume_key = volume_key_hex(host, device, wanted[f"{volume['mapper']} recovery passphrase"].decode())
        wanted[f"{volume['mapper']} volume key (hex)"] = volume_key.encode()
        wanted[f"{volume['mapper']} volume key"] = bytes.fromhex(volume_key)
    assert all(len(value) >= 32 for value in wanted.values()), {k: len(v) for k, v in wanted.items()}
    # The control: the scenario's key-file volume keeps its key on this disk, and the search finds it.
    control = (store / "model-volume.key").read_text().strip().encode()
    host.run_expect([0], "sync")
    disk = (vm_run_dir("llm-vm") / "overlay.qcow2").read_bytes()
    assert control in disk, "the search did not find the key file that is known to be on the disk"
    found = [name for name, value in wanted.items() if value in disk]
    assert not found, f"found on the guest's root disk: {found}"
