#!/usr/bin/env python3
"""Benchmark: what the TLS gateway costs an API client, on a sandbox host
converged with site.yml (default: the `make demo` container). Prints its
figures; asserts nothing. Goals: gateway/direct throughput >= 0.95 and added
median latency <= 5 ms at 8 concurrent clients. Run it on a quiet machine
(nothing else running): the clients, nginx and vLLM share its cores.

Both ways run from the same client process, inside the host's network
namespace (nsenter -n), so neither pays a network the other does not:
"direct" is vLLM on 127.0.0.1:8000 over plain HTTP with vLLM's key;
"gateway" is nginx on the host's address, port 443, over TLS verified with
the project's CA, with an API client's key (nginx maps it to the client's
name, checks its networks and rates, writes the usage audit log line with
the token counts it reads from the reply, and presents vLLM's key).

Two measurements, each repeated (--rounds) and printed round by round with
the spread, for two gateway set-ups: per-client keys (the inventory's
gateway_api_clients, client `app`) and one key for all (gateway_api_clients
empty: the client sends vLLM's key):

- latency: every worker keeps one connection each way and alternates them
  request by request (direct, gateway, direct, ...): chat completions of one
  token, so the model's own time is short and both ways see the same load;
  the added median latency is gateway minus direct.
- throughput: all workers generate (--max-tokens, ignore_eos) one way, then
  the other, in short slices (--slices of --slice-seconds each way, in the
  order D G G D D G ...: drift and the engine's slow swings between batching
  states hit both ways alike); completion tokens per second over the
  round's slices, gateway/direct.

With --pin, vLLM's processes (every thread) get CPU 0 and nginx's and the
measuring process CPU 1, for the run: on a 2-core machine vLLM's CPU engine
otherwise competes with nginx and the client's TLS for the same cores, which
a GPU host's model does not; pinned, the throughput ratio shows what the
gateway costs the clients, not what it takes from a CPU model. The
affinities are set back to every CPU afterwards.

For the run the script lifts the gateway's rate limits and adds the host's
own address to the API networks, by re-running playbooks/gateway.yml, and
restores the inventory's settings afterwards. Keys reach the measuring
process in the environment, never in argv.

Usage: bench/gateway_overhead.py [--container llm-demo] [--concurrency 8] [--rounds 3]
                                 [--latency-requests 40] [--slices 6] [--slice-seconds 5]
                                 [--max-tokens 48] [--pin]
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
MODEL = "Qwen3-4B-Instruct-2507"


class Way:
    """One way to vLLM: a connection factory and the key to send."""

    def __init__(self, address: str | None, ca: str | None, key: str):
        self.address, self.key = address, key
        self.context = ssl.create_default_context(cafile=ca) if ca else None

    def connect(self) -> http.client.HTTPConnection:
        if self.context:
            return http.client.HTTPSConnection(self.address, 443, context=self.context, timeout=120)
        return http.client.HTTPConnection("127.0.0.1", 8000, timeout=120)

    def chat(self, conn: http.client.HTTPConnection, max_tokens: int) -> int:
        """One chat completion; returns its completion tokens."""
        body = json.dumps({"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                           "messages": [{"role": "user", "content": "Count to ten."}]})
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)["usage"]["completion_tokens"]


def latency_round(direct: Way, gateway: Way, concurrency: int, requests: int) -> dict:
    """Each worker alternates direct and gateway requests of one token."""

    def worker(first: int) -> tuple[list[float], list[float]]:
        ways = [(direct, direct.connect(), []), (gateway, gateway.connect(), [])]
        for number in range(2 * requests):
            way, conn, times = ways[(number + first) % 2]
            start = time.perf_counter()
            way.chat(conn, 1)
            times.append(time.perf_counter() - start)
        for _, conn, _ in ways:
            conn.close()
        return ways[0][2], ways[1][2]

    with ThreadPoolExecutor(concurrency) as pool:
        parts = list(pool.map(worker, [i % 2 for i in range(concurrency)]))
    d = [t for part in parts for t in part[0]]
    g = [t for part in parts for t in part[1]]
    return {"direct_ms": statistics.median(d) * 1000, "gateway_ms": statistics.median(g) * 1000}


def throughput(way: Way, concurrency: int, seconds: float, max_tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds taken) with `concurrency` workers for `seconds`."""
    stop = time.perf_counter() + seconds
    totals, lock = [0], threading.Lock()

    def worker(_: int) -> None:
        conn = way.connect()
        while time.perf_counter() < stop:
            tokens = way.chat(conn, max_tokens)
            with lock:
                totals[0] += tokens
        conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return totals[0], time.perf_counter() - start


def throughput_round(direct: Way, gateway: Way, args) -> tuple[float, float]:
    """Tokens per second (direct, gateway) over --slices slices each way, ABBA order."""
    done = {id(direct): [0, 0.0], id(gateway): [0, 0.0]}
    for number in range(args.slices):
        pair = (direct, gateway) if number % 2 == 0 else (gateway, direct)
        for way in pair:
            tokens, seconds = throughput(way, args.concurrency, args.slice_seconds, args.max_tokens)
            done[id(way)][0] += tokens
            done[id(way)][1] += seconds
    return tuple(done[id(way)][0] / done[id(way)][1] for way in (direct, gateway))


def unit_pids(container_id: str, unit: str) -> list[int]:
    """PIDs (seen from this machine) of a systemd unit inside the container."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if container_id in cgroups and f"/{unit}" in cgroups:
            pids.append(int(entry.name))
    return pids


def pin(container_id: str, cpus: dict[str, str]) -> None:
    """taskset every thread of each unit's processes to its CPU list."""
    for unit, cpu_list in cpus.items():
        pids = unit_pids(container_id, unit)
        if not pids:
            raise SystemExit(f"no process of {unit} found in the container")
        for process in pids:
            subprocess.run(["taskset", "-a", "-p", "-c", cpu_list, str(process)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(args) -> None:
    """Inside the host's network namespace: one set-up, every round; prints JSON."""
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    direct = Way(None, None, os.environ["BENCH_VLLM_KEY"])
    gateway = Way(args.address, args.ca, os.environ["BENCH_GATEWAY_KEY"])
    latency_round(direct, gateway, args.concurrency, 4)  # warm-up: connections, caches
    rounds = []
    for _ in range(args.rounds):
        lat = latency_round(direct, gateway, args.concurrency, args.latency_requests)
        direct_tps, gateway_tps = throughput_round(direct, gateway, args)
        rounds.append({**lat, "direct_tps": direct_tps, "gateway_tps": gateway_tps})
        print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    print(json.dumps(rounds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--container", default="llm-demo")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=40,
                        help="one-token requests each worker sends each way per round")
    parser.add_argument("--slices", type=int, default=6, help="throughput slices each way per round")
    parser.add_argument("--slice-seconds", type=float, default=5, help="length of one throughput slice")
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens per request in the throughput runs")
    parser.add_argument("--secrets", default=str(PROJECT / "secrets" / "sandbox"),
                        help="the inventory's secrets store (API keys, gateway CA)")
    parser.add_argument("--inventory", default=str(PROJECT / "inventory" / "sandbox" / "hosts.yml"))
    parser.add_argument("--client", default="app", help="the API client (gateway_api_clients) to send as")
    parser.add_argument("--pin", action="store_true",
                        help="vLLM on CPU 0, nginx and the clients on CPU 1 (see above)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client-cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args)
        return 0

    os.environ.setdefault("CONTAINERS_CONF", str(PROJECT / "sandbox" / "containers.conf"))
    secrets = Path(args.secrets)
    vllm_key = (secrets / "vllm-api-key").read_text().strip()
    client_key = (secrets / "api-clients" / args.client).read_text().strip()
    ca = str(secrets / "gateway-ca.crt")
    pid, address, container_id = subprocess.run(
        ["podman", "inspect", "-f", "{{.State.Pid}} {{.NetworkSettings.IPAddress}} {{.Id}}", args.container],
        capture_output=True, text=True, check=True).stdout.split()
    every_cpu = f"0-{os.cpu_count() - 1}"
    cidrs = subprocess.run(["ansible", "-i", args.inventory, args.container, "-m", "ansible.builtin.debug",
                            "-a", "var=api_client_cidrs"], capture_output=True, text=True, check=True,
                           cwd=PROJECT).stdout
    cidrs = json.loads(cidrs[cidrs.index("{"):])["api_client_cidrs"]

    def gateway_play(*extra: str) -> None:
        subprocess.run(["ansible-playbook", "-i", args.inventory, str(PROJECT / "playbooks" / "gateway.yml"),
                        *extra], check=True, stdout=subprocess.DEVNULL, cwd=PROJECT,
                       env={**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")})

    open_up = {"gateway_api_rate": "100000r/s", "gateway_api_burst": 100000,
               "gateway_api_client_rate": "100000r/s", "gateway_api_client_burst": 100000,
               "api_client_cidrs": [*cidrs, f"{address}/32"]}
    setups = [("per-client keys", client_key, open_up),
              ("one key for all", vllm_key, {**open_up, "gateway_api_clients": []})]
    print(f"host {args.container} ({address}); {args.concurrency} concurrent clients; {args.rounds} rounds; "
          f"{'vLLM on CPU 0, nginx and the clients on CPU 1; ' if args.pin else ''}"
          f"latency: {args.latency_requests} one-token chats per client each way, alternated; "
          f"throughput: {args.slices} slices of {args.slice_seconds:g} s each way of {args.max_tokens}-token "
          f"chats, alternated", flush=True)
    summary = []
    try:
        for label, key, extra in setups:
            print(f"\n{label}: configuring the gateway", flush=True)
            gateway_play("-e", json.dumps(extra))
            if args.pin:
                pin(container_id, {"vllm.service": "0", "nginx.service": "1"})
            proc = subprocess.run(["nsenter", "-t", pid, "-n", sys.executable, __file__, "--measure",
                                   *(["--client-cpu", "1"] if args.pin else []),
                                   "--address", address, "--ca", ca, "--concurrency", str(args.concurrency),
                                   "--rounds", str(args.rounds), "--latency-requests", str(args.latency_requests),
                                   "--slices", str(args.slices), "--slice-seconds", str(args.slice_seconds),
                                   "--max-tokens", str(args.max_tokens)],
                                  stdout=subprocess.PIPE, text=True, check=False,
                                  env={**os.environ, "BENCH_VLLM_KEY": vllm_key, "BENCH_GATEWAY_KEY": key})
            if proc.returncode != 0:
                raise SystemExit(f"{label}: the measuring process failed")
            rounds = json.loads(proc.stdout)
            for number, r in enumerate(rounds, 1):
                print(f"  round {number}: latency direct {r['direct_ms']:6.1f} ms, gateway {r['gateway_ms']:6.1f} ms "
                      f"(added {r['gateway_ms'] - r['direct_ms']:+5.1f}) | throughput direct "
                      f"{r['direct_tps']:6.1f} tok/s, gateway {r['gateway_tps']:6.1f} tok/s "
                      f"(ratio {r['gateway_tps'] / r['direct_tps']:.3f})", flush=True)
            summary.append((label, rounds))
    finally:
        print("\nrestoring the gateway's settings", flush=True)
        if args.pin:
            pin(container_id, {"vllm.service": every_cpu, "nginx.service": every_cpu})
        gateway_play()
    print("\nsummary: median of the rounds (spread: lowest to highest round)")
    for label, rounds in summary:
        added = [r["gateway_ms"] - r["direct_ms"] for r in rounds]
        ratio = [r["gateway_tps"] / r["direct_tps"] for r in rounds]
        print(f"  {label:16s} added median latency {statistics.median(added):+.1f} ms "
              f"({min(added):+.1f} to {max(added):+.1f});  throughput gateway/direct "
              f"{statistics.median(ratio):.3f} ({min(ratio):.3f} to {max(ratio):.3f})")
    print("goals: added median latency <= 5 ms, throughput ratio >= 0.95")
    return 0


if __name__ == "__main__":
    sys.exit(main())
