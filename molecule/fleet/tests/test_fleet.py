"""Scale-out: one gateway in front of two vLLM replicas (molecule/fleet).

The replicas serve vLLM to the gateway only, over mutual TLS; the gateway
balances across them and routes around one that stops; playbooks/update.yml
rolls through them while chats go on; playbooks/verify.yml smoke-tests the
whole path from the controller.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import testinfra
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared"))

import chatui  # noqa: E402  (path set just above)
import netprobe  # noqa: E402

# Every test here looks at the fleet as a whole, from the gateway's side.
testinfra_hosts = ["ansible://fleet-gw"]

PROJECT = Path(__file__).resolve().parents[3]
NODES = ["fleet-node1", "fleet-node2"]
REPLICA_PORT = 8443
MODEL = "Qwen3-4B-Instruct-2507"
USER = "demo"
BODY_DELAY = 0.3  # seconds between a request's headers and its body


def address_of(host) -> str:
    addresses = [a for a in host.interface("eth0").addresses if ":" not in a]
    assert addresses, "no IPv4 address on eth0"
    return addresses[0]


@pytest.fixture(scope="module")
def gw(host):
    return host


@pytest.fixture(scope="module")
def nodes(request):
    """The replicas, reached like the gateway: over SSH, as the inventory says."""
    inventory = request.config.option.ansible_inventory
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in NODES}


@pytest.fixture(scope="module")
def addresses(gw, nodes):
    return {"fleet-gw": address_of(gw), **{name: address_of(node) for name, node in nodes.items()}}


@pytest.fixture(scope="module")
def secrets_dir(gw):
    return Path(gw.ansible("debug", "var=llm_secrets_dir", check=False)["llm_secrets_dir"])


@pytest.fixture(scope="module")
def api(addresses, secrets_dir):
    """chat(max_tokens, key) -> HTTP status of one completion through the gateway
    (with the API client `app`'s key, inventory/sandbox/group_vars/gateways.yml,
    unless one is given)."""
    context = ssl.create_default_context(cafile=str(secrets_dir / "gateway-ca.crt"))

    def chat(max_tokens=8, timeout=120, key=None):
        key = key or (secrets_dir / "api-clients" / "app").read_text().strip()
        conn = http.client.HTTPSConnection(addresses["fleet-gw"], 443, context=context, timeout=timeout)
        try:
            body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello"}],
                               "max_tokens": max_tokens, "temperature": 0}).encode()
            conn.putrequest("POST", "/v1/chat/completions")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Authorization", "Bearer " + key)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            # The body follows the headers a moment later, as it may from any
            # client: the gateway has started on the request before it has
            # the body, and must still be able to resend it to another replica.
            time.sleep(BODY_DELAY)
            conn.send(body)
            response = conn.getresponse()
            payload = response.read()
            if response.status == 200 and not json.loads(payload)["choices"]:
                return -1
            return response.status
        except OSError as exc:
            return f"error:{exc.__class__.__name__}"
        finally:
            conn.close()

    return chat


def replica_lines(nodes) -> dict[str, int]:
    """Requests each replica's TLS listener has logged so far."""
    return {name: int(node.check_output("wc -l < /var/log/nginx/replica-access.log || echo 0") or 0)
            for name, node in nodes.items()}


def wait_until_vllm_answers(node, seconds=300):
    for _ in range(seconds // 3):
        if node.run("python3 -c %s", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=2)").rc == 0:
            return
        time.sleep(3)
    raise AssertionError(f"vLLM on {node.backend.hostname} did not come back within {seconds} s")


# Runs on the gateway: one request to a replica's TLS listener, checking the
# replica's certificate against the private CA, with or without the
# gateway's client certificate. Prints the HTTP status or the TLS error.
REPLICA_CLIENT = r"""
import http.client, ssl, sys
ctx = ssl.create_default_context(cafile="/etc/nginx/tls/internal-ca.crt")
if sys.argv[3] == "with-cert":
    ctx.load_cert_chain("/etc/nginx/tls/internal.crt", "/etc/nginx/tls/internal.key")
conn = http.client.HTTPSConnection(sys.argv[1], int(sys.argv[2]), context=ctx, timeout=10)
try:
    conn.request("GET", "/v1/models")
    print(conn.getresponse().status)
except ssl.SSLError as exc:
    print("ssl:" + str(exc.reason))
"""


def test_vllm_stays_on_loopback_and_each_replica_listens_with_tls_on_its_address(nodes, addresses):
    for name, node in nodes.items():
        assert node.socket("tcp://127.0.0.1:8000").is_listening, name
        assert not node.socket("tcp://0.0.0.0:8000").is_listening, name
        assert node.socket(f"tcp://{addresses[name]}:{REPLICA_PORT}").is_listening, name
        assert not node.socket("tcp://0.0.0.0:443").is_listening, f"{name} is no gateway"


@pytest.mark.parametrize("name", NODES)
def test_a_replica_answers_the_gateway_only_with_its_client_certificate(gw, addresses, name):
    def status(mode):
        return gw.check_output("python3 -c %s %s %s %s", REPLICA_CLIENT, addresses[name], str(REPLICA_PORT), mode)

    # 401: the request went through the listener to vLLM, which wants the key.
    assert status("with-cert") == "401"
    # 400: nginx answers a client without a certificate itself.
    assert status("without-cert") == "400"


@pytest.mark.parametrize("name", NODES)
def test_the_replica_port_is_closed_to_every_host_but_the_gateways(nodes, addresses, name):
    other = nodes[[n for n in NODES if n != name][0]]
    assert netprobe.probe_from(other, addresses[name], REPLICA_PORT) == "timeout"
    # This machine is admin and API client, but no gateway.
    assert netprobe.probe(addresses[name], REPLICA_PORT) == "timeout"


@pytest.mark.parametrize("name", NODES)
def test_the_firewall_opens_the_replica_port_to_the_gateway_address_only(nodes, addresses, name):
    rules = nodes[name].check_output("ufw status")
    allowed = [line for line in rules.splitlines() if line.startswith(f"{REPLICA_PORT}/tcp")]
    assert allowed and all(addresses["fleet-gw"] in line for line in allowed), rules
    assert not [line for line in rules.splitlines() if line.startswith("443/tcp")], "a replica opens 443"


def test_a_replica_drops_the_rule_of_a_gateway_no_longer_in_the_inventory(nodes, addresses):
    node = nodes["fleet-node2"]
    old_gateway, own = "192.0.2.50", "from 192.0.2.51 to any port 9100 proto tcp"
    node.run_expect([0], "ufw allow from %s to any port %s proto tcp comment 'llm: vllm replica from gateway'",
                    old_gateway, str(REPLICA_PORT))
    node.run_expect([0], f"ufw allow {own} comment 'node exporter'")
    try:
        run = ansible_playbook("site.yml", "--tags", "firewall", "--limit", "fleet-node2")
        assert run.returncode == 0, run.stdout[-3000:]
        # One change: the stale rule deleted; nothing re-added.
        assert re.search(r"^fleet-node2\s*:.*\bchanged=1\b", run.stdout, re.M), run.stdout[-3000:]
        rules = node.check_output("ufw show added")
        assert old_gateway not in rules
        assert f"ufw allow {own} comment 'node exporter'" in rules
        assert f"from {addresses['fleet-gw']} to any port {REPLICA_PORT} proto tcp" in rules
    finally:
        node.run(f"ufw delete allow {own}")
        node.run("ufw delete allow from %s to any port %s proto tcp", old_gateway, str(REPLICA_PORT))


def test_requests_are_spread_over_both_replicas(api, nodes):
    before = replica_lines(nodes)
    statuses = [api() for _ in range(8)]
    after = replica_lines(nodes)
    assert statuses == [200] * 8
    assert all(after[name] > before[name] for name in NODES), (before, after)


@contextlib.contextmanager
def stopped(node, unit):
    """The unit stopped on the node for the block, started again after it."""
    node.run_expect([0], "systemctl stop %s", unit)
    try:
        yield
    finally:
        node.run_expect([0], "systemctl start %s", unit)
        if unit == "vllm.service":
            wait_until_vllm_answers(node)


def test_a_replicas_vllm_stops_cleanly_and_api_chats_keep_working_meanwhile(api, nodes):
    with stopped(nodes["fleet-node1"], "vllm.service"):
        # A clean stop: systemd saw the unit's last process go, instead of
        # waiting out TimeoutStopSec and leaving the unit failed ("timeout").
        stop = nodes["fleet-node1"].check_output("systemctl show -p Result -p ActiveState vllm.service")
        assert dict(line.split("=", 1) for line in stop.splitlines()) == \
            {"Result": "success", "ActiveState": "inactive"}, stop
        assert [api() for _ in range(6)] == [200] * 6


def test_chainlit_chats_keep_working_while_a_replica_is_unreachable(addresses, secrets_dir, nodes):
    password = (secrets_dir / f"chainlit-user-{USER}").read_text().strip()
    with stopped(nodes["fleet-node2"], "nginx.service"):
        result = chatui.chat(f"https://{addresses['fleet-gw']}", USER, password, ["Hello", "And again"])
    assert result["login_status"] == 200
    assert len(result["tokens"]) == 2 and min(result["tokens"]) >= 2, result["tokens"]


def ansible_playbook(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(PROJECT / "roles"), "ANSIBLE_FORCE_COLOR": "false"}
    return subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], *args],
                          cwd=PROJECT, env=env, capture_output=True, text=True, timeout=1500)


def test_verify_playbook_prints_model_context_and_latency():
    run = ansible_playbook("playbooks/verify.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    assert f"model {MODEL}" in run.stdout and "context 2048 tokens" in run.stdout, run.stdout[-3000:]
    assert " ms" in run.stdout


def test_verify_playbook_fails_with_a_wrong_api_key():
    run = ansible_playbook("playbooks/verify.yml", "-e", "verify_api_key=not-the-key")
    assert run.returncode != 0


def started(node):
    return node.check_output("systemctl show -p ActiveEnterTimestampMonotonic --value vllm.service")


# Runs on a replica: the versioned venvs (roles/llm, entry point venv), each
# with the markers it holds, and where the link and the unit point.
VENVS = r"""
import json, os
root = "/opt/vllm/venvs"
unit = open("/etc/systemd/system/vllm.service").read()
print(json.dumps({
    "link": os.readlink("/opt/vllm/venv"),
    "venvs": {name: sorted(e for e in os.listdir(os.path.join(root, name)) if e.startswith(".llm-venv"))
              for name in os.listdir(root)},
    "exec": next(line for line in unit.splitlines() if line.startswith("ExecStart=")),
}))
"""


def venvs(node) -> dict:
    return json.loads(node.check_output("python3 -c %s", VENVS))


def test_a_vllm_version_that_installs_but_does_not_start_is_rolled_back_and_the_update_stops(
        api, gw, nodes, tmp_path):
    node1, node2 = nodes["fleet-node1"], nodes["fleet-node2"]
    before, node2_started = venvs(node1), started(node2)
    serving = before["link"]
    # A hash lock whose every file checks out but that misses FastAPI (pip
    # installs nothing beyond the lock): the venv installs completely and
    # vLLM's server cannot start from it, as a broken release would not.
    group_vars = yaml.safe_load((PROJECT / "inventory/sandbox/group_vars/llm_servers.yml").read_text())
    spec = re.sub(r"[^A-Za-z0-9.]+", "-", group_vars["vllm_package_spec"])
    lock = (PROJECT / f"roles/vllm/files/locks/{spec}.txt").read_text()
    assert re.search(r"^fastapi==", lock, re.M), "the lock has no fastapi to leave out"
    broken_lock = tmp_path / "vllm-without-fastapi.txt"
    broken_lock.write_text(re.sub(r"^fastapi==.*\n", "", lock, flags=re.M))
    broken = {"vllm_pip_lock_file": str(broken_lock)}
    # The driver role (tag nvidia) has its own proof in the rolling update below.
    run = ansible_playbook("playbooks/update.yml", "--skip-tags", "nvidia", "-e", json.dumps(broken))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    recap = run.stdout.rsplit("PLAY RECAP", 1)[1].splitlines()
    assert "failed=1" in next(line for line in recap if line.startswith("fleet-node1")), recap
    # The gate saw the service exit (no wait for vllm_ready_timeout), and the
    # host went back by itself and says so.
    assert "vllm.service exited while it started" in out, out[-3000:]
    after = venvs(node1)
    new = [name for name in after["venvs"] if name not in before["venvs"]]
    assert len(new) == 1 and after["venvs"][new[0]] == [".llm-venv-complete"], after
    assert f"Undone: venv /opt/vllm/venvs/{new[0]}, back to {serving}. It passed the same check again" \
        in out, out[-3000:]
    assert after["link"] == serving and after["exec"].startswith(f"ExecStart={serving}/bin/python "), after
    assert node1.service("vllm").is_running
    wait_until_vllm_answers(node1, seconds=30)
    # The second replica was not touched, and the API keeps answering.
    assert started(node2) == node2_started
    assert [api() for _ in range(3)] == [200] * 3


def test_a_chainlit_version_that_installs_but_fails_its_login_and_chat_check_is_rolled_back(
        addresses, secrets_dir, gw, nodes, tmp_path):
    node_starts = {name: started(node) for name, node in nodes.items()}
    serving = gw.check_output("readlink /opt/chainlit/venv")
    chainlit_started = chainlit_starts(gw)
    # openai 1.25, an earlier release from PyPI (not in the sandbox's
    # wheelhouse: pip may use the index here), installs beside Chainlit's
    # pins, but its client does not take the httpx of this venv: the app
    # cannot start on it.
    # As an operator would: the new pin, its hash lock made by lock.yml on the
    # gateway (pip resolves there against the index), then the update.
    defaults = yaml.safe_load((PROJECT / "roles/chainlit/defaults/main.yml").read_text())
    older = [pin if not pin.startswith("openai==") else "openai==1.25.0" for pin in defaults["chainlit_extra_packages"]]
    pins = {"chainlit_extra_packages": older, "chainlit_pip_extra_args": ["--cache-dir", "/var/cache/sandbox-pip"],
            "chainlit_pip_lock_file": str(tmp_path / "chainlit-openai-1.25.txt")}
    lock = ansible_playbook("playbooks/lock.yml", "--tags", "chainlit", "-e", json.dumps(pins))
    assert lock.returncode == 0, (lock.stdout + lock.stderr)[-3000:]
    locked = (tmp_path / "chainlit-openai-1.25.txt").read_text()
    assert "\nopenai==1.25.0 --hash=sha256:" in locked and "# specs: chainlit==2.12.0 openai==1.25.0" in locked, locked
    run = ansible_playbook("playbooks/update.yml", "--tags", "chainlit", "-e", json.dumps(pins))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    recap = run.stdout.rsplit("PLAY RECAP", 1)[1].splitlines()
    assert "failed=1" in next(line for line in recap if line.startswith("fleet-gw")), recap
    # The new version failed in the hand-over's second Chainlit: the one
    # that serves was never stopped, and was checked again as it ran.
    assert "chainlit-handoff.service exited while it started" in out, out[-3000:]
    assert chainlit_starts(gw) == chainlit_started, "the Chainlit that served was restarted"
    assert handoff_at_rest(gw)
    new = re.search(r"Undone: venv (/opt/chainlit/venvs/\S+), back to (\S+)\. It passed the same check again", out)
    assert new and new.group(2) == serving and new.group(1) != serving, out[-3000:]
    # The check that passed on the old venv was a login and a streamed reply.
    assert "logged in as demo; the reply streamed" in out, out[-3000:]
    assert gw.check_output("readlink /opt/chainlit/venv") == serving
    assert gw.check_output("systemctl show -p ExecStart --value chainlit.service").startswith(
        f"{{ path={serving}/bin/chainlit ;"), "the unit does not run the venv that served"
    # Users chat as before; the replicas were not touched (--tags chainlit).
    password = (secrets_dir / f"chainlit-user-{USER}").read_text().strip()
    result = chatui.chat(f"https://{addresses['fleet-gw']}", USER, password, ["Hello"])
    assert result["login_status"] == 200 and len(result["tokens"]) == 1, result
    assert {name: started(node) for name, node in nodes.items()} == node_starts


def chainlit_starts(gw) -> str:
    return gw.check_output("systemctl show -p ActiveEnterTimestampMonotonic --value chainlit.service")


def handoff_at_rest(gw) -> bool:
    """After a hand-over: its second Chainlit stopped, not failed, and nginx
    sending new sessions to the Chainlit that serves."""
    state = gw.check_output("systemctl show -p ActiveState --value chainlit-handoff.service")
    upstream = re.findall(r"server 127\.0\.0\.1:(\d+)( down)?; # chainlit (\w+)",
                          gw.file("/etc/nginx/nginx.conf").content_string)
    assert state == "inactive" and upstream == [("8001", "", "main"), ("8004", " down", "handoff")], (state, upstream)
    return True


def test_chainlit_changes_version_under_a_steady_stream_of_chats_and_none_fails(addresses, secrets_dir, gw, tmp_path):
    """An earlier Chainlit release from PyPI, then the pinned one, each put into
    service by update.yml while a browser tab chats through the gateway."""
    earlier = "chainlit==2.11.1"
    pinned = yaml.safe_load((PROJECT / "roles/chainlit/defaults/main.yml").read_text())["chainlit_package_spec"]
    assert pinned != earlier
    pins = {"chainlit_package_spec": earlier, "chainlit_pip_extra_args": ["--cache-dir", "/var/cache/sandbox-pip"],
            "chainlit_pip_lock_file": str(tmp_path / "chainlit-2.11.1.txt")}
    lock = ansible_playbook("playbooks/lock.yml", "--tags", "chainlit", "-e", json.dumps(pins))
    assert lock.returncode == 0, (lock.stdout + lock.stderr)[-3000:]
    serving = gw.check_output("readlink /opt/chainlit/venv")
    since = gw.check_output("date +%s")
    password = (secrets_dir / f"chainlit-user-{USER}").read_text().strip()
    done, sent, result = threading.Event(), [], {}

    def messages():
        while not done.is_set():
            sent.append(time.monotonic())
            yield f"Hello {len(sent)}"

    def tab():
        # A user who reads each reply for a few seconds before typing the
        # next: Chainlit's page loses what is typed while it reconnects
        # (socket.io retries after 0.5-1.5 s, and again 1-3 s later when an
        # attempt fails), and the hand-over moves a session right after a reply.
        result.update(chatui.chat(f"https://{addresses['fleet-gw']}", USER, password, messages(), pause=5))

    worker = threading.Thread(target=tab, daemon=True)
    worker.start()
    try:
        while len(sent) < 2 and worker.is_alive():
            time.sleep(1)
        # To the earlier release (a venv installed from its lock), then back
        # to the pinned one (its venv was kept), both while the tab chats.
        down = ansible_playbook("playbooks/update.yml", "--tags", "chainlit", "-e", json.dumps(pins))
        assert down.returncode == 0, down.stdout[-4000:]
        earlier_venv = gw.check_output("readlink /opt/chainlit/venv")
        version = gw.check_output("%s/bin/python -c %s", earlier_venv,
                                  "import importlib.metadata as m; print(m.version('chainlit'))")
        up = ansible_playbook("playbooks/update.yml", "--tags", "chainlit")
        assert up.returncode == 0, up.stdout[-4000:]
        time.sleep(5)
    finally:
        done.set()
        worker.join(timeout=300)
    assert version == "2.11.1" and earlier_venv != serving
    assert f"chainlit {serving.rsplit('/', 1)[1]} -> {earlier_venv.rsplit('/', 1)[1]}" in down.stdout
    assert f"chainlit {earlier_venv.rsplit('/', 1)[1]} -> {serving.rsplit('/', 1)[1]}" in up.stdout
    assert gw.check_output("readlink /opt/chainlit/venv") == serving
    # Every message the tab sent had its reply streamed, with no error shown.
    assert result.get("login_status") == 200, result
    assert len(result["tokens"]) == len(sent) >= 10 and min(result["tokens"]) >= 1, result["tokens"]
    assert not [f for f in result["frames"] if re.search(r'"isError": ?true', f)]
    # The tab moved at least four times (two hand-overs an update), over a
    # websocket from the start (no long-polling, which the switch would
    # split). Each update's first move is the app's own (the tab is on
    # chainlit.service when the update starts); the move back is too,
    # unless the tab's reconnection came through only after nginx pointed
    # at the restarted chainlit.service again (a failed first attempt).
    assert len(result["sockets"]) >= 5, result["sockets"]
    assert not [f for f in result["frames"] if "probe" in f]
    journal = gw.check_output("journalctl -o cat --since @%s -u chainlit.service -u chainlit-handoff.service", since)
    assert journal.count("session handed over") >= 2, journal[-3000:]
    assert handoff_at_rest(gw)


MODEL_LINK = f"/srv/models/{MODEL}/current"


def test_a_model_release_that_passes_its_checksums_but_does_not_load_is_rolled_back(api, nodes, tmp_path):
    node1, node2 = nodes["fleet-node1"], nodes["fleet-node2"]
    serving = {name: node.check_output("readlink %s", MODEL_LINK) for name, node in nodes.items()}
    node2_started = started(node2)
    # The tiny model with its weights file overwritten by random bytes of
    # the same size, and a manifest that lists the new sums: the release
    # verifies, vLLM cannot load it.
    cache = Path(os.environ.get("SANDBOX_CACHE", Path.home() / ".cache/private-llm-sandbox"))
    release = tmp_path / "broken-release"
    shutil.copytree(cache / "models/tiny-qwen3", release)
    weights = release / "model.safetensors"
    weights.write_bytes(os.urandom(weights.stat().st_size))
    sums = [f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}"
            for path in sorted(release.iterdir()) if path.name != "SHA256SUMS"]
    (release / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    run = ansible_playbook("playbooks/update.yml", "--skip-tags", "nvidia",
                           "-e", json.dumps({"model_staging_controller_dir": str(release)}))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    recap = run.stdout.rsplit("PLAY RECAP", 1)[1].splitlines()
    assert "failed=1" in next(line for line in recap if line.startswith("fleet-node1")), recap
    assert "vllm.service exited while it started" in out, out[-3000:]
    assert re.search(rf"Undone: model release [^,]+, back to {re.escape(serving['fleet-node1'].rsplit('/', 1)[1])}\. "
                     "It passed the same check again", out), out[-3000:]
    # The first replica serves its old release again, and its unit says so
    # (the next run sees the change and tries the new release again).
    assert node1.check_output("readlink %s", MODEL_LINK) == serving["fleet-node1"]
    unit = node1.file("/etc/systemd/system/vllm.service").content_string
    assert f"# Model release served: /srv/models/{MODEL}/{serving['fleet-node1']}\n" in unit, unit[:300]
    wait_until_vllm_answers(node1, seconds=30)
    # The second replica was not touched, and the API keeps answering.
    assert node2.check_output("readlink %s", MODEL_LINK) == serving["fleet-node2"]
    assert started(node2) == node2_started
    assert [api() for _ in range(3)] == [200] * 3


def test_an_update_stops_at_the_first_failing_host_and_leaves_the_rest_untouched(api, gw, nodes):
    node2_started = started(nodes["fleet-node2"])
    node2_unit = nodes["fleet-node2"].file("/etc/systemd/system/vllm.service").content_string
    # The first replica's TLS listener is down: its update cannot pass the gate.
    with stopped(nodes["fleet-node1"], "nginx.service"):
        run = ansible_playbook("playbooks/update.yml", "--skip-tags", "nvidia",
                               "-e", json.dumps({"vllm_shutdown_timeout": 27}))
    assert run.returncode != 0, run.stdout[-3000:]
    recap = run.stdout.rsplit("PLAY RECAP", 1)[1].splitlines()
    assert "failed=1" in next(line for line in recap if line.startswith("fleet-node1")), recap
    # It stopped at the gate, after the drain and the update, not earlier.
    assert "TASK [gateway : Ask for a real completion through this replica's TLS listener" in run.stdout, \
        run.stdout[-3000:]
    assert "could not take" not in run.stdout + run.stderr
    # The second replica was not touched and serves alone; the failed one
    # stays out of the pool (the next update or site.yml run puts it back).
    assert started(nodes["fleet-node2"]) == node2_started
    assert nodes["fleet-node2"].file("/etc/systemd/system/vllm.service").content_string == node2_unit
    assert "down; # replica fleet-node1" in gw.file("/etc/nginx/nginx.conf").content_string
    assert [api() for _ in range(3)] == [200] * 3


def booted(node) -> str:
    """When this host's systemd started: new after a reboot (these hosts are
    containers on this machine's kernel, so the kernel's boot_id is not)."""
    return node.check_output("cut -d' ' -f22 /proc/1/stat")


def test_rolling_update_restarts_each_replica_and_reboots_the_one_that_asks_without_losing_a_request(api, gw, nodes):
    before = {name: started(node) for name, node in nodes.items()}
    boots = {name: booted(node) for name, node in {"fleet-gw": gw, **nodes}.items()}
    # What a kernel package's postinst hook (unattended-upgrades') leaves on
    # the first replica: a reboot is due, and which package asked for it.
    nodes["fleet-node1"].check_output("printf 'linux-image-6.1.0-99-amd64\\n' > /run/reboot-required.pkgs"
                                      " && touch /run/reboot-required")
    statuses: list = []
    done = threading.Event()

    def load():
        while not done.is_set():
            statuses.append(api())
            time.sleep(1)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        # A changed setting restarts vLLM on each replica, as a new pin would.
        setting = json.dumps({"vllm_shutdown_timeout": 25})
        run = ansible_playbook("playbooks/update.yml", "-e", setting)
    finally:
        done.set()
        worker.join(timeout=180)
    assert run.returncode == 0, run.stdout[-4000:]
    assert all(started(node) != before[name] for name, node in nodes.items()), "a replica was not restarted"
    assert len(statuses) >= 10 and set(statuses) == {200}, statuses
    # The first replica was rebooted in its turn (out of the pool), the
    # others were not; the flag went with the reboot.
    rebooted = [name for name, host in {"fleet-gw": gw, **nodes}.items() if booted(host) != boots[name]]
    assert rebooted == ["fleet-node1"], rebooted
    assert not nodes["fleet-node1"].file("/run/reboot-required").exists
    # (profile_tasks writes a line of times between a task and its results)
    assert re.search(r"TASK \[Reboot this host for its kernel or security update\][^\n]*\n(?:[^\n]*\n)??"
                     r"changed: \[fleet-node1\]", run.stdout), run.stdout[-4000:]
    assert not re.search(r" down;\s*# replica ", gw.file("/etc/nginx/nginx.conf").content_string), \
        "a replica stayed out of the pool"
    # The run ends with a line a host of what ran before and runs now: the
    # same venvs and release here (a setting changed, no version).
    for name, node in nodes.items():
        venv, release = (node.check_output("readlink %s", link).rsplit("/", 1)[1]
                         for link in ("/opt/vllm/venv", MODEL_LINK))
        assert f"{name}: vllm {venv} (unchanged); model {release} (unchanged); chainlit - (unchanged); kernel " \
            in run.stdout, run.stdout[-3000:]
    chainlit = gw.check_output("readlink /opt/chainlit/venv").rsplit("/", 1)[1]
    assert f"fleet-gw: vllm - (unchanged); model - (unchanged); chainlit {chainlit} (unchanged)" in run.stdout
    # Each replica keeps the one venv that served: the one that never served
    # (the rolled-back version above) went once a venv answered again.
    for name, node in nodes.items():
        seen = venvs(node)
        assert list(seen["venvs"].values()) == [[".llm-venv-complete", ".llm-venv-served"]], (name, seen)
    # site.yml with the same settings finds nothing left to do: the
    # scenario's idempotence check (every stage it converges).
    rerun = ansible_playbook("site.yml", "-e", setting, "--tags", "firewall,volume,model_staging,vllm,chainlit,gateway")
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    recap = rerun.stdout.rsplit("PLAY RECAP", 1)[1].split("\n\n", 1)[0]
    assert recap.count("changed=0") == 3, recap


# Runs on a replica: vLLM's answer on loopback to the key on stdin (never in
# a command line). Prints the HTTP status.
KEY_STATUS = r"""
import sys, urllib.error, urllib.request
request = urllib.request.Request("http://127.0.0.1:8000/v1/models",
                                 headers={"Authorization": "Bearer " + sys.stdin.read().strip()})
try:
    print(urllib.request.urlopen(request, timeout=30).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def test_rotating_the_api_key_refuses_the_old_one_on_every_replica(api, secrets_dir, nodes):
    old_key = (secrets_dir / "vllm-api-key").read_text().strip()
    run = ansible_playbook("playbooks/rotate-secrets.yml", "-e", json.dumps({"rotate_secrets": ["vllm_api_key"]}))
    assert run.returncode == 0, run.stdout[-4000:]
    new_key = (secrets_dir / "vllm-api-key").read_text().strip()
    assert new_key != old_key
    for name, node in nodes.items():
        assert old_key not in node.file("/etc/vllm/vllm.env").content_string
        statuses = [node.check_output("printf %%s %s | python3 -c %s", key, KEY_STATUS) for key in (old_key, new_key)]
        assert statuses == ["401", "200"], (name, statuses)
    # The clients keep their own keys: the gateway presents vLLM's new key in
    # their place (four requests: each replica gets at least one). vLLM's
    # key, old or new, is no client's key.
    assert [api() for _ in range(4)] == [200] * 4
    assert [api(key=key) for key in (old_key, new_key)] == [401, 401]
