"""Bad input stops the vllm role before the service is touched: its first
task files (validate.yml, the settings, which playbooks/preflight.yml also
runs before any host changes; context.yml, the staged model and the context
that fits) run here against a model directory on this machine, with real
ansible-playbook."""

from __future__ import annotations

import json
import re
import sys
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


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "models" / "Qwen3-4B-Instruct-2507" / "current"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(QWEN3_4B))
    (path / "model.safetensors").write_bytes(b"\0" * 1024)
    return path


def settings(model, **overrides):
    return {"ansible_python_interpreter": sys.executable, "vllm_model_path": str(model), "vllm_api_key": "k" * 32,
            "nvidia_driver_gpu_memory_mib": [81559], **overrides}


def test_model_path_without_config_json_fails_before_start(run_playbook, model):
    (model / "config.json").unlink()
    result = run_playbook(TASKS, settings(model))
    assert result.returncode != 0
    assert f"{model}/config.json does not exist: stage the model first" in result.stdout


def test_context_that_cannot_fit_fails_with_both_numbers(run_playbook, model):
    result = run_playbook(TASKS, settings(model, nvidia_driver_gpu_memory_mib=[24564],
                                          vllm_max_model_len=262144, vllm_max_model_len_fit=False))
    assert result.returncode != 0
    assert "the requested context of 262144 tokens needs 38.65 GB of KV cache" in result.stdout
    assert "but only" in result.stdout and "tokens (" in result.stdout


def test_unknown_dtype_fails_before_start(run_playbook, model):
    result = run_playbook(TASKS, settings(model, vllm_dtype="bfloat17"))
    assert result.returncode != 0
    assert "unknown dtype 'bfloat17'" in result.stdout


def test_model_without_weights_fails_before_start(run_playbook, model):
    (model / "model.safetensors").unlink()
    result = run_playbook(TASKS, settings(model))
    assert result.returncode != 0
    assert "holds no *.safetensors weights" in result.stdout


def test_gpu_host_without_gpu_facts_fails_before_start(run_playbook, model):
    result = run_playbook(TASKS, settings(model, nvidia_driver_gpu_memory_mib=[]))
    assert result.returncode != 0
    assert "no GPU memory is known" in result.stdout


def test_api_key_on_the_command_line_is_refused(run_playbook, model):
    result = run_playbook(TASKS, settings(model, vllm_extra_args=["--api-key", "x"]))
    assert result.returncode != 0
    assert "vllm_extra_args may not carry --api-key" in result.stdout
    assert "--trust-remote-code" not in result.stdout, "the message names a rule that holds"


def test_a_listener_beyond_loopback_is_refused_naming_only_vllm_host(run_playbook, model):
    result = run_playbook(TASKS, settings(model, vllm_host="0.0.0.0"))
    assert result.returncode != 0
    assert "vllm_host must be a loopback address" in result.stdout and "(got 0.0.0.0)" in result.stdout
    assert "vllm_device" not in result.stdout and "vllm_extra_args" not in result.stdout


def test_short_api_key_is_refused_without_showing_it(run_playbook, model):
    result = run_playbook(TASKS, settings(model, vllm_api_key="short-secret"))
    assert result.returncode != 0
    assert "short-secret" not in result.stdout + result.stderr
    assert "vllm_api_key (vault_vllm_api_key in the vault" in result.stdout


def test_a_good_model_on_a_24gb_card_gets_a_fitting_context(run_playbook, model):
    result = run_playbook(TASKS, settings(model, nvidia_driver_gpu_memory_mib=[24564]))
    assert result.returncode == 0, result.stdout[-2000:]
    chosen = int(re.search(r"max-model-len (\d+) tokens \(requested 262144", result.stdout).group(1))
    assert 60_000 < chosen < 262_144
