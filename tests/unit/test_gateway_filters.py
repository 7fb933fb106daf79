"""The gateway role's decisions (roles/gateway/filter_plugins/gateway.py):
which names and addresses the server certificate carries, the regex that
keeps vLLM's other routes away, and the CSP hashes of inline scripts."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "gateway" / "filter_plugins" / "gateway.py"
_spec = importlib.util.spec_from_file_location("gateway_filters", PLUGIN)
gateway = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gateway)


# --- gateway_san_list --------------------------------------------------------

def test_names_come_first_then_addresses_each_once():
    sans = gateway.gateway_san_list(
        ["node1", "node1.example.internal", "node1", "chat.example.internal"],
        ["10.88.0.21", "10.88.0.21", "2001:db8::5"],
    )
    assert sans == ["DNS:node1", "DNS:node1.example.internal", "DNS:chat.example.internal",
                    "IP:10.88.0.21", "IP:2001:db8::5"]


def test_loopback_link_local_and_unspecified_addresses_are_left_out():
    sans = gateway.gateway_san_list(["node1"], ["127.0.0.1", "::1", "fe80::1%eth0", "169.254.1.1", "0.0.0.0", "10.0.0.1"])
    assert sans == ["DNS:node1", "IP:10.0.0.1"]


def test_an_address_given_as_a_name_becomes_an_ip_entry():
    assert gateway.gateway_san_list(["10.20.0.5", "chat"]) == ["DNS:chat", "IP:10.20.0.5"]


def test_ipv6_addresses_are_written_compressed_so_duplicates_collapse():
    assert gateway.gateway_san_list([], ["2001:0db8:0000::0005", "2001:db8::5"]) == ["IP:2001:db8::5"]


def test_names_are_lowercased_and_lose_a_trailing_dot():
    assert gateway.gateway_san_list(["Chat.Example.Internal.", "chat.example.internal"]) == ["DNS:chat.example.internal"]


@pytest.mark.parametrize("bad", ["", "  ", "localhost.localdomain name", "under_score", "-lead", "trail-",
                                 "a" * 64, "x;rm", None])
def test_names_a_certificate_cannot_carry_are_skipped(bad):
    assert gateway.gateway_san_list([bad, "ok"]) == ["DNS:ok"]


def test_a_wildcard_name_is_kept():
    assert gateway.gateway_san_list(["*.example.internal"]) == ["DNS:*.example.internal"]


def test_a_single_string_counts_as_one_name():
    assert gateway.gateway_san_list("node1", "10.0.0.1") == ["DNS:node1", "IP:10.0.0.1"]


# --- gateway_path_regex ------------------------------------------------------

@pytest.fixture
def blocked():
    return re.compile(gateway.gateway_path_regex(["/v1", "/tokenize", "/openapi.json", "/v1/x"]))


@pytest.mark.parametrize("path", ["/v1", "/v1/", "/v1/embeddings", "/tokenize", "/tokenize/x", "/openapi.json"])
def test_blocked_prefixes_match_on_whole_segments(blocked, path):
    assert blocked.search(path)


@pytest.mark.parametrize("path", ["/", "/v1x", "/v10/models", "/tokenizer", "/openapi1json", "/assets/v1",
                                  "/login", "/ws/socket.io/"])
def test_other_paths_do_not_match(blocked, path):
    assert not blocked.search(path)


def test_dots_are_escaped_so_they_match_only_a_dot():
    assert gateway.gateway_path_regex(["/openapi.json"]) == r"^/(?:openapi\.json)(?:/|$)"


@pytest.mark.parametrize("bad", ["v1", "/", "/a b", "/a;b", "/a{1}", "/a$", "//v1", "/(x)"])
def test_paths_nginx_could_misread_are_refused(bad):
    with pytest.raises(ValueError, match="not a plain absolute path"):
        gateway.gateway_path_regex([bad])


def test_no_paths_gives_no_regex():
    assert gateway.gateway_path_regex([]) == ""


# --- gateway_script_hashes ---------------------------------------------------

def _hash(text):
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_inline_scripts_are_hashed_exactly_and_external_ones_ignored():
    page = ('<head><script>\n      const global = globalThis;\n    </script>'
            '<script type="module" crossorigin src="/assets/index.js"></script>'
            '<SCRIPT>a()</SCRIPT><script>a()</script></head>')
    assert gateway.gateway_script_hashes(page) == [_hash("\n      const global = globalThis;\n    "), _hash("a()")]


def test_the_filters_are_registered_under_their_names():
    assert set(gateway.FilterModule().filters()) == {"gateway_san_list", "gateway_path_regex", "gateway_script_hashes",
                                                     "gateway_api_client_errors", "gateway_api_client_list"}


# --- gateway_api_client_errors / gateway_api_client_list --------------------------

GOOD_KEY = "k" * 40


def test_well_formed_api_clients_have_no_errors():
    clients = [{"name": "claims-batch", "key": GOOD_KEY, "networks": ["10.20.30.0/24", "2001:db8::/48"],
                "rate": "2r/s", "burst": 0},
               {"name": "notebook_2"}]
    assert gateway.gateway_api_client_errors(clients, False, "another-key") == []
    assert gateway.gateway_api_client_errors([], False, "") == []


@pytest.mark.parametrize(("clients", "expected"), [
    ("app", "gateway_api_clients must be a list"),
    ([{"name": "app"}, "batch"], "gateway_api_clients[1] must be a mapping"),
    ([{"name": "a b"}], "gateway_api_clients[0] needs a name of 1-64 letters"),
    ([{"key": GOOD_KEY}], "gateway_api_clients[0] needs a name"),
    ([{"name": "default"}], "gateway_api_clients[0]: the name default is a word nginx reads as a keyword"),
    ([{"name": "Include"}], "the name Include is a word nginx reads as a keyword"),
    ([{"name": "app"}, {"name": "app"}], "gateway_api_clients[1] (app) has the name of gateway_api_clients[0]"),
    ([{"name": "app", "nets": ["10.0.0.0/8"]}], "gateway_api_clients[0] (app) has unknown settings nets"),
    ([{"name": "app", "key": "short"}], "gateway_api_clients[0] (app): its key must be 32-128 characters"),
    ([{"name": "app", "key": GOOD_KEY + '"; return 200'}], "its key must be 32-128 characters"),
    ([{"name": "app", "key": GOOD_KEY}, {"name": "b", "key": GOOD_KEY}],
     "gateway_api_clients[1] (b) has the key of gateway_api_clients[0]"),
    ([{"name": "app", "networks": "10.0.0.0/8"}], "gateway_api_clients[0] (app): networks must be a non-empty list"),
    ([{"name": "app", "networks": ["10.0.0.300/8"]}], "networks holds 10.0.0.300/8, not a network"),
    ([{"name": "app", "networks": ["0.0.0.0/0"]}], "every address on the Internet"),
    ([{"name": "app", "rate": "fast"}], "gateway_api_clients[0] (app): rate must be a rate"),
    ([{"name": "app", "burst": -1}], "gateway_api_clients[0] (app): burst must be a whole number"),
])
def test_each_api_client_problem_is_named_with_the_client_and_the_fix(clients, expected):
    errors = gateway.gateway_api_client_errors(clients, False, "")
    assert any(expected in error for error in errors), errors


def test_a_client_given_vllms_own_key_is_refused_without_showing_the_key():
    errors = gateway.gateway_api_client_errors([{"name": "app", "key": GOOD_KEY}], False, GOOD_KEY)
    assert len(errors) == 1 and "vLLM's own key (llm_vllm_api_key)" in errors[0]
    assert GOOD_KEY not in " ".join(errors)


def test_a_world_network_passes_for_a_client_only_when_allowed():
    assert gateway.gateway_api_client_errors([{"name": "app", "networks": ["::/0"]}], True, "") == []


def test_clients_get_the_defaults_they_do_not_set_and_never_their_key():
    clients = [{"name": "app", "key": GOOD_KEY}, {"name": "batch", "networks": ["10.1.2.3/24"], "rate": "6r/m",
                                                   "burst": 1}]
    assert gateway.gateway_api_client_list(clients, ["10.88.0.1"], "10r/s", 20) == [
        {"index": 0, "name": "app", "networks": ["10.88.0.1/32"], "rate": "10r/s", "burst": 20},
        {"index": 1, "name": "batch", "networks": ["10.1.2.0/24"], "rate": "6r/m", "burst": 1},
    ]
