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
    cfg = dict(_CONFIG_DEFAULTS)
    cfg.update(_load_required(folder, "config.json", "hub host, port, device id"))
    for k in ("host", "device_id"):
        if not isinstance(cfg.get(k), str) or not cfg[k]:
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
    # The CA certificate(s) the hub's server certificate must chain to, as DER bytes.
    name = cfg["ca_file"]
    data = read_bytes(join(folder, name))
    if not data:
        raise SetupError("%s (CA certificate, DER) missing in %s: %s" % (name, folder, _PROVISION_HINT))
    try:
        if data[:5] == b"-----":
            data = pem_to_der(data)
        # parse it once here: a broken CA is a setup error, not a failure at every connect
        import ssl
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data)
    except (ValueError, UnicodeError, OSError):  # bad base64 or not a certificate (SSLError)
        raise SetupError("%s is not a CA certificate (DER or PEM): %s" % (name, _PROVISION_HINT))
    return data


def pem_to_der(pem):
    # First certificate of a PEM file as DER (the TLS binding on MicroPython wants DER).
    import binascii
    text = pem.decode() if isinstance(pem, bytes) else pem
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise SetupError("CA file is neither DER nor a PEM certificate")
    body = "".join(text[start + 27:end].split())
    return binascii.a2b_base64(body)
