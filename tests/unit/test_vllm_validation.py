"""Bad input stops the vllm role before the service is touched: its first
task files (validate.yml, the settings, which playbooks/preflight.yml also
runs before any host changes; context.yml, the staged model and the context
that fits) run here against a model directory on this machine, with real
ansible-playbook.

Every case runs in one ansible-playbook run, a host of its own each
(conftest.run_cases), each with a model directory of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]

TASKS = """\
- name: Run the vllm role's checks
  ansible.builtin.include_role:
    name: vllm
    tasks_from: validate.yml

- name: Size the context as the vllm role does
  ansible.builtin.include_role:
    name: vllm
    tasks_from: context.yml
"""

QWEN3_4B = {
    "architectures": ["Qwen3ForCausalLM"], "hidden_size": 2560, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 262144, "torch_dtype": "bfloat16",
}


CASES = {
    "no-config": {},
    "context-too-long": {"nvidia_driver_gpu_memory_mib": [24564], "vllm_max_model_len": 262144,
                         "vllm_max_model_len_fit": False},
    "unknown-dtype": {"vllm_dtype": "bfloat17"},
    "no-weights": {},
    "no-gpu-facts": {"nvidia_driver_gpu_memory_mib": []},
    "api-key-in-argv": {"vllm_extra_args": ["--api-key", "x"]},
    "listener-beyond-loopback": {"vllm_host": "0.0.0.0"},
    "no-venv-kept": {"vllm_venvs_kept": 0},
    "short-api-key": {"vllm_api_key": "short-secret"},
    "24gb-card": {"nvidia_driver_gpu_memory_mib": [24564]},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A staged model directory per case: {case: path}."""
    paths = {}
    for case in CASES:
        path = tmp_path_factory.mktemp(case) / "models" / "Qwen3-4B-Instruct-2507" / "current"
        path.mkdir(parents=True)
        if case != "no-config":
            (path / "config.json").write_text(json.dumps(QWEN3_4B))
        if case != "no-weights":
            (path / "model.safetensors").write_bytes(b"\0" * 1024)
        paths[case] = path
    return paths


@pytest.fixture(scope="module")
def results(run_cases, models):
    return run_cases(TASKS, {case: {"vllm_model_path": str(models[case]), "vllm_api_key": "k" * 32,
                                    "nvidia_driver_gpu_memory_mib": [81559], **overrides}
                             for case, overrides in CASES.items()})


def test_model_path_without_config_json_fails_before_start(results, models):
    result = results["no-config"]
    assert result.returncode != 0
    assert f"{models['no-config']}/config.json does not exist: stage the model first" in result.stdout


def test_context_that_cannot_fit_fails_with_both_numbers(results):
    result = results["context-too-long"]
    assert result.returncode != 0
    assert "the requested context of 262144 tokens needs 38.65 GB of KV cache" in result.stdout
    assert "but only" in result.stdout and "tokens (" in result.stdout


def test_unknown_dtype_fails_before_start(results):
    result = results["unknown-dtype"]
    assert result.returncode != 0
    assert "unknown dtype 'bfloat17'" in result.stdout


def test_model_without_weights_fails_before_start(results):
    result = results["no-weights"]
    assert result.returncode != 0
    assert "holds no *.safetensors weights" in result.stdout


def test_gpu_host_without_gpu_facts_fails_before_start(results):
    result = results["no-gpu-facts"]
    assert result.returncode != 0
    assert "no GPU memory is known" in result.stdout


def test_api_key_on_the_command_line_is_refused(results):
    result = results["api-key-in-argv"]
    assert result.returncode != 0
    assert "vllm_extra_args may not carry --api-key" in result.stdout
    assert "--trust-remote-code" not in result.stdout, "the message names a rule that holds"


def test_a_listener_beyond_loopback_is_refused_naming_only_vllm_host(results):
    result = results["listener-beyond-loopback"]
    assert result.returncode != 0
    assert "vllm_host must be a loopback address" in result.stdout and "(got 0.0.0.0)" in result.stdout
    assert "vllm_device" not in result.stdout and "vllm_extra_args" not in result.stdout


def test_keeping_no_venv_is_refused_naming_vllm_venvs_kept(results):
    result = results["no-venv-kept"]
    assert result.returncode != 0
    assert "vllm_venvs_kept must be 1 or more (got 0)" in result.stdout


def test_short_api_key_is_refused_without_showing_it(results):
    result = results["short-api-key"]
    assert result.returncode != 0
    assert "short-secret" not in result.output
    assert "vllm_api_key (vault_vllm_api_key in the vault" in result.stdout


def test_a_good_model_on_a_24gb_card_gets_a_fitting_context(results):
    result = results["24gb-card"]
    assert result.returncode == 0, result.output[-3000:]
    chosen = int(re.search(r"max-model-len (\d+) tokens \(requested 262144", result.stdout).group(1))
    assert 60_000 < chosen < 262_144
