"""Bad staging input stops the play before any change, with a message naming
the variable and the fix (validate.yml and manifest.yml are read-only in
controller mode).

The cases run in two ansible-playbook runs (controller sources with the
manifest checks, URL sources with the settings checks alone), a host of
their own each (conftest.run_cases)."""

from __future__ import annotations

import pytest


CHECKS = (
    "- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: validate\n"
    "- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: manifest\n"
)


VALIDATE = "- ansible.builtin.include_role:\n    name: model_staging\n    tasks_from: validate\n"
MALFORMED_MANIFESTS = [
    ("not a manifest\n", "line 1: 'not a manifest' is not"),
    (f"{'a' * 64}  ../../etc/passwd\n", "line 1: file name '../../etc/passwd' contains"),
    (f"{'a' * 64}  .env\n", "starts with '.'"),
    ("", "lists no files"),
]
NOT_HTTPS = ["http://models.internal.example/qwen", "ftp://x/y", "models.internal.example", ""]
BAD_NAMES = [("model_staging_name", "../x"), ("model_staging_name", ".x"), ("model_staging_root", "/"),
             ("model_staging_root", "srv"), ("model_staging_keep_releases", 0)]


@pytest.fixture(scope="module")
def results(run_cases, tiny_model, tmp_path_factory):
    def folder(name):
        return tmp_path_factory.mktemp(name)

    no_manifest = folder("no-manifest")
    (no_manifest / "config.json").write_text("{}\n")
    incomplete = folder("incomplete")
    (incomplete / "SHA256SUMS").write_text((tiny_model / "SHA256SUMS").read_text())
    (incomplete / "config.json").write_bytes((tiny_model / "config.json").read_bytes())
    controller = {
        "generated-model": {"model_staging_controller_dir": str(tiny_model)},
        "controller-dir-empty": {"model_staging_controller_dir": ""},
        "controller-dir-missing": {"model_staging_controller_dir": str(folder("parent") / "nowhere")},
        "no-manifest": {"model_staging_controller_dir": str(no_manifest)},
        "listed-file-missing": {"model_staging_controller_dir": str(incomplete)},
    }
    for index, (manifest, _) in enumerate(MALFORMED_MANIFESTS):
        malformed = folder(f"malformed-{index}")
        (malformed / "SHA256SUMS").write_text(manifest)
        controller[f"malformed-{index}"] = {"model_staging_controller_dir": str(malformed)}
    for index, (variable, value) in enumerate(BAD_NAMES):
        controller[f"bad-name-{index}"] = {"model_staging_controller_dir": str(tiny_model), variable: value}
    url = {
        "plain-http-allowed": {"model_staging_source": "url", "model_staging_url": "http://10.0.0.1/m",
                               "model_staging_allow_insecure_http": True},
        "ca-file-missing": {"model_staging_source": "url", "model_staging_url": "https://10.0.0.1/m",
                            "model_staging_ca_file": str(folder("ca") / "ca.pem")},
    }
    for index, address in enumerate(NOT_HTTPS):
        url[f"not-https-{index}"] = {"model_staging_source": "url", "model_staging_url": address}
    return {**run_cases(CHECKS, controller), **run_cases(VALIDATE, url)}


def test_the_generated_model_passes(results):
    result = results["generated-model"]
    assert result.returncode == 0, result.output[-3000:]


@pytest.mark.parametrize("case", ["controller-dir-empty", "controller-dir-missing"])
def test_missing_controller_dir_is_named(results, case):
    result = results[case]
    assert result.returncode != 0
    assert "model_staging_controller_dir" in result.stdout
    assert "sha256sum * > SHA256SUMS" in result.stdout


def test_directory_without_manifest_is_refused(results):
    result = results["no-manifest"]
    assert result.returncode != 0
    assert "(model_staging_manifest)" in result.stdout


@pytest.mark.parametrize("index, expected", [(i, expected) for i, (_, expected) in enumerate(MALFORMED_MANIFESTS)])
def test_malformed_manifest_is_refused_with_the_line(results, index, expected):
    result = results[f"malformed-{index}"]
    assert result.returncode != 0
    assert expected in result.stdout
    assert "model_staging_manifest" in result.stdout


def test_listed_file_missing_on_the_controller_is_named(results):
    result = results["listed-file-missing"]
    assert result.returncode != 0
    assert "generation_config.json, model.safetensors" in result.stdout
    assert "not in model_staging_controller_dir" in result.stdout


@pytest.mark.parametrize("index, url", list(enumerate(NOT_HTTPS)))
def test_url_must_be_https(results, index, url):
    result = results[f"not-https-{index}"]
    assert result.returncode != 0
    assert "model_staging_url" in result.stdout and "must be the https://" in result.stdout


def test_plain_http_only_with_the_explicit_switch(results):
    result = results["plain-http-allowed"]
    assert result.returncode == 0, result.output[-3000:]


def test_missing_ca_file_is_named(results):
    result = results["ca-file-missing"]
    assert result.returncode != 0
    assert "model_staging_ca_file" in result.stdout


@pytest.mark.parametrize("index, variable", [(i, variable) for i, (variable, _) in enumerate(BAD_NAMES)])
def test_bad_name_root_or_keep_count_is_refused(results, index, variable):
    result = results[f"bad-name-{index}"]
    assert result.returncode != 0
    assert variable in result.stdout
