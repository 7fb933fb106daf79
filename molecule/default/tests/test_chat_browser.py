"""A person chats through the real stack: Debian's chromium (Playwright) on
this machine opens the gateway's address, a wrong password is refused, the
right one logs in, a message gets a reply streamed token by token from the
real vLLM through the real gateway and Chainlit, and every request the page
makes goes to the gateway's own origin: any other origin fails the test.

Then the privacy canary: the unique string sent through the UI and through
the API is searched for on the whole filesystem of the host (outside the
model volume, /srv/models, which is the encrypted volume on real hosts) and
in the journal: 0 hits. The canary never appears on a command line or in a
file of the test's own making on the host: the search gets it encoded on stdin.
Once sent, the canary is handed on, encoded, to the hardening suite
(molecule/shared/privacy.py), which searches swap and crash files for it."""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest
from testinfra.modules.ansible import AnsibleException

import chatui  # molecule/shared, put on sys.path by conftest.py
import privacy

testinfra_hosts = ["gateways"]

# Module arguments (the canary on stdin) must not be logged to the host's journal.
os.environ["ANSIBLE_NO_TARGET_SYSLOG"] = "True"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-default-apps", "--disable-domain-reliability"]
USER = "demo"
MODEL = "Qwen3-4B-Instruct-2507"
CANARY = f"privacy-canary-{uuid.uuid4().hex}"
# Where the encrypted model volume is mounted on real hosts (a plain directory here).
MODEL_VOLUME = "/srv/models"


@pytest.fixture(scope="module")
def password(secrets_dir):
    path = secrets_dir / f"chainlit-user-{USER}"
    assert path.is_file(), f"no generated password for {USER} at {path}"
    return path.read_text().strip()


@pytest.fixture(scope="module")
def origin(host_address):
    return f"https://{host_address}"


@pytest.fixture(scope="module")
def session(origin, password):
    """One browser session: wrong login, right login, one chat message."""
    from playwright.sync_api import sync_playwright

    seen = {"requests": [], "frames": [], "login_statuses": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        # The chain to the project's CA is proven in test_gateway.py; chromium
        # here has no trust store of its own to add it to.
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.on("request", lambda request: seen["requests"].append(request.url))

        def on_websocket(ws):
            seen["requests"].append(ws.url)
            ws.on("framereceived", lambda payload: seen["frames"].append(
                payload if isinstance(payload, str) else payload.decode(errors="replace")))
        page.on("websocket", on_websocket)

        def login(secret):
            page.goto(f"{origin}/login", wait_until="networkidle")
            page.fill("#email", USER)
            page.fill("#password", secret)
            with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/login")
                                      and r.request.method == "POST") as response:
                page.click("button[type=submit]")
            seen["login_statuses"].append(response.value.status)

        login("not-the-password-" + uuid.uuid4().hex[:8])
        seen["after_wrong_login"] = urlsplit(page.url).path
        login(password)
        page.wait_for_selector("#chat-input", timeout=60_000)
        # A message typed before the websocket session is ready is lost.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any('"connect"' in f or f.startswith("40") for f in seen["frames"]):
            page.wait_for_timeout(200)
        page.wait_for_timeout(1000)
        page.click("#chat-input")
        page.keyboard.type(f"Please repeat this: {CANARY}")
        page.keyboard.press("Enter")
        privacy.export_canary(CANARY)  # now on the host: test_hardening.py looks for it too
        deadline = time.monotonic() + 120
        # The end of the reply: its on_message step's update (on_chat_start
        # has already sent an update of its own).
        while time.monotonic() < deadline and not any(map(chatui.ends_a_reply, seen["frames"])):
            page.wait_for_timeout(250)
        page.wait_for_timeout(1000)
        seen["steps"] = page.locator(".step").all_inner_texts()
        context.close()
        browser.close()
    return seen


def test_a_wrong_password_is_refused(session):
    assert session["login_statuses"][0] == 401
    assert session["after_wrong_login"] == "/login"


def test_the_right_password_logs_in(session):
    assert session["login_statuses"][1] == 200


def test_the_reply_streams_token_by_token_from_vllm(session):
    tokens = [f for f in session["frames"] if '"stream_token"' in f]
    assert len(tokens) >= 2, f"{len(tokens)} stream_token events"


def test_the_reply_is_shown_on_the_page(session):
    replies = [text.strip() for text in session["steps"] if text.strip() and CANARY not in text]
    assert replies, f"no reply step on the page: {session['steps']}"


def test_every_request_of_the_page_goes_to_the_gateways_own_origin(session, host_address):
    assert len(session["requests"]) > 5
    foreign = [url for url in session["requests"]
               if not url.startswith(("data:", "blob:"))
               and urlsplit(url).hostname != host_address]
    assert not foreign, foreign
    assert all(urlsplit(url).scheme in ("https", "wss", "data", "blob") for url in session["requests"])


@pytest.fixture(scope="module")
def api_canary(host, origin, secrets_dir):
    """The canary sent through the API via the gateway as well, by the API
    client `app` (inventory/sandbox/group_vars/gateways.yml)."""
    key = (secrets_dir / "api-clients" / "app").read_text().strip()
    assert len(key) >= 32, "no API client key in the secrets store"
    body = json.dumps({"model": MODEL, "max_tokens": 8,
                       "messages": [{"role": "user", "content": f"Remember {CANARY}"}]}).encode()
    context = ssl.create_default_context(cafile=str(secrets_dir / "gateway-ca.crt"))
    request = urllib.request.Request(f"{origin}/v1/chat/completions", data=body, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, context=context, timeout=60) as response:
        return response.status


# Runs on the host; the canary arrives on stdin, reversed and hex-encoded: the
# module's arguments (which Ansible writes to a temporary file on the host
# while the search runs) never hold it. Prints the places it was found.
SEARCH = r"""
import os, subprocess, sys
canary = bytes.fromhex(sys.stdin.read().strip())[::-1]
skip = {"/proc", "/sys", "/dev", "%s"}
hits = []
for root, dirs, files in os.walk("/", topdown=True):
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                tail = b""
                while True:
                    chunk = handle.read(1 << 20)
                    if not chunk:
                        break
                    if canary in tail + chunk:
                        hits.append(path)
                        break
                    tail = chunk[-len(canary):]
        except OSError:
            pass
journal = subprocess.run(["journalctl", "--no-pager", "-o", "export"], capture_output=True).stdout
if canary in journal:
    hits.append("journal")
print("\n".join(hits) or "none")
""" % MODEL_VOLUME


def test_the_privacy_canary_is_nowhere_on_disk_or_in_the_journal(host, session, api_canary):
    assert api_canary == 200
    assert any(CANARY in text for text in session["steps"]), "the canary was not sent through the UI"
    time.sleep(2)  # let journald and nginx flush
    try:
        out = host.ansible("ansible.builtin.command",
                           json.dumps({"argv": ["python3", "-c", SEARCH], "stdin": CANARY[::-1].encode().hex()}), check=False)
    except AnsibleException as exc:
        raise AssertionError(f"the search failed: {exc.result.get('stderr', '')[-1000:]}") from None
    assert out.get("rc") == 0, out.get("stderr", "")[-500:]
    assert out["stdout"].strip() == "none", out["stdout"]
