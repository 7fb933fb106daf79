"""Decisions of the firewall role, kept in one place that unit tests import
directly (tests/unit/test_firewall_filters.py).

firewall_stale_rules(show_added, wanted, prefix="llm:")
    The rules this role added on an earlier run that it no longer wants: the
    lines of `ufw show added` whose comment starts with prefix and that match
    none of the wanted rules. wanted holds the module arguments of the rules
    the role applies this run (rule, from_ip, to_port, proto, as
    community.general.ufw takes them). Addresses compare as networks
    (ufw prints 10.0.0.7/32 as 10.0.0.7 and 10.0.0.9/24 as 10.0.0.0/24).
    Each stale rule comes back as the module arguments that delete it.
    Rules without the prefix (an admin's own) and lines this filter cannot
    read are never returned: when in doubt, a rule stays.

firewall_missing_rules(show_added, wanted)
    The wanted rules (same form, with their comment) that `ufw show added`
    does not list with the same kind, source network, port, protocol and
    comment: only these go to the ufw module, so a re-run with every rule in
    place calls it not once. A line this filter cannot read matches nothing:
    when in doubt, the module is asked.

firewall_extra_rule(item)
    One entry of firewall_extra_rules ({port, proto, from, comment}) as the
    ufw module's arguments, its comment prefixed "llm: ".

firewall_ufw_state(report)
    What ufw has in place, from one read of the host (`ufw status verbose`,
    the forward policy line of /etc/default/ufw and `ufw show added`,
    separated by lines holding only "@@"): {"active", "logging",
    "incoming", "outgoing", "routed", "added"}. A value it cannot read is
    None, which matches no wanted setting, so that setting is applied.
"""

from __future__ import annotations

import ipaddress
import re

# `ufw show added` prints each user rule as the command that adds it:
#   ufw allow from 10.0.0.7 to any port 8443 proto tcp comment 'llm: ...'
#   ufw limit 22/tcp comment 'llm: ...'            (from anywhere)
_FROM = r"from (?P<src>\S+) to any port (?P<port>[0-9:,]+)(?: proto (?P<proto>\w+))?"
_ANYWHERE = r"(?P<bare_port>[0-9:,]+)(?:/(?P<bare_proto>\w+))?"
_RULE = re.compile(rf"^ufw (?P<rule>allow|deny|reject|limit) (?:{_FROM}|{_ANYWHERE}) comment '(?P<comment>.*)'$")


def _source(value) -> str:
    text = str(value or "any").strip()
    if text == "any":
        return text
    return str(ipaddress.ip_network(text, strict=False))


def _key(rule, source, port, proto) -> tuple:
    return (str(rule), _source(source), str(port), str(proto or "any").lower())


def _added_rules(show_added: str) -> list[tuple[tuple, str]]:
    """(key, comment) of each line of `ufw show added` this filter can read."""
    rules = []
    for line in (show_added or "").splitlines():
        match = _RULE.match(line.strip())
        if not match:
            continue
        try:
            rules.append((_key(match["rule"], match["src"], match["port"] or match["bare_port"],
                               match["proto"] or match["bare_proto"]), match["comment"]))
        except ValueError:
            continue
    return rules


def firewall_stale_rules(show_added: str, wanted, prefix: str = "llm:") -> list[dict]:
    keep = {_key(w.get("rule"), w.get("from_ip"), w.get("to_port"), w.get("proto")) for w in wanted or []}
    return [{"rule": key[0], "from_ip": key[1], "to_port": key[2], "proto": key[3], "comment": comment}
            for key, comment in _added_rules(show_added) if comment.startswith(prefix) and key not in keep]


def firewall_extra_rule(item: dict) -> dict:
    return {"rule": "allow", "proto": item.get("proto") or "tcp", "from_ip": item.get("from"),
            "to_port": str(item.get("port")), "comment": f"llm: {item.get('comment', 'extra rule')}"}


def firewall_missing_rules(show_added: str, wanted) -> list[dict]:
    listed = {key + (comment,) for key, comment in _added_rules(show_added)}
    missing = []
    for rule in wanted or []:
        try:
            key = _key(rule.get("rule"), rule.get("from_ip"), rule.get("to_port"), rule.get("proto"))
        except ValueError:
            key = None  # let the module say what is wrong with it
        if key is None or key + (rule.get("comment"),) not in listed:
            missing.append(rule)
    return missing


# `ufw default deny routed` is stored as DEFAULT_FORWARD_POLICY="DROP";
# `ufw status` says "disabled (routed)" whenever forwarding is off, whatever
# the policy, so the routed policy is read from the file.
_FORWARD = {"DROP": "deny", "REJECT": "reject", "ACCEPT": "allow"}


def firewall_ufw_state(report: str) -> dict:
    parts = re.split(r"^@@$", report or "", flags=re.M)
    status = parts[0] if parts else ""
    state = {"active": bool(re.search(r"^Status: active$", status, re.M)),
             "logging": None, "incoming": None, "outgoing": None, "routed": None,
             "added": parts[2] if len(parts) > 2 else ""}
    logging = re.search(r"^Logging: (on \((\w+)\)|off)$", status, re.M)
    if logging:
        state["logging"] = logging.group(2) or "off"
    defaults = re.search(r"^Default: (\w+) \(incoming\), (\w+) \(outgoing\)", status, re.M)
    if defaults:
        state["incoming"], state["outgoing"] = defaults.group(1), defaults.group(2)
    forward = re.search(r'^DEFAULT_FORWARD_POLICY="?(\w+)"?$', parts[1] if len(parts) > 1 else "", re.M)
    if forward:
        state["routed"] = _FORWARD.get(forward.group(1).upper())
    return state


class FilterModule:
    def filters(self):
        return {"firewall_stale_rules": firewall_stale_rules, "firewall_missing_rules": firewall_missing_rules,
                "firewall_extra_rule": firewall_extra_rule,
                "firewall_ufw_state": firewall_ufw_state}
