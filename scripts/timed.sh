#!/usr/bin/env bash
# scripts/timed.sh NAME COMMAND...: run COMMAND and note its wall time as a
# row "NAME,ok|FAILED,seconds" in .cache/make-steps.csv, so the profile that
# scripts/run-tests.py prints at the end of `make test` also shows what
# `make demo` and the image builds took (it then starts the file anew).
set -uo pipefail
name="$1"; shift
start="$EPOCHREALTIME"
"$@"
rc=$?
dir="$(dirname "$0")/../.cache"
mkdir -p "$dir"
awk -v n="$name" -v r="$([[ $rc -eq 0 ]] && echo ok || echo FAILED)" -v a="$start" -v b="$EPOCHREALTIME" \
  'BEGIN { gsub(/"/, "", n); printf "\"%s\",%s,%.1f\n", n, r, b - a }' >> "$dir/make-steps.csv"
exit "$rc"
