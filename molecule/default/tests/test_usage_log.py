"""The usage logs: a line per API request at the gateway (gateway_usage_log)
and per chat message in Chainlit (chainlit_usage_log), each with who (the API
client's name, the chat user's tag), the route, the outcome, the seconds and
the token counts vLLM reported; never a prompt, a reply or a key. The API's
log is root's and nginx's, the chat's its service's own; both rotate daily, are kept
llm_usage_log_retention_days, and go on after a rotation (the writers open
the new file). One rotation of each serves the last test."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))

import chatui  # noqa: E402  (molecule/shared)

testinfra_hosts = ["gateways"]

API_LOG = "/var/log/llm-audit/api.log"
CHAT_LOG = "/var/log/chainlit-usage/chat.log"
API_ROTATE = "/etc/logrotate.d/llm-usage"
CHAT_ROTATE = "/etc/logrotate.d/chainlit-usage"
MODEL = "Qwen3-4B-Instruct-2507"
USER = "demo"
API_LINE = re.compile(r"^\S+ client=(?P<client>\S+) route=(?P<route>\S+) status=(?P<status>\d+) "
                      r"seconds=[0-9.]+ prompt_tokens=(?P<prompt>\d+|-) completion_tokens=(?P<completion>\d+|-)$")
CHAT_LINE = re.compile(r"^\S+Z user=(?P<user>[0-9a-f]{16}) route=chat status=(?P<status>\S+) "
                       r"seconds=[0-9.]+ prompt_tokens=(?P<prompt>\d+|-) completion_tokens=(?P<completion>\d+|-)$")


@pytest.fixture(scope="module")
def secrets_dir(host):
    return Path(host.ansible("debug", "var=llm_secrets_dir", check=False)["llm_secrets_dir"])


@pytest.fixture(scope="module")
def api(host_address, secrets_dir):
    """post(body, client) -> (status, raw body) of a chat completion through the gateway."""
    context = ssl.create_default_context(cafile=str(secrets_dir / "gateway-ca.crt"))

    def post(body: dict, client: str = "notebook") -> tuple[int, bytes]:
        key = (secrets_dir / "api-clients" / client).read_text().strip()
        conn = http.client.HTTPSConnection(host_address, 443, context=context, timeout=120)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    return post


def chat_body(text: str, stream: bool = False) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 6,
            "temperature": 0, "stream": stream}


def lines(host, path: str, pattern: re.Pattern) -> list[re.Match]:
    return [m for m in map(pattern.match, host.file(path).content_string.splitlines()) if m]


def test_each_api_request_is_a_usage_line_with_its_client_and_vllms_token_counts(host, api):
    canary = uuid.uuid4().hex
    status, raw = api(chat_body(f"Remember {canary}"))
    assert status == 200
    usage = json.loads(raw)["usage"]
    status, raw = api(chat_body(f"Remember {canary}", stream=True))
    assert status == 200
    # vLLM puts the counts into the stream (vllm_report_usage); the last one is the total.
    streamed = [json.loads(line[6:])["usage"] for line in raw.decode().splitlines()
                if line.startswith("data: {") and '"usage"' in line]
    assert streamed and streamed[-1], raw[-300:]
    found = lines(host, API_LOG, API_LINE)[-2:]
    assert [(m["client"], m["route"], m["status"]) for m in found] == \
        [("notebook", "/v1/chat/completions", "200")] * 2
    assert (int(found[0]["prompt"]), int(found[0]["completion"])) == \
        (usage["prompt_tokens"], usage["completion_tokens"])
    assert (int(found[1]["prompt"]), int(found[1]["completion"])) == \
        (streamed[-1]["prompt_tokens"], streamed[-1]["completion_tokens"])
    assert canary not in host.file(API_LOG).content_string


def test_each_chat_message_is_a_usage_line_with_the_users_tag_and_token_counts(host, host_address, secrets_dir):
    canary = uuid.uuid4().hex
    before = len(lines(host, CHAT_LOG, CHAT_LINE))
    password = (secrets_dir / f"chainlit-user-{USER}").read_text().strip()
    result = chatui.chat(f"https://{host_address}", USER, password, [f"Remember {canary}"])
    assert result["login_status"] == 200 and len(result["tokens"]) == 1
    found = lines(host, CHAT_LOG, CHAT_LINE)
    assert len(found) == before + 1
    assert found[-1]["status"] == "done"
    assert int(found[-1]["prompt"]) > 0 and int(found[-1]["completion"]) > 0, found[-1].group(0)
    assert USER not in found[-1].group(0)
    assert canary not in host.file(CHAT_LOG).content_string


def test_the_usage_logs_are_kept_from_other_local_users(host):
    api_dir, chat_dir = host.file(API_LOG.rsplit("/", 1)[0]), host.file(CHAT_LOG.rsplit("/", 1)[0])
    # nginx's workers pass through the API log's folder (they reopen the
    # file after a rotation); nobody else gets in, not even to list it.
    assert (api_dir.user, api_dir.group, api_dir.mode) == ("root", "www-data", 0o710)
    assert (chat_dir.user, chat_dir.mode) == ("chainlit", 0o700)
    assert host.file(CHAT_LOG).mode == 0o600
    for path in (API_LOG, CHAT_LOG):
        denied = host.run("runuser -u nobody -- cat %s", path)
        assert denied.rc != 0 and "Permission denied" in denied.stderr, (path, denied.stdout, denied.stderr)


def test_the_usage_logs_rotate_daily_keep_190_days_and_go_on_after_a_rotation(host, api, host_address,
                                                                                 secrets_dir):
    for config, path in ((API_ROTATE, API_LOG), (CHAT_ROTATE, CHAT_LOG)):
        text = host.file(config).content_string
        assert "daily" in text and re.search(r"^\s*rotate 190$", text, re.M) and "maxsize 100M" in text, text
        host.run_expect([0], "logrotate --force %s", config)
        assert host.file(path).size == 0 or not host.file(path).exists
    # Both writers go on in the new files: the app when it sees the file was
    # moved, nginx once it has reopened its logs on logrotate's signal (a
    # request in the moment before goes to the rotated file: none is lost).
    password = (secrets_dir / f"chainlit-user-{USER}").read_text().strip()
    assert chatui.chat(f"https://{host_address}", USER, password, ["Hello"])["login_status"] == 200
    assert len(lines(host, CHAT_LOG, CHAT_LINE)) == 1
    deadline = time.monotonic() + 30
    while True:
        assert api(chat_body("Hello"))[0] == 200
        if lines(host, API_LOG, API_LINE) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(lines(host, API_LOG, API_LINE)) == 1
    rotated = host.run("ls %s %s", API_LOG.rsplit("/", 1)[0], CHAT_LOG.rsplit("/", 1)[0]).stdout
    assert re.search(r"api\.log-\d{8}-\d+", rotated) and re.search(r"chat\.log-\d{8}-\d+", rotated), rotated
