"""The manifest parser accepts what sha256sum writes, refuses path traversal
and malformed lines with a sentence per line, and names a release after the
content, not the formatting, of the manifest."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "roles" / "model_staging" / "filter_plugins"))

import model_staging as ms  # noqa: E402  (path set just above)

A = "a" * 64
B = "0123456789abcdef" * 4


def test_sha256sum_output_is_parsed_sorted_by_name():
    result = ms.manifest(f"{B}  model.safetensors\n{A}  config.json\n")
    assert result["errors"] == []
    assert result["files"] == [{"name": "config.json", "sha256": A}, {"name": "model.safetensors", "sha256": B}]
    assert result["canonical"] == f"{A}  config.json\n{B}  model.safetensors\n"
    assert result["release"] == hashlib.sha256(result["canonical"].encode()).hexdigest()[:16]


def test_release_id_ignores_order_case_form_comments_and_blank_lines():
    plain = ms.manifest(f"{A}  config.json\n{B}  model.safetensors\n")
    other = ms.manifest(
        f"# made with sha256sum\n\nSHA256 (model.safetensors) = {B.upper()}\r\n{A} *config.json"
    )
    assert other["errors"] == []
    assert other["release"] == plain["release"]


def test_a_changed_file_gives_another_release():
    assert ms.manifest(f"{A}  config.json\n")["release"] != ms.manifest(f"{B}  config.json\n")["release"]


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "sub/model.safetensors", "/etc/shadow", ".hidden", "..", "a..b", "back\\slash",
     "has space.json", "tab\tname"],
)
def test_path_traversal_and_odd_names_are_refused(name):
    result = ms.manifest(f"{A}  {name}\n")
    assert result["files"] == []
    assert len(result["errors"]) == 1
    assert "line 1" in result["errors"][0]


@pytest.mark.parametrize(
    "line",
    [f"{A} config.json", f"{A[:63]}  config.json", f"{'g' * 64}  config.json", "config.json", f"{A}  "],
)
def test_malformed_lines_are_named(line):
    result = ms.manifest(f"{B}  model.safetensors\n{line}\n")
    assert any(error.startswith("line 2:") for error in result["errors"]), result["errors"]


def test_duplicates_self_listing_and_empty_manifests_are_refused():
    assert "listed twice" in ms.manifest(f"{A}  config.json\n{B}  config.json\n")["errors"][0]
    assert "lists itself" in ms.manifest(f"{A}  SHA256SUMS\n", "SHA256SUMS")["errors"][0]
    assert ms.manifest("\n# nothing\n")["errors"] == ["lists no files"]
    assert ms.manifest(None)["errors"] == ["lists no files"]


def test_host_sums_are_compared_with_the_manifest():
    files = ms.manifest(f"{A}  config.json\n{B}  model.safetensors\n{A}  tokenizer.json\n")["files"]
    output = f"{A}  config.json\n{A}  model.safetensors\n"  # wrong sum, tokenizer.json missing
    actual = ms.sha256sum(output + "sha256sum: tokenizer.json: No such file or directory\n")
    assert actual == {"config.json": A, "model.safetensors": A}
    assert ms.mismatches(files, actual) == [
        {"name": "model.safetensors", "expected": B, "actual": A},
        {"name": "tokenizer.json", "expected": A, "actual": "missing"},
    ]
    assert ms.mismatches(files[:1], actual) == []
