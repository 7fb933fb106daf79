"""Without a GPU (nvidia_driver_require_gpu: false) the NVIDIA driver role
still sets up, for real, everything that needs no GPU: Debian's non-free
components, the branch pin, the holds, the unattended-upgrades blacklist, the
nouveau blacklist and the persistence configuration; and installs no driver.
Loading the driver, nvidia-smi and the reboot need a GPU host (README)."""

from __future__ import annotations

testinfra_hosts = ["llm_servers"]

BRANCH = "535"  # Debian 12's non-free branch, the role's default for source "debian"
DRIVER_PACKAGES = {"nvidia-open-kernel-dkms", "firmware-nvidia-gsp", "nvidia-smi", "libcuda1", "nvidia-persistenced"}


def test_non_free_components_come_from_a_file_of_their_own(host):
    sources = host.file("/etc/apt/sources.list.d/nvidia-driver-debian.sources")
    assert sources.mode == 0o644
    assert sources.contains("^Components: contrib non-free non-free-firmware$")
    assert sources.contains("^Suites: bookworm-security$")
    # The system's own sources file is not rewritten.
    assert not host.file("/etc/apt/sources.list.d/debian.sources").contains("Ansible managed")


def test_apt_finds_the_driver_in_the_pinned_branch_after_the_update(host):
    policy = host.check_output("apt-cache policy nvidia-smi libcuda1 nvidia-open-kernel-dkms")
    candidates = [line.split()[1] for line in policy.splitlines() if "Candidate:" in line]
    assert len(candidates) == 3 and all(c.startswith(BRANCH + ".") for c in candidates), policy


def test_apt_pins_the_driver_to_its_branch_and_no_other(host):
    pinned = host.check_output("apt-cache policy")
    assert f"nvidia-smi -> {BRANCH}." in pinned and "with priority 1001" in pinned
    pref = host.file("/etc/apt/preferences.d/nvidia-driver.pref").content_string
    first, second = pref.split("Pin: version ")[1:3]
    assert first.startswith(f"{BRANCH}.*\nPin-Priority: 1001")
    assert second.startswith("*\nPin-Priority: -1")


def test_apt_reports_the_driver_packages_held(host):
    held = set(host.check_output("apt-mark showhold").split())
    assert DRIVER_PACKAGES <= held
    # dpkg lists a held package that is not installed only when asked by name.
    listing = host.check_output("dpkg --get-selections " + " ".join(sorted(DRIVER_PACKAGES)))
    selections = dict(line.split() for line in listing.splitlines())
    assert {selections.get(name) for name in DRIVER_PACKAGES} == {"hold"}, selections


def test_unattended_upgrades_skip_the_driver_packages(host):
    config = host.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    for pattern in ("^nvidia-", "^libnvidia-", "^libcuda", "^firmware-nvidia-"):
        assert f'"{pattern}"' in config, config


def test_nouveau_is_blacklisted(host):
    blacklist = host.file("/etc/modprobe.d/nvidia-driver-blacklist-nouveau.conf")
    assert blacklist.contains("^blacklist nouveau$")
    assert blacklist.contains("^options nouveau modeset=0$")


def test_persistence_daemon_is_configured_for_persistence_mode(host):
    dropin = host.file("/etc/systemd/system/nvidia-persistenced.service.d/10-nvidia-driver.conf")
    assert dropin.contains("^ExecStart=$")  # the packaged command line is replaced, not added to
    assert dropin.contains("^ExecStart=/usr/bin/nvidia-persistenced --user nvpd --persistence-mode ")


def test_no_driver_is_installed_on_a_host_without_gpu(host):
    for name in DRIVER_PACKAGES:
        assert not host.package(name).is_installed, name
    assert not host.file("/proc/driver/nvidia/version").exists
