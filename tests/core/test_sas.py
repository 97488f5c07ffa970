# SAS tokens: golden strings, verification, key derivation, renewal timing.
# Runs under pytest and under the unix MicroPython (tests/mp_runner.py).
# The tables are also checked against the official Azure SDK in tests/host/test_golden_sdk.py.
import binascii

from firmware.iothub import sas
from tests.core.check import raises

KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="  # bytes 0..31
OTHER_KEY = "HwAeAB0AHAAbABoAGQAYABcAFgAVABQAEwASABEAEAA="

# (resource uri, key, expiry, policy, token) -- tokens computed by azure-iot-device 2.14.0
TOKENS = [
    ("myiothub.azure-devices.net/devices/my_device", KEY, 1578941692, None,
     "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device"
     "&sig=6BQpP0VpyZ0mTIlMbvjlP%2FxyeadWxB24Mp9J8uADz8w%3D&se=1578941692"),
    ("myiothub.azure-devices.net/devices/my_device", KEY, 1578941692, "iothubowner",
     "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device"
     "&sig=6BQpP0VpyZ0mTIlMbvjlP%2FxyeadWxB24Mp9J8uADz8w%3D&se=1578941692&skn=iothubowner"),
    ("127.0.0.1/devices/dev ice+\u00e9/\u00fc", KEY, 2000000000, None,
     "SharedAccessSignature sr=127.0.0.1%2Fdevices%2Fdev%20ice%2B%C3%A9%2F%C3%BC"
     "&sig=n4gDfHFnoufhFsInf3piiWz4V6B1QNSzHCmfgZe%2BlkI%3D&se=2000000000"),
    ("0ne00000A0A/registrations/reg-1", KEY, 1700000000, "registration",
     "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Freg-1"
     "&sig=KaSZCq813IoJnL0oQPclr0YftIPsLiD8Y8Owhh5u0iY%3D&se=1700000000&skn=registration"),
]

# (group key, registration id, device key) -- HMAC-SHA256 per the DPS documentation
DERIVED = [
    (KEY, "reg-1", "thxXBjNB6FBV+ugwOZsLC2OkELTF0TOHZ3+Q6g7OCS0="),
    (KEY, "device-\u00fc", "DGPQQSVwx5vhVIJQM12bUbyVDJu/ienJkFhipXFjGRk="),
    (KEY, "", "04tCCW2A9F+Ca0Sp1WB95ySWpBXT9KGoyI47udqNwcs="),
]

# RFC 4231 HMAC-SHA256 test cases 1, 2 and 6 (6 has a key longer than the block size)
HMAC_RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]

# (text, quoted) -- equal to urllib.parse.quote(text, safe="")
QUOTED = [
    ("", ""),
    ("abcXYZ019-_.~", "abcXYZ019-_.~"),
    ("a b", "a%20b"),
    ("a+b", "a%2Bb"),
    ("/&=%#?$", "%2F%26%3D%25%23%3F%24"),
    ("\u00e9\u20ac\U0001F600", "%C3%A9%E2%82%AC%F0%9F%98%80"),
]


def test_hmac_rfc4231():
    for key, msg, hexdigest in HMAC_RFC4231:
        assert binascii.hexlify(sas.hmac_sha256(key, msg)).decode() == hexdigest


def test_quote_and_unquote_round_trip():
    for text, quoted in QUOTED:
        assert sas.quote(text) == quoted
        assert sas.unquote(quoted) == text


def test_unquote_keeps_plus_and_accepts_lower_case_hex():
    assert sas.unquote("a+b") == "a+b"
    assert sas.unquote("%2f%2F") == "//"


def test_unquote_rejects_broken_escapes():
    for bad in ("%", "%2", "%zz", "%+1", "% 1", "abc%G0", "%C3"):
        raises(ValueError, sas.unquote, bad)


def test_token_golden():
    for uri, key, expiry, policy, expected in TOKENS:
        assert sas.token(uri, key, expiry, policy) == expected


def test_string_to_sign_matches_azure_sdk_for_c():
    # azure-sdk-for-c test_az_iot_hub_client_sas.c: the signed text for my_device
    expected = "myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692"
    uri = sas.device_resource("myiothub.azure-devices.net", "my_device")
    assert sas.quote(uri) + "\n" + str(1578941692) == expected
    mac = sas.hmac_sha256(binascii.a2b_base64(KEY), expected.encode())
    sig = binascii.b2a_base64(mac).decode().strip()
    assert sas.token(uri, KEY, 1578941692) == (
        "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device&sig="
        + sas.quote(sig) + "&se=1578941692")


def test_bad_keys_are_a_clear_error():
    for key in ("", "!!!!", "not base64 at all"):
        e = raises(sas.SasError, sas.token, "h/devices/d", key, 1)
        assert "base64" in str(e)
        assert key not in str(e) or key == ""


def test_renew_at_is_within_lifetime_and_never_after_80_percent():
    for issued, life in ((0, 3600), (1000, 20), (5, 86400), (0, 60), (0, 2)):
        expiry = issued + life
        at = sas.renew_at(issued, expiry)
        assert issued < at < expiry or life < 2
        assert at - issued <= life * 0.8
        assert at - issued >= life // 2
    assert sas.renew_at(0, 3600) == 2880  # 80 %
    assert sas.renew_at(0, 100) == 70     # 30 s margin wins over 80 % ...
    assert sas.renew_at(0, 20) == 10      # ... but never before half of the lifetime


def test_epoch_offset():
    assert sas.epoch_offset(1970) == 0
    assert sas.epoch_offset(2000) == 946684800
