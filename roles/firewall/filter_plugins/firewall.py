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


def firewall_stale_rules(show_added: str, wanted, prefix: str = "llm:") -> list[dict]:
    keep = {_key(w.get("rule"), w.get("from_ip"), w.get("to_port"), w.get("proto")) for w in wanted or []}
    stale = []
    for line in (show_added or "").splitlines():
        match = _RULE.match(line.strip())
        if not match or not match["comment"].startswith(prefix):
            continue
        try:
            key = _key(match["rule"], match["src"], match["port"] or match["bare_port"],
                       match["proto"] or match["bare_proto"])
        except ValueError:
            continue
        if key not in keep:
            stale.append({"rule": key[0], "from_ip": key[1], "to_port": key[2], "proto": key[3],
                          "comment": match["comment"]})
    return stale


class FilterModule:
    def filters(self):
        return {"firewall_stale_rules": firewall_stale_rules}
