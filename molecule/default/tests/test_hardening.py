"""Host hardening in a systemd container: what a container can show.

A container shares the host's kernel, so sysctls, core_pattern, swap, auditd
and kernel modules are the host's business: the role detects the container
and leaves them alone (proven here), and the `vm` scenario proves them on a
kernel of its own (molecule/vm: test_hardening.py). Shown here: no service
or login can write a core file (limits, systemd-coredump), the journal is
persistent and bounded, unattended-upgrades takes security updates only and
never the NVIDIA driver or a held package, the login settings, banner and
module blacklist, and that nothing the crash tests put in memory reaches a
crash file. The privacy canary the chat test sent through the service
(test_chat_browser.py, earlier in the same run) is searched for in swap and
crash files too; run alone, this suite sends a canary of its own to vLLM
first, so the search always has something real to look for.
"""

from __future__ import annotations

import os
import re
import secrets

import pytest

import privacy  # molecule/shared, put on sys.path by conftest.py

testinfra_hosts = ["llm_servers"]

# Module arguments (a canary on stdin) stay out of the host's journal.
os.environ["ANSIBLE_NO_TARGET_SYSLOG"] = "True"

# A marker that only ever exists in the memory of the crashing test process.
CANARY = "hardening-canary-" + secrets.token_hex(12)

# Runs on the host: one chat completion from vLLM with the canary (read
# encoded from stdin) in the prompt; prints the HTTP status. The API key is
# read there from the root-only environment file.
SEND_TO_VLLM = r"""
import json, sys, urllib.request
canary = bytes.fromhex(sys.stdin.read().strip()).decode()[::-1]
key = next(line.split("=", 1)[1].strip() for line in open("/etc/vllm/vllm.env") if line.startswith("VLLM_API_KEY="))
body = json.dumps({"model": "Qwen3-4B-Instruct-2507", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "Remember " + canary}]}).encode()
request = urllib.request.Request("http://127.0.0.1:8000/v1/chat/completions", data=body, headers={
    "Content-Type": "application/json", "Authorization": "Bearer " + key})
with urllib.request.urlopen(request, timeout=120) as response:
    print(response.status)
"""


@pytest.fixture(scope="module")
def crash_dir(host):
    """A world-writable directory the crash tests run in (where a core file would land)."""
    path = host.check_output("mktemp -d /var/tmp/hardening-crash.XXXXXX")
    host.run_expect([0], "chmod 1777 %s && touch %s/.start", path, path)
    yield path
    host.run("rm -rf %s", path)


# --- the container is recognised ---------------------------------------------------------


def test_kernel_level_pieces_are_left_to_the_containers_host(host):
    assert not host.file("/etc/sysctl.d/zz-hardening.conf").exists
    assert not host.package("auditd").is_installed
    assert not host.package("acct").is_installed


# --- core dumps ----------------------------------------------------------------------------


def test_systemd_gives_every_service_a_core_limit_of_zero(host):
    assert host.check_output("systemctl show --property DefaultLimitCORE") == "DefaultLimitCORE=0"


def test_systemd_coredump_would_store_nothing(host):
    config = host.check_output("systemd-analyze cat-config systemd/coredump.conf")
    assert re.search(r"^Storage=none$", config, re.M)
    assert re.search(r"^ProcessSizeMax=0$", config, re.M)


def test_crashing_service_cannot_raise_its_limit_and_leaves_no_core(host, crash_dir):
    # The process tries what a crashing program could: raise its soft limit
    # to the hard one, then dump. Without the role the hard limit here is
    # unlimited and the host kernel's core_pattern ("core") writes ./core.
    script = ("import os, resource; s = %r * 4096; h = resource.getrlimit(resource.RLIMIT_CORE)[1]; "
              "resource.setrlimit(resource.RLIMIT_CORE, (h, h)); print('hard', h, flush=True); os.abort()") % CANARY
    # The crash's exit status comes back in the output: over SSH an exit
    # status of 255 (systemd-run's for a service killed by a signal) would
    # read as a failed connection.
    result = host.run("sh -c 'systemd-run --quiet --wait --pipe --property WorkingDirectory=\"$1\" "
                      "--property User=nobody /usr/bin/python3 -c \"$2\"; echo \"exit=$?\"' crash %s %s",
                      crash_dir, script)
    assert "hard 0" in result.stdout, result.stdout + result.stderr
    status = re.search(r"^exit=(\d+)$", result.stdout, re.M)
    assert status and status.group(1) != "0", result.stdout  # it did crash
    assert host.check_output("find %s -type f ! -name .start", crash_dir) == ""


def test_login_sessions_get_a_hard_core_limit_of_zero(host):
    # su runs the PAM session stack (pam_limits) as a login would.
    assert host.check_output("su -s /bin/sh -c 'ulimit -H -c' nobody") == "0"
    assert host.check_output("su -s /bin/sh -c 'ulimit -H -c' root") == "0"


def test_login_shells_get_the_timeout_and_no_core_files(host):
    out = host.check_output("bash -lc 'echo \"$TMOUT $(ulimit -c)\"; readonly -p | grep -c \" TMOUT\"'")
    assert out.split() == ["900", "0", "1"]


def test_no_crash_file_anywhere_holds_the_canary(host, crash_dir):
    assert not any(privacy.canary_hits(host, CANARY).values())


@pytest.fixture(scope="module")
def chat_canary(host):
    """The canary the chat test sent through the gateway, Chainlit and vLLM
    in this run; without it (this suite run alone), a new one sent to vLLM now."""
    canary = privacy.exported_canary()
    if canary:
        return canary
    canary = "privacy-canary-" + secrets.token_hex(16)
    result = host.run("printf '%%s' %s | python3 -c %s", privacy.encode(canary), SEND_TO_VLLM)
    assert result.rc == 0 and result.stdout.strip() == "200", result.stderr[-500:]
    return canary


def test_privacy_canary_from_chat_is_not_in_swap_or_crash_files(host, chat_canary):
    hits = privacy.canary_hits(host, chat_canary)
    assert not any(hits.values()), hits


# --- journald -------------------------------------------------------------------------------


def test_journal_is_persistent_and_bounded(host):
    config = host.check_output("systemd-analyze cat-config systemd/journald.conf")
    for line in ("Storage=persistent", "SystemMaxUse=1G", "SystemMaxFileSize=64M", "MaxRetentionSec=1month"):
        assert re.search(f"^{line}$", config, re.M), line
    assert host.file("/var/log/journal").is_directory
    # journald itself reports the limit it runs with.
    report = host.check_output("journalctl --unit systemd-journald --output cat | grep 'System Journal' | tail -n 1")
    assert "max 1.0G" in report, report


# --- unattended upgrades ------------------------------------------------------------------


# Runs on the host: unattended-upgrade's own account of the origins and the
# blacklist it works with, the first lines of a dry run. The run is stopped
# there: the rest, a full upgrade simulation, takes a minute and says no more.
# While the daily apt job holds unattended-upgrade's lock, wait for it.
UPGRADE_HEAD = r"""
import os, subprocess, time
for attempt in range(40):
    run = subprocess.Popen(["unattended-upgrade", "--dry-run", "--debug"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    head = []
    for line in run.stdout:
        head.append(line)
        if line.startswith("Initial whitelist"):
            break
    run.kill()
    run.wait()
    if not any("Lock file is already taken" in line for line in head):
        break
    time.sleep(10)
print("".join(head), end="")
"""


@pytest.fixture(scope="module")
def upgrade_head(host):
    return host.check_output("timeout 600 python3 -c %s", UPGRADE_HEAD)


def test_unattended_upgrades_take_only_the_security_archive(upgrade_head):
    origins = re.search(r"^Allowed origins are: (.*)$", upgrade_head, re.M).group(1).split(", ")
    assert origins and all("label=Debian-Security" in origin for origin in origins), origins


def test_unattended_upgrades_never_touch_the_driver_or_held_packages(host, upgrade_head):
    blacklist = re.search(r"^Initial blacklist: (.*)$", upgrade_head, re.M).group(1).split()
    for pattern in ("^nvidia-", "^libnvidia-", "^libcuda", "^firmware-nvidia-"):
        assert pattern in blacklist
    held = host.check_output("apt-mark showhold").split()
    assert held, "the nvidia_driver role holds the driver packages in this scenario"
    for name in held:
        assert any(re.match(pattern, name) for pattern in blacklist), name


def test_security_upgrades_run_daily(host):
    periodic = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Update-Package-Lists "1";' in periodic
    assert 'APT::Periodic::Unattended-Upgrade "1";' in periodic
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled and host.service(timer).is_running, timer


def test_needrestart_lists_services_but_restarts_none(host):
    assert host.package("needrestart").is_installed
    assert host.file("/etc/needrestart/conf.d/50-hardening.conf").contains(r"^\$nrconf{restart} = 'l';")


# --- logins, banner, modules -------------------------------------------------------------------


def test_login_defs_tighten_umask_and_password_aging(host):
    defs = dict(line.split(None, 1) for line in host.file("/etc/login.defs").content_string.splitlines()
                if line.strip() and not line.startswith("#") and len(line.split()) > 1)
    assert defs["UMASK"].strip() == "027"
    assert defs["PASS_MAX_DAYS"].strip() == "365"
    assert defs["PASS_MIN_DAYS"].strip() == "1"
    assert int(defs["SHA_CRYPT_MIN_ROUNDS"]) >= 5000


def test_login_banner_is_shown(host):
    for path in ("/etc/issue", "/etc/issue.net"):
        assert host.file(path).contains("Authorised access only")


def test_pam_gives_each_login_its_own_tmp_and_checks_password_quality(host):
    session = host.file("/etc/pam.d/common-session").content_string
    password = host.file("/etc/pam.d/common-password").content_string
    assert "pam_tmpdir.so" in session
    assert "pam_pwquality.so" in password


def test_removable_storage_and_rare_protocols_cannot_load(host):
    lines = set(host.file("/etc/modprobe.d/hardening-blacklist.conf").content_string.splitlines())
    for module in ("usb-storage", "firewire-core", "dccp", "sctp", "rds", "tipc", "cramfs", "squashfs", "udf"):
        assert f"blacklist {module}" in lines
        assert f"install {module} /bin/false" in lines
