"""Private LLM chat: a Chainlit app in front of the local vLLM server.

Async end to end (openai.AsyncOpenAI), replies stream token by token, the
conversation is kept for the session only (nothing is stored), the Stop
button cancels the request to the model. Logs carry outcomes, sizes and
times, and a keyed hash instead of the user name: never the text of a
prompt or a reply.

Configuration: the JSON file named by CHAINLIT_APP_SETTINGS (written by the
Ansible role); secrets come from the environment (OPENAI_API_KEY,
CHAINLIT_AUTH_SECRET), which systemd reads from a root-only file."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

import chainlit as cl
import openai
from chainlit.input_widget import Slider, TextInput

import chatcore

log = logging.getLogger("private_llm.chat")
log.setLevel(logging.INFO)
# The HTTP client logs every request to vLLM at INFO: noise, not news.
for _name in ("httpx", "httpx2", "openai"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SETTINGS = chatcore.load_settings(os.environ["CHAINLIT_APP_SETTINGS"])
IDENTITY_KEY = chatcore.read_identity_key(SETTINGS.identity_key_file)

client = openai.AsyncOpenAI(
    base_url=SETTINGS.base_url,
    api_key=os.environ["OPENAI_API_KEY"],
    timeout=SETTINGS.request_timeout,
    max_retries=0,
)

# Replies streaming here, and the hand-over of sessions to a new process
# during an update (chatcore.Handover).
HANDOVER = chatcore.Handover(os.environ.get("RUNTIME_DIRECTORY"))
_TASKS: set[asyncio.Task] = set()
_WATCHER: asyncio.Task | None = None

# Argon2id takes 64 MiB and a fraction of a second per check: at most two at
# a time, off the event loop.
_LOGIN_SLOTS = asyncio.Semaphore(2)


def tag(name: str | None) -> str:
    return chatcore.identity_tag(IDENTITY_KEY, name) if name else "-"


def current_user_tag() -> str:
    user = cl.user_session.get("user")
    return tag(getattr(user, "identifier", None))


if SETTINGS.auth_mode == "password":
    PASSWORDS = chatcore.PasswordBook(SETTINGS.users_file)

    @cl.password_auth_callback
    async def password_login(username: str, password: str):
        async with _LOGIN_SLOTS:
            accepted = await asyncio.to_thread(PASSWORDS.check, username, password)
        log.info("login %s user=%s", "accepted" if accepted else "refused", tag(username))
        if not accepted:
            return None
        return cl.User(identifier=username, metadata={"provider": "password"})

else:

    @cl.header_auth_callback
    async def header_login(headers):
        name = chatcore.header_identity(headers, SETTINGS.auth_header, SETTINGS.header_users)
        log.info("login %s user=%s", "accepted" if name else "refused", tag(name))
        if name is None:
            return None
        return cl.User(identifier=name, metadata={"provider": "header"})


@cl.on_app_shutdown
async def shutdown():
    """Empty Chainlit's scratch directory and exit, as Chainlit does next.

    Chainlit would remove the .files directory itself, which fails (and logs
    a traceback on every stop): the app directory around it is read-only to
    this service by design. Only the directory's contents are the service's."""
    await client.close()
    files = Path(os.environ.get("CHAINLIT_APP_ROOT", os.getcwd())) / ".files"
    for entry in files.iterdir() if files.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    log.info("stopped")
    logging.shutdown()
    os._exit(0)


@cl.on_chat_start
async def start_chat():
    watch_once()
    cl.user_session.set("history", [])
    cl.user_session.set("preferences", chatcore.default_preferences(SETTINGS))
    if SETTINGS.user_settings:
        await cl.ChatSettings(
            [
                TextInput(
                    id="system_prompt",
                    label="System prompt",
                    initial=SETTINGS.system_prompt,
                    multiline=True,
                    description="Instructions the model gets before the conversation. Empty: the site's default.",
                ),
                Slider(
                    id="temperature",
                    label="Temperature",
                    initial=SETTINGS.temperature,
                    min=chatcore.TEMPERATURE_RANGE[0],
                    max=chatcore.TEMPERATURE_RANGE[1],
                    step=0.05,
                    description="Higher is more varied, 0 is the most predictable.",
                ),
                Slider(
                    id="max_tokens",
                    label="Longest answer (tokens)",
                    initial=SETTINGS.max_tokens,
                    min=1,
                    max=SETTINGS.max_tokens_limit,
                    step=1,
                ),
            ]
        ).send()


@cl.on_settings_update
async def update_preferences(values):
    cl.user_session.set("preferences", chatcore.parse_preferences(values, SETTINGS))
    log.info("settings changed user=%s", current_user_tag())


async def close_for_hand_over(socket_id: str, reply_ended: bool = False) -> None:
    """Close the session's transport, not the session: the browser's
    socket.io reconnects by itself, and the gateway sends it to the process
    that serves now. Its in-memory conversation stays behind, as on any
    restart."""
    if not HANDOVER.hand_over(socket_id, reply_ended):
        return
    from chainlit.server import sio

    engine_id = sio.manager.eio_sid_from_sid(socket_id, "/")
    transport = sio.eio.sockets.get(engine_id) if engine_id else None
    if transport is None:
        return
    log.info("session handed over")
    await sio.eio.disconnect(engine_id)
    # engine.io sends its close packet but leaves the websocket open until
    # the browser writes again, and a message written then would be lost:
    # ending the socket's writer closes the websocket now, and the browser
    # reconnects at once (what it sends meanwhile waits for the new one).
    await transport.queue.put(None)


def reply_ended(socket_id: str) -> None:
    HANDOVER.ended(socket_id)
    if HANDOVER.hand_over(socket_id, reply_ended=True):
        task = asyncio.get_running_loop().create_task(close_for_hand_over(socket_id, reply_ended=True))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)


def count_replies() -> None:
    """Count each user message from its arrival to the end of the task that
    answers it (its last event, task_end, included): Chainlit's handler of
    the socket.io event, wrapped. The pinned versions' tests prove it."""
    from chainlit.server import sio
    from chainlit.session import WebsocketSession

    handlers = sio.handlers.get("/", {})
    chainlit_handler = handlers.get("client_message")
    if chainlit_handler is None or getattr(chainlit_handler, "counted", False):
        return

    async def counted(socket_id, payload):
        HANDOVER.started(socket_id)
        task = None
        try:
            await chainlit_handler(socket_id, payload)
            session = WebsocketSession.get(socket_id)
            task = session.current_task if session else None
        finally:
            if task is None or task.done():
                reply_ended(socket_id)
            else:
                task.add_done_callback(lambda _task: reply_ended(socket_id))

    counted.counted = True
    handlers["client_message"] = counted


async def watch_for_hand_over() -> None:
    """Twice a second: note the connected sessions, and once asked to hand
    over, close those that have been quiet long enough (the others close as
    their reply ends, or once quiet)."""
    from chainlit.server import sio

    while True:
        try:
            connected = [socket_id for socket_id, _ in sio.manager.get_participants("/", None)]
            HANDOVER.connected(connected)
            for socket_id in connected:
                await close_for_hand_over(socket_id)
        except Exception as exc:  # noqa: BLE001 - the watch goes on; an update waits for it
            log.warning("hand-over watch: %s", type(exc).__name__)
        await asyncio.sleep(0.5)


def watch_once() -> None:
    """At the first session: count its messages and watch for a hand-over."""
    global _WATCHER
    if _WATCHER is None or _WATCHER.done():
        count_replies()
        _WATCHER = asyncio.get_running_loop().create_task(watch_for_hand_over())


@cl.on_message
async def answer(message: cl.Message):
    preferences = cl.user_session.get("preferences") or chatcore.default_preferences(SETTINGS)
    history = chatcore.record_user_message(
        cl.user_session.get("history") or [], message.id, message.content or ""
    )
    cl.user_session.set("history", history)
    messages = chatcore.conversation_window(
        preferences.system_prompt, history, SETTINGS.history_max_messages, SETTINGS.history_max_chars
    )

    reply = cl.Message(content="")
    started = time.monotonic()
    outcome, tokens, chunks = "error", 0, 0
    try:
        stream = await client.chat.completions.create(
            model=SETTINGS.model,
            messages=messages,
            temperature=preferences.temperature,
            max_tokens=preferences.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            # For the gateway's usage audit log: the keyed hash, never the name.
            extra_headers={"X-Chat-User": current_user_tag()},
        )
        # Leaving this block closes the HTTP stream: on Stop (cancellation)
        # vLLM sees the client go away and stops generating.
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens or tokens
                if chunk.choices:
                    delta = chunk.choices[0].delta.content
                    if delta:
                        chunks += 1
                        await reply.stream_token(delta)
        outcome = "done"
    except asyncio.CancelledError:
        outcome = "stopped"
        raise
    except openai.APIError as exc:
        await cl.ErrorMessage(
            content=chatcore.error_reply(type(exc).__name__, getattr(exc, "status_code", None))
        ).send()
        outcome = f"error:{type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - the user gets a message, the log the class only
        await cl.ErrorMessage(content=chatcore.error_reply(type(exc).__name__)).send()
        outcome = f"error:{type(exc).__name__}"
    finally:
        if reply.content:
            await reply.send()
            cl.user_session.set("history", chatcore.record_reply(history, reply.id, reply.content))
        log.info(
            "reply %s user=%s messages=%d chunks=%d tokens=%d chars=%d seconds=%.2f",
            outcome, current_user_tag(), len(messages), chunks, tokens, len(reply.content),
            time.monotonic() - started,
        )
