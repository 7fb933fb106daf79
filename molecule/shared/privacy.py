"""Where a canary string shows up on a test host outside the service's own
data: in each active swap area (read raw) and in crash dumps and core files.
Shared by the scenarios' hardening suites."""

from __future__ import annotations

# One round trip: prints "<place> <hits>" per line. A swap area the host
# cannot read (a container sees the machine's swap) counts as not searched.
_SEARCH = r"""
canary="$1"
tail -n +2 /proc/swaps | while read -r dev _; do
  n="$(grep -a -c -F -- "$canary" "$dev" 2>/dev/null)"
  [ $? -le 1 ] && printf '%s %s\n' "$dev" "${n:-0}"
done
for d in /var/crash /var/lib/systemd/coredump /var/lib/apport/coredump; do
  printf '%s %s\n' "$d" "$(grep -r -a -l -F -- "$canary" "$d" 2>/dev/null | wc -l)"
done
find / /srv/models \( -path /proc -o -path /sys -o -path /dev -o -path /run \) -prune -o -xdev -type f \
  \( -name core -o -name 'core.[0-9]*' -o -name '*.core' \) -print 2>/dev/null | while read -r f; do
  printf '%s %s\n' "$f" "$(grep -a -c -F -- "$canary" "$f")"
done
"""


def canary_hits(host, canary: str) -> dict[str, int]:
    """{place: hits} for every swap area, crash directory and core file."""
    out = host.check_output("sh -c %s hits %s", _SEARCH, canary)
    return {place: int(count) for place, count in (line.rsplit(" ", 1) for line in out.splitlines())}
