"""The automatic unlock modes of model_volume: the Clevis policy each mode
binds, how the bindings of a real LUKS2 header are read and recognised, and bad settings refused before
any change with a message that names the variable.

The validation cases run the role's real validate tasks on this machine (one
ansible-playbook run, conftest.run_cases): it has no TPM, and the Tang
servers are a real HTTP listener started here (answers /adv) and a port
nothing listens on."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import sys
import threading
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "roles" / "model_volume" / "filter_plugins"))
import model_volume as mv  # noqa: E402  (the role's filter plugin)

TANG_URL = "http://tang.example:7500"


# --- policies and the header's bindings ----------------------------------------------------------------


def test_tang_mode_binds_every_server_with_the_threshold():
    assert mv.model_volume_clevis_policy("tang", ["http://a:7500", "http://b:7500"], 2, "7", "sha256") == {
        "t": 2, "pins": {"tang": [{"url": "http://a:7500"}, {"url": "http://b:7500"}]}}


def test_tpm2_mode_binds_the_pcr_policy_sorted_and_without_repeats():
    policy = mv.model_volume_clevis_policy("tpm2", [], 1, "7,0,7", "sha256")
    assert policy == {"t": 1, "pins": {"tpm2": {"pcr_bank": "sha256", "pcr_ids": "0,7"}}}


def test_tpm2_mode_without_pcrs_has_no_pcr_policy():
    assert mv.model_volume_clevis_policy("tpm2", [], 1, "", "sha256")["pins"]["tpm2"] == {"pcr_bank": "sha256"}


def test_tang_and_tpm2_mode_needs_both():
    policy = mv.model_volume_clevis_policy("tang+tpm2", [TANG_URL], 1, "7", "sha256")
    assert policy["t"] == 2 and set(policy["pins"]) == {"sss", "tpm2"}
    assert policy["pins"]["sss"] == {"t": 1, "pins": {"tang": [{"url": TANG_URL}]}}


def test_a_mode_without_clevis_has_no_policy():
    with pytest.raises(ValueError, match="keyfile is not an automatic unlock mode"):
        mv.model_volume_clevis_policy("keyfile", [], 1, "7", "sha256")


# A real header: a 64 MiB LUKS2 volume in the test VM (Debian 12, clevis 19,
# the emulated TPM), bound with `clevis luks bind` three times, dumped with
# `cryptsetup luksDump --dump-json-metadata`; beside it what
# `clevis luks list` printed for it. Tang advertisements came from a file
# (offline keys), so the URLs are never contacted.
#   slot 1: tang mode, one server;  slot 2: tpm2 mode, PCR 7;
#   slot 3: tang+tpm2, two servers with threshold 2 (one URL with a
#           trailing slash) and PCRs 0 and 7.
DATA = PROJECT / "tests" / "unit" / "data" / "model_volume"
HEADER = (DATA / "luks2-metadata-with-clevis-tokens.json").read_text()
TANG_A, TANG_B = "http://tang-a.example:7500", "http://tang-b.example:7500"


def clevis_luks_list(text: str) -> list[tuple[int, str, dict]]:
    """`clevis luks list` lines (`1: sss '{...}'`) as (slot, pin, settings)."""
    found = []
    for line in text.splitlines():
        match = re.match(r"^\s*(\d+):\s+(\S+)\s+'(.*)'\s*$", line)
        if match:
            found.append((int(match.group(1)), match.group(2), json.loads(match.group(3))))
    return found


def test_bindings_read_from_the_header_are_what_clevis_luks_list_prints():
    bindings = mv.model_volume_clevis_tokens(HEADER)
    listed = clevis_luks_list((DATA / "clevis-luks-list.txt").read_text())
    assert len(listed) == 3
    assert [(b["slot"], b["pin"], b["config"]) for b in bindings] == listed
    assert [(b["slot"], b["token"]) for b in bindings] == [(1, 0), (2, 1), (3, 2)]


def test_no_key_material_of_the_header_reaches_the_bindings():
    text = json.dumps(mv.model_volume_clevis_tokens(HEADER))
    tokens = json.loads(HEADER)["tokens"].values()
    for secret in ("adv", "jwk_priv", "jwk_pub", "epk", "ciphertext", "protected"):
        assert f'"{secret}"' not in text, secret
    assert not any(token["jwe"]["ciphertext"] in text or token["jwe"]["protected"][:40] in text for token in tokens)


def test_tokens_that_are_not_clevis_bindings_are_skipped():
    header = json.loads(HEADER)
    header["tokens"]["7"] = {"type": "systemd-tpm2", "keyslots": ["5"]}
    header["tokens"]["8"] = {"type": "clevis", "keyslots": ["6"], "jwe": {"protected": "not base64 json"}}
    header["tokens"]["9"] = {"type": "clevis", "keyslots": [], "jwe": header["tokens"]["0"]["jwe"]}
    assert [b["slot"] for b in mv.model_volume_clevis_tokens(header)] == [1, 2, 3]
    assert mv.model_volume_clevis_tokens("") == [] and mv.model_volume_clevis_tokens("{not json") == []


POLICIES = {"tang": ("tang", [TANG_A], 1, "", "sha256"),
            "tpm2": ("tpm2", [], 1, "7", "sha256"),
            "tang+tpm2": ("tang+tpm2", [TANG_A, TANG_B], 2, "7,0", "sha256")}


@pytest.mark.parametrize(("mode", "slot"), [("tang", 1), ("tpm2", 2), ("tang+tpm2", 3)])
def test_each_mode_recognises_its_own_binding_and_no_other(mode, slot):
    policy = mv.model_volume_clevis_policy(*POLICIES[mode])
    matching = [b["slot"] for b in mv.model_volume_clevis_tokens(HEADER) if mv.model_volume_clevis_matches(b, policy)]
    assert matching == [slot]


def test_a_changed_server_list_threshold_or_pcr_policy_is_a_different_binding():
    bindings = mv.model_volume_clevis_tokens(HEADER)
    for policy in (mv.model_volume_clevis_policy("tang", [TANG_A, "http://other:7500"], 1, "", "sha256"),
                   mv.model_volume_clevis_policy("tang", [TANG_A, TANG_B], 1, "", "sha256"),
                   mv.model_volume_clevis_policy("tang+tpm2", [TANG_A, TANG_B], 1, "0,7", "sha256"),
                   mv.model_volume_clevis_policy("tpm2", [], 1, "0,7", "sha256"),
                   mv.model_volume_clevis_policy("tpm2", [], 1, "7", "sha1")):
        assert not any(mv.model_volume_clevis_matches(b, policy) for b in bindings), policy


@pytest.mark.parametrize(("path", "unit"), [("/srv/models", "srv-models.mount"),
                                            ("/srv/tang-test", "srv-tang\\x2dtest.mount"),
                                            ("/srv//my models/", "srv-my\\x20models.mount")])
def test_mount_unit_names_are_escaped_as_systemd_does(path, unit):
    assert mv.model_volume_mount_unit(path) == unit


# --- bad settings, refused before any change -----------------------------------------------------

VALIDATE = "- ansible.builtin.include_role:\n    name: model_volume\n    tasks_from: validate\n"
BASE = {"model_volume_enabled": True, "model_volume_loop_file": "/var/lib/llm-test.img", "llm_secrets_dir": "/tmp"}


class _Adv(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server API)
        body = b'{"payload":"x","signatures":[]}' if self.path == "/adv" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SHORT_RECOVERY = "short-recovery-7f3a"


@pytest.fixture(scope="module")
def results(run_cases):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Adv)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    up = f"http://127.0.0.1:{server.server_port}"
    down = f"http://127.0.0.1:{_closed_port()}"
    cases = {
        "tang-answers": {**BASE, "model_volume_unlock_mode": "tang", "model_volume_tang_servers": [up]},
        "two-of-three-answer": {**BASE, "model_volume_unlock_mode": "tang", "model_volume_tang_servers": [up, up + "/", down],
                                "model_volume_tang_threshold": 2},
        "tang-silent": {**BASE, "model_volume_unlock_mode": "tang", "model_volume_tang_servers": [down]},
        "threshold-above-servers": {**BASE, "model_volume_unlock_mode": "tang+tpm2", "model_volume_tang_servers": [up, up],
                                    "model_volume_tang_threshold": 3},
        "no-tang-servers": {**BASE, "model_volume_unlock_mode": "tang", "model_volume_tang_servers": []},
        "not-a-url": {**BASE, "model_volume_unlock_mode": "tang", "model_volume_tang_servers": ["tang.example:7500"]},
        # It goes into the unlock unit's environment: no quote, space or backslash.
        "url-with-a-quote": {**BASE, "model_volume_unlock_mode": "tang",
                             "model_volume_tang_servers": [up + '" LD_PRELOAD=/tmp/x.so']},
        "server-named-s": {**BASE, "model_volume_unlock_mode": "tang", "model_volume_tang_servers": [up, "http://sealer:1"],
                           "model_volume_tang_threshold": 1},
        "tpm2-without-tpm": {**BASE, "model_volume_unlock_mode": "tpm2"},
        "bad-pcrs": {**BASE, "model_volume_unlock_mode": "tang+tpm2", "model_volume_tang_servers": [up],
                     "model_volume_tpm2_pcr_ids": "7,boot"},
        "short-recovery": {**BASE, "model_volume_unlock_mode": "tang", "model_volume_tang_servers": [up],
                           "model_volume_recovery_passphrase": SHORT_RECOVERY},
        "unknown-mode": {**BASE, "model_volume_unlock_mode": "clevis"},
    }
    try:
        return run_cases(VALIDATE, cases)
    finally:
        server.shutdown()


@pytest.mark.parametrize("case", ["tang-answers", "two-of-three-answer", "server-named-s"])
def test_good_tang_settings_pass(results, case):
    assert results[case].returncode == 0, results[case].output[-3000:]


def test_tang_server_that_does_not_answer_is_refused(results):
    result = results["tang-silent"]
    assert result.returncode != 0
    assert "did not answer" in result.stdout and "model_volume_tang_servers" in result.stdout
    assert "model_volume_tang_threshold" in result.stdout


def test_threshold_above_the_number_of_servers_is_refused(results):
    result = results["threshold-above-servers"]
    assert result.returncode != 0
    assert "model_volume_tang_threshold is 3 but model_volume_tang_servers lists 2 server(s)" in result.stdout


@pytest.mark.parametrize("case", ["no-tang-servers", "not-a-url", "url-with-a-quote"])
def test_tang_mode_without_server_urls_is_refused(results, case):
    result = results[case]
    assert result.returncode != 0
    assert "needs Tang servers: model_volume_tang_servers is" in result.stdout and "tang_servers" in result.stdout


def test_tpm2_mode_on_a_host_without_a_tpm_is_refused(results):
    if os.path.exists("/dev/tpmrm0"):
        pytest.skip("this machine has a TPM")
    result = results["tpm2-without-tpm"]
    assert result.returncode != 0
    assert "model_volume_unlock_mode is tpm2 but" in result.stdout and "/dev/tpmrm0 is missing" in result.stdout


def test_malformed_pcr_list_is_refused(results):
    result = results["bad-pcrs"]
    assert result.returncode != 0
    assert 'model_volume_tpm2_pcr_ids must be PCR numbers' in result.stdout and '"7,boot"' in result.stdout


def test_short_recovery_passphrase_is_refused_without_showing_it(results):
    result = results["short-recovery"]
    assert result.returncode != 0
    assert "model_volume_recovery_passphrase" in result.stdout and "shorter than 20" in result.stdout
    assert SHORT_RECOVERY not in result.output


def test_unknown_mode_is_refused_naming_the_choices(results):
    result = results["unknown-mode"]
    assert result.returncode != 0
    assert "model_volume_unlock_mode" in result.output and "tang+tpm2" in result.output


def test_tang_slots_are_found_alone_or_inside_sss_as_the_key_rotation_looks_for_them():
    # roles/model_volume/tasks/rebind.yml: selectattr('shape', 'search', "'tang'")
    found = [b["slot"] for b in mv.model_volume_clevis_tokens(HEADER) if re.search("'tang'", b["shape"])]
    assert found == [1, 3]


def test_bindings_are_split_into_those_of_the_policy_and_the_others():
    bindings = mv.model_volume_clevis_tokens(HEADER)
    policy = mv.model_volume_clevis_policy(*POLICIES["tpm2"])
    assert [b["slot"] for b in mv.model_volume_clevis_select(bindings, policy)] == [2]
    assert [b["slot"] for b in mv.model_volume_clevis_select(bindings, policy, False)] == [1, 3]
