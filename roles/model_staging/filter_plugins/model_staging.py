"""Manifest parsing and checksum comparison for the model_staging role, in
one place that unit tests import directly (tests/unit/test_model_staging_*.py).

- model_staging_manifest: parse a sha256sum manifest ("<64 hex>  <name>",
  also the binary-mode "<hex> *<name>" and the BSD "SHA256 (<name>) = <hex>"
  forms) into files, problems, a canonical text and the release id.
- model_staging_sha256sum: parse `sha256sum -- FILE...` output into
  {name: hex}.
- model_staging_mismatches: the manifest entries whose sum on the host
  differs from (or is missing for) the expected one.
"""

from __future__ import annotations

import hashlib
import re

# A file name the role accepts: a plain name inside the release directory.
# No '/', '\\' or '..' (path traversal), no leading '.' (hidden files, '.'
# and '..'), no whitespace or control characters (safe in sha256sum output
# and in URLs). Hugging Face model files all fit.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")
GNU_RE = re.compile(r"^(?P<hex>[0-9A-Fa-f]{64}) [ *](?P<name>.+)$")
BSD_RE = re.compile(r"^SHA256 \((?P<name>.+)\) = (?P<hex>[0-9A-Fa-f]{64})$")
RELEASE_ID_LENGTH = 16


def name_problem(name: str) -> str | None:
    """Why a manifest file name is refused, or None when it is fine."""
    if ".." in name or "/" in name or "\\" in name:
        return "contains '/', '\\' or '..' (a path outside the model directory)"
    if name.startswith("."):
        return "starts with '.'"
    if not NAME_RE.match(name):
        return "has characters other than letters, digits and '._+-'"
    return None


def manifest(text: str, manifest_name: str = "SHA256SUMS") -> dict:
    """Parse a sha256 manifest.

    Returns files (list of {name, sha256}, sorted by name), errors (one
    sentence per bad line; empty when the manifest is usable), canonical
    (the sorted "<hex>  <name>" lines, what the host keeps as proof of a
    verified release) and release (the first 16 hex digits of the canonical
    text's sha256: the same weights give the same release id whatever the
    line order or form of the manifest).
    """
    files: dict[str, str] = {}
    errors: list[str] = []
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = GNU_RE.match(line) or BSD_RE.match(line)
        if not match:
            errors.append(f"line {number}: {line[:80]!r} is not '<64 hex digits>  <file name>' (sha256sum format)")
            continue
        name, digest = match.group("name"), match.group("hex").lower()
        problem = name_problem(name)
        if problem:
            errors.append(f"line {number}: file name {name!r} {problem}")
        elif name == manifest_name:
            errors.append(f"line {number}: the manifest lists itself ({name!r})")
        elif name in files:
            errors.append(f"line {number}: {name!r} is listed twice")
        else:
            files[name] = digest
    if not files and not errors:
        errors.append("lists no files")
    ordered = [{"name": name, "sha256": files[name]} for name in sorted(files)]
    canonical = "".join(f"{entry['sha256']}  {entry['name']}\n" for entry in ordered)
    return {
        "files": ordered,
        "errors": errors,
        "canonical": canonical,
        "release": hashlib.sha256(canonical.encode()).hexdigest()[:RELEASE_ID_LENGTH],
    }


def sha256sum(stdout: str) -> dict:
    """{name: hex} from `sha256sum -- NAME...` output (names are plain, see NAME_RE)."""
    sums = {}
    for line in (stdout or "").splitlines():
        match = GNU_RE.match(line)
        if match:
            sums[match.group("name")] = match.group("hex").lower()
    return sums


def mismatches(files: list, actual: dict) -> list:
    """Entries of files whose actual sum differs; actual is 'missing' when absent."""
    return [
        {"name": entry["name"], "expected": entry["sha256"], "actual": actual.get(entry["name"], "missing")}
        for entry in files
        if actual.get(entry["name"]) != entry["sha256"]
    ]


class FilterModule:
    """Filters of the model_staging role."""

    def filters(self):
        return {
            "model_staging_manifest": manifest,
            "model_staging_sha256sum": sha256sum,
            "model_staging_mismatches": mismatches,
        }
