"""The chat UI (chainlit.service) as the role configures it: its own user,
loopback only, secrets out of argv and the unit, Argon2id hashes and no
password in clear, real logins over HTTP, a streamed chat with history and a
working Stop through Chainlit's socket.io, a page that refers to no other
origin, no telemetry, no content and no user name in its logs, and a
sandboxed unit (systemd-analyze security <= 2.0).

Passwords come from the inventory on the controller (`host.ansible("debug")`)
and reach the host only as module input on stdin (ansible's command module),
never on a command line there."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid

import pytest
from testinfra.modules.ansible import AnsibleException

testinfra_hosts = ["gateways"]

# Ansible modules log their arguments to the host's journal; these tests hand
# passwords and chat text to modules (stdin of the command module), which
# must not be logged there.
os.environ["ANSIBLE_NO_TARGET_SYSLOG"] = "True"

PORT = 8001
BASE = f"http://127.0.0.1:{PORT}"
APP = "/opt/chainlit/app"
VENV_PYTHON = "/opt/chainlit/venv/bin/python"
ENV_FILE = "/etc/chainlit/chainlit.env"
USERS_FILE = "/etc/chainlit/users.json"
KEY_FILE = "/etc/chainlit/identity.key"
# The gateway's usage audit log (roles/gateway, gateway_usage_log).
USAGE_LOG = "/var/log/llm-usage/usage.log"
UNIT_FILE = "/etc/systemd/system/chainlit.service"
# Each run's own marker, sent as chat text: it must never reach a log.
CANARY = f"canary-{uuid.uuid4().hex}"

# Runs on the host with the venv's Python; reads a JSON job on stdin: logs in
# over HTTP, opens a socket.io session as the browser does, optionally changes
# the chat settings, sends messages (optionally pressing Stop after the first
# token) and prints what it saw, without the texts.
CHAT = r"""
import asyncio, json, sys, time, urllib.error, urllib.parse, urllib.request, uuid
from datetime import datetime, timezone
import socketio

job = json.loads(sys.stdin.read())
base = job["base"]
form = urllib.parse.urlencode({"username": job["user"], "password": job["password"]}).encode()
try:
    resp = urllib.request.urlopen(urllib.request.Request(base + "/login", data=form), timeout=60)
except urllib.error.HTTPError as exc:
    print(json.dumps({"login": exc.code})); sys.exit(0)
cookie = resp.headers["set-cookie"].split(";", 1)[0]

async def chat():
    sio = socketio.AsyncClient(reconnection=False)
    events, done, first = [], asyncio.Event(), asyncio.Event()

    @sio.on("*")
    async def seen(event, data=None):
        events.append((time.monotonic(), event, data))
        if event == "task_end":
            done.set()
        if event in ("stream_start", "stream_token"):
            first.set()

    await sio.connect(base, socketio_path="/ws/socket.io", transports=["websocket"],
                      headers={"Cookie": cookie},
                      auth={"sessionId": str(uuid.uuid4()), "clientType": "webapp", "userEnv": "{}",
                            "chatProfile": None, "threadId": None})
    await sio.emit("connection_successful")
    await asyncio.sleep(1)
    if job.get("settings"):
        await sio.emit("chat_settings_change", job["settings"])
        await asyncio.sleep(0.5)
    turns = []
    for text in job["messages"]:
        events.clear(); done.clear(); first.clear()
        await sio.emit("client_message", {"message": {
            "id": str(uuid.uuid4()), "type": "user_message", "output": text, "name": job["user"],
            "createdAt": datetime.now(timezone.utc).isoformat()}, "fileReferences": []})
        if job.get("stop"):
            await asyncio.wait_for(first.wait(), 120)
            await sio.emit("stop")
        await asyncio.wait_for(done.wait(), 300)
        await asyncio.sleep(0.5)
        replies = [e[2] for e in events if e[1] in ("new_message", "update_message")
                   and e[2].get("type") == "assistant_message" and e[2].get("output") != "Task manually stopped."]
        turns.append({
            "streamed": sum(1 for e in events if e[1] in ("stream_start", "stream_token")),
            "reply_chars": len(replies[-1]["output"]) if replies else 0,
            "errors": sum(1 for e in events if e[1] == "new_message" and e[2].get("isError")),
            "stopped_notice": any(e[1] == "new_message" and e[2].get("output") == "Task manually stopped."
                                  for e in events),
        })
    await sio.disconnect()
    return turns

print(json.dumps({"login": resp.status, "turns": asyncio.run(chat())}))
"""

# Runs on the host: vLLM's count of generated tokens (its /metrics needs no key).
GENERATED = r"""
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:8000/metrics", timeout=30).read().decode()
print(sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("vllm:generation_tokens_total")))
"""


def on_host(host, argv, stdin=""):
    """Run argv on the host with stdin (module input, not a command line).

    A failure reports the command's stderr only: the module's own error
    would repeat its input, which may hold a password."""
    try:
        result = host.ansible("ansible.builtin.command", json.dumps({"argv": argv, "stdin": stdin}), check=False)
    except AnsibleException as exc:
        raise AssertionError(f"{argv[0]} failed: {exc.result.get('stderr', '')[-2000:]}") from None
    return result["stdout"]


class ChatUser(dict):
    """A user from the inventory; its repr (in pytest's reports) hides the password."""

    def __repr__(self):
        return f"ChatUser(name={self['name']!r}, password=<hidden>)"


@pytest.fixture(scope="module")
def user(host):
    """The first chat user of the inventory, password included (controller side)."""
    users = host.ansible("debug", "var=chainlit_users", check=False)["chainlit_users"]
    assert users, "the inventory defines no chainlit_users"
    return ChatUser(users[0])


@pytest.fixture(scope="module")
def public_origin(host):
    config = host.file(f"{APP}/.chainlit/config.toml").content_string
    origins = json.loads(re.search(r"^allow_origins = (.*)$", config, re.M).group(1))
    assert len(origins) == 1
    return origins[0]


def chat(host, user, messages, **job):
    body = {"base": BASE, "user": user["name"], "password": user["password"], "messages": messages, **job}
    return json.loads(on_host(host, [VENV_PYTHON, "-c", CHAT], json.dumps(body)))


def login_status(host, name, password):
    try:
        result = host.ansible("ansible.builtin.uri", json.dumps({
            "url": f"{BASE}/login", "method": "POST", "body_format": "form-urlencoded",
            "body": {"username": name, "password": password}, "status_code": [200, 401]}), check=False)
    except AnsibleException as exc:
        raise AssertionError(f"login request failed: {exc.result.get('msg', '')[:300]}") from None
    return result["status"], result.get("cookies", {})


def journal(host, since):
    return host.run("journalctl -u chainlit.service --no-pager -o cat --since %s", since).stdout


def host_now(host):
    return host.check_output("date '+%Y-%m-%d %H:%M:%S'")


# --- Service --------------------------------------------------------------------------


def test_chainlit_runs_enabled_as_its_own_user_without_login_shell(host):
    service = host.service("chainlit")
    assert service.is_enabled and service.is_running
    pid = host.check_output("systemctl show -p MainPID --value chainlit.service")
    assert host.check_output("ps -o user= -p %s", pid) == "chainlit"
    assert host.user("chainlit").shell in ("/usr/sbin/nologin", "/bin/false")


def test_chainlit_listens_on_loopback_only(host):
    assert host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    assert not host.socket(f"tcp://:::{PORT}").is_listening
    listening = host.check_output("ss -Hltnp")
    for line in listening.splitlines():
        if '"chainlit"' in line or f":{PORT} " in line:
            assert line.split()[3] == f"127.0.0.1:{PORT}", line


def test_health_answers(host):
    assert json.loads(on_host(host, ["python3", "-c", f"import urllib.request; print(urllib.request.urlopen("
                                                    f"'{BASE}/health', timeout=10).read().decode())"])) \
        == {"status": "ok"}


def test_unit_is_sandboxed_to_exposure_two_or_less(host):
    out = host.check_output("systemd-analyze security chainlit.service --no-pager")
    exposure = float(re.search(r"Overall exposure level for chainlit\.service: ([0-9.]+)", out).group(1))
    assert exposure <= 2.0, out[-3000:]


def test_chainlit_can_write_no_core_file(host):
    # The unit's own LimitCORE=0 (not only a host-wide default), live on the
    # running process: a crash leaves the chats in its memory off the disk.
    assert re.search(r"^LimitCORE=0$", host.check_output("systemctl cat chainlit.service"), re.M)
    pid = host.check_output("systemctl show -p MainPID --value chainlit.service")
    limit = re.search(r"^Max core file size\s+(\S+)\s+(\S+)", host.file(f"/proc/{pid}/limits").content_string, re.M)
    assert limit and limit.groups() == ("0", "0"), limit and limit.groups()


def test_service_restarts_after_it_is_killed(host):
    before = host.check_output("systemctl show -p MainPID --value chainlit.service")
    host.run("kill -9 %s", before)
    deadline = time.time() + 90
    while time.time() < deadline:
        pid = host.check_output("systemctl show -p MainPID --value chainlit.service")
        if pid not in ("0", before) and host.run(
                "python3 -c %s", f"import urllib.request; urllib.request.urlopen('{BASE}/health', timeout=5)").rc == 0:
            break
        time.sleep(2)
    else:
        pytest.fail("chainlit.service did not come back after SIGKILL")


# --- Files and secrets ----------------------------------------------------------------------


def test_env_file_is_root_only(host):
    env = host.file(ENV_FILE)
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert host.file("/etc/chainlit").mode == 0o750


def test_secrets_are_in_no_command_line_unit_or_property(host):
    check = r"""
import glob, subprocess
secrets = [l.split("=", 1)[1].strip() for l in open("%s") if "=" in l and not l.startswith("#")]
assert len(secrets) == 2 and all(len(s) >= 16 for s in secrets)
places = {"unit": open("%s").read(),
          "show": subprocess.run(["systemctl", "show", "chainlit.service"], capture_output=True, text=True).stdout,
          "ps": subprocess.run(["ps", "axww", "-o", "args"], capture_output=True, text=True).stdout}
for path in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        places[path] = open(path, "rb").read().decode(errors="replace")
    except OSError:
        pass
print(sorted(name for name, text in places.items() if any(s in text for s in secrets)))
""" % (ENV_FILE, UNIT_FILE)
    assert on_host(host, ["python3", "-c", check]) == "[]"


def test_users_file_holds_argon2id_hashes_readable_by_the_service_only(host, user):
    users = host.file(USERS_FILE)
    assert (users.user, users.group, users.mode) == ("root", "chainlit", 0o640)
    hashes = json.loads(users.content_string)["users"]
    assert user["name"] in hashes
    assert all(h.startswith("$argon2id$v=19$m=65536,t=3,p=4$") for h in hashes.values())
    key = host.file(KEY_FILE)
    assert (key.user, key.group, key.mode) == ("root", "chainlit", 0o640)


def test_no_password_in_clear_under_etc_or_opt_chainlit(host, user):
    # grep reads the password as its pattern from stdin and lists the files holding it.
    found = on_host(host, ["sh", "-c", "grep -rlF -f - /etc/chainlit /opt/chainlit || true"], user["password"])
    assert found == "", "the password is stored in clear"


def test_app_code_and_config_are_read_only_to_the_service(host):
    for path in (f"{APP}/app.py", f"{APP}/chatcore.py", f"{APP}/.chainlit/config.toml", f"{APP}/build/index.html",
                 APP, f"{APP}/.chainlit", USERS_FILE):
        assert host.run("runuser -u chainlit -- test -w %s", path).rc != 0, path
    files = host.file(f"{APP}/.files")
    assert (files.user, files.mode) == ("chainlit", 0o700)
    props = host.check_output("systemctl show -p ProtectSystem -p ReadWritePaths chainlit.service")
    assert "ProtectSystem=strict" in props and f"ReadWritePaths={APP}/.files" in props


# --- Login --------------------------------------------------------------------------------------


def test_login_succeeds_with_the_right_password(host, user):
    status, cookies = login_status(host, user["name"], user["password"])
    assert status == 200 and "access_token" in cookies


@pytest.mark.parametrize("change", ["wrong password", "unknown user"])
def test_login_fails_with_a_wrong_password_or_unknown_user(host, user, change):
    name = user["name"] if change == "wrong password" else "nobody-" + uuid.uuid4().hex[:8]
    password = user["password"] + "x" if change == "wrong password" else user["password"]
    status, cookies = login_status(host, name, password)
    assert status == 401 and "access_token" not in cookies


def test_chat_without_login_is_refused(host):
    check = r"""
import asyncio, socketio, uuid
async def main():
    sio = socketio.AsyncClient(reconnection=False)
    try:
        await sio.connect("%s", socketio_path="/ws/socket.io", transports=["websocket"],
                          auth={"sessionId": str(uuid.uuid4()), "clientType": "webapp", "userEnv": "{}"})
    except socketio.exceptions.ConnectionError:
        print("refused"); return
    print("connected"); await sio.disconnect()
asyncio.run(main())
""" % BASE
    assert on_host(host, [VENV_PYTHON, "-c", check]) == "refused"


# --- Chat -------------------------------------------------------------------------------------


def test_chat_streams_a_reply_and_sends_the_history_back(host, user):
    since = host_now(host)
    result = chat(host, user, [f"Hello {CANARY}", f"And once more {CANARY}"])
    assert result["login"] == 200
    first, second = result["turns"]
    for turn in (first, second):
        assert turn["errors"] == 0 and turn["reply_chars"] > 0
        assert turn["streamed"] > 1  # token by token, not one message
    # The second request carried the system prompt, both questions and the first answer.
    replies = re.findall(r"reply done user=\w+ messages=(\d+)", journal(host, since))
    assert replies[-2:] == ["2", "4"]


def test_stop_cancels_the_generation_in_vllm(host, user):
    since = host_now(host)
    before = float(on_host(host, ["python3", "-c", GENERATED]))
    # At temperature 0 this prompt makes the test model write until max_tokens.
    result = chat(host, user, ["Write a long story"], stop=True,
                  settings={"max_tokens": 1024, "temperature": 0, "system_prompt": ""})
    time.sleep(3)
    generated = float(on_host(host, ["python3", "-c", GENERATED])) - before
    turn = result["turns"][0]
    assert turn["stopped_notice"] and turn["errors"] == 0
    assert generated < 1024, f"vLLM generated {generated} tokens after Stop"
    assert "reply stopped" in journal(host, since)


def test_user_settings_from_the_browser_are_clamped(host, user):
    since = host_now(host)
    result = chat(host, user, ["Hi"], settings={"max_tokens": 10**9, "temperature": "hot"})
    assert result["turns"][0]["errors"] == 0
    tokens = int(re.findall(r"reply done user=\w+ messages=\d+ chunks=\d+ tokens=(\d+)", journal(host, since))[-1])
    limit = json.loads(host.file("/etc/chainlit/app.json").content_string)["max_tokens_limit"]
    assert 0 < tokens <= limit


# --- Privacy -------------------------------------------------------------------------------------


def test_logs_hold_no_chat_text_and_no_user_name(host, user):
    chat(host, user, [f"Privacy check {CANARY}"])
    logs = host.run("journalctl --no-pager -o cat").stdout
    assert CANARY not in logs
    chainlit_logs = journal(host, "-1h")
    assert "login accepted" in chainlit_logs
    assert f"user={user['name']}" not in chainlit_logs and f"'{user['name']}'" not in chainlit_logs
    found = host.run("grep -rlF %s /etc/chainlit /opt/chainlit/app /var/log /tmp /var/tmp", CANARY)
    assert found.stdout == ""


def user_tag(host, name):
    """HMAC-SHA256 of the name under the host's key, 16 hex digits (computed on the host)."""
    return on_host(host, ["python3", "-c", (
        "import hashlib, hmac, sys; key = open(%r, 'rb').read().strip(); "
        "print(hmac.new(key, sys.stdin.read().rstrip('\\n').encode(), hashlib.sha256).hexdigest()[:16])") % KEY_FILE],
        name).strip()


def test_user_tag_in_logs_is_an_hmac_under_the_host_key(host, user):
    since = host_now(host)
    login_status(host, user["name"], user["password"])
    logged = re.findall(r"login accepted user=([0-9a-f]+)", journal(host, since))
    expected = user_tag(host, user["name"])
    assert logged and logged[-1] == expected
    assert expected != hashlib.md5(user["name"].encode()).hexdigest()[:16]


def test_each_chat_message_has_a_usage_line_with_the_users_tag_and_token_counts_and_no_text(host, user):
    before = len(host.file(USAGE_LOG).content_string.splitlines())
    since = host_now(host)
    result = chat(host, user, [f"Count {CANARY}"])
    assert result["login"] == 200 and result["turns"][0]["errors"] == 0
    time.sleep(0.5)
    text = host.file(USAGE_LOG).content_string
    lines = [json.loads(line) for line in text.splitlines()[before:]]
    assert [(line["kind"], line["who"], line["route"], line["status"]) for line in lines] == [
        ("chat", user_tag(host, user["name"]), "/v1/chat/completions", 200)], lines
    # The same completion tokens Chainlit itself counted from the stream.
    counted = re.findall(r"reply done user=\w+ messages=\d+ chunks=\d+ tokens=(\d+)", journal(host, since))
    assert counted and lines[0]["completion_tokens"] == int(counted[-1]) > 0
    assert lines[0]["prompt_tokens"] > 0
    assert CANARY not in text and user["name"] not in text


def test_page_refers_to_no_other_origin(host, public_origin):
    page = on_host(host, ["python3", "-c", f"import urllib.request; print(urllib.request.urlopen('{BASE}/', "
                                           "timeout=10).read().decode())"])
    assert '<div id="root">' in page and "/assets/" in page
    elsewhere = [u for u in re.findall(r"(?:https?:)?//[^\s\"'<>)]+", page) if not u.startswith(public_origin)]
    assert elsewhere == []
    # What the role removed: Chainlit's own page loads fonts and KaTeX from CDNs.
    shipped = host.check_output("cat /opt/chainlit/venv/lib/python3*/site-packages/chainlit/frontend/dist/index.html")
    assert "fonts.googleapis.com" in shipped and "cdn.jsdelivr.net" in shipped


def test_cors_allows_the_gateway_origin_only(host, public_origin):
    assert public_origin.startswith("https://") and public_origin != "*"
    check = r"""
import json, sys, urllib.request
out = {}
for origin in sys.argv[1:]:
    req = urllib.request.Request("%s/auth/config", method="OPTIONS", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET"})
    try:
        resp = urllib.request.urlopen(req, timeout=10)
        out[origin] = resp.headers.get("access-control-allow-origin")
    except urllib.error.HTTPError as exc:
        out[origin] = exc.headers.get("access-control-allow-origin")
print(json.dumps(out))
""" % BASE
    answers = json.loads(on_host(host, ["python3", "-c", check, public_origin, "https://elsewhere.example"]))
    assert answers == {public_origin: public_origin, "https://elsewhere.example": None}


def test_no_telemetry_no_data_layer_and_no_uploads(host):
    pid = host.check_output("systemctl show -p MainPID --value chainlit.service")
    environ = dict(item.split("=", 1) for item in
                   host.check_output("tr '\\0' '\\n' < /proc/%s/environ", pid).splitlines() if "=" in item)
    assert environ.get("DO_NOT_TRACK") == "1" and environ.get("OTEL_SDK_DISABLED") == "true"
    assert all(environ.get(k) == "false" for k in ("TRACELOOP_TELEMETRY", "TRACELOOP_TRACING_ENABLED",
                                                   "TRACELOOP_METRICS_ENABLED", "TRACELOOP_LOGGING_ENABLED"))
    for key in ("DATABASE_URL", "LITERAL_API_KEY", "TRACELOOP_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert key not in environ
    config = host.file(f"{APP}/.chainlit/config.toml").content_string
    assert re.search(r"\[features\.spontaneous_file_upload\]\s*\nenabled = false", config)
    props = host.check_output("systemctl show -p IPAddressDeny -p IPAddressAllow chainlit.service")
    values = {name: set(value.split()) for name, value in (line.split("=", 1) for line in props.splitlines())}
    assert values["IPAddressDeny"] == {"0.0.0.0/0", "::/0"}  # systemd lists them in no fixed order
    assert values["IPAddressAllow"] == {"127.0.0.0/8", "::1/128"}


def test_service_talks_to_loopback_only(host, user):
    chat(host, user, ["One more"])
    pid = host.check_output("systemctl show -p MainPID --value chainlit.service")
    peers = [line.split()[4] for line in host.check_output("ss -Htnp").splitlines() if f"pid={pid}," in line]
    assert all(p.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")) for p in peers), peers
