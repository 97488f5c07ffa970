# Shared access signatures for Azure IoT Hub and DPS.
#
# Pure: no clock, no I/O. The device signs with it; the host's service side
# (host_tools/cloud/tokens.py: reading and verifying tokens, deriving DPS device keys, none of
# which a device does) builds on sign() and PREFIX here, so the algorithm exists once.
#   token = "SharedAccessSignature sr={quote(uri)}&sig={quote(b64(hmac(key, quote(uri)+"\n"+se)))}&se={se}"
import binascii
import hashlib

try:
    from micropython import const
except ImportError:  # CPython (the host's hub and tools)
    def const(x):
        return x

_UNRESERVED = const(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_HEX = const("0123456789ABCDEF")
_HEXDIGITS = const("0123456789ABCDEFabcdef")
PREFIX = "SharedAccessSignature "
# Seconds between the Unix epoch (1970) and the epoch of ports whose gmtime(0) is 2000 (ESP32).
_Y2K = const(946684800)


class SasError(ValueError):
    """A token that cannot be made or accepted; the message never contains a key."""


def quote(s):
    # Percent-encode UTF-8, keeping only RFC 3986 unreserved characters, like
    # urllib.parse.quote(s, safe=""): "/" becomes %2F and a space %20, never "+".
    out = []
    for b in str(s).encode():
        if b in _UNRESERVED:
            out.append(chr(b))
        else:
            out.append("%" + _HEX[b >> 4] + _HEX[b & 15])
    return "".join(out)


def unquote(s):
    # Percent-decoding; "+" stays "+". A broken escape or invalid UTF-8 raises ValueError.
    if "%" not in s:
        return s
    parts = s.split("%")
    out = bytearray(parts[0].encode())
    for part in parts[1:]:
        if len(part) < 2 or part[0] not in _HEXDIGITS or part[1] not in _HEXDIGITS:
            raise ValueError("bad percent escape")
        out.append(int(part[:2], 16))
        out.extend(part[2:].encode())
    try:
        return bytes(out).decode()
    except Exception:
        raise ValueError("percent escape is not UTF-8")


def hmac_sha256(key, msg):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    inner = bytearray(64)   # the key, zero-padded to the block size, XOR ipad / opad
    outer = bytearray(64)
    for i in range(64):
        k = key[i] if i < len(key) else 0
        inner[i] = k ^ 0x36
        outer[i] = k ^ 0x5C
    inner = hashlib.sha256(inner)
    inner.update(msg)
    outer = hashlib.sha256(outer)
    outer.update(inner.digest())
    return outer.digest()


def sign(key_b64, msg, what="key"):
    try:
        key = binascii.a2b_base64(key_b64)
    except Exception:
        key = b""
    if not key:
        raise SasError(what + " is not valid base64")
    mac = hmac_sha256(key, msg.encode())
    return binascii.b2a_base64(mac).decode().strip()


def device_resource(host, device_id):
    return host + "/devices/" + device_id


def token(resource_uri, key_b64, expiry, policy=None):
    expiry = str(int(expiry))
    sr = quote(resource_uri)
    t = PREFIX + "sr=" + sr + "&sig=" + quote(sign(key_b64, sr + "\n" + expiry)) + "&se=" + expiry
    if policy:
        t += "&skn=" + quote(policy)
    return t


def renew_at(issued, expiry):
    # When to reconnect with a fresh token: at 80% of the lifetime, earlier if that would leave
    # less than 30 seconds, but never before half of the lifetime.
    life = expiry - issued
    return max(issued + life // 2, min(issued + int(life * 0.8), expiry - 30))


def epoch_offset(gmtime0_year):
    # Add to time.time() to get Unix seconds: 0 where gmtime(0) is 1970, Y2K where it is 2000.
    return 0 if gmtime0_year == 1970 else _Y2K
