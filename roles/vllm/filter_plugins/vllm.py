"""Context sizing for the vllm role, in one place that unit tests import
directly (tests/unit/test_vllm_context.py).

vllm_context(config, ...) works out, before the service is touched, how many
tokens of KV cache the host can hold and which --max-model-len to ask for:

    KV bytes per token = layers x KV heads x head dim x 2 (K and V) x dtype size

    GPU: budget per GPU = memory x gpu_memory_utilization - weights / TP - overhead
    CPU: budget         = vllm_cpu_kv_cache_bytes (--kv-cache-memory-bytes)

    max_model_len = min(requested, model maximum, tokens that fit)

Problems come back as sentences in result.errors (the role fails with them),
so a wrong model path, an unknown dtype or a context that cannot fit stops the
play with both numbers instead of a crash loop after start.
"""

from __future__ import annotations

import math

# Bytes per element of the KV cache for the dtypes vLLM accepts.
DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "fp8_inc": 1,
}
# vLLM allocates the KV cache in blocks of 16 tokens: ask for whole blocks.
BLOCK_TOKENS = 16
MIB = 1024 * 1024

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": MIB, "mb": MIB, "mib": MIB,
          "g": 1024 * MIB, "gb": 1024 * MIB, "gib": 1024 * MIB, "t": 1024 ** 4, "tb": 1024 ** 4,
          "tib": 1024 ** 4}


def vllm_bytes(value):
    """Bytes from an int or a size such as '256M', '4GiB', '1.5G' (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    if not number or unit not in _UNITS:
        raise ValueError(f"not a size: {value!r} (use a number of bytes or e.g. 256M, 4G)")
    return int(float(number) * _UNITS[unit])


def _model_dtype(config):
    """The dtype a checkpoint's config.json declares (transformers writes
    torch_dtype, newer releases dtype; multimodal configs keep it in text_config)."""
    for source in (config, config.get("text_config") or {}):
        for key in ("torch_dtype", "dtype"):
            if source.get(key):
                return str(source[key]).replace("torch.", "")
    return None


def kv_bytes_per_token(config, dtype="auto", kv_cache_dtype="auto", tensor_parallel_size=1):
    """(bytes of KV cache one token needs on one GPU, resolved dtype, errors).

    With tensor parallelism the KV heads are split across the GPUs; a GPU holds
    at least one head (heads are replicated when there are more GPUs than heads)."""
    errors = []
    text = config.get("text_config") or config
    try:
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
    except (KeyError, TypeError, ValueError) as exc:
        return None, None, [f"config.json lacks a usable {exc} (need num_hidden_layers, "
                            "num_attention_heads, num_key_value_heads, head_dim or hidden_size)"]
    if min(layers, heads, kv_heads, head_dim) <= 0:
        errors.append("config.json has a zero or negative layer/head/head_dim count")

    resolved = _model_dtype(config) if str(dtype) == "auto" else str(dtype)
    if resolved is None:
        errors.append("config.json declares no torch_dtype: set vllm_dtype (e.g. bfloat16)")
    elif resolved not in DTYPE_BYTES:
        errors.append(f"unknown dtype '{resolved}' (known: {', '.join(sorted(DTYPE_BYTES))})")
    cache = resolved if str(kv_cache_dtype) == "auto" else str(kv_cache_dtype)
    if cache is not None and cache not in DTYPE_BYTES and resolved in DTYPE_BYTES:
        errors.append(f"unknown KV cache dtype '{cache}' (known: {', '.join(sorted(DTYPE_BYTES))})")
    if errors:
        return None, resolved, errors

    kv_heads_per_gpu = max(1, math.ceil(kv_heads / max(1, int(tensor_parallel_size))))
    return layers * kv_heads_per_gpu * head_dim * 2 * DTYPE_BYTES[cache], resolved, []


def vllm_context(config, requested=0, device="cuda", gpu_memory_mib=None,
                 gpu_memory_utilization=0.9, tensor_parallel_size=0, weights_bytes=0,
                 overhead_mib=2048, cpu_kv_cache_bytes="4G", dtype="auto",
                 kv_cache_dtype="auto", min_model_len=1, fit=True):
    """Choose --max-model-len and --tensor-parallel-size for this host.

    config: the staged model's config.json (dict). requested: wanted context
    in tokens, 0 = the model's maximum. gpu_memory_mib: MiB per GPU (the
    nvidia_driver role's facts). tensor_parallel_size: 0 = every GPU.
    weights_bytes: size of the *.safetensors files. overhead_mib: per GPU,
    what vLLM needs besides weights and KV cache (activations, CUDA graphs,
    CUDA context). fit: lower the context to what fits (true) or fail (false).
    """
    result = {"errors": [], "kv_bytes_per_token": None, "kv_budget_bytes": None,
              "fits_tokens": None, "max_model_len": None, "requested": None,
              "model_max_len": None, "tensor_parallel_size": 1, "dtype": None}
    errors = result["errors"]
    if not isinstance(config, dict) or not config:
        errors.append("config.json is empty or not a JSON object")
        return result

    text = config.get("text_config") or config
    model_max = text.get("max_position_embeddings")
    result["model_max_len"] = int(model_max) if model_max else None
    requested = int(requested or 0) or result["model_max_len"]
    if not requested:
        errors.append("config.json has no max_position_embeddings: set vllm_max_model_len")
        return result
    if result["model_max_len"] and requested > result["model_max_len"]:
        requested = result["model_max_len"]
    result["requested"] = requested

    if device == "cuda":
        memory = [int(m) for m in (gpu_memory_mib or []) if int(m) > 0]
        if not memory:
            errors.append("vllm_device is cuda but no GPU memory is known (the nvidia_driver "
                          "role's nvidia_driver_gpu_memory_mib fact is missing or empty)")
            return result
        tp = int(tensor_parallel_size or 0) or len(memory)
        if tp > len(memory):
            errors.append(f"tensor parallel size {tp} is larger than the {len(memory)} GPU(s) on the host")
            return result
        if not 0 < float(gpu_memory_utilization) <= 1:
            errors.append(f"gpu_memory_utilization {gpu_memory_utilization} is not in (0, 1]")
            return result
        # The smallest of the GPUs used bounds every shard.
        per_gpu = min(memory[:tp]) * MIB
        budget = int(per_gpu * float(gpu_memory_utilization) - int(weights_bytes) / tp
                     - int(overhead_mib) * MIB)
        where = (f"{tp} GPU(s) of {min(memory[:tp])} MiB x {gpu_memory_utilization} "
                 f"- weights {int(weights_bytes) / 1e9:.2f} GB - overhead {int(overhead_mib)} MiB per GPU")
    elif device == "cpu":
        tp = 1
        budget = vllm_bytes(cpu_kv_cache_bytes)
        where = f"vllm_cpu_kv_cache_bytes {cpu_kv_cache_bytes}"
    else:
        errors.append(f"unknown device '{device}' (cuda or cpu)")
        return result
    result["tensor_parallel_size"] = tp

    per_token, resolved, dtype_errors = kv_bytes_per_token(config, dtype, kv_cache_dtype, tp)
    result["dtype"] = resolved
    if dtype_errors:
        errors.extend(dtype_errors)
        return result
    result["kv_bytes_per_token"] = per_token
    result["kv_budget_bytes"] = max(0, budget)

    if budget <= 0:
        errors.append(f"no memory left for the KV cache: {where} = {budget / 1e9:.2f} GB; "
                      f"the requested {requested} tokens need {requested * per_token / 1e9:.2f} GB")
        return result
    fits = budget // per_token // BLOCK_TOKENS * BLOCK_TOKENS
    result["fits_tokens"] = fits
    chosen = min(requested, fits)
    if requested > fits and not fit:
        errors.append(f"the requested context of {requested} tokens needs "
                      f"{requested * per_token / 1e9:.2f} GB of KV cache ({per_token} bytes/token), "
                      f"but only {fits} tokens ({budget / 1e9:.2f} GB) fit: {where}")
    elif chosen < int(min_model_len):
        errors.append(f"only {fits} tokens of context fit ({budget / 1e9:.2f} GB of KV cache at "
                      f"{per_token} bytes/token: {where}), less than vllm_min_model_len "
                      f"{int(min_model_len)}; the requested context was {requested} tokens "
                      f"({requested * per_token / 1e9:.2f} GB)")
    result["max_model_len"] = chosen
    return result


class FilterModule:
    """Ansible filters of the vllm role."""

    def filters(self):
        return {"vllm_context": vllm_context, "vllm_bytes": vllm_bytes}
