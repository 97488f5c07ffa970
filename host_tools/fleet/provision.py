"""`provision`: give a device its identity (the `deploy` command then puts it on a board).

provision writes a device folder with exactly what firmware/runtime/storage.py reads:
    config.json   shareable: host, port, device_id, ca_file, hostname, token_ttl_s
    secrets.json  0600, never printed: device_key (and wifi_ssid / wifi_password for an ESP32)
    ca.der        the roots the hub's server certificate may chain to: DER certificates back to
                  back (MicroPython's TLS wants DER), with ca.json (its version and SHA-256s);
                  host_tools/fleet/trust.py
Against the local hub (the default) the device is registered in its registry if need be and
--sku/--quantity go into its twin's desired properties (the device reads them there); against
Azure IoT Hub (--host NAME.azure-devices.net) the key comes from standard input and the bundle
holds the three roots Microsoft asks devices to trust (DigiCert Global Root G2, Microsoft RSA
Root CA 2017, DigiCert Global Root G3).

"""
import argparse
import json
import os

from host_tools.errors import CliError
from host_tools.fleet import onboarding, trust
from host_tools.fleet.onboarding import AZURE_DPS_HOST
from host_tools.files import write_atomic, write_json
from host_tools.prompt import read_secret

DEFAULT_HUB_DATA = os.path.join(".local", "hub")
DEFAULT_DEVICE_DIR = os.path.join(".local", "device")
BOARD_DATA = "/data"  # firmware/hal/esp32.py: the storage folder on the board


def add_commands(sub):
    p = sub.add_parser("provision", help="write a device folder (config, secrets, CA) for one device")
    p.add_argument("--device", help="device id (not with --dps: DPS assigns it)")
    p.add_argument("--out", default=DEFAULT_DEVICE_DIR, help="device folder (default %(default)s)")
    p.add_argument("--hub-data", default=DEFAULT_HUB_DATA,
                   help="local hub data folder, for a local device (default %(default)s)")
    p.add_argument("--host", help="Azure IoT Hub host name; the device key is then read from standard input")
    p.add_argument("--port", type=int, help="MQTT port (default: the running local hub's, else 8883)")
    p.add_argument("--hostname", help="TLS server name when it differs from --host")
    p.add_argument("--ca", help="CA certificate(s) to trust (PEM or DER, one or more) instead of the default")
    p.add_argument("--sku", help="product this button orders: set in the local hub's device twin "
                                 "(for Azure, set the twin's desired sku there)")
    p.add_argument("--quantity", type=int, help="quantity per order (default 1), like --sku")
    p.add_argument("--token-ttl", type=int, help="SAS token lifetime in seconds (default 3600)")
    p.add_argument("--wifi-ssid", help="WLAN name (ESP32); the password is read from standard input")
    g = p.add_argument_group("DPS: the device registers itself at first boot (key on standard input)")
    g.add_argument("--dps", action="store_true",
                   help="the group enrollment key comes on standard input; only the device key "
                        "derived from it goes on the device")
    g.add_argument("--id-scope", help="the DPS id scope")
    g.add_argument("--registration-id", help="this device's registration id")
    g.add_argument("--dps-host", default=AZURE_DPS_HOST,
                   help="DPS endpoint (default %(default)s; 127.0.0.1 = the local hub's DPS)")
    g.add_argument("--individual", action="store_true",
                   help="the key on standard input is an individual enrollment's, used as is")
    g = p.add_argument_group("Azure IoT Hub registry")
    g.add_argument("--azure", action="store_true",
                   help="create the device (or read it) in the IoT Hub of --connection-string-file")
    g.add_argument("--connection-string-file", metavar="F",
                   help="file holding a service connection string (HostName=...;SharedAccessKeyName=...;"
                        "SharedAccessKey=...)")
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


def _certs(path):
    """A CA file (PEM or DER, one or more certificates) as a list of checked DER certificates."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CliError(f"cannot read CA certificate {path}: {e.strerror}") from None
    return trust.der_certificates(data, path)


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
    _check_modes(args)
    cfg, secrets = _read_json(cfg_path), _read_json(secrets_path)
    ca = _certs(args.ca) if args.ca else None
    if getattr(args, "dps", False):
        return _provision_dps(args, cfg, secrets, ca, cfg_path, secrets_path)
    if getattr(args, "azure", False):
        host, key = onboarding.registry_identity(args)
        port = args.port or 8883
        ca = ca or trust.azure_roots()
    elif args.host:
        key = read_secret("device key")
        from firmware.iothub import sas
        try:
            sas.token("check", key, 1)
        except sas.SasError:
            raise CliError("the device key is not valid base64: paste the device's primary key") from None
        host, port = args.host, args.port or 8883
        ca = ca or trust.azure_roots()
    else:
        key, host, port, local_ca = _local_identity(args)
        ca = ca or _certs(local_ca)
    cfg.pop("dps", None)
    cfg.update(host=host, port=port, device_id=args.device, ca_file="ca.der")
    return _write(args, cfg, secrets, key, ca, cfg_path, secrets_path)


def _check_modes(args):
    dps, azure = getattr(args, "dps", False), getattr(args, "azure", False)
    if dps and (azure or args.host):
        raise CliError("--dps registers through DPS: leave out --azure and --host")
    if azure and args.host:
        raise CliError("--azure takes the host from the connection string: leave out --host")
    if azure and not args.connection_string_file:
        raise CliError("--azure needs --connection-string-file F")
    if dps and args.device:
        raise CliError("--dps: DPS assigns the device id; leave out --device")
    if not dps and not args.device:
        raise CliError("--device is required (or --dps with --id-scope and --registration-id)")


def _provision_dps(args, cfg, secrets, ca, cfg_path, secrets_path):
    section, key = onboarding.dps_identity(args)
    port = args.port or 8883
    if onboarding.is_local(args.dps_host):
        # the local hub's DPS: its port and its root (DPS and hub share the listener)
        from host_tools.cloud.hub import certs
        running = _read_json(os.path.join(args.hub_data, "hub.json"))
        port = args.port or running.get("mqtt_port") or 8883
        ca = ca or _certs(certs.ensure(os.path.join(args.hub_data, "certs"))[0]["ca.der"])
    else:
        ca = ca or trust.azure_roots()
    section["port"] = port
    for k in ("host", "device_id", "hostname"):
        cfg.pop(k, None)      # they come from the assignment the device caches
    cfg.update(dps=section, port=port, ca_file="ca.der")
    _write(args, cfg, secrets, key, ca, cfg_path, secrets_path)
    # a new identity: an assignment cached for another registration must not be used
    try:
        os.remove(os.path.join(args.out, "assignment.json"))
    except FileNotFoundError:
        pass
    return cfg


def _write(args, cfg, secrets, key, ca, cfg_path, secrets_path):
    for k, v in (("hostname", args.hostname), ("token_ttl_s", args.token_ttl)):
        if v is not None:
            cfg[k] = v
    secrets["device_key"] = key
    if args.wifi_ssid:
        secrets["wifi_ssid"] = args.wifi_ssid
        secrets["wifi_password"] = read_secret("WLAN password")
    os.makedirs(args.out, exist_ok=True)
    trust.write_bundle(args.out, ca, write_atomic)
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
    if "dps" in cfg:
        d = cfg["dps"]
        print(f"provisioned registration {d['registration_id']} (DPS {d['host']}:{d['port']}, id scope "
              f"{d['id_scope']}) in {args.out}: the device registers at first boot "
              f"(secrets.json holds only the derived device key, 0600)")
        return
    print(f"provisioned {cfg['device_id']} for {cfg['host']}:{cfg['port']} in {args.out} "
          f"(secrets.json is 0600; keep it out of version control)")
    if args.host and (args.sku or args.quantity):
        print("note: --sku/--quantity go into the device twin; on Azure IoT Hub set the twin's "
              "desired sku and quantity there (the device reads them from its twin)")
