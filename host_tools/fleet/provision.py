"""`provision`: give a device its identity (the `deploy` command then puts it on a board).

provision writes a device folder with exactly what firmware/runtime/storage.py reads:
    config.json   shareable: host, port, device_id, ca_file, hostname, token_ttl_s
    secrets.json  0600, never printed: device_key (and wifi_ssid / wifi_password for an ESP32)
    ca.der        the roots the hub's server certificate may chain to: DER certificates back to
                  back (MicroPython's TLS wants DER), with ca.json (its version and SHA-256s);
                  host_tools/fleet/trust.py
Against the local hub (the default) the device is registered in its registry if need be and
--sku/--quantity go into its twin's desired properties (the device reads them there); against
Azure IoT Hub (--host NAME.azure-devices.net) the key comes from standard input; with --azure
the device is created (or read) in the IoT Hub a service connection string names; with --dps the
device registers itself at first boot (host_tools/fleet/onboarding.py). Azure folders trust the
three roots Microsoft asks devices to trust (DigiCert Global Root G2, Microsoft RSA Root CA 2017,
DigiCert Global Root G3).

Every value is checked and every secret read before anything changes; the device folder is
written under temporary names and put in place after the registry took the device, so a
provision that fails leaves the registry, the hub folder and the device folder as they were.
"""
import argparse
import base64
import binascii
import json
import os
import shutil

from host_tools.errors import CliError
from host_tools.files import Staging
from host_tools.fleet import onboarding, trust
from host_tools.fleet.onboarding import AZURE_DPS_HOST
from host_tools.prompt import read_secret

DEFAULT_HUB_DATA = os.path.join(".local", "hub")
DEFAULT_DEVICE_DIR = os.path.join(".local", "device")
BOARD_DATA = "/data"  # firmware/hal/esp32.py: the storage folder on the board
TOKEN_TTL_RANGE = (10, 7 * 24 * 3600)  # seconds; the device renews at 80 % of the lifetime
KEY_BYTES = (16, 64)     # IoT Hub's symmetric keys: base64 of 16 to 64 bytes
MAX_CA_BYTES = 64 * 1024  # a root (or a short chain) is 1-5 KB
MAX_SSID_BYTES = 32       # 802.11
MAX_WLAN_PASSWORD = 64    # WPA2: 8..63 characters, or 64 hex digits


def add_commands(sub):
    p = sub.add_parser("provision", help="write a device folder (config, secrets, CA) for one device")
    p.add_argument("--device", help="device id (not with --dps: DPS assigns it)")
    p.add_argument("--out", default=DEFAULT_DEVICE_DIR, help="device folder (default %(default)s)")
    p.add_argument("--hub-data", default=DEFAULT_HUB_DATA,
                   help="local hub data folder, for a local device (default %(default)s)")
    p.add_argument("--host", help="Azure IoT Hub host name; the device key is then read from standard input")
    p.add_argument("--port", type=int, help="MQTT port, 1-65535 (default: the running local hub's, else 8883)")
    p.add_argument("--hostname", help="TLS server name when it differs from --host")
    p.add_argument("--ca", help="CA certificate(s) to trust (PEM or DER, one or more) instead of the default")
    p.add_argument("--sku", help="product this button orders: set in the local hub's device twin "
                                 "(for Azure, set the twin's desired sku there)")
    p.add_argument("--quantity", type=int, help="quantity per order (default 1), like --sku")
    p.add_argument("--catalogue", help="catalogue JSON to check --sku and --quantity against (default, "
                                       "for the local hub: the one the local order service uses)")
    p.add_argument("--token-ttl", type=int, help="SAS token lifetime in seconds, %d-%d (default 3600)"
                                                 % TOKEN_TTL_RANGE)
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


# ---- checks: everything is checked before anything changes -----------------------------------

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


def _check_values(args):
    from firmware.app import settings
    from host_tools.cloud.hub.store import valid_device_id
    _check_modes(args)
    if args.device is not None and not valid_device_id(args.device):
        raise CliError(f"invalid device id {args.device!r}: up to 128 letters, digits and -._:@ "
                       "(IoT Hub's rule)")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise CliError(f"--port {args.port} is not a TCP port (1-65535)")
    if args.token_ttl is not None and not TOKEN_TTL_RANGE[0] <= args.token_ttl <= TOKEN_TTL_RANGE[1]:
        raise CliError("--token-ttl must be between %d and %d seconds (7 days); the device renews "
                       "its token before it expires" % TOKEN_TTL_RANGE)
    if args.hostname is not None and not args.hostname.strip():
        raise CliError("--hostname is empty")
    for key, value in (("sku", args.sku), ("quantity", args.quantity)):
        # the device's own rule for these twin settings (firmware/app/settings.py)
        reason = None if value is None else settings.check(key, value)
        if reason:
            raise CliError(f"--{key} {value!r} is not what a button accepts ({reason})")
    if args.sku == "":
        raise CliError("--sku is empty")
    if args.wifi_ssid is not None and not 0 < len(args.wifi_ssid.encode()) <= MAX_SSID_BYTES:
        raise CliError(f"--wifi-ssid must be 1 to {MAX_SSID_BYTES} bytes (an 802.11 network name)")
    _check_catalogue(args)


def _check_catalogue(args):
    """--sku (and --quantity) against the catalogue: the local order service's for a local
    device, the one given with --catalogue otherwise (for Azure the shop's is not known here)."""
    if args.sku is None and args.quantity is None:
        return
    if (args.host or getattr(args, "azure", False) or getattr(args, "dps", False)) \
            and not getattr(args, "catalogue", None):
        return
    from host_tools.cloud.orders import catalogue
    try:
        cat = catalogue.load(getattr(args, "catalogue", None))
    except catalogue.CatalogueError as exc:
        raise CliError(str(exc)) from None
    if args.sku is not None:
        product = cat.product(args.sku)
        if product is None:
            raise CliError(f"--sku {args.sku} is not in the catalogue ({', '.join(sorted(cat.products))}); "
                           "--catalogue FILE checks against another")
        if args.quantity is not None and args.quantity > product.max_quantity:
            raise CliError(f"--quantity {args.quantity}: the catalogue sells at most "
                           f"{product.max_quantity} of {args.sku} per order")


def _device_key(key):
    """A device key as IoT Hub issues it (base64 of 16 to 64 bytes); the error never shows it."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise CliError("the device key is not valid base64: paste the device's primary key") from None
    if not KEY_BYTES[0] <= len(raw) <= KEY_BYTES[1]:
        raise CliError("the device key is %d bytes; IoT Hub's keys are %d to %d bytes (base64 of "
                       "them): paste the device's primary key" % ((len(raw),) + KEY_BYTES))
    return key


def _read_json(path):
    try:
        with open(path) as f:
            obj = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return {}    # a folder that cannot be one is reported when it is made (files.make_dirs)
    except (OSError, ValueError) as e:
        raise CliError(f"{path} is not readable JSON ({e}); fix or delete it and provision again") from None
    if not isinstance(obj, dict):
        raise CliError(f"{path} must hold a JSON object; fix or delete it and provision again")
    return obj


def _certs(path):
    """A CA file (PEM or DER, one or more certificates) as a list of checked DER certificates."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CA_BYTES + 1)
    except OSError as e:
        raise CliError(f"cannot read CA certificate {path}: {e.strerror}") from None
    if len(data) > MAX_CA_BYTES:
        raise CliError(f"{path} is larger than {MAX_CA_BYTES // 1024} KB: not a CA certificate")
    return trust.der_certificates(data, path)


def _stage_bundle(stage, folder, certs):
    """ca.der and ca.json into the staging (the version goes up only when the roots change)."""
    bundle, manifest = trust.bundle(folder, certs)
    stage.add(trust.BUNDLE, bundle)
    stage.add(trust.MANIFEST, manifest)


# ---- the local hub ---------------------------------------------------------------------------

class _LocalHub:
    """The local hub's side of a provision: prepare() reads (making the hub folder when there is
    none), register() is the one change to the registry, undo() takes it back."""

    def __init__(self, args):
        self.args = args
        self.made_hub = not os.path.exists(args.hub_data)
        self.store = self.dev = None

    def prepare(self):
        """(key, host, port, ca_der): the device's key if registered, else a new one."""
        from host_tools.cloud.hub.hub import HubError, ensure_data_dir
        from host_tools.cloud.hub.store import Store, StoreError, new_key
        try:
            paths, cert_paths = ensure_data_dir(self.args.hub_data)
            self.store = Store(paths["db"])
        except (HubError, StoreError) as e:
            raise CliError(str(e)) from None
        self.dev = self.store.get_device(self.args.device)
        running = _read_json(paths["hub"])
        host = running.get("host", "127.0.0.1")
        port = self.args.port or running.get("mqtt_port") or 8883
        key = self.dev["primary_key"] if self.dev else new_key()
        return key, host, port, _certs(cert_paths["ca.der"])

    def register(self, key):
        from host_tools.cloud.hub.store import StoreError
        # What the button orders lives in the twin's desired properties, where the shop (the
        # cloud) sets it; the device picks it up with the twin GET after it connects.
        desired = {k: v for k, v in (("sku", self.args.sku), ("quantity", self.args.quantity))
                   if v is not None}
        try:
            if self.dev is None:
                self.store.add_device(self.args.device, primary_key=key)
            if desired:
                self.store.patch_twin(self.args.device, "desired", desired)
        except StoreError as e:
            self.undo()
            raise CliError(str(e)) from None

    def undo(self):
        """Take back a device this run added (an existing device's key is never touched)."""
        if self.dev is None and self.store is not None and self.store.get_device(self.args.device):
            self.store.remove_device(self.args.device)

    def close(self, failed):
        if self.store is not None:
            self.store.close()
        if failed and self.made_hub:
            shutil.rmtree(self.args.hub_data, ignore_errors=True)   # made by this run only


# ---- provision -------------------------------------------------------------------------------

def provision(args):
    """Write the device folder; returns the config written (never the secrets).

    Everything that can be wrong with the input (values, existing files, key, CA, the folders)
    is checked before the registry or any file is changed; a failure after that undoes it."""
    _check_values(args)
    cfg_path = os.path.join(args.out, "config.json")
    secrets_path = os.path.join(args.out, "secrets.json")
    cfg, secrets = _read_json(cfg_path), _read_json(secrets_path)
    ca = _certs(args.ca) if args.ca else None
    if getattr(args, "dps", False):
        return _provision_dps(args, cfg, secrets, ca)
    key = None
    if args.host:
        key = _device_key(read_secret("device key"))
        ca = ca or trust.azure_roots()
    if args.wifi_ssid:
        secrets["wifi_ssid"] = args.wifi_ssid
        secrets["wifi_password"] = read_secret("WLAN password", MAX_WLAN_PASSWORD)
    azure = getattr(args, "azure", False)
    local = None if (args.host or azure) else _LocalHub(args)
    failed = True
    try:
        with Staging(args.out, "device folder") as stage:   # a folder that cannot be made fails here
            if local is not None:
                key, host, port, local_ca = local.prepare()
                ca = ca or local_ca
            elif azure:
                host, key = onboarding.registry_identity(args)   # creates the device in the hub
                port = args.port or 8883
                ca = ca or trust.azure_roots()
            else:
                host, port = args.host, args.port or 8883
            cfg.pop("dps", None)
            cfg.update(host=host, port=port, device_id=args.device, ca_file=trust.BUNDLE)
            for k, v in (("hostname", args.hostname), ("token_ttl_s", args.token_ttl)):
                if v is not None:
                    cfg[k] = v
            secrets["device_key"] = key
            _stage_bundle(stage, args.out, ca)
            stage.add("secrets.json", json.dumps(secrets), mode=0o600)
            stage.add("config.json", json.dumps(cfg, indent=1, sort_keys=True) + "\n")
            if local is not None:
                local.register(key)          # the registry changes last, once the files are written
            try:
                stage.commit()
            except OSError as e:
                if local is not None:
                    local.undo()
                raise CliError(f"cannot write the device folder {args.out}: {e.strerror}") from None
        failed = False
    finally:
        if local is not None:
            local.close(failed)
    return cfg


def _provision_dps(args, cfg, secrets, ca):
    section, key = onboarding.dps_identity(args)     # reads the enrollment key
    if args.wifi_ssid:
        secrets["wifi_ssid"] = args.wifi_ssid
        secrets["wifi_password"] = read_secret("WLAN password", MAX_WLAN_PASSWORD)
    port = args.port or 8883
    if onboarding.is_local(args.dps_host):
        # the local hub's DPS: its port and its root (DPS and hub share the listener)
        from host_tools.cloud.hub.certs import CertsError, ensure
        running = _read_json(os.path.join(args.hub_data, "hub.json"))
        port = args.port or running.get("mqtt_port") or 8883
        if ca is None:
            try:
                ca = _certs(ensure(os.path.join(args.hub_data, "certs"))[0]["ca.der"])
            except CertsError as e:
                raise CliError(str(e)) from None
    else:
        ca = ca or trust.azure_roots()
    section["port"] = port
    for k in ("host", "device_id", "hostname"):
        cfg.pop(k, None)      # they come from the assignment the device caches
    cfg.update(dps=section, port=port, ca_file=trust.BUNDLE)
    for k, v in (("hostname", args.hostname), ("token_ttl_s", args.token_ttl)):
        if v is not None:
            cfg[k] = v
    secrets["device_key"] = key
    with Staging(args.out, "device folder") as stage:
        _stage_bundle(stage, args.out, ca)
        stage.add("secrets.json", json.dumps(secrets), mode=0o600)
        stage.add("config.json", json.dumps(cfg, indent=1, sort_keys=True) + "\n")
        try:
            stage.commit()
        except OSError as e:
            raise CliError(f"cannot write the device folder {args.out}: {e.strerror}") from None
    # a new identity: an assignment cached for another registration must not be used
    try:
        os.remove(os.path.join(args.out, "assignment.json"))
    except FileNotFoundError:
        pass
    return cfg


def provision_local(device_id, out, hub_data, port=None, sku=None, quantity=None):
    """provision() for a device of the local hub, for scripts (the demo, the bench)."""
    return provision(argparse.Namespace(
        device=device_id, out=out, hub_data=hub_data, host=None, port=port, hostname=None, ca=None,
        sku=sku, quantity=quantity, catalogue=None, token_ttl=None, wifi_ssid=None, dps=False,
        azure=False))


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
