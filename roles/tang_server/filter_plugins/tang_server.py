"""Decisions of the tang_server role, kept in one place that unit tests import
directly (tests/unit/test_tang_server_filters.py).

tang_server_adv_thumbprints(adv, use="verify", hash_name="sha256")
    The thumbprints (RFC 7638, base64url without padding) of the keys a Tang
    server advertises for one use, from its /adv answer (the JWS as a dict or
    as JSON text). With the defaults: the signing keys, as Debian's
    `tang-show-keys` prints them and as `clevis encrypt tang` takes them in
    "thp". Debian's tangd-keygen and tangd-rotate-keys name each key file
    after the same thumbprint (<thumbprint>.jwk), so the result also says
    which key files are the advertised ones. Anything that is not a Tang
    advertisement raises an error naming what is missing.
"""

from __future__ import annotations

import base64
import hashlib
import json

from ansible.errors import AnsibleFilterError

# RFC 7638, section 3.2: the members a key's thumbprint covers, per key type.
_REQUIRED = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "oct": ("k", "kty"), "OKP": ("crv", "kty", "x")}


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _thumbprint(jwk: dict, hash_name: str) -> str:
    members = _REQUIRED.get(jwk.get("kty"))
    if members is None or any(name not in jwk for name in members):
        raise AnsibleFilterError(f"tang_server_adv_thumbprints: not a public key of a known type: {sorted(jwk)}")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.new(hash_name, canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def tang_server_adv_thumbprints(adv, use: str = "verify", hash_name: str = "sha256") -> list[str]:
    try:
        jws = json.loads(adv) if isinstance(adv, (str, bytes)) else dict(adv)
        keys = json.loads(_b64url_decode(jws["payload"]))["keys"]
    except (KeyError, TypeError, ValueError) as error:
        raise AnsibleFilterError(f"tang_server_adv_thumbprints: not a Tang advertisement ({error})") from error
    return [_thumbprint(key, hash_name) for key in keys if use in (key.get("key_ops") or [])]


class FilterModule:
    def filters(self):
        return {"tang_server_adv_thumbprints": tang_server_adv_thumbprints}
