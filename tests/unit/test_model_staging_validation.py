"""Bad staging input stops the play before any change, with a message naming
the variable and the fix (validate.yml and manifest.yml are read-only in
controller mode)."""

from __future__ import annotations

import pytest


CHECKS = (
    "- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: validate\n"
    "- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: manifest\n"
)


def test_the_generated_model_passes(run_playbook, tiny_model):
    result = run_playbook(CHECKS, {"model_staging_controller_dir": str(tiny_model)})
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_controller_dir_is_named(run_playbook, tmp_path):
    for value in ("", str(tmp_path / "nowhere")):
        result = run_playbook(CHECKS, {"model_staging_controller_dir": value})
        assert result.returncode != 0
        assert "model_staging_controller_dir" in result.stdout
        assert "sha256sum * > SHA256SUMS" in result.stdout


def test_directory_without_manifest_is_refused(run_playbook, tmp_path):
    (tmp_path / "config.json").write_text("{}\n")
    result = run_playbook(CHECKS, {"model_staging_controller_dir": str(tmp_path)})
    assert result.returncode != 0
    assert "(model_staging_manifest)" in result.stdout


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("not a manifest\n", "line 1: 'not a manifest' is not"),
        (f"{'a' * 64}  ../../etc/passwd\n", "line 1: file name '../../etc/passwd' contains"),
        (f"{'a' * 64}  .env\n", "starts with '.'"),
        ("", "lists no files"),
    ],
)
def test_malformed_manifest_is_refused_with_the_line(run_playbook, tmp_path, manifest, expected):
    (tmp_path / "SHA256SUMS").write_text(manifest)
    result = run_playbook(CHECKS, {"model_staging_controller_dir": str(tmp_path)})
    assert result.returncode != 0
    assert expected in result.stdout
    assert "model_staging_manifest" in result.stdout


def test_listed_file_missing_on_the_controller_is_named(run_playbook, tiny_model, tmp_path):
    (tmp_path / "SHA256SUMS").write_text((tiny_model / "SHA256SUMS").read_text())
    (tmp_path / "config.json").write_bytes((tiny_model / "config.json").read_bytes())
    result = run_playbook(CHECKS, {"model_staging_controller_dir": str(tmp_path)})
    assert result.returncode != 0
    assert "generation_config.json, model.safetensors" in result.stdout
    assert "not in model_staging_controller_dir" in result.stdout


@pytest.mark.parametrize("url", ["http://models.internal.example/qwen", "ftp://x/y", "models.internal.example", ""])
def test_url_must_be_https(run_playbook, url):
    result = run_playbook("- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: validate\n",
                          {"model_staging_source": "url", "model_staging_url": url})
    assert result.returncode != 0
    assert "model_staging_url" in result.stdout and "must be the https://" in result.stdout


def test_plain_http_only_with_the_explicit_switch(run_playbook):
    result = run_playbook("- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: validate\n",
                          {"model_staging_source": "url", "model_staging_url": "http://10.0.0.1/m",
                           "model_staging_allow_insecure_http": True})
    assert result.returncode == 0, result.stdout


def test_missing_ca_file_is_named(run_playbook, tmp_path):
    result = run_playbook("- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: validate\n",
                          {"model_staging_source": "url", "model_staging_url": "https://10.0.0.1/m",
                           "model_staging_ca_file": str(tmp_path / "ca.pem")})
    assert result.returncode != 0
    assert "model_staging_ca_file" in result.stdout


@pytest.mark.parametrize(("variable", "value"), [("model_staging_name", "../x"), ("model_staging_name", ".x"),
                                                 ("model_staging_root", "/"), ("model_staging_root", "srv"),
                                                 ("model_staging_keep_releases", 0)])
def test_bad_name_root_or_keep_count_is_refused(run_playbook, tiny_model, variable, value):
    result = run_playbook(CHECKS, {"model_staging_controller_dir": str(tiny_model), variable: value})
    assert result.returncode != 0
    assert variable in result.stdout
