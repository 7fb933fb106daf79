"""Which keys a Tang server advertises (roles/tang_server/filter_plugins/
tang_server.py). The advertisement in data/tang/adv.json is what Debian 12's
tangd answered on /adv in a sandbox container after the role ran; Debian's
`tang-show-keys 7500` printed BqEqeFJXwQDC6c7EqpWeiaffbwHKYo1au09BDTO7I1Y
for it, and the server's key files were named after the same thumbprints."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

HERE = Path(__file__).resolve().parent
PLUGIN = HERE.parents[1] / "roles" / "tang_server" / "filter_plugins" / "tang_server.py"
_spec = importlib.util.spec_from_file_location("tang_server_filters", PLUGIN)
tang = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tang)

ADV = (HERE / "data" / "tang" / "adv.json").read_text()
SIGNING = "BqEqeFJXwQDC6c7EqpWeiaffbwHKYo1au09BDTO7I1Y"
KEY_FILES = {"650fBq7O5UBpTun2RFms3qWEF56zO1y79AjYcDfP_2w", SIGNING}


def test_the_signing_key_thumbprint_is_what_tang_show_keys_prints():
    assert tang.tang_server_adv_thumbprints(ADV) == [SIGNING]


def test_the_advertisement_may_come_as_a_parsed_answer():
    assert tang.tang_server_adv_thumbprints(json.loads(ADV)) == [SIGNING]


def test_every_advertised_key_is_one_of_the_servers_key_files():
    advertised = tang.tang_server_adv_thumbprints(ADV) + tang.tang_server_adv_thumbprints(ADV, use="deriveKey")
    assert set(advertised) == KEY_FILES


def test_an_answer_that_is_not_an_advertisement_is_refused():
    for answer in ("<html>nginx</html>", {"payload": "not base64 json"}, {"protected": "x"}):
        with pytest.raises(AnsibleFilterError, match="not a Tang advertisement"):
            tang.tang_server_adv_thumbprints(answer)


def test_a_key_without_its_public_members_is_refused():
    payload = base64.urlsafe_b64encode(json.dumps({"keys": [{"kty": "EC", "key_ops": ["verify"]}]}).encode()).decode()
    with pytest.raises(AnsibleFilterError, match="not a public key"):
        tang.tang_server_adv_thumbprints({"payload": payload.rstrip("=")})
