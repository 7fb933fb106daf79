#!/usr/bin/env python3
"""Benchmark: how long vLLM takes from start to its first real completion.

Compares, on one host converged with site.yml (default: the `make demo`
sandbox container):
  - start through systemd (the role's hardened unit) vs a bare
    `python -m vllm.entrypoints.openai.api_server` with the same flags, the
    same environment and the same user, both with a warm compile cache
    (goal: systemd / bare <= 1.1);
  - a start with a cold compile cache (cache directory emptied) vs warm.

"Ready" means a chat completion with the API key returned tokens (vLLM's
/health is liveness only). The key is read on the host from the root-only
environment file and never leaves it. The service is left running as found.
Prints a table and the ratios; not a test (no pass/fail on the figures).

Usage: bench/vllm_start.py [--container llm-demo] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

# Runs on the service host as root: one measurement, printed as JSON.
PROBE = r'''
import json, os, shlex, signal, subprocess, sys, time, urllib.request

mode = sys.argv[1]
UNIT = "vllm.service"

def show(prop):
    return subprocess.run(["systemctl", "show", "-P", prop, UNIT], capture_output=True, text=True).stdout.strip()

def env_file(path):
    values = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value.strip('"')
    return values

unit_text = open("/etc/systemd/system/vllm.service").read()
env_path = [l.split("=", 1)[1] for l in unit_text.splitlines() if l.startswith("EnvironmentFile=")][0]
secret_env = env_file(env_path)
key = secret_env["VLLM_API_KEY"]
port = 8000
for line in unit_text.splitlines():
    if line.startswith("ExecStart="):
        argv = shlex.split(line.split("=", 1)[1])
    elif line.startswith("WorkingDirectory="):
        workdir = line.split("=", 1)[1]
    elif line.startswith("User="):
        user = line.split("=", 1)[1]
if "--port" in argv:
    port = int(argv[argv.index("--port") + 1])
model = argv[argv.index("--served-model-name") + 1]

def ready():
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say OK."}],
                       "max_tokens": 2, "temperature": 0}).encode()
    req = urllib.request.Request("http://127.0.0.1:%d/v1/chat/completions" % port, data=body,
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200 and json.load(resp)["usage"]["completion_tokens"] > 0
    except Exception:
        return False

def wait_ready(limit=900):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if ready():
            return True
        time.sleep(0.25)
    return False

def stop_service():
    subprocess.run(["systemctl", "stop", UNIT], check=True)
    # wait until the port is free
    for _ in range(600):
        if subprocess.run(["sh", "-c", "ss -Hltn 'sport = :%d' | grep -q ." % port]).returncode != 0:
            return
        time.sleep(0.1)

if mode == "stop":
    stop_service()
    print(json.dumps({"ok": True}))
elif mode == "start":
    subprocess.run(["systemctl", "start", "--no-block", UNIT], check=True)
    print(json.dumps({"ok": wait_ready()}))
elif mode in ("systemd", "systemd-cold"):
    stop_service()
    if mode == "systemd-cold":
        cache = "/var/cache/vllm"
        subprocess.run(["sh", "-c", "rm -rf %s/* %s/.[!.]* 2>/dev/null; true" % (cache, cache)])
    t0 = time.monotonic()
    subprocess.run(["systemctl", "start", "--no-block", UNIT], check=True)
    ok = wait_ready()
    print(json.dumps({"ok": ok, "seconds": time.monotonic() - t0}))
elif mode == "bare":
    stop_service()
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for line in unit_text.splitlines():
        if line.startswith("Environment="):
            name, value = shlex.split(line.split("=", 1)[1])[0].split("=", 1)
            env[name] = value
    env.update(secret_env)  # the key travels in the environment, never in argv
    groups = show("SupplementaryGroups").split()
    cmd = ["setpriv", "--reuid", user, "--regid", user,
           "--groups", ",".join(groups) if groups else user, "--"] + argv
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ok = wait_ready()
    seconds = time.monotonic() - t0
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    print(json.dumps({"ok": ok, "seconds": seconds}))
'''


def measure(container: str, mode: str) -> dict:
    proc = subprocess.run(["podman", "exec", "-i", container, "python3", "-", mode],
                          input=PROBE, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{mode} run failed on {container}: {proc.stderr.strip()[-800:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        sys.exit(f"{mode} run: vLLM did not answer a completion on {container}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--container", default="llm-demo", help="podman container converged with site.yml")
    parser.add_argument("--runs", type=int, default=2, help="warm runs per way of starting")
    args = parser.parse_args()

    figures: dict[str, list[float]] = {"systemd, cold cache": [], "systemd, warm cache": [], "bare, warm cache": []}
    try:
        print(f"host: {args.container}; ready = first chat completion with tokens", flush=True)
        figures["systemd, cold cache"].append(measure(args.container, "systemd-cold")["seconds"])
        print(f"  systemd, cold cache: {figures['systemd, cold cache'][-1]:.1f} s", flush=True)
        for _ in range(args.runs):  # interleaved, so drift hits both ways alike
            for name, mode in (("systemd, warm cache", "systemd"), ("bare, warm cache", "bare")):
                figures[name].append(measure(args.container, mode)["seconds"])
                print(f"  {name}: {figures[name][-1]:.1f} s", flush=True)
    finally:
        measure(args.container, "start")  # leave the service running

    print("\nstart -> first completion (median of runs)")
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        runs = ", ".join(f"{v:.1f}" for v in figures[name])
        print(f"  {name:22s} {value:7.1f} s   ({runs})")
    ratio = medians["systemd, warm cache"] / medians["bare, warm cache"]
    print(f"systemd / bare (warm): {ratio:.2f}  (goal <= 1.1)")
    print(f"cold / warm (systemd): {medians['systemd, cold cache'] / medians['systemd, warm cache']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
