# Files on the device: atomic writes, reads that survive a cut write, config, secrets, the CA.
#
# A power cut mid-write must lose nothing: data goes to NAME.tmp, is flushed (fsync where the
# port has it), then renamed over NAME. Config, secrets or a CA that is missing or unusable
# is a SetupError saying what to do; it never crashes the device.
#
# config.json  (shareable): {"host", "port", "device_id", "ca_file", ...} (the sku and
#              quantity come from the device twin, not from here)
# secrets.json (0600, written by the provisioning tool, never printed): {"device_key": base64}
import json
import os

_CONFIG_DEFAULTS = {
    "port": 8883,
    "ca_file": "ca.der",
    "hostname": None,        # TLS server name, when it differs from host
    "token_ttl_s": 3600,
    "keepalive_s": 60,
    "retry_cap_s": 60,
    "timeout_s": 10,
}
TRUST = "ca.json"           # the trust store's manifest, beside the CA bundle
_PROVISION_HINT = "run python -m host_tools provision --device ID --out DIR (DIR = this device's folder)"


class StorageError(Exception):
    pass


class SetupError(StorageError):
    # Config or secrets missing or unusable: the device shows "setup needed".
    pass


def join(folder, name):
    return folder + "/" + name if folder else name


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    try:
        os.rename(tmp, path)
    except OSError:
        # a filesystem that will not rename over a file (FAT): the .tmp is still complete,
        # and read_bytes() falls back to it if the power goes between these two lines
        _remove(path)
        os.rename(tmp, path)


def read_bytes(path):
    # None when the file does not exist.
    for p in (path, path + ".tmp"):
        try:
            with open(p, "rb") as f:
                return f.read()
        except OSError:
            pass
    return None


def _load_required(folder, name, what):
    path = join(folder, name)
    data = read_bytes(path)
    if data is None:
        raise SetupError("%s missing in %s: %s" % (name, folder, _PROVISION_HINT))
    try:
        obj = json.loads(data)
    except ValueError:
        raise SetupError("%s is not valid JSON (%s): %s" % (name, what, _PROVISION_HINT))
    if not isinstance(obj, dict):
        raise SetupError("%s must hold a JSON object (%s): %s" % (name, what, _PROVISION_HINT))
    return obj


def load_config(folder):
    # With a "dps" section the hub's host and the device id come from the assignment DPS gives
    # (load_assignment); without, config.json names them.
    cfg = dict(_CONFIG_DEFAULTS)
    cfg.update(_load_required(folder, "config.json", "hub host, port, device id"))
    # (firmware/runtime/dps.py checks that section); without, config.json names them.
    for k in ("host", "device_id"):
        if "dps" not in cfg and (not isinstance(cfg.get(k), str) or not cfg[k]):
            raise SetupError("config.json has no %s: %s" % (k, _PROVISION_HINT))
    for k in ("port", "token_ttl_s", "keepalive_s", "retry_cap_s", "timeout_s"):
        if not isinstance(cfg[k], int) or cfg[k] <= 0:
            raise SetupError("config.json: %s must be a positive integer" % k)
    return cfg


def load_secrets(folder):
    # The secrets dict, with a non-empty "device_key". Errors name the file, never its content.
    obj = _load_required(folder, "secrets.json", "device key")
    key = obj.get("device_key")
    if not isinstance(key, str) or not key:
        raise SetupError("secrets.json has no device_key: %s" % _PROVISION_HINT)
    return obj


def load_ca(folder, cfg):
    # The roots the hub's server certificate may chain to, as a tuple of DER certificates: the
    # bundle file holds one or more (DER back to back, or PEM). Its version is in ca.json
    # (trust_version).
    name = cfg["ca_file"]
    data = read_bytes(join(folder, name))
    if not data:
        raise SetupError("%s (CA certificate, DER) missing in %s: %s" % (name, folder, _PROVISION_HINT))
    try:
        certs = pem_to_der(data) if data[:5] == b"-----" else split_der(data)
        # parse each once here: a broken CA is a setup error, not a failure at every connect
        import ssl
        for der in certs:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=der)
    except (ValueError, UnicodeError, OSError):  # bad base64 or not a certificate (SSLError)
        raise SetupError("%s is not a CA certificate (DER or PEM): %s" % (name, _PROVISION_HINT))
    return certs


def trust_version(folder):
    # The trust store's version from TRUST, which the provisioning tool and a trust-store update
    # write beside the CA bundle ({"version": N, "certs": [...]}), as a string; None without a
    # readable one (a folder from before bundles). The device reports it (trustStoreVersion), so
    # the fleet can see which devices hold which roots before a hub's root changes.
    try:
        v = json.loads(read_bytes(join(folder, TRUST)) or "null")["version"]
    except (ValueError, TypeError, KeyError):
        return None
    return None if v is None else str(v)


def split_der(data):
    # DER certificates back to back -> tuple of each (a SEQUENCE: 0x30, length, content).
    out = []
    i = 0
    while i < len(data):
        if data[i] != 0x30 or i + 2 > len(data):
            raise ValueError("not a DER certificate")
        n = data[i + 1]
        head = 2
        if n & 0x80:
            k = n & 0x7F
            if not 0 < k <= 3 or i + 2 + k > len(data):
                raise ValueError("bad DER length")
            n = 0
            for b in data[i + 2:i + 2 + k]:
                n = n << 8 | b
            head += k
        end = i + head + n
        if end > len(data):
            raise ValueError("truncated DER certificate")
        out.append(bytes(data[i:end]))
        i = end
    if not out:
        raise ValueError("no certificate")
    return tuple(out)


def pem_to_der(pem):
    # Every certificate of a PEM file, as a tuple of DER (MicroPython's TLS wants DER).
    import binascii
    text = pem.decode() if isinstance(pem, bytes) else pem
    out = []
    start = text.find("-----BEGIN CERTIFICATE-----")
    while start >= 0:
        end = text.find("-----END CERTIFICATE-----", start)
        if end < 0:
            break
        out.append(binascii.a2b_base64("".join(text[start + 27:end].split())))
        start = text.find("-----BEGIN CERTIFICATE-----", end)
    if not out:
        raise SetupError("CA file is neither DER nor a PEM certificate")
    return tuple(out)
