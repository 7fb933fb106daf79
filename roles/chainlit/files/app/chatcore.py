"""The chat app's logic that does not need Chainlit: settings, passwords,
log identities, the conversation window and the messages users see on
errors. app.py wires these into Chainlit; tests/unit exercises them alone.

Nothing here logs or returns the text of a prompt or a reply."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

# --- Settings --------------------------------------------------------------

AUTH_MODES = ("password", "header")
# A header name as HTTP allows it (RFC 9110 token), kept to the usual subset.
HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# Longest system prompt a user may set in the chat settings (characters).
USER_PROMPT_MAX_CHARS = 8000
TEMPERATURE_RANGE = (0.0, 2.0)


class SettingsError(ValueError):
    """The settings file is missing a key or holds a value out of range."""


@dataclass(frozen=True)
class Settings:
    """What the operator configured (the role writes it as JSON)."""

    base_url: str
    model: str
    system_prompt: str
    temperature: float
    max_tokens: int
    max_tokens_limit: int
    history_max_messages: int
    history_max_chars: int
    request_timeout: float
    user_settings: bool
    auth_mode: str
    auth_header: str
    header_users: tuple[str, ...]
    users_file: str
    identity_key_file: str


def _number(raw: Mapping[str, Any], key: str, kind: type, low: float, high: float | None = None):
    if key not in raw:
        raise SettingsError(f"settings: {key} is missing")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"settings: {key} must be a number, not {type(value).__name__}")
    if kind is int and int(value) != value:
        raise SettingsError(f"settings: {key} must be a whole number")
    value = kind(value)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SettingsError(f"settings: {key} must be {bounds}, not {value}")
    return value


def _text(raw: Mapping[str, Any], key: str, allow_empty: bool = False) -> str:
    if key not in raw:
        raise SettingsError(f"settings: {key} is missing")
    value = raw[key]
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise SettingsError(f"settings: {key} must be a non-empty string")
    return value


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """Check the operator's settings and return them typed; SettingsError names the key."""
    if not isinstance(raw, Mapping):
        raise SettingsError("settings: the file must hold a JSON object")
    max_tokens_limit = _number(raw, "max_tokens_limit", int, 1)
    auth_mode = _text(raw, "auth_mode")
    if auth_mode not in AUTH_MODES:
        raise SettingsError(f"settings: auth_mode must be one of {', '.join(AUTH_MODES)}, not {auth_mode!r}")
    auth_header = _text(raw, "auth_header")
    if not HEADER_NAME.match(auth_header):
        raise SettingsError(f"settings: auth_header {auth_header!r} is not a valid header name")
    header_users = raw.get("header_users", [])
    if not isinstance(header_users, list) or not all(isinstance(u, str) and u for u in header_users):
        raise SettingsError("settings: header_users must be a list of user names")
    base_url = _text(raw, "base_url")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", base_url):
        raise SettingsError(f"settings: base_url {base_url!r} is not an http(s) URL")
    user_settings = raw.get("user_settings", True)
    if not isinstance(user_settings, bool):
        raise SettingsError("settings: user_settings must be true or false")
    return Settings(
        base_url=base_url.rstrip("/"),
        model=_text(raw, "model"),
        system_prompt=_text(raw, "system_prompt", allow_empty=True),
        temperature=_number(raw, "temperature", float, *TEMPERATURE_RANGE),
        max_tokens=_number(raw, "max_tokens", int, 1, max_tokens_limit),
        max_tokens_limit=max_tokens_limit,
        history_max_messages=_number(raw, "history_max_messages", int, 1),
        history_max_chars=_number(raw, "history_max_chars", int, 1),
        request_timeout=_number(raw, "request_timeout", float, 1),
        user_settings=user_settings,
        auth_mode=auth_mode,
        auth_header=auth_header,
        header_users=tuple(header_users),
        users_file=_text(raw, "users_file"),
        identity_key_file=_text(raw, "identity_key_file"),
    )


def load_settings(path: str) -> Settings:
    """Read and check the settings file the role wrote."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except OSError as exc:
        raise SettingsError(f"settings: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise SettingsError(f"settings: {path} is not valid JSON") from None
    return parse_settings(raw)


# --- What a user may change in the chat settings ----------------------------


@dataclass(frozen=True)
class Preferences:
    """The settings one chat session uses."""

    system_prompt: str
    temperature: float
    max_tokens: int


def default_preferences(settings: Settings) -> Preferences:
    return Preferences(settings.system_prompt, settings.temperature, settings.max_tokens)


def _user_number(raw: Any) -> float | None:
    """A user-supplied setting as a float; None for booleans, NaN and anything
    that is not a number."""
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def parse_preferences(values: Mapping[str, Any] | None, settings: Settings) -> Preferences:
    """Turn what the chat settings panel sent into Preferences.

    The browser is not trusted: numbers arrive as numbers or strings, may be
    missing or out of range. Anything unusable falls back to the operator's
    default; numbers are clamped to the operator's limits; an empty system
    prompt means the operator's prompt."""
    values = values or {}
    base = default_preferences(settings)

    prompt = values.get("system_prompt")
    if isinstance(prompt, str) and prompt.strip():
        system_prompt = prompt.strip()[:USER_PROMPT_MAX_CHARS]
    else:
        system_prompt = base.system_prompt

    temperature = base.temperature
    candidate = _user_number(values.get("temperature"))
    if candidate is not None:
        temperature = _clamp(candidate, *TEMPERATURE_RANGE)

    max_tokens = base.max_tokens
    candidate = _user_number(values.get("max_tokens"))
    if candidate is not None and math.isfinite(candidate):
        max_tokens = int(_clamp(int(candidate), 1, settings.max_tokens_limit))

    return Preferences(system_prompt, round(temperature, 2), max_tokens)


# --- Conversation history ------------------------------------------------------


def record_user_message(history: list[dict], message_id: str, content: str) -> list[dict]:
    """History with the user's message appended.

    When the user edits an earlier message, Chainlit sends it again with the
    same id and drops everything after it from the screen: the history then
    forgets that message and everything after it too."""
    for index, turn in enumerate(history):
        if turn["id"] == message_id:
            history = history[:index]
            break
    return [*history, {"id": message_id, "role": "user", "content": content}]


def record_reply(history: list[dict], message_id: str, content: str) -> list[dict]:
    """History with the assistant's reply (possibly cut short by Stop) appended."""
    if not content:
        return list(history)
    return [*history, {"id": message_id, "role": "assistant", "content": content}]


def conversation_window(
    system_prompt: str, history: list[dict], max_messages: int, max_chars: int
) -> list[dict]:
    """The messages sent to the model: the system prompt, then the newest
    turns that fit both limits (message count and characters).

    The newest message is always sent, however long; older turns are dropped
    whole, oldest first, and the window never starts with a reply (a model
    expects a user turn after the system prompt)."""
    window: list[dict] = []
    used = 0
    for turn in reversed(history):
        size = len(turn["content"])
        if window and (len(window) >= max_messages or used + size > max_chars):
            break
        window.append(turn)
        used += size
    window.reverse()
    while len(window) > 1 and window[0]["role"] != "user":
        window.pop(0)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    return messages + [{"role": turn["role"], "content": turn["content"]} for turn in window]


# --- Passwords -----------------------------------------------------------------

# RFC 9106's second recommended option: Argon2id, 64 MiB, 3 passes, 4 lanes.
ARGON2_PARAMETERS = {"memory_cost": 65536, "iterations": 3, "lanes": 4}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """An Argon2id hash in the PHC string format ($argon2id$v=19$m=...)."""
    kdf = Argon2id(salt=salt or os.urandom(16), length=32, **ARGON2_PARAMETERS)
    return kdf.derive_phc_encoded(password.encode("utf-8"))


def password_matches(password: str, encoded: str) -> bool:
    """True when the password matches the PHC-encoded Argon2id hash."""
    try:
        Argon2id.verify_phc_encoded(password.encode("utf-8"), encoded)
    except (InvalidKey, ValueError, TypeError):
        return False
    return True


def load_users(path: str) -> dict[str, str]:
    """User name -> hash, from the file the role writes ({"users": {...}})."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise ValueError(f"{path} holds no users object")
    return {str(name): str(encoded) for name, encoded in users.items()}


class PasswordBook:
    """Checks logins against the users file; re-reads it when it changes.

    A name that is not in the file still costs one hash computation, so the
    answer time does not tell which names exist."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, str] = {}
        self._decoy = hash_password(os.urandom(16).hex())

    def _current(self) -> dict[str, str]:
        info = os.stat(self.path)
        stamp = (info.st_mtime_ns, info.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._users = load_users(self.path)
                self._stamp = stamp
            return self._users

    def check(self, name: str, password: str) -> bool:
        if not name or not password:
            return False
        encoded = self._current().get(name)
        if encoded is None:
            password_matches(password, self._decoy)
            return False
        return password_matches(password, encoded)


# --- Header authentication ---------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_identity(headers: Mapping[str, str], header: str, allowed: tuple[str, ...]) -> str | None:
    """The user name an SSO proxy put in the header, or None.

    Refuses empty, over-long or control-character values, and names outside
    `allowed` when that list is not empty."""
    wanted = header.lower()
    value = None
    for key, raw in headers.items():
        if key.lower() == wanted:
            value = raw
            break
    if value is None:
        return None
    name = value.strip()
    if not name or len(name) > 256 or _CONTROL.search(name):
        return None
    if allowed and name not in allowed:
        return None
    return name


# --- Identities in logs ------------------------------------------------------------


def read_identity_key(path: str) -> bytes:
    with open(path, "rb") as handle:
        key = handle.read().strip()
    if len(key) < 32:
        raise ValueError(f"{path} holds fewer than 32 bytes")
    return key


def identity_tag(key: bytes, name: str) -> str:
    """What the logs show instead of a user name: HMAC-SHA256 of the name
    under this host's key, first 16 hex digits. The same user gets the same
    tag on this host; without the key the tag does not reveal the name."""
    return hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


# --- Errors users see -------------------------------------------------------------------


def error_reply(error_class: str, status: int | None = None) -> str:
    """The text shown when the model could not answer. Built from the kind of
    failure only: never from the error's own text, which may quote input."""
    if error_class in ("APITimeoutError", "TimeoutError"):
        return "The model took too long to answer. Please try again."
    if error_class == "APIConnectionError":
        return "The model service cannot be reached right now. Please try again later."
    if status in (401, 403):
        return "The chat service is not allowed to use the model (check its API key)."
    if status == 400:
        return (
            "The model refused this request; the conversation is probably too long for it. "
            "Start a new chat or ask for a shorter answer."
        )
    if status == 429 or (status is not None and status >= 500):
        return "The model is busy or failing right now. Please try again in a moment."
    return "The model could not answer. Please try again."


class Handover:
    """What this process still holds, for the hand-over to another one.

    An update runs the new version beside this one (roles/chainlit,
    tasks/handoff.yml), points the gateway's new sessions at it, and then
    asks this process to hand its sessions over: a file named "drain" in
    its runtime directory (systemd's RuntimeDirectory). From then on each
    session is closed at the transport when the moment is good, so that the
    browser reconnects, through the gateway, to the new process: as soon as
    its reply has ended (its user reads it), or once it has been quiet for
    IDLE seconds (nobody is typing into it, most likely). A streaming reply
    is never cut. The browser needs about a second to reconnect; Chainlit's
    page loses what is sent in that second, which these moments avoid.
    The file "busy" holds "<sessions connected> <replies streaming>", for
    the update to wait on "0 0"; it is replaced whole (a rename) on every
    change. Without a runtime directory (the app run by hand) it only
    counts."""

    IDLE = 10.0

    def __init__(self, runtime_dir: str | None, clock=time.monotonic):
        self.directory = Path(runtime_dir) if runtime_dir else None
        self.clock = clock
        self.running: dict[str, int] = {}
        self.last_active: dict[str, float] = {}
        self.sessions = 0
        self._written: str | None = None
        self._write()

    @property
    def replies(self) -> int:
        return sum(self.running.values())

    def started(self, session: str) -> None:
        self.running[session] = self.running.get(session, 0) + 1
        self.last_active[session] = self.clock()
        self._write()

    def ended(self, session: str) -> None:
        left = self.running.get(session, 0) - 1
        if left > 0:
            self.running[session] = left
        else:
            self.running.pop(session, None)
        self.last_active[session] = self.clock()
        self._write()

    def connected(self, sessions: list[str]) -> None:
        """The sessions connected now (the watcher's count, twice a second)."""
        now = self.clock()
        self.last_active = {s: self.last_active.get(s, now) for s in sessions}
        self.sessions = len(sessions)
        self._write()

    def draining(self) -> bool:
        return self.directory is not None and (self.directory / "drain").exists()

    def hand_over(self, session: str, reply_ended: bool = False) -> bool:
        """Whether to close the session now: draining, no reply of it streaming,
        and its reply has just ended or it has been quiet for IDLE seconds."""
        if not self.draining() or self.running.get(session, 0) > 0:
            return False
        return reply_ended or self.clock() - self.last_active.get(session, self.clock()) >= self.IDLE

    def _write(self) -> None:
        text = f"{self.sessions} {self.replies}\n"
        if self.directory is None or text == self._written or not self.directory.is_dir():
            return
        partial = self.directory / ".busy.new"
        partial.write_text(text)
        partial.replace(self.directory / "busy")
        self._written = text
