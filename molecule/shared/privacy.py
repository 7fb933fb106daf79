"""The privacy canary: handed from the chat test to the hardening suites, and
searched for on a test host outside the service's own data: in each active
swap area (read raw) and in crash dumps and core files.

The canary never travels in clear outside the test process: it is kept and
passed on reversed and hex-encoded (`encode`), in the environment variable
LLM_PRIVACY_CANARY (the same pytest run) and in the file privacy-canary.hex
in $LLM_TEST_REPORTS (a later run, e.g. `molecule verify`); on the test host
it reaches grep on stdin, never on a command line or in a file."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LLM_PRIVACY_CANARY"
REPORT_FILE = "privacy-canary.hex"


def encode(canary: str) -> str:
    """Reversed, then hex: no substring of the result is the canary."""
    return canary[::-1].encode().hex()


def decode(encoded: str) -> str:
    return bytes.fromhex(encoded.strip()).decode()[::-1]


def export_canary(canary: str) -> None:
    """Record the canary that was just sent through the service, for the
    hardening suite that later searches swap and crash files for it."""
    encoded = encode(canary)
    os.environ[ENV_VAR] = encoded
    reports = os.environ.get("LLM_TEST_REPORTS")
    if reports:
        path = Path(reports) / REPORT_FILE
        path.touch(mode=0o600)
        path.write_text(encoded + "\n")


def exported_canary() -> str | None:
    """The canary the chat test recorded in this run, or None."""
    encoded = os.environ.get(ENV_VAR, "").strip()
    if not encoded and os.environ.get("LLM_TEST_REPORTS"):
        path = Path(os.environ["LLM_TEST_REPORTS"]) / REPORT_FILE
        if path.is_file():
            encoded = path.read_text().strip()
    return decode(encoded) if encoded else None


# $1 is the encoded canary; `hits <grep options> <files>` greps for the
# decoded one, which grep reads from a pipe (-f -), never from argv.
PRELUDE = r"""
canary="$(python3 -c 'import sys; print(bytes.fromhex(sys.argv[1]).decode()[::-1])' "$1")"
[ -n "$canary" ] || { echo "cannot decode the canary" >&2; exit 3; }
hits() { printf '%s\n' "$canary" | grep -a -F -f - "$@"; }
"""

# One round trip: prints "<place> <hits>" per line. A swap area the host
# cannot read (a container sees the machine's swap) counts as not searched.
_SEARCH = PRELUDE + r"""
tail -n +2 /proc/swaps | while read -r dev _; do
  n="$(hits -c "$dev" 2>/dev/null)"
  [ $? -le 1 ] && printf '%s %s\n' "$dev" "${n:-0}"
done
for d in /var/crash /var/lib/systemd/coredump /var/lib/apport/coredump; do
  printf '%s %s\n' "$d" "$(hits -r -l "$d" 2>/dev/null | wc -l)"
done
find / /srv/models \( -path /proc -o -path /sys -o -path /dev -o -path /run \) -prune -o -xdev -type f \
  \( -name core -o -name 'core.[0-9]*' -o -name '*.core' \) -print 2>/dev/null | while read -r f; do
  printf '%s %s\n' "$f" "$(hits -c "$f")"
done
"""


def canary_hits(host, canary: str) -> dict[str, int]:
    """{place: hits} for every swap area, crash directory and core file."""
    out = host.check_output("sh -c %s hits %s", _SEARCH, encode(canary))
    return {place: int(count) for place, count in (line.rsplit(" ", 1) for line in out.splitlines())}
