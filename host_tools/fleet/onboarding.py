"""Identities for `provision` that come from the cloud rather than from the local registry:

  dps_identity()    --dps: the device will register itself with DPS. The enrollment's key comes
                    on standard input (a group key, from which this registration id's device key
                    is derived here; or with --individual the enrollment's own key); only the
                    device key goes into secrets.json, the group key never reaches the device.
  registry_identity()  --azure --connection-string-file F: create the device (or read it, when
                    it exists) in an IoT Hub with the official azure-iot-hub registry client, and
                    give the device its primary key.
"""
import re

from firmware.iothub import sas
from host_tools.errors import CliError
from host_tools.prompt import read_secret
from host_tools.cloud import tokens

AZURE_DPS_HOST = "global.azure-devices-provisioning.net"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
_SCOPE = re.compile(r"^[A-Za-z0-9]{1,32}$")
_REG_ID = re.compile(r"^[a-z0-9\-._:]{1,128}$")


def _check_key(key, what):
    try:
        sas.token("check", key, 1)
    except sas.SasError:
        raise CliError(f"the {what} on standard input is not valid base64") from None


def dps_identity(args):
    """-> (dps config section, device key). Reads the enrollment key from standard input."""
    if not args.id_scope or not _SCOPE.match(args.id_scope):
        raise CliError("--dps needs --id-scope: the DPS id scope (letters and digits, e.g. 0ne00012345)")
    if not args.registration_id or not _REG_ID.match(args.registration_id):
        raise CliError("--dps needs --registration-id: lowercase letters, digits and - . _ : (up to 128)")
    what = "enrollment key" if args.individual else "group key"
    enrollment_key = read_secret(what)
    _check_key(enrollment_key, what)
    key = enrollment_key if args.individual else tokens.derive_key(enrollment_key, args.registration_id)
    return {"id_scope": args.id_scope, "registration_id": args.registration_id,
            "host": args.dps_host}, key


def is_local(host):
    return host.lower() in LOCAL_HOSTS


def parse_connection_string(text, path):
    fields = {}
    for part in text.strip().split(";"):
        k, sep, v = part.partition("=")
        if sep:
            fields[k.strip()] = v.strip()
    missing = [k for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not fields.get(k)]
    if missing:
        raise CliError(f"{path} is not an IoT Hub service connection string (no {', '.join(missing)}); "
                       "copy one of the hub's shared access policies, e.g. iothubowner")
    _check_key(fields["SharedAccessKey"], "SharedAccessKey in " + path)
    return fields


def registry_identity(args):
    """Create (or read) the device in the IoT Hub the connection string names -> (host, key)."""
    path = args.connection_string_file
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CliError(f"cannot read connection string file {path}: {e.strerror}") from None
    fields = parse_connection_string(text, path)
    from azure.iot.hub import IoTHubRegistryManager
    try:
        registry = IoTHubRegistryManager.from_connection_string(text.strip())
    except Exception as e:  # the SDK's own validation of the string
        raise CliError(f"{path}: {e}") from None
    try:
        try:
            dev = registry.get_device(args.device)
        except Exception as e:
            if _status(e) != 404:
                raise
            from host_tools.cloud.hub.store import new_key
            dev = registry.create_device_with_sas(args.device, new_key(), new_key(), "enabled")
    except Exception as e:
        status = _status(e)
        if status is None:
            raise CliError(f"cannot reach the IoT Hub {fields['HostName']}: {_short(e)}") from None
        raise CliError(f"the IoT Hub {fields['HostName']} refused: HTTP {status} {_short(e)}") from None
    key = dev.authentication.symmetric_key.primary_key
    if not key:
        raise CliError(f"device {args.device} in {fields['HostName']} has no symmetric key "
                       "(an X.509 device?); this firmware signs with a SAS key")
    return fields["HostName"].rsplit(":", 1)[0], key


def _status(e):
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None) or getattr(e, "status_code", None)


def _short(e):
    text = str(getattr(e, "message", None) or e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


__all__ = ["AZURE_DPS_HOST", "dps_identity", "registry_identity", "is_local"]
