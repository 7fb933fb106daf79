"""Context sizing of the vllm role (roles/vllm/filter_plugins/vllm.py), with
known figures: Qwen3-4B in bf16 needs 147,456 bytes of KV cache per token, so
its full 262,144-token context needs ~38.6 GB."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(PROJECT / "roles" / "vllm" / "filter_plugins"))

import vllm  # noqa: E402  (path set just above)

# Qwen/Qwen3-4B-Instruct-2507 config.json (the fields that matter).
QWEN3_4B = {
    "architectures": ["Qwen3ForCausalLM"],
    "hidden_size": 2560,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 262144,
    "torch_dtype": "bfloat16",
}
# 8.05 GB of bf16 safetensors (4.02 B parameters).
QWEN3_4B_WEIGHTS = 8_044_936_192
# The generated test model (scripts/make-tiny-model.py).
TINY = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "hidden_size": 64, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}


def size(config=QWEN3_4B, **kwargs):
    kwargs.setdefault("weights_bytes", QWEN3_4B_WEIGHTS)
    return vllm.vllm_context(config, **kwargs)


def test_qwen3_4b_bf16_needs_147456_bytes_of_kv_per_token():
    per_token, dtype, errors = vllm.kv_bytes_per_token(QWEN3_4B)
    assert (per_token, dtype, errors) == (147_456, "bfloat16", [])


def test_qwen3_4b_full_context_needs_38_6_gb():
    result = size(gpu_memory_mib=[81559])
    assert result["requested"] == 262_144
    assert result["requested"] * result["kv_bytes_per_token"] == 38_654_705_664  # 38.65 GB


def test_24gb_card_does_not_ask_for_the_full_context():
    result = size(gpu_memory_mib=[24564])  # RTX 4090 / L4-class card
    assert result["errors"] == []
    assert result["max_model_len"] < 262_144
    # What is asked for fits: weights + KV of max_model_len + overhead <= 90 % of the card.
    used = QWEN3_4B_WEIGHTS + result["max_model_len"] * 147_456 + 2048 * 2**20
    assert used <= 24564 * 2**20 * 0.9
    assert result["max_model_len"] % 16 == 0
    assert 60_000 < result["max_model_len"] < 100_000


def test_80gb_card_gets_the_full_context():
    result = size(gpu_memory_mib=[81559])  # H100 80GB
    assert result["errors"] == []
    assert result["max_model_len"] == 262_144
    assert result["fits_tokens"] > 262_144


def test_requested_context_that_does_not_fit_fails_with_both_numbers_when_not_fitting():
    result = size(gpu_memory_mib=[24564], requested=262_144, fit=False)
    assert len(result["errors"]) == 1
    message = result["errors"][0]
    assert "262144 tokens" in message and "38.65 GB" in message
    assert f"only {result['fits_tokens']} tokens" in message


def test_context_below_the_minimum_fails_before_start():
    result = size(gpu_memory_mib=[16384], gpu_memory_utilization=0.6, min_model_len=32_768)
    assert result["errors"] and "less than vllm_min_model_len 32768" in result["errors"][0]
    assert "262144 tokens" in result["errors"][0]


def test_weights_larger_than_the_card_fail_with_both_numbers():
    result = size(gpu_memory_mib=[8192])
    assert result["errors"] and "no memory left for the KV cache" in result["errors"][0]
    assert "38.65 GB" in result["errors"][0]


def test_requested_context_is_kept_when_it_fits():
    result = size(gpu_memory_mib=[24564], requested=32_768)
    assert result["max_model_len"] == 32_768 and result["errors"] == []


def test_requested_context_is_capped_at_the_models_maximum():
    result = size(gpu_memory_mib=[81559 * 2], requested=1_000_000)
    assert result["max_model_len"] == 262_144


def test_tensor_parallel_size_is_the_gpu_count_unless_set():
    assert size(gpu_memory_mib=[24564] * 4)["tensor_parallel_size"] == 4
    assert size(gpu_memory_mib=[24564] * 4, tensor_parallel_size=2)["tensor_parallel_size"] == 2
    assert size(gpu_memory_mib=[24564], tensor_parallel_size=2)["errors"]


def test_tensor_parallel_splits_weights_and_kv_heads():
    one = size(gpu_memory_mib=[24564])
    two = size(gpu_memory_mib=[24564, 24564])
    assert two["kv_bytes_per_token"] == 147_456 // 2
    assert two["fits_tokens"] > 2 * one["fits_tokens"]  # the weights are split too


def test_the_smallest_gpu_bounds_every_shard():
    mixed = size(gpu_memory_mib=[81559, 24564])
    assert mixed["fits_tokens"] == size(gpu_memory_mib=[24564, 24564])["fits_tokens"]


def test_fp8_kv_cache_halves_the_bytes_per_token():
    assert vllm.kv_bytes_per_token(QWEN3_4B, kv_cache_dtype="fp8")[0] == 73_728


def test_unknown_dtype_is_a_clear_error():
    result = size(gpu_memory_mib=[81559], dtype="bfloat17")
    assert result["errors"] == ["unknown dtype 'bfloat17' (known: bfloat16, float, float16, float32, "
                                "fp8, fp8_e4m3, fp8_e5m2, fp8_inc, half)"]
    config = dict(QWEN3_4B, torch_dtype="int3")
    assert "unknown dtype 'int3'" in size(config, gpu_memory_mib=[81559])["errors"][0]


def test_config_without_dtype_or_fields_is_a_clear_error():
    no_dtype = {k: v for k, v in QWEN3_4B.items() if k != "torch_dtype"}
    assert "declares no torch_dtype" in size(no_dtype, gpu_memory_mib=[81559])["errors"][0]
    assert "dtype" not in {k for k in size(no_dtype, gpu_memory_mib=[81559], dtype="bfloat16")["errors"]}
    broken = {k: v for k, v in QWEN3_4B.items() if k != "num_hidden_layers"}
    assert "num_hidden_layers" in size(broken, gpu_memory_mib=[81559])["errors"][0]
    assert size({}, gpu_memory_mib=[81559])["errors"] == ["config.json is empty or not a JSON object"]


def test_newer_configs_with_dtype_and_text_config_are_read():
    nested = {"architectures": ["X"], "text_config": dict(QWEN3_4B, torch_dtype=None), "dtype": "bfloat16"}
    assert vllm.kv_bytes_per_token(nested)[0] == 147_456


def test_cuda_without_gpu_facts_fails():
    assert "no GPU memory is known" in size(gpu_memory_mib=[])["errors"][0]


def test_cpu_sizes_from_the_kv_cache_bytes():
    result = vllm.vllm_context(TINY, device="cpu", cpu_kv_cache_bytes="256M", requested=2048)
    assert result["kv_bytes_per_token"] == 2 * 2 * 32 * 2 * 2  # 512
    assert result["kv_budget_bytes"] == 256 * 2**20
    assert result["fits_tokens"] == 524_288
    assert result["max_model_len"] == 2048
    small = vllm.vllm_context(TINY, device="cpu", cpu_kv_cache_bytes="1M", requested=4096, fit=False)
    assert small["errors"] and "only 2048 tokens" in small["errors"][0]


def test_cpu_qwen3_4b_with_4g_of_kv_cache():
    result = vllm.vllm_context(QWEN3_4B, device="cpu", cpu_kv_cache_bytes="4G")
    assert result["max_model_len"] == 4 * 2**30 // 147_456 // 16 * 16  # 29,120 tokens


@pytest.mark.parametrize("text,expected", [("256M", 256 * 2**20), ("4G", 4 * 2**30), ("1.5GiB", 3 * 2**29),
                                           (1024, 1024), ("512", 512), ("2 gb", 2 * 2**30)])
def test_sizes_are_read_in_powers_of_1024(text, expected):
    assert vllm.vllm_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "G", "12X", True])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError):
        vllm.vllm_bytes(text)
