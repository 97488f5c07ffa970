"""The service side of SAS tokens (host_tools/cloud/tokens.py): parse and verify as the hub does,
derive DPS device keys. Host only (a device only signs), on the device's signing code."""
import binascii

from firmware.iothub import sas
from host_tools.cloud import tokens
from tests.core.check import raises
from tests.core.test_sas import DERIVED, KEY, OTHER_KEY, TOKENS


def test_parse_gives_decoded_fields():
    for uri, key, expiry, policy, tok in TOKENS:
        t = tokens.parse(tok)
        assert t["sr"] == uri
        assert t["se"] == expiry
        assert t["skn"] == policy
        assert sas.quote(t["sig"]) in tok


def test_parse_rejects_malformed_tokens():
    bad = [
        None, 42, "", "SharedAccessSignature", "SharedAccessSignature ",
        "Bearer sr=a&sig=b&se=1",
        "SharedAccessSignature sr=a&sig=b",          # no se
        "SharedAccessSignature sr=a&se=1",           # no sig
        "SharedAccessSignature sig=b&se=1",          # no sr
        "SharedAccessSignature sr=a&sig=b&se=soon",  # se not a number
        "SharedAccessSignature sr=a&sig=b&se=1&se=2",  # duplicate
        "SharedAccessSignature sr=a&sig=b&se=1&junk",  # field without =
        "SharedAccessSignature sr=%zz&sig=b&se=1",   # bad escape
    ]
    for tok in bad:
        raises(tokens.SasError, tokens.parse, tok)


def test_check_accepts_a_good_token_and_names_the_problem_otherwise():
    uri = "hub.local/devices/d1"
    tok = sas.token(uri, KEY, 1000)
    assert tokens.check(tok, KEY, 999, uri)["se"] == 1000
    assert tokens.check(tok, KEY, 999, "HUB.local/devices/d1")["sr"] == uri  # host is case-insensitive
    e = raises(tokens.SasError, tokens.check, tok, KEY, 1000, uri)
    assert "expired" in str(e)
    e = raises(tokens.SasError, tokens.check, tok, OTHER_KEY, 999, uri)
    assert "signature" in str(e)
    e = raises(tokens.SasError, tokens.check, tok, KEY, 999, "hub.local/devices/d2")
    assert "another resource" in str(e)
    # a tampered expiry invalidates the signature
    forged = tok.replace("se=1000", "se=9999")
    raises(tokens.SasError, tokens.check, forged, KEY, 999, uri)


def test_check_verifies_the_sr_text_exactly_as_sent():
    # A peer that signs the raw (unencoded) uri sends that same raw text: accepted.
    raw = "hub.local/devices/d1"
    sig = binascii.b2a_base64(
        sas.hmac_sha256(binascii.a2b_base64(KEY), (raw + "\n2000").encode())).decode().strip()
    tok = "SharedAccessSignature sr=" + raw + "&sig=" + sas.quote(sig) + "&se=2000"
    assert tokens.check(tok, KEY, 1, raw)["sr"] == raw


def test_errors_never_contain_the_key():
    uri = "hub.local/devices/d1"
    tok = sas.token(uri, KEY, 1000)
    for args in ((tok, OTHER_KEY, 1, uri), (tok, KEY, 5000, uri), ("junk", KEY, 1, uri)):
        e = raises(tokens.SasError, tokens.check, *args)
        assert KEY not in str(e) and OTHER_KEY not in str(e)


def test_derive_key_golden():
    for group_key, registration_id, device_key in DERIVED:
        assert tokens.derive_key(group_key, registration_id) == device_key
