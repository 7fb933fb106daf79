"""The chat app's own logic (roles/chainlit/files/app/chatcore.py), without
Chainlit: settings, what users may change, the conversation window, password
checks, user tags in logs, header logins and the texts shown on errors."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "roles" / "chainlit" / "files" / "app"))

import chatcore  # noqa: E402  (path set just above)

VALID = {
    "base_url": "http://127.0.0.1:8000/v1",
    "model": "Qwen3-4B-Instruct-2507",
    "system_prompt": "Be brief.",
    "temperature": 0.7,
    "max_tokens": 1024,
    "max_tokens_limit": 4096,
    "history_max_messages": 40,
    "history_max_chars": 48000,
    "request_timeout": 300.0,
    "user_settings": True,
    "auth_mode": "password",
    "auth_header": "X-Remote-User",
    "header_users": [],
    "users_file": "/etc/chainlit/users.json",
    "identity_key_file": "/etc/chainlit/identity.key",
}


@pytest.fixture
def settings():
    return chatcore.parse_settings(VALID)


@pytest.fixture
def quick_hashes(monkeypatch):
    """Cheap Argon2id parameters: the tests check logic, not cost."""
    monkeypatch.setattr(chatcore, "ARGON2_PARAMETERS", {"memory_cost": 64, "iterations": 1, "lanes": 1})


# --- Settings -------------------------------------------------------------------


def test_settings_file_is_read_into_typed_settings(tmp_path):
    path = tmp_path / "app.json"
    path.write_text(json.dumps({**VALID, "base_url": "http://127.0.0.1:8000/v1/"}))
    settings = chatcore.load_settings(str(path))
    assert settings.base_url == "http://127.0.0.1:8000/v1"
    assert settings.max_tokens == 1024 and isinstance(settings.max_tokens, int)
    assert settings.request_timeout == 300.0 and settings.header_users == ()


@pytest.mark.parametrize("key", ["model", "max_tokens", "auth_mode", "users_file", "base_url"])
def test_missing_setting_is_named(key):
    raw = {k: v for k, v in VALID.items() if k != key}
    with pytest.raises(chatcore.SettingsError, match=key):
        chatcore.parse_settings(raw)


@pytest.mark.parametrize("key, value, message", [
    ("temperature", 2.5, "temperature must be between 0.0 and 2.0"),
    ("max_tokens", 5000, "max_tokens must be between 1 and 4096"),
    ("max_tokens", 1.5, "max_tokens must be a whole number"),
    ("max_tokens", True, "max_tokens must be a number"),
    ("history_max_chars", 0, "history_max_chars must be at least 1"),
    ("auth_mode", "oauth", "auth_mode must be one of password, header"),
    ("auth_header", "X Remote User", "not a valid header name"),
    ("base_url", "file:///etc/passwd", "not an http\\(s\\) URL"),
    ("header_users", "alice", "header_users must be a list"),
    ("user_settings", "yes", "user_settings must be true or false"),
])
def test_out_of_range_setting_is_refused_with_its_name(key, value, message):
    with pytest.raises(chatcore.SettingsError, match=message):
        chatcore.parse_settings({**VALID, key: value})


def test_unreadable_or_broken_settings_file_is_reported(tmp_path):
    with pytest.raises(chatcore.SettingsError, match="cannot read"):
        chatcore.load_settings(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(chatcore.SettingsError, match="not valid JSON"):
        chatcore.load_settings(str(broken))


# --- What users may change ------------------------------------------------------------


def test_no_values_give_the_operators_defaults(settings):
    assert chatcore.parse_preferences(None, settings) == chatcore.Preferences("Be brief.", 0.7, 1024)


def test_values_from_the_settings_panel_are_used(settings):
    prefs = chatcore.parse_preferences(
        {"system_prompt": "  Answer in French.  ", "temperature": "0.25", "max_tokens": 300.0}, settings)
    assert prefs == chatcore.Preferences("Answer in French.", 0.25, 300)


@pytest.mark.parametrize("values, expected", [
    ({"temperature": 9}, (2.0, 1024)),
    ({"temperature": -1}, (0.0, 1024)),
    ({"max_tokens": 10**9}, (0.7, 4096)),
    ({"max_tokens": 0}, (0.7, 1)),
    ({"temperature": "hot", "max_tokens": "many"}, (0.7, 1024)),
    ({"temperature": float("nan"), "max_tokens": float("inf")}, (0.7, 1024)),
    ({"temperature": True, "max_tokens": False}, (0.7, 1024)),
    ({"temperature": None, "max_tokens": [5]}, (0.7, 1024)),
])
def test_browser_values_are_clamped_or_ignored(settings, values, expected):
    prefs = chatcore.parse_preferences(values, settings)
    assert (prefs.temperature, prefs.max_tokens) == expected


def test_empty_or_huge_system_prompt(settings):
    assert chatcore.parse_preferences({"system_prompt": "   "}, settings).system_prompt == "Be brief."
    long = chatcore.parse_preferences({"system_prompt": "x" * 20000}, settings).system_prompt
    assert len(long) == chatcore.USER_PROMPT_MAX_CHARS


# --- Conversation history ------------------------------------------------------------


def conversation(*pairs):
    history = []
    for number, (question, answer) in enumerate(pairs):
        history = chatcore.record_user_message(history, f"u{number}", question)
        history = chatcore.record_reply(history, f"a{number}", answer)
    return history


def test_window_is_system_prompt_then_turns_in_order():
    history = conversation(("hi", "hello"), ("how are you?", "fine"))
    history = chatcore.record_user_message(history, "u2", "bye")
    assert chatcore.conversation_window("Be brief.", history, 40, 10000) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "fine"},
        {"role": "user", "content": "bye"},
    ]


def test_window_drops_oldest_turns_beyond_the_message_limit():
    history = chatcore.record_user_message(conversation(("q0", "a0"), ("q1", "a1"), ("q2", "a2")), "u3", "q3")
    window = chatcore.conversation_window("", history, 3, 10000)
    # Three messages would start with a reply: the window starts at a question.
    assert [m["content"] for m in window] == ["q2", "a2", "q3"]


def test_window_drops_oldest_turns_beyond_the_character_budget():
    history = chatcore.record_user_message(conversation(("a" * 50, "b" * 50), ("c" * 10, "d" * 10)), "u2", "e" * 10)
    window = chatcore.conversation_window("S", history, 40, 35)
    assert [m["content"] for m in window] == ["S", "c" * 10, "d" * 10, "e" * 10]


def test_newest_message_is_sent_even_when_alone_it_exceeds_the_budget():
    history = chatcore.record_user_message(conversation(("old", "reply")), "u1", "x" * 500)
    assert chatcore.conversation_window("", history, 40, 100) == [{"role": "user", "content": "x" * 500}]


def test_empty_system_prompt_is_left_out():
    history = chatcore.record_user_message([], "u0", "hi")
    assert chatcore.conversation_window("  ", history, 40, 1000) == [{"role": "user", "content": "hi"}]


def test_edited_message_replaces_itself_and_everything_after_it():
    history = conversation(("first", "one"), ("second", "two"), ("third", "three"))
    edited = chatcore.record_user_message(history, "u1", "second, edited")
    assert [(t["id"], t["content"]) for t in edited] == [
        ("u0", "first"), ("a0", "one"), ("u1", "second, edited")]
    assert len(history) == 6  # the earlier list is not changed in place


def test_empty_reply_is_not_recorded():
    history = chatcore.record_user_message([], "u0", "hi")
    assert chatcore.record_reply(history, "a0", "") == history


# --- Passwords -------------------------------------------------------------------


def test_stored_hash_is_argon2id_with_the_recommended_cost():
    encoded = chatcore.hash_password("correct horse battery")
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert "correct horse battery" not in encoded
    assert chatcore.password_matches("correct horse battery", encoded)


def test_wrong_or_malformed_passwords_do_not_match(quick_hashes):
    encoded = chatcore.hash_password("correct horse battery")
    assert not chatcore.password_matches("correct horse batterY", encoded)
    assert not chatcore.password_matches("", encoded)
    assert not chatcore.password_matches("anything", "$2b$12$not-an-argon2-hash")
    assert not chatcore.password_matches("anything", "")


def test_same_password_gets_a_new_salt_each_time(quick_hashes):
    assert chatcore.hash_password("same password") != chatcore.hash_password("same password")


def write_users(path, users):
    path.write_text(json.dumps({"format": 1, "users": {n: chatcore.hash_password(p) for n, p in users.items()}}))


def test_password_book_accepts_only_the_right_password(tmp_path, quick_hashes):
    path = tmp_path / "users.json"
    write_users(path, {"alice": "alice-password-1", "bob": "bob-password-22"})
    book = chatcore.PasswordBook(str(path))
    assert book.check("alice", "alice-password-1")
    assert not book.check("alice", "bob-password-22")
    assert not book.check("mallory", "alice-password-1")
    assert not book.check("alice", "")
    assert not book.check("", "alice-password-1")


def test_password_book_reads_the_file_again_when_it_changes(tmp_path, quick_hashes):
    path = tmp_path / "users.json"
    write_users(path, {"alice": "old-password-123"})
    book = chatcore.PasswordBook(str(path))
    assert book.check("alice", "old-password-123")
    write_users(path, {"alice": "new-password-4567", "carol": "carol-password-8"})
    assert not book.check("alice", "old-password-123")
    assert book.check("alice", "new-password-4567")
    assert book.check("carol", "carol-password-8")


def test_unknown_user_costs_a_hash_like_a_known_one(tmp_path, quick_hashes, monkeypatch):
    path = tmp_path / "users.json"
    write_users(path, {"alice": "alice-password-1"})
    book = chatcore.PasswordBook(str(path))
    checked = []
    real = chatcore.password_matches
    monkeypatch.setattr(chatcore, "password_matches", lambda pw, enc: checked.append(enc) or real(pw, enc))
    assert not book.check("nobody-here", "some-password-1")
    assert checked and checked[0].startswith("$argon2id$")


# --- User tags in logs --------------------------------------------------------------


def test_identity_tag_is_a_keyed_hash_of_the_name():
    key = b"k" * 64
    tag = chatcore.identity_tag(key, "alice")
    assert tag == chatcore.identity_tag(key, "alice")
    assert len(tag) == 16 and int(tag, 16) >= 0
    assert tag != chatcore.identity_tag(key, "bob")
    assert tag != chatcore.identity_tag(b"j" * 64, "alice")
    assert "alice" not in tag
    # Not an unkeyed digest anyone could recompute from the name.
    for algorithm in ("md5", "sha1", "sha256"):
        assert hashlib.new(algorithm, b"alice").hexdigest()[:16] != tag


def test_identity_key_must_be_long_enough(tmp_path):
    short = tmp_path / "short.key"
    short.write_text("too-short\n")
    with pytest.raises(ValueError, match="fewer than 32 bytes"):
        chatcore.read_identity_key(str(short))
    good = tmp_path / "good.key"
    good.write_text("a" * 64 + "\n")
    assert chatcore.read_identity_key(str(good)) == b"a" * 64


# --- Header login -------------------------------------------------------------------


def test_header_login_takes_the_name_from_the_configured_header():
    assert chatcore.header_identity({"x-remote-user": " alice "}, "X-Remote-User", ()) == "alice"
    assert chatcore.header_identity({"X-Other": "alice"}, "X-Remote-User", ()) is None


@pytest.mark.parametrize("value", ["", "   ", "ali\nce", "ali\x00ce", "a" * 257])
def test_header_login_refuses_unusable_names(value):
    assert chatcore.header_identity({"X-Remote-User": value}, "X-Remote-User", ()) is None


def test_header_login_honours_the_allowed_list():
    allowed = ("alice", "bob")
    assert chatcore.header_identity({"X-Remote-User": "bob"}, "X-Remote-User", allowed) == "bob"
    assert chatcore.header_identity({"X-Remote-User": "eve"}, "X-Remote-User", allowed) is None


# --- Errors users see -------------------------------------------------------------------


@pytest.mark.parametrize("error_class, status, words", [
    ("APITimeoutError", None, "too long to answer"),
    ("APIConnectionError", None, "cannot be reached"),
    ("AuthenticationError", 401, "API key"),
    ("BadRequestError", 400, "too long for it"),
    ("RateLimitError", 429, "busy"),
    ("InternalServerError", 503, "busy"),
    ("KeyError", None, "could not answer"),
])
def test_error_texts_depend_on_the_kind_of_failure_only(error_class, status, words):
    assert words in chatcore.error_reply(error_class, status)


# The hand-over of sessions during an update (chatcore.Handover;
# roles/chainlit/tasks/drain.yml writes "drain" and waits on "busy").

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_the_busy_file_counts_sessions_and_the_replies_streaming_across_them(tmp_path):
    handover = chatcore.Handover(str(tmp_path))
    assert (tmp_path / "busy").read_text() == "0 0\n"
    handover.connected(["a", "b"])
    handover.started("a")
    handover.started("b")
    handover.started("a")
    assert (tmp_path / "busy").read_text() == "2 3\n"
    handover.ended("a")
    handover.ended("b")
    assert (tmp_path / "busy").read_text() == "2 1\n"
    handover.ended("a")
    handover.connected([])
    assert (tmp_path / "busy").read_text() == "0 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_nothing_is_handed_over_before_the_drain_file_and_never_a_streaming_reply(tmp_path):
    clock = Clock()
    handover = chatcore.Handover(str(tmp_path), clock=clock)
    handover.connected(["busy", "idle"])
    handover.started("busy")
    clock.now += 60
    assert not handover.hand_over("idle") and not handover.hand_over("busy", reply_ended=True)
    (tmp_path / "drain").write_text("")
    assert handover.hand_over("idle")
    assert not handover.hand_over("busy") and not handover.hand_over("busy", reply_ended=True)
    handover.ended("busy")
    assert handover.hand_over("busy", reply_ended=True)


def test_a_session_goes_right_after_its_reply_or_once_quiet_for_ten_seconds(tmp_path):
    clock = Clock()
    handover = chatcore.Handover(str(tmp_path), clock=clock)
    (tmp_path / "drain").write_text("")
    handover.connected(["reader", "new"])
    handover.started("reader")
    clock.now += 3
    handover.ended("reader")
    # Its user reads the reply: the moment to move it.
    assert handover.hand_over("reader", reply_ended=True)
    # Otherwise only after IDLE quiet seconds (someone may be typing).
    clock.now += chatcore.Handover.IDLE - 1
    assert not handover.hand_over("reader")
    assert handover.hand_over("new"), "connected 12 s ago and quiet since"
    clock.now += 1
    assert handover.hand_over("reader")


def test_without_a_runtime_directory_the_app_only_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    handover = chatcore.Handover(None)
    handover.started("a")
    assert handover.replies == 1 and not handover.hand_over("a", reply_ended=True)
    handover.ended("a")
    assert handover.replies == 0 and list(tmp_path.iterdir()) == []
