#!/usr/bin/env python3
"""Benchmark: chat throughput and median latency through the TLS gateway vs
straight to vLLM, at a fixed concurrency, on a sandbox host converged with
site.yml (default: the `make demo` container). Prints its figures; asserts
nothing (goal: gateway >= 0.95x the direct throughput, <= 5 ms added median
latency). Run it on a quiet machine: the gateway and vLLM share its cores.

Two phases in one run: the gateway with per-client API keys (the
inventory's gateway_api_clients; the client `app` by default: nginx maps its
key to a name and presents vLLM's key) and with one key for all
(gateway_api_clients empty: the client sends vLLM's key, nginx passes it on).
In each phase rounds alternate between "direct" and "gateway" so drift hits
both; each round's ratio and added latency are printed, and their spread.

Both ways run the same client code on this machine: "direct" inside the
host's network namespace (nsenter -n) against vLLM on 127.0.0.1:8000 over
plain HTTP, "gateway" from this machine (in api_client_cidrs) against
https://<host>/ verified with the project's CA (so "gateway" also pays the
podman bridge). Each worker keeps one connection open. Keys go to the
workers in the environment, never in argv.

The gateway's API rate limits (gateway_api_rate per address, a client's own
rate) would turn most of this load into 429s: the script raises them for the
run by re-running playbooks/gateway.yml, and restores the inventory's
settings afterwards (--keep-rate-limit to measure as configured).

Usage: bench/gateway_overhead.py [--container llm-demo] [--client app] [--concurrency 8]
                                 [--requests 64] [--rounds 3] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODEL = "Qwen3-4B-Instruct-2507"


def load(url_host: str, port: int, tls_ca: str | None, key: str, concurrency: int, requests: int,
         max_tokens: int) -> dict:
    """Send `requests` chat completions over `concurrency` kept-alive
    connections; returns throughput (completion tokens/s) and latencies."""
    body = json.dumps({"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                       "messages": [{"role": "user", "content": "Count to ten."}]})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    context = ssl.create_default_context(cafile=tls_ca) if tls_ca else None

    def worker(count: int) -> list[tuple[float, int]]:
        if context:
            conn = http.client.HTTPSConnection(url_host, port, context=context, timeout=120)
        else:
            conn = http.client.HTTPConnection(url_host, port, timeout=120)
        results = []
        for _ in range(count):
            start = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - start
            if response.status != 200:
                raise SystemExit(f"HTTP {response.status}: {data[:200]!r}")
            results.append((elapsed, json.loads(data)["usage"]["completion_tokens"]))
        conn.close()
        return results

    shares = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        done = [r for part in pool.map(worker, shares) for r in part]
    wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in done)
    return {"tokens_per_s": sum(r[1] for r in done) / wall, "median_ms": statistics.median(latencies) * 1000,
            "p90_ms": latencies[int(len(latencies) * 0.9) - 1] * 1000, "requests": len(done)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--container", default="llm-demo")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--secrets", default=str(PROJECT / "secrets" / "sandbox"),
                        help="the inventory's secrets store (API key, gateway CA)")
    parser.add_argument("--inventory", default=str(PROJECT / "inventory" / "sandbox" / "hosts.yml"))
    parser.add_argument("--client", default="app", help="the API client (gateway_api_clients) to send as")
    parser.add_argument("--keep-rate-limit", action="store_true", help="do not lift the API rate limits")
    parser.add_argument("--direct-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.direct_worker:  # inside the host's network namespace
        result = load("127.0.0.1", 8000, None, os.environ["BENCH_API_KEY"], args.concurrency, args.requests,
                      args.max_tokens)
        print(json.dumps(result))
        return 0

    os.environ.setdefault("CONTAINERS_CONF", str(PROJECT / "sandbox" / "containers.conf"))
    vllm_key = (Path(args.secrets) / "vllm-api-key").read_text().strip()
    client_key = (Path(args.secrets) / "api-clients" / args.client).read_text().strip()
    ca = str(Path(args.secrets) / "gateway-ca.crt")
    inspect = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
                              args.container], capture_output=True, text=True, check=True).stdout.split()
    pid, address = inspect[0], inspect[1]

    def direct() -> dict:
        proc = subprocess.run(["nsenter", "-t", pid, "-n", sys.executable, __file__, "--direct-worker",
                               "--concurrency", str(args.concurrency), "--requests", str(args.requests),
                               "--max-tokens", str(args.max_tokens)],
                              capture_output=True, text=True, check=False,
                              env={**os.environ, "BENCH_API_KEY": vllm_key})
        if proc.returncode != 0:
            raise SystemExit(f"direct run failed: {proc.stderr[-500:]}")
        return json.loads(proc.stdout)

    def gateway_with(key: str):
        return lambda: load(address, 443, ca, key, args.concurrency, args.requests, args.max_tokens)

    def gateway_play(*extra: str) -> None:
        subprocess.run(["ansible-playbook", "-i", args.inventory, str(PROJECT / "playbooks" / "gateway.yml"),
                        *extra], check=True, stdout=subprocess.DEVNULL, cwd=PROJECT,
                       env={**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")})

    lift = [] if args.keep_rate_limit else [
        "-e", json.dumps({"gateway_api_rate": "100000r/s", "gateway_api_burst": 100000,
                          "gateway_api_client_rate": "100000r/s", "gateway_api_client_burst": 100000})]
    phases = [("per-client keys", gateway_with(client_key), lift),
              ("one key for all", gateway_with(vllm_key), [*lift, "-e", json.dumps({"gateway_api_clients": []})])]
    print(f"host {args.container} ({address}); concurrency {args.concurrency}, {args.requests} requests "
          f"of {args.max_tokens} tokens per run, {args.rounds} rounds per phase", flush=True)
    summary = []
    try:
        for label, gateway, extra in phases:
            print(f"\n{label}: configuring the gateway", flush=True)
            gateway_play(*extra)
            summary.append((label, measure(args, direct, gateway)))
    finally:
        print("\nrestoring the gateway's settings", flush=True)
        gateway_play()
    print("\nsummary (median of the rounds; spread: lowest-highest round)")
    for label, figures in summary:
        print(f"  {label:16s} throughput gateway/direct {figures['ratio']:.3f} ({figures['ratio_spread']})  "
              f"added median latency {figures['added_ms']:+.1f} ms ({figures['added_spread']})")
    print("goals: throughput ratio >= 0.95, added median latency <= 5 ms")
    return 0


def measure(args, direct, gateway) -> dict:
    gateway()  # warm-up: TLS session, caches
    ratios, added = [], []
    for number in range(1, args.rounds + 1):
        d, g = direct(), gateway()
        ratios.append(g["tokens_per_s"] / d["tokens_per_s"])
        added.append(g["median_ms"] - d["median_ms"])
        print(f"  round {number}: direct {d['tokens_per_s']:7.1f} tok/s median {d['median_ms']:7.1f} ms | "
              f"gateway {g['tokens_per_s']:7.1f} tok/s median {g['median_ms']:7.1f} ms | "
              f"ratio {ratios[-1]:.3f}, added {added[-1]:+.1f} ms", flush=True)
    return {"ratio": statistics.median(ratios), "ratio_spread": f"{min(ratios):.3f}-{max(ratios):.3f}",
            "added_ms": statistics.median(added), "added_spread": f"{min(added):+.1f} to {max(added):+.1f} ms"}


if __name__ == "__main__":
    sys.exit(main())
