"""CLI of the local IoT Hub: certs, registry, hub, monitor, c2d, twin, method.

Registry commands work on the data folder directly (the hub need not run); monitor, c2d, twin and
method talk to the running hub's service API.
"""
import argparse
import json
import os
import sys

from host_tools import cli_args
from host_tools.errors import CliError

DEFAULT_DATA = os.path.join(".local", "hub")


def hub_command(parent, name, func, help_text, **defaults):
    """A sub-command on a hub data folder (--data); the `dps` and `ota` commands are too."""
    return cli_args.data_command(parent, name, func, help_text, DEFAULT_DATA, "hub data folder",
                                 **defaults)


def add_commands(sub):
    p = sub.add_parser("certs", help="make the local CA and the hub's TLS certificate")
    p.add_argument("--out", default=os.path.join(DEFAULT_DATA, "certs"), help="output folder")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("registry", help="manage device identities of the local hub")
    rs = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    for action, helptext in (("add", "register a device (new random key)"), ("list", "list devices"),
                             ("show", "show one device"), ("remove", "delete a device"),
                             ("disable", "refuse a device's connections"), ("enable", "allow it again")):
        a = hub_command(rs, action, cmd_registry, helptext, action=action)
        if action != "list":
            a.add_argument("device", help="device id")
        if action in ("add", "show"):
            a.add_argument("--show-connection-string", action="store_true",
                           help="print HostName=...;DeviceId=...;SharedAccessKey=... (contains the key)")
            a.add_argument("--host", default=None, help="HostName in the connection string")

    p = sub.add_parser("hub", help="run the local IoT Hub in the foreground (Ctrl-C stops); "
                                   "'hub connection-strings' prints its service connection strings; "
                                   "'hub inject FAULT...' arms test faults on the running hub",
                       epilog=_faults_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=("connection-strings", "inject"),
                   help="connection-strings: print the service and Event Hubs-compatible connection "
                        "strings of the running hub as JSON (they hold a key); inject: test tooling, "
                        "arm the FAULTs on the running hub (none: print what is armed)")
    p.add_argument("fault", nargs="*", metavar="FAULT", help="with inject: KIND=VALUE (see below)")
    cli_args.add_data(p, DEFAULT_DATA, "hub data folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=8883, help="0 picks a free port")
    p.add_argument("--api-port", type=int, default=443, help="0 picks a free port")
    p.add_argument("--amqp-port", type=int, default=5671,
                   help="AMQP 1.0 over TLS (service side: C2D, Event Hubs-compatible endpoint); 0 picks a free port")
    p.add_argument("--partitions", type=int, default=None,
                   help="partitions of the Event Hubs-compatible endpoint (default 2; fixed when the hub is created)")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds for a new connection's TLS handshake and CONNECT, and for any packet "
                        "once begun (default %(default)s)")
    p.add_argument("--c2d-lock-seconds", type=float, default=60.0,
                   help="how long a delivered C2D message stays locked (IoT Hub: 60; shorter for tests)")
    p.add_argument("--max-idle-seconds", type=float, default=1767.0,
                   help="cap on the silence allowed by any keep-alive (IoT Hub: 1767; shorter for tests)")
    p.add_argument("--retention-hours", type=float, default=None, metavar="H",
                   help="how long telemetry stays on the Event Hubs-compatible endpoint, 1..168 (IoT Hub: "
                        "1 day by default, 1 to 7 days); kept for later starts (default: as last set, else 24)")
    p.add_argument("--feedback-batch-seconds", type=float, default=None, metavar="S",
                   help="C2D feedback: close a batch this long after the previous one, or at 64 records "
                        "(IoT Hub: 15; shorter or longer for tests)")
    p.add_argument("--feedback-lock-seconds", type=float, default=None, metavar="S",
                   help="how long a reader holds a C2D feedback message before it is visible again "
                        "(IoT Hub: 60, settable 5..300; shorter for tests)")
    p.add_argument("--inject", action="append", default=[], metavar="FAULT",
                   help="test tooling: arm a fault, e.g. twin_get=429:3, twin_patch=503:1, connect=3:2, "
                        "c2d_lock=1, drop=1 (repeatable; see below)")
    p.add_argument("--dps-retry-after", type=int, default=None, metavar="S",
                   help="retry-after DPS answers a register with (default 3, as Azure's DPS)")
    p.add_argument("--verbose", action="store_true", help="log connections and refusals to stderr")
    p.set_defaults(func=cmd_hub)

    p = sub.add_parser("consumer-group", help="consumer groups of the Event Hubs-compatible endpoint")
    gs = p.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    for action, helptext in (("add", "create a consumer group"), ("remove", "delete a consumer group"),
                             ("list", "list consumer groups")):
        a = hub_command(gs, action, cmd_consumer_group, helptext, action=action)
        if action != "list":
            a.add_argument("name")

    p = hub_command(sub, "monitor", cmd_monitor,
                    "print device telemetry as it arrives (one JSON line each)")
    p.add_argument("--device", default=None, help="only this device")
    p.add_argument("--from-start", action="store_true", help="also print telemetry recorded earlier")
    p.add_argument("--count", type=int, default=0, help="stop after this many messages")

    p = sub.add_parser("c2d", help="cloud-to-device messages")
    cs = p.add_subparsers(dest="c2d_command", metavar="ACTION", required=True)
    a = hub_command(cs, "send", cmd_c2d_send, "queue a message for a device")
    a.add_argument("device")
    a.add_argument("--body", required=True)
    a.add_argument("--prop", action="append", default=[], metavar="K=V", help="application property")
    a.add_argument("--message-id")
    a.add_argument("--correlation-id")
    a.add_argument("--content-type")
    a.add_argument("--content-encoding")
    a.add_argument("--ttl", type=int, help="seconds (default 3600)")
    a = hub_command(cs, "purge", cmd_c2d_purge,
                    "delete every message queued for a device (one it keeps failing on, too)")
    a.add_argument("device")

    p = sub.add_parser("twin", help="device twins")
    ts = p.add_subparsers(dest="twin_command", metavar="ACTION", required=True)
    a = hub_command(ts, "show", cmd_twin_show, "print a device's twin")
    a.add_argument("device")
    a = hub_command(ts, "set-desired", cmd_twin_set_desired,
                    "patch desired properties (JSON object; null deletes)")
    a.add_argument("device")
    a.add_argument("patch", metavar="JSON")

    p = sub.add_parser("method", help="direct methods")
    ms = p.add_subparsers(dest="method_command", metavar="ACTION", required=True)
    a = hub_command(ms, "invoke", cmd_method_invoke,
                    "call a method on a connected device and print its answer")
    a.add_argument("device")
    a.add_argument("name")
    a.add_argument("--payload", default="null", metavar="JSON")
    a.add_argument("--timeout", type=int, default=30, help="seconds, 5..300")


def _faults_doc():
    from host_tools.cloud.hub import faults
    return faults.__doc__


def _json_arg(text, what):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError("%s is not valid JSON (%s); quote it, e.g. '{\"key\": 1}'" % (what, exc)) from None


# ---- certs, registry, hub ---------------------------------------------------------------------
def cmd_certs(args):
    from host_tools.cloud.hub import certs
    try:
        paths, created = certs.ensure(args.out, force=args.force)
    except certs.CertsError as exc:
        raise CliError(str(exc)) from None
    print(("created" if created else "kept existing") + " certificates in " + args.out)
    for name in ("ca.pem", "ca.der", "server.pem"):
        print("  " + paths[name])


def open_in_data_dir(data_dir, create, open_fn):
    """open_fn(the paths of the hub data folder data_dir) for a command (`registry`, `dps`).
    Only a command that makes something (create) makes the folder: a mistyped --data for the
    others is an error, not a new empty hub. The stores' errors are one line."""
    from host_tools.cloud.dps.store import DpsStoreError
    from host_tools.cloud.hub.hub import HubError, data_paths, ensure_data_dir
    from host_tools.cloud.hub.store import StoreError
    try:
        if create:
            ensure_data_dir(data_dir)
        elif not os.path.isdir(data_dir):
            raise CliError("no hub data folder %s; `registry add` or `hub --data %s` makes one"
                           % (data_dir, data_dir))
        return open_fn(data_paths(data_dir))
    except (HubError, StoreError, DpsStoreError) as exc:
        if getattr(exc, "status", None) == 404:
            raise CliError("%s; `registry add` or `hub --data %s` makes one" % (exc, data_dir)) from None
        raise CliError(str(exc)) from None


def _store(data_dir, create):
    """The registry in data_dir."""
    from host_tools.cloud.hub.store import Store
    return open_in_data_dir(data_dir, create, lambda paths: Store(paths["db"], create=create))


def _host(args):
    if getattr(args, "host", None):
        return args.host
    try:
        with open(os.path.join(args.data, "hub.json")) as f:
            return json.load(f)["host"]
    except (OSError, ValueError, KeyError):
        return "127.0.0.1"


def cmd_registry(args):
    from host_tools.cloud.hub.store import StoreError
    store = _store(args.data, create=args.action == "add")
    try:
        if args.action == "list":
            for d in store.list_devices():
                print("%-32s %s" % (d["device_id"], d["status"]))
            return
        if args.action == "add":
            dev = store.add_device(args.device)
        elif args.action == "remove":
            store.remove_device(args.device)
            print("removed " + args.device)
            return
        elif args.action in ("disable", "enable"):
            dev = store.update_device(args.device, status=args.action + "d")
        else:
            dev = store.require_device(args.device)
        if getattr(args, "show_connection_string", False):
            print("HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (_host(args), dev["device_id"], dev["primary_key"]))
        else:
            print("%s %s" % (dev["device_id"], dev["status"]))
    except StoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()


def cmd_hub(args):
    if args.what == "connection-strings":
        return cmd_connection_strings(args)
    if args.what == "inject":
        return cmd_hub_inject(args)
    if args.fault:
        raise CliError("unexpected %s: FAULTs go after 'hub inject' (or use --inject)" % args.fault[0])
    import asyncio
    import logging
    from host_tools.cloud.hub.hub import run
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    from host_tools.cloud.dps.store import DpsStoreError
    from host_tools.cloud.hub.hub import HubError
    from host_tools.cloud.hub.store import StoreError
    if args.dps_retry_after is not None and not 0 < args.dps_retry_after <= 60:
        raise CliError("--dps-retry-after must be between 1 and 60 seconds")
    from host_tools.cloud.hub import faults
    for spec in args.inject:
        try:
            faults.parse(spec)
        except faults.FaultSpecError as exc:
            raise CliError(str(exc)) from None
    for name in ("connect_timeout", "c2d_lock_seconds", "max_idle_seconds"):
        if not getattr(args, name) > 0:
            raise CliError("--%s must be more than 0" % name.replace("_", "-"))
    if args.feedback_batch_seconds is not None and not 0 <= args.feedback_batch_seconds <= 3600:
        raise CliError("--feedback-batch-seconds must be between 0 and 3600")
    if args.feedback_lock_seconds is not None and not 0 < args.feedback_lock_seconds <= 300:
        raise CliError("--feedback-lock-seconds must be more than 0 and at most 300")
    if args.retention_hours is not None:
        from host_tools.cloud.hub.amqp import config
        try:
            config.check_retention(args.retention_hours)
        except config.ConfigError as exc:
            raise CliError(str(exc)) from None
    try:
        asyncio.run(run(args.data, args.host, args.mqtt_port, args.api_port,
                        connect_timeout=args.connect_timeout, amqp_port=args.amqp_port,
                        partitions=args.partitions, say=sys.stderr,
                        dps_retry_after=args.dps_retry_after, c2d_lock_seconds=args.c2d_lock_seconds,
                        max_idle=args.max_idle_seconds, inject=args.inject,
                        retention_hours=args.retention_hours,
                        feedback_batch_seconds=args.feedback_batch_seconds,
                        feedback_lock_seconds=args.feedback_lock_seconds))
    except (HubError, StoreError, DpsStoreError) as exc:
        raise CliError(str(exc)) from None


def cmd_hub_inject(args):
    from host_tools.cloud.hub import faults
    for spec in args.fault:
        try:
            faults.parse(spec)
        except faults.FaultSpecError as exc:
            raise CliError(str(exc)) from None
    client = _client(args)
    armed = _call(client.inject_faults, args.fault) if args.fault else _call(client.faults)
    print(json.dumps(armed))


def cmd_connection_strings(args):
    from host_tools.cloud.hub.amqp import config
    from host_tools.files import read_json
    try:
        info = read_json(os.path.join(args.data, "hub.json"))
    except (OSError, ValueError):
        raise CliError("no hub is running for %s (start: python -m host_tools hub --data %s)"
                       % (args.data, args.data)) from None
    if not info.get("amqp_port"):
        raise CliError("the hub running for %s has no AMQP endpoint; restart it" % args.data)
    try:
        out = config.connection_strings(args.data, info["host"], info["api_port"], info["amqp_port"])
    except (config.ConfigError, OSError, KeyError, ValueError) as exc:
        raise CliError("cannot read the hub's settings in %s: %s" % (args.data, exc)) from None
    print(json.dumps(out, indent=1))


def cmd_consumer_group(args):
    from host_tools.cloud.hub.amqp import config
    try:
        if args.action == "add":
            eh = config.add_consumer_group(args.data, args.name)
        elif args.action == "remove":
            eh = config.remove_consumer_group(args.data, args.name)
        else:
            eh = config.load(args.data)
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None
    for g in eh["consumerGroups"]:
        print(g)


# ---- service side -----------------------------------------------------------------------------
def _client(args):
    from host_tools.cloud.hub.service_client import HubUnavailable, ServiceClient
    try:
        return ServiceClient.from_data_dir(args.data)
    except HubUnavailable as exc:
        raise CliError(str(exc)) from None


def _call(fn, *a, **kw):
    from host_tools.cloud.hub.service_client import HubUnavailable, ServiceError
    try:
        return fn(*a, **kw)
    except HubUnavailable as exc:
        raise CliError("%s; is the hub running? (python -m host_tools hub)" % exc) from None
    except ServiceError as exc:
        raise CliError("hub refused: %s" % exc) from None


def cmd_monitor(args):
    """Telemetry as a service reads it on Azure: from the Event Hubs-compatible endpoint."""
    import base64
    from host_tools.cloud.azure import client as azure
    from host_tools.cloud.azure import settings
    try:
        where = settings.from_hub_data(args.data)
        tel = azure.Telemetry(where)
        partitions = tel.partitions()
    except settings.SettingsError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError("cannot read telemetry from the hub's AMQP endpoint: %s" % exc) from None
    tel.start({p: ("-1" if args.from_start else "@latest") for p in partitions})
    seen = 0
    print("monitor: ready, printing telemetry%s from the hub's Event Hubs-compatible endpoint at amqps://%s:%s "
          "(data %s), one JSON line each; Ctrl-C stops" % (" of " + args.device if args.device else "",
                                                           azure.host_of(where), where.amqp_port,
                                                           os.path.abspath(args.data)), file=sys.stderr, flush=True)
    try:
        while True:
            try:
                batches = tel.take(1.0)
            except azure.HubUnavailable as exc:
                raise CliError("%s; is the hub running? (python -m host_tools hub)" % exc) from None
            for partition, events in batches:
                for ev in events:
                    e = azure.event_dict(partition, ev)
                    if args.device and e["deviceId"] != args.device:
                        continue
                    try:
                        e["body"] = e["body"].decode("utf-8")
                    except (UnicodeDecodeError, AttributeError):
                        e["body"] = {"base64": base64.b64encode(e["body"] or b"").decode()}
                    print(json.dumps(e), flush=True)
                    seen += 1
                    if args.count and seen >= args.count:
                        return
    finally:
        tel.close()


def cmd_c2d_send(args):
    props = {}
    for p in args.prop:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise CliError("--prop takes KEY=VALUE, got %r" % p)
        props[k] = v
    client = _client(args)
    mid = _call(client.send_c2d, args.device, args.body, properties=props, message_id=args.message_id,
                correlation_id=args.correlation_id, content_type=args.content_type,
                content_encoding=args.content_encoding, ttl=args.ttl)
    print("queued " + mid)


def cmd_c2d_purge(args):
    n = _call(_client(args).purge_c2d, args.device)
    print("purged %d message%s" % (n, "" if n == 1 else "s"))


def cmd_twin_show(args):
    print(json.dumps(_call(_client(args).get_twin, args.device), indent=2))


def cmd_twin_set_desired(args):
    patch = _json_arg(args.patch, "the desired patch")
    if not isinstance(patch, dict):
        raise CliError("the desired patch must be a JSON object, e.g. '{\"led\": \"on\"}'")
    twin = _call(_client(args).update_desired, args.device, patch)
    print(json.dumps(twin["properties"]["desired"], indent=2))


def cmd_method_invoke(args):
    payload = _json_arg(args.payload, "--payload")
    if not 5 <= args.timeout <= 300:
        raise CliError("--timeout must be between 5 and 300 seconds")
    result = _call(_client(args).invoke_method, args.device, args.name, payload, args.timeout)
    print(json.dumps(result))
    return 0 if 200 <= int(result.get("status", 500)) < 300 else 1
