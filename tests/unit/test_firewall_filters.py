"""Which ufw rules the firewall role removes (roles/firewall/filter_plugins/
firewall.py): the "llm:" rules of an earlier run that this run does not ask
for, and nothing else. The listings are what `ufw show added` printed on a
Debian 12 host for rules added by community.general.ufw."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[2] / "roles" / "firewall" / "filter_plugins" / "firewall.py"
_spec = importlib.util.spec_from_file_location("firewall_filters", PLUGIN)
firewall = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(firewall)

HEADER = "Added user rules (see 'ufw status' for running firewall):\n"


def wanted(rule, source, port, proto="tcp"):
    """The module arguments community.general.ufw reports for one rule."""
    return {"rule": rule, "from_ip": source, "to_port": str(port), "proto": proto, "delete": False,
            "comment": "llm: x", "to_ip": "any", "direction": None}


def stale(listing, *rules):
    return firewall.firewall_stale_rules(HEADER + listing, list(rules))


def test_the_rules_asked_for_stay():
    listing = ("ufw allow from 10.88.0.1 to any port 22 proto tcp comment 'llm: ssh from admin network'\n"
               "ufw allow from 10.88.0.78 to any port 8443 proto tcp comment 'llm: vllm replica from gateway'\n")
    assert stale(listing, wanted("allow", "10.88.0.1/32", 22), wanted("allow", "10.88.0.78", 8443)) == []


def test_a_gateway_that_moved_leaves_its_old_rule_stale():
    listing = ("ufw allow from 10.88.0.78 to any port 8443 proto tcp comment 'llm: vllm replica from gateway'\n"
               "ufw allow from 10.88.0.90 to any port 8443 proto tcp comment 'llm: vllm replica from gateway'\n")
    assert stale(listing, wanted("allow", "10.88.0.90", 8443)) == [
        {"rule": "allow", "from_ip": "10.88.0.78/32", "to_port": "8443", "proto": "tcp",
         "comment": "llm: vllm replica from gateway"}]


def test_an_admins_own_rule_is_never_stale():
    listing = ("ufw allow from 10.1.2.5 to any port 22 proto tcp\n"
               "ufw allow from 10.1.2.6 to any port 9100 proto tcp comment 'node exporter'\n")
    assert stale(listing) == []


def test_networks_compare_as_networks_not_as_text():
    # ufw prints 192.0.2.9/24 as 192.0.2.0/24 and 2001:db8::1/128 as 2001:db8::1.
    listing = ("ufw allow from 192.0.2.0/24 to any port 443 proto tcp comment 'llm: gateway from client network'\n"
               "ufw allow from 2001:db8::1 to any port 443 proto tcp comment 'llm: gateway from client network'\n")
    assert stale(listing, wanted("allow", "192.0.2.9/24", 443), wanted("allow", "2001:db8::1/128", 443)) == []


def test_a_changed_rule_kind_port_or_protocol_makes_the_old_rule_stale():
    listing = ("ufw allow from 10.0.0.0/8 to any port 22 proto tcp comment 'llm: ssh from admin network'\n"
               "ufw allow from 10.0.0.0/8 to any port 9000 proto udp comment 'llm: extra rule'\n")
    result = stale(listing, wanted("limit", "10.0.0.0/8", 22), wanted("allow", "10.0.0.0/8", 9000, "tcp"))
    assert [(r["rule"], r["to_port"], r["proto"]) for r in result] == [("allow", "22", "tcp"), ("allow", "9000", "udp")]


def test_a_rule_from_anywhere_is_read_in_ufws_short_form():
    listing = "ufw allow 9997/tcp comment 'llm: extra rule'\n"
    assert stale(listing, wanted("allow", "any", 9997)) == []
    assert stale(listing) == [{"rule": "allow", "from_ip": "any", "to_port": "9997", "proto": "tcp",
                               "comment": "llm: extra rule"}]


def test_a_line_it_cannot_read_stays():
    listing = ("ufw allow in on eth1 from 10.0.0.1 to 10.0.0.2 port 80 proto tcp comment 'llm: odd'\n"
               "ufw allow from not-an-address to any port 80 proto tcp comment 'llm: odd'\n")
    assert stale(listing) == []


def test_nothing_listed_means_nothing_stale():
    assert firewall.firewall_stale_rules(HEADER + "(None)\n", [wanted("allow", "10.0.0.1", 22)]) == []
    assert firewall.firewall_stale_rules("", []) == []


# --- what the role asks the ufw module for, from one read of the host -------------------------

STATUS = """Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), disabled (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
22/tcp                     ALLOW IN    10.88.0.1                  # llm: ssh from admin network
"""


def report(status=STATUS, forward='DEFAULT_FORWARD_POLICY="DROP"', added=""):
    """What the role's read task prints (status, forward policy, added rules)."""
    return f"{status}\n@@\n{forward}\n@@\n{HEADER}{added}"


def rule(rule_kind, source, port, comment, proto="tcp"):
    return {"rule": rule_kind, "from_ip": source, "to_port": str(port), "proto": proto, "comment": comment}


def test_the_state_read_from_ufw_names_policy_logging_and_activity():
    state = firewall.firewall_ufw_state(report())
    # "disabled (routed)" only says forwarding is off: the policy comes from /etc/default/ufw.
    assert {k: v for k, v in state.items() if k != "added"} == {
        "active": True, "logging": "low", "incoming": "deny", "outgoing": "allow", "routed": "deny"}


def test_an_inactive_or_unreadable_ufw_leaves_every_setting_to_the_module():
    state = firewall.firewall_ufw_state(report(status="Status: inactive\n", forward=""))
    assert state == {"active": False, "logging": None, "incoming": None, "outgoing": None, "routed": None,
                     "added": f"\n{HEADER}"}
    assert firewall.firewall_ufw_state("")["active"] is False


def test_an_accepting_forward_policy_is_read_as_allow():
    assert firewall.firewall_ufw_state(report(forward="DEFAULT_FORWARD_POLICY=\"ACCEPT\""))["routed"] == "allow"


def test_only_rules_not_in_place_go_to_the_module():
    added = ("ufw allow from 10.88.0.1 to any port 22 proto tcp comment 'llm: ssh from admin network'\n"
             "ufw allow from 192.0.2.0/24 to any port 443 proto tcp comment 'llm: gateway from client network'\n")
    in_place = [rule("allow", "10.88.0.1/32", 22, "llm: ssh from admin network"),
                rule("allow", "192.0.2.9/24", 443, "llm: gateway from client network")]
    new = rule("allow", "10.88.0.7", 8443, "llm: vllm replica from gateway")
    assert firewall.firewall_missing_rules(HEADER + added, in_place + [new]) == [new]


def test_a_rule_whose_kind_protocol_or_comment_differs_is_asked_for_again():
    added = "ufw allow from 10.0.0.0/8 to any port 22 proto tcp comment 'llm: ssh from admin network'\n"
    limit = rule("limit", "10.0.0.0/8", 22, "llm: ssh from admin network")
    udp = rule("allow", "10.0.0.0/8", 22, "llm: ssh from admin network", proto="udp")
    renamed = rule("allow", "10.0.0.0/8", 22, "llm: ssh from the admins")
    assert firewall.firewall_missing_rules(HEADER + added, [limit, udp, renamed]) == [limit, udp, renamed]


def test_a_rule_the_filter_cannot_read_is_left_to_the_module():
    bad = rule("allow", "not-a-network", 22, "llm: x")
    assert firewall.firewall_missing_rules(HEADER, [bad]) == [bad]


def test_an_extra_rule_gets_the_modules_arguments_and_an_llm_comment():
    assert firewall.firewall_extra_rule({"port": 9100, "from": "10.1.0.0/16", "comment": "node exporter"}) == \
        rule("allow", "10.1.0.0/16", 9100, "llm: node exporter")
    assert firewall.firewall_extra_rule({"port": 53, "proto": "udp", "from": "10.1.0.0/16"}) == \
        rule("allow", "10.1.0.0/16", 53, "llm: extra rule", proto="udp")
