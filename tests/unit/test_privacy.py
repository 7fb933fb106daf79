"""The privacy canary's hand-over (molecule/shared/privacy.py): the chat test
records it encoded, the hardening suites read it back, and the search on a
host gets it through a pipe, never as an argument."""

from __future__ import annotations

import subprocess

import privacy

CANARY = "privacy-canary-0123456789abcdef"


def test_encoded_canary_holds_no_trace_of_the_canary():
    encoded = privacy.encode(CANARY)
    assert CANARY not in encoded and CANARY[::-1] not in encoded
    assert "canary" not in encoded and "yranac" not in encoded
    assert privacy.decode(encoded) == CANARY


def test_export_hands_the_canary_to_the_same_run_and_to_a_later_one(monkeypatch, tmp_path):
    monkeypatch.delenv(privacy.ENV_VAR, raising=False)
    monkeypatch.setenv("LLM_TEST_REPORTS", str(tmp_path))
    assert privacy.exported_canary() is None
    privacy.export_canary(CANARY)
    assert privacy.exported_canary() == CANARY
    kept = tmp_path / privacy.REPORT_FILE
    assert CANARY not in kept.read_text() and kept.stat().st_mode & 0o077 == 0
    # A later pytest run: no environment variable, only the reports folder.
    monkeypatch.delenv(privacy.ENV_VAR)
    assert privacy.exported_canary() == CANARY


def test_no_reports_folder_keeps_the_canary_in_this_run_only(monkeypatch):
    monkeypatch.delenv("LLM_TEST_REPORTS", raising=False)
    monkeypatch.delenv(privacy.ENV_VAR, raising=False)
    privacy.export_canary(CANARY)
    assert privacy.exported_canary() == CANARY


def test_search_finds_the_canary_given_only_its_encoding(tmp_path):
    holder, clean = tmp_path / "holder.bin", tmp_path / "clean.bin"
    holder.write_bytes(b"\x00junk" + CANARY.encode() + b"\xffmore" + CANARY.encode())
    clean.write_bytes(b"\x00junk" + CANARY[:-1].encode())
    script = privacy.PRELUDE + 'hits -c "$2"; hits -c "$3"; true'
    args = ["sh", "-c", script, "hits", privacy.encode(CANARY), str(holder), str(clean)]
    assert not any(CANARY in arg for arg in args)
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "0"]  # -c counts lines: the binary file is one line
