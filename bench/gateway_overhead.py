#!/usr/bin/env python3
"""Benchmark: chat throughput and median latency through the TLS gateway vs
straight to vLLM, at a fixed concurrency, on a sandbox host converged with
site.yml (default: the `make demo` container). Prints its figures; asserts
nothing (goal: gateway >= 0.95x the direct throughput, <= 5 ms added median
latency).

Both ways run the same client code on this machine: "direct" inside the
host's network namespace (nsenter -n) against vLLM on 127.0.0.1:8000 over
plain HTTP, "gateway" from this machine (in api_client_cidrs) against
https://<host>/ verified with the project's CA. Each worker keeps one
connection open. Rounds alternate between the two ways so drift hits both.
The API key goes to the workers in the environment, never in argv.

The gateway's per-client API rate limit (gateway_api_rate, 10 r/s by
default) would turn most of this load into 429s: the script raises it for the
run by re-running playbooks/gateway.yml with a high limit, and restores the
inventory's setting afterwards (--keep-rate-limit to measure as configured).

Usage: bench/gateway_overhead.py [--container llm-demo] [--concurrency 8]
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
    parser.add_argument("--keep-rate-limit", action="store_true", help="do not lift the API rate limit")
    parser.add_argument("--direct-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.direct_worker:  # inside the host's network namespace
        result = load("127.0.0.1", 8000, None, os.environ["BENCH_API_KEY"], args.concurrency, args.requests,
                      args.max_tokens)
        print(json.dumps(result))
        return 0

    os.environ.setdefault("CONTAINERS_CONF", str(PROJECT / "sandbox" / "containers.conf"))
    key = (Path(args.secrets) / "vllm-api-key").read_text().strip()
    ca = str(Path(args.secrets) / "gateway-ca.crt")
    inspect = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
                              args.container], capture_output=True, text=True, check=True).stdout.split()
    pid, address = inspect[0], inspect[1]

    def direct() -> dict:
        proc = subprocess.run(["nsenter", "-t", pid, "-n", sys.executable, __file__, "--direct-worker",
                               "--concurrency", str(args.concurrency), "--requests", str(args.requests),
                               "--max-tokens", str(args.max_tokens)],
                              capture_output=True, text=True, check=False, env={**os.environ, "BENCH_API_KEY": key})
        if proc.returncode != 0:
            raise SystemExit(f"direct run failed: {proc.stderr[-500:]}")
        return json.loads(proc.stdout)

    def gateway() -> dict:
        return load(address, 443, ca, key, args.concurrency, args.requests, args.max_tokens)

    def gateway_play(*extra: str) -> None:
        subprocess.run(["ansible-playbook", "-i", args.inventory, str(PROJECT / "playbooks" / "gateway.yml"),
                        *extra], check=True, stdout=subprocess.DEVNULL, cwd=PROJECT,
                       env={**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")})

    if not args.keep_rate_limit:
        print("lifting the gateway's API rate limit for the run", flush=True)
        gateway_play("-e", "gateway_api_rate=100000r/s", "-e", "gateway_api_burst=100000")
    try:
        return measure(args, direct, gateway, address)
    finally:
        if not args.keep_rate_limit:
            print("restoring the gateway's settings", flush=True)
            gateway_play()


def measure(args, direct, gateway, address) -> int:
    print(f"host {args.container} ({address}); concurrency {args.concurrency}, {args.requests} requests "
          f"of {args.max_tokens} tokens per run, {args.rounds} rounds", flush=True)
    gateway()  # warm-up: TLS session, caches
    runs: dict[str, list[dict]] = {"direct": [], "gateway": []}
    for _ in range(args.rounds):
        for name, run in (("direct", direct), ("gateway", gateway)):
            runs[name].append(run())
            r = runs[name][-1]
            print(f"  {name:8s} {r['tokens_per_s']:8.1f} tok/s  median {r['median_ms']:7.1f} ms  "
                  f"p90 {r['p90_ms']:7.1f} ms", flush=True)
    tput = {n: statistics.median(r["tokens_per_s"] for r in v) for n, v in runs.items()}
    median = {n: statistics.median(r["median_ms"] for r in v) for n, v in runs.items()}
    print(f"\nthroughput gateway/direct: {tput['gateway'] / tput['direct']:.3f}  (goal >= 0.95)")
    print(f"median latency added by the gateway: {median['gateway'] - median['direct']:+.1f} ms  (goal <= 5 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
