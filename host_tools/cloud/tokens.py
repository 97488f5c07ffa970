"""The service side of shared access signatures: read and verify a token (the hub's MQTT and
AMQP endpoints, DPS) and derive a device key from a DPS group enrollment key (DPS, provisioning,
the CLI). None of this runs on a device, which only signs; it is built on the device's signing
(firmware/iothub/sas.py: sign(), PREFIX), so the algorithm exists once.
"""
from firmware.iothub.sas import PREFIX, SasError, sign, unquote

__all__ = ["SasError", "parse", "check", "derive_key"]


def _fields(tok):
    if not isinstance(tok, str) or not tok.startswith(PREFIX):
        raise SasError("not a SharedAccessSignature token")
    fields = {}
    for part in tok[len(PREFIX):].split("&"):
        i = part.find("=")
        if i <= 0:
            raise SasError("malformed token field")
        k = part[:i]
        if k in fields:
            raise SasError("duplicate token field " + k)
        fields[k] = part[i + 1:]
    for k in ("sr", "sig", "se"):
        if not fields.get(k):
            raise SasError("token has no " + k)
    return fields


def parse(tok):
    # -> {"sr": decoded uri, "sig": decoded signature, "se": int, "skn": str or None}
    f = _fields(tok)
    try:
        se = int(f["se"])
        out = {"sr": unquote(f["sr"]), "sig": unquote(f["sig"]), "se": se,
               "skn": unquote(f["skn"]) if "skn" in f else None}
    except ValueError:
        raise SasError("malformed token field")
    return out


def _same(a, b):
    # Comparison whose time does not depend on where the first difference is.
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= ord(x) ^ ord(y)
    return diff == 0


def check(tok, key_b64, now, resource_uri=None):
    # Verify a token as the hub does: the signature over the sr text exactly as sent,
    # expiry in the future, and (when given) the resource it grants. Returns parse(tok).
    f = _fields(tok)
    t = parse(tok)
    if resource_uri is not None and t["sr"].lower() != resource_uri.lower():
        raise SasError("token is for another resource")
    if not _same(sign(key_b64, f["sr"] + "\n" + f["se"]), t["sig"]):
        raise SasError("signature does not match the key")
    if t["se"] <= now:
        raise SasError("token expired")
    return t


def derive_key(group_key_b64, registration_id):
    # DPS group enrollment: device key = b64(HMAC-SHA256(b64decode(group key), registration id)).
    return sign(group_key_b64, registration_id, "group key")
