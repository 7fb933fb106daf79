"""Drive Chainlit's page like a user: log in, send messages, collect the replies.

Used by scenario tests that need a real chat through the gateway (Debian's
chromium through Playwright). Chromium here has no trust store to add the
project's CA to, so it ignores certificate errors; the scenarios prove the
certificate chain with their own TLS tests.
"""

from __future__ import annotations

import re
import time
from typing import Iterable
from urllib.parse import urlsplit

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 "--disable-default-apps", "--disable-domain-reliability"]


def ends_a_reply(frame: str) -> bool:
    """The frame that closes the app's answer to a message: the update of
    its on_message run step (a session's on_chat_start, as after a
    reconnection, sends one of its own, which does not count)."""
    return frame.startswith('42["update_message"') and re.search(r'"name": ?"on_message"', frame) is not None


def chat(origin: str, user: str, password: str, messages: Iterable[str], reply_timeout: float = 120,
         pause: float = 0.5) -> dict:
    """Log in at origin and send each message, waiting for each reply to end.

    messages may be a generator: the tab chats for as long as it yields.
    pause: seconds the user takes after a reply before typing the next.
    Returns {"login_status", "frames" (websocket frames received), "tokens" (for
    each message, the stream_token events of its reply), "sockets" (websockets
    the page opened: more than one when it reconnected), "steps" (texts on the
    page)}.
    """
    from playwright.sync_api import sync_playwright

    frames: list[str] = []
    sockets: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True)
        page = context.new_page()
        page.on("websocket", lambda ws: sockets.append(ws.url) or ws.on("framereceived", lambda payload: frames.append(
            payload if isinstance(payload, str) else payload.decode(errors="replace"))))
        page.goto(f"{origin}/login", wait_until="networkidle")
        page.fill("#email", user)
        page.fill("#password", password)
        with page.expect_response(lambda r: urlsplit(r.url).path.endswith("/login")
                                  and r.request.method == "POST") as response:
            page.click("button[type=submit]")
        result = {"login_status": response.value.status, "frames": frames, "tokens": [], "sockets": sockets,
                  "steps": []}
        if result["login_status"] != 200:
            browser.close()
            return result
        page.wait_for_selector("#chat-input", timeout=60_000)
        # A message typed before the websocket session is ready is lost.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any('"connect"' in f or f.startswith("40") for f in frames):
            page.wait_for_timeout(200)
        page.wait_for_timeout(1000)
        for message in messages:
            seen_before = len(frames)
            ended_before = sum(map(ends_a_reply, frames))
            page.click("#chat-input")
            page.keyboard.type(message)
            page.keyboard.press("Enter")
            deadline = time.monotonic() + reply_timeout
            while time.monotonic() < deadline and sum(map(ends_a_reply, frames)) <= ended_before:
                page.wait_for_timeout(250)
            result["tokens"].append(sum('"stream_token"' in f for f in frames[seen_before:]))
            page.wait_for_timeout(pause * 1000)
        result["steps"] = page.locator(".step").all_inner_texts()
        context.close()
        browser.close()
    return result
