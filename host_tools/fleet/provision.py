"""`provision`: give a device its identity (the `deploy` command then puts it on a board).

provision writes a device folder with exactly what firmware/runtime/storage.py reads:
    config.json   shareable: host, port, device_id, ca_file, hostname, token_ttl_s
    secrets.json  0600, never printed: device_key (and wifi_ssid / wifi_password for an ESP32)
    ca.der        the root the hub's server certificate chains to (DER: MicroPython's TLS wants DER)
Against the local hub (the default) the device is registered in its registry if need be and
--sku/--quantity go into its twin's desired properties (the device reads them there); against
Azure IoT Hub (--host NAME.azure-devices.net) the key comes from standard input and the CA is
DigiCert Global Root G2 from the system's certificate store.

"""
import argparse
import json
import os

from cryptography.hazmat.primitives.serialization import Encoding

from host_tools.errors import CliError
from host_tools.files import write_atomic, write_json
from host_tools.prompt import read_secret

DEFAULT_HUB_DATA = os.path.join(".local", "hub")
DEFAULT_DEVICE_DIR = os.path.join(".local", "device")
AZURE_ROOT = "DigiCert_Global_Root_G2.pem"  # IoT Hub's server certificates chain to it
SYSTEM_CERT_DIRS = ("/etc/ssl/certs", "/usr/share/ca-certificates/mozilla", "/etc/pki/tls/certs")
BOARD_DATA = "/data"  # firmware/hal/esp32.py: the storage folder on the board


def add_commands(sub):
    p = sub.add_parser("provision", help="write a device folder (config, secrets, CA) for one device")
    p.add_argument("--device", required=True, help="device id")
    p.add_argument("--out", default=DEFAULT_DEVICE_DIR, help="device folder (default %(default)s)")
    p.add_argument("--hub-data", default=DEFAULT_HUB_DATA,
                   help="local hub data folder, for a local device (default %(default)s)")
    p.add_argument("--host", help="Azure IoT Hub host name; the device key is then read from standard input")
    p.add_argument("--port", type=int, help="MQTT port (default: the running local hub's, else 8883)")
    p.add_argument("--hostname", help="TLS server name when it differs from --host")
    p.add_argument("--ca", help="CA certificate (PEM or DER) instead of the default one")
    p.add_argument("--sku", help="product this button orders: set in the local hub's device twin "
                                 "(for Azure, set the twin's desired sku there)")
    p.add_argument("--quantity", type=int, help="quantity per order (default 1), like --sku")
    p.add_argument("--token-ttl", type=int, help="SAS token lifetime in seconds (default 3600)")
    p.add_argument("--wifi-ssid", help="WLAN name (ESP32); the password is read from standard input")
    p.set_defaults(func=cmd_provision)



# ---- provision -----------------------------------------------------------------------------

def _read_json(path):
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CliError(f"{path} is not readable JSON ({e}); fix or delete it and provision again") from None
    if not isinstance(obj, dict):
        raise CliError(f"{path} must hold a JSON object; fix or delete it and provision again")
    return obj


def _der(path):
    """A CA certificate file (PEM or DER) as checked DER bytes; a clear error otherwise."""
    from cryptography import x509
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CliError(f"cannot read CA certificate {path}: {e.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except ValueError:
        raise CliError(f"{path} is not a PEM or DER certificate (truncated or another kind of file?)") from None


def _system_root():
    for folder in SYSTEM_CERT_DIRS:
        for name in (AZURE_ROOT, AZURE_ROOT[:-4] + ".crt"):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                return path
    raise CliError("DigiCert Global Root G2 not found in the system certificate store; "
                   "install ca-certificates or pass --ca FILE")


def _local_identity(args):
    """Register the device in the local hub (if new) and read its key, host and port."""
    from host_tools.cloud.hub import certs
    from host_tools.cloud.hub.store import Store, StoreError

    os.makedirs(args.hub_data, exist_ok=True)
    store = Store(os.path.join(args.hub_data, "hub.sqlite3"))
    try:
        dev = store.get_device(args.device) or store.add_device(args.device)
        # What the button orders lives in the twin's desired properties, where the shop (the
        # cloud) sets it; the device picks it up with the twin GET after it connects.
        desired = {k: v for k, v in (("sku", args.sku), ("quantity", args.quantity)) if v is not None}
        if desired:
            store.patch_twin(args.device, "desired", desired)
    except StoreError as e:
        raise CliError(str(e)) from None
    finally:
        store.close()
    running = _read_json(os.path.join(args.hub_data, "hub.json"))
    paths, _ = certs.ensure(os.path.join(args.hub_data, "certs"))
    host = running.get("host", "127.0.0.1")
    return dev["primary_key"], host, args.port or running.get("mqtt_port") or 8883, paths["ca.der"]


def provision(args):
    """Write the device folder; returns the config written (never the secrets).

    Everything that can be wrong with the input (existing files, key, CA) is checked before
    the registry or any file is changed."""
    cfg_path = os.path.join(args.out, "config.json")
    secrets_path = os.path.join(args.out, "secrets.json")
    cfg, secrets = _read_json(cfg_path), _read_json(secrets_path)
    ca_der = _der(args.ca) if args.ca else None
    if args.host:
        key = read_secret("device key")
        from firmware.iothub import sas
        try:
            sas.token("check", key, 1)
        except sas.SasError:
            raise CliError("the device key is not valid base64: paste the device's primary key") from None
        host, port = args.host, args.port or 8883
        ca_der = ca_der or _der(_system_root())
    else:
        key, host, port, local_ca = _local_identity(args)
        ca_der = ca_der or _der(local_ca)
    cfg.update(host=host, port=port, device_id=args.device, ca_file="ca.der")
    for k, v in (("hostname", args.hostname), ("token_ttl_s", args.token_ttl)):
        if v is not None:
            cfg[k] = v
    secrets["device_key"] = key
    if args.wifi_ssid:
        secrets["wifi_ssid"] = args.wifi_ssid
        secrets["wifi_password"] = read_secret("WLAN password")
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "ca.der"), ca_der)
    write_atomic(secrets_path, json.dumps(secrets), mode=0o600)
    write_json(cfg_path, cfg)
    return cfg


def provision_local(device_id, out, hub_data, port=None, sku=None, quantity=None):
    """provision() for a device of the local hub, for scripts (the demo, the bench)."""
    return provision(argparse.Namespace(
        device=device_id, out=out, hub_data=hub_data, host=None, port=port, hostname=None, ca=None,
        sku=sku, quantity=quantity, token_ttl=None, wifi_ssid=None))


def cmd_provision(args):
    cfg = provision(args)
    print(f"provisioned {cfg['device_id']} for {cfg['host']}:{cfg['port']} in {args.out} "
          f"(secrets.json is 0600; keep it out of version control)")
    if args.host and (args.sku or args.quantity):
        print("note: --sku/--quantity go into the device twin; on Azure IoT Hub set the twin's "
              "desired sku and quantity there (the device reads them from its twin)")
