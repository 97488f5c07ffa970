"""`python -m host_tools orders ...`: run the order service and look after its orders.

  orders serve     [--hub-data DIR | --connection-file FILE|-] [--data DIR] [--timeline SPEC]
                   [--c2d-ttl SECONDS] ...
  orders list      [--device ID] [--limit N] [--json]
  orders show      ORDER|REQUEST_ID
  orders advance   ORDER|REQUEST_ID [--to STATUS]
  orders cancel    ORDER|REQUEST_ID
  orders profile set DEVICE --name N --address A --shipping-method M --payment-token T
  orders profile show DEVICE
Only `serve` talks to the hub; the other commands change the order database, and a running
`serve` sends the resulting statuses to the device within about a second.
"""
import os
from contextlib import contextmanager

from host_tools import cli_args
from host_tools.cloud import service_cli
from host_tools.cloud.orders import lifecycle
from host_tools.errors import CliError
from host_tools.prompt import arg_or_stdin

DEFAULT_DATA = os.path.join(".local", "orders")
DEFAULT_HUB_DATA = os.path.join(".local", "hub")
C2D_TTL_MAX = 2 * 24 * 3600   # IoT Hub keeps a C2D message at most two days


def add_commands(subparsers):
    orders = subparsers.add_parser("orders", help="the local order service (cloud orchestrator)")
    sub = orders.add_subparsers(dest="orders_command", metavar="SUBCOMMAND", required=True)

    def command(name, func, help_text, parent=sub):
        return cli_args.data_command(parent, name, func, help_text, DEFAULT_DATA,
                                     "order service data folder")

    p = command("serve", _serve, "consume order requests from the hub and run their timelines")
    p.add_argument("--hub-data", default=DEFAULT_HUB_DATA,
                   help=f"shortcut for a local hub: read its connection strings from its data "
                        f"folder (default {DEFAULT_HUB_DATA})")
    p.add_argument("--connection-file", default=None, metavar="FILE|-",
                   help="JSON with the hub's 'service' and 'eventHub' connection strings, as the "
                        "Azure portal shows them (mode 0600; '-' reads it from standard input)")
    p.add_argument("--consumer-group", default=None,
                   help="consumer group of the Event Hubs-compatible endpoint (default $Default)")
    service_cli.add_timeline_options(p, since="placement")
    p.add_argument("--poll-timeout", type=float, default=1.0,
                   help="seconds one telemetry long-poll may wait (default 1)")
    p.add_argument("--c2d-ttl", type=int, default=None, metavar="SECONDS",
                   help="how long a status waits in an offline device's C2D queue before the hub "
                        "drops it (default: the hub's, 1 hour; at most 2 days). The device asks "
                        "for lost statuses again (statusQuery)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    c = p.add_argument_group("commerce API (place orders there; without --commerce-url the "
                             "service builds them itself and runs --timeline)")
    c.add_argument("--commerce-url", help="the commerce API's base URL, e.g. "
                                          "https://127.0.0.1:8443/api")
    c.add_argument("--token-url", help="the identity server's token endpoint (default: "
                                       "/connect/token on the commerce URL's host)")
    c.add_argument("--client-id", help="OAuth2 client id of this orchestrator")
    c.add_argument("--client-secret-file",
                   help="file holding the client secret (must be 0600); '-' reads it from "
                        "standard input")
    c.add_argument("--commerce-ca", help="CA certificate to verify the commerce API and the "
                                         "identity server with (default: the system's)")
    c.add_argument("--webhook-host", default="127.0.0.1")
    c.add_argument("--webhook-port", type=int, default=0,
                   help="port of the Event Grid webhook (default 0: any free one)")
    c.add_argument("--webhook-certs", help="folder with server.pem/server.key for the webhook "
                                           "(made by `certs` if missing; default DATA/certs)")
    c.add_argument("--subscription", default="orders",
                   help="name of the event subscription (default orders)")
    c.add_argument("--commerce-retry-max", type=float, default=5.0,
                   help="longest wait in seconds between tries while the commerce API is "
                        "unavailable (default 5)")

    p = command("list", _list, "list orders, newest first")
    p.add_argument("--device", help="only this device's orders")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = command("show", _show, "show one order, its components and its history")
    p.add_argument("key", metavar="ORDER|REQUEST_ID")

    p = command("advance", _advance, "move an order to its next status (or up to --to)")
    p.add_argument("key", metavar="ORDER|REQUEST_ID")
    p.add_argument("--to", choices=lifecycle.PROGRESS[1:])   # the happy path after accepted

    p = command("cancel", _cancel, "cancel an order that has not shipped")
    p.add_argument("key", metavar="ORDER|REQUEST_ID")

    profile = sub.add_parser("profile", help="the customer profile bound to a device")
    psub = profile.add_subparsers(dest="profile_command", metavar="SUBCOMMAND", required=True)
    p = command("set", _profile_set, "bind a customer (address, shipping, payment) to a device",
                psub)
    p.add_argument("device")
    p.add_argument("--name", required=True)
    p.add_argument("--address", required=True)
    p.add_argument("--shipping-method", required=True)
    p.add_argument("--payment-token", required=True,
                   help="the payment provider's token; '-' reads it from standard input "
                        "(keeps it out of shell history and the process list)")
    p.add_argument("--catalogue", default=None, help="catalogue JSON (default: the demo one)")
    p = command("show", _profile_show, "show a device's customer profile (token masked)", psub)
    p.add_argument("device")


# -- helpers ------------------------------------------------------------------------------
_print_json = service_cli.print_json


def _open_store(data, create=False):
    from host_tools.cloud.orders.store import Store
    return service_cli.open_store(Store, data, create, "order", f"start `python -m host_tools "
                                  f"orders serve --data {data}` or set a profile first")


def _offline_service(args):
    """An OrderService without a hub connection, scheduling with the timeline `serve` last
    stored (the default one if it never ran)."""
    from host_tools.cloud.orders.service import OrderService
    store = _open_store(args.data)
    tl = service_cli.stored_timeline(store.timeline_config())
    return OrderService(store, service_cli.catalogue(None), tl)


@contextmanager
def _resolve_errors(key, data):
    from host_tools.cloud.orders.service import Ambiguous, CommerceOwned, NotFound
    try:
        yield
    except CommerceOwned as exc:
        raise CliError(str(exc)) from None
    except NotFound:
        raise CliError(f"no order {key} in {data}; `python -m host_tools orders list` shows "
                       f"them") from None
    except Ambiguous as exc:
        ids = ", ".join(f"{o.order_id or '-'} ({o.device_id})" for o in exc.orders)
        raise CliError(f"{key} matches several orders: {ids}; use the order id") from None


def _iso(epoch):
    from host_tools.cloud.orders.messages import iso_utc
    return iso_utc(epoch) if epoch is not None else None


def _describe(order, history=None):
    from host_tools.cloud.orders import commerce, lifecycle
    out = {"orderId": order.order_id, "orderRequestId": order.request_id,
           "deviceId": order.device_id, "status": order.status}
    if order.reason:
        out["reason"] = order.reason
    out["placedAt"] = _iso(order.placed_at)
    out["updatedAt"] = _iso(order.updated_at)
    if order.next_status:
        out["next"] = {"status": order.next_status, "at": _iso(order.next_due)}
    if order.eta is not None and order.status not in lifecycle.TERMINAL:
        out["eta"] = _iso(order.eta)
    if order.document:
        out["order"] = commerce.redacted(order.document)
    if history is not None:
        out["history"] = [{"at": _iso(h["at"]), "status": h["status"], "source": h["source"],
                           **({"reason": h["reason"]} if h["reason"] else {})} for h in history]
    return out


# -- handlers -----------------------------------------------------------------------------
def _serve(args):
    import json
    import logging
    import signal
    import threading

    from host_tools.cloud.orders.commerce_bridge import Bridge
    from host_tools.cloud.orders.service import OrderService, hub_errors

    catalogue = service_cli.catalogue(args.catalogue)
    tl = service_cli.timeline(args.timeline)
    if args.poll_timeout < 0:
        raise CliError("--poll-timeout must be >= 0")
    if args.c2d_ttl is not None and not 0 < args.c2d_ttl <= C2D_TTL_MAX:
        raise CliError(f"--c2d-ttl must be 1-{C2D_TTL_MAX} seconds (IoT Hub's limit is two days)")
    try:
        HubUnavailable, ServiceError = hub_errors()
        from host_tools.cloud.azure import settings as hub_settings
        from host_tools.cloud.azure.client import AzureHub
    except ImportError as exc:
        raise CliError(f"the Azure client libraries are not available ({exc}); run make setup") from None

    def settings():
        if args.connection_file:
            s = hub_settings.from_file(args.connection_file)
        else:
            s = hub_settings.from_hub_data(args.hub_data)
        if args.consumer_group:
            s.consumer_group = args.consumer_group
        return s

    commerce = _commerce_client(args)
    store = _open_store(args.data, create=True)
    lock = service_cli.serve_lock(args.data, "orders serve")
    try:
        where = settings()   # read once now: a bad file is one clear error before anything starts
    except hub_settings.SettingsError as exc:
        raise CliError(str(exc)) from None
    if args.connection_file:
        fixed = where
        settings = lambda: fixed  # noqa: E731  (stdin can be read once)
    with store.transaction():
        store.set_timeline_config(tl.as_dict())
    logging.basicConfig(level=args.log_level, format="%(asctime)s orders %(levelname)s %(message)s")

    def connect():
        try:
            return AzureHub(settings())
        except hub_settings.SettingsError as exc:
            raise HubUnavailable(str(exc)) from None

    bridge = webhook = None
    if commerce is not None:
        bridge = Bridge(commerce, args.subscription, retry_max=args.commerce_retry_max)
    service = OrderService(store, catalogue, tl, connect=connect, c2d_ttl=args.c2d_ttl,
                           bridge=bridge)
    if commerce is not None:
        webhook = _start_webhook(args, bridge, catalogue, tl, service.wake)
    try:
        service.step(0)
    except HubUnavailable as exc:
        hint = ("" if args.connection_file else
                f"; start it with `python -m host_tools hub --data {args.hub_data}`")
        raise CliError(f"cannot reach the hub ({where.source}): {exc}{hint}") from None
    except ServiceError as exc:
        raise CliError(f"the hub refused the order service: {exc}") from None

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    ready = {"data": os.path.abspath(args.data), "hub": where.source,
             "hubData": None if args.connection_file else os.path.abspath(args.hub_data),
             "timeline": tl.as_dict(), "cursors": store.cursors()}
    if webhook is not None:
        ready.update(timeline=None, commerceUrl=args.commerce_url,
                     webhook=webhook.url.split("?")[0], subscribed=bridge.subscribed)
    service_cli.print_ready("orders", **ready)
    try:
        service.serve(stop, poll_timeout=args.poll_timeout)
        service._drop_client()
    finally:
        if webhook is not None:
            webhook.stop()
            webhook.store.close()
            commerce.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logging.getLogger("host_tools.cloud.orders").info("stopped: %s", json.dumps(service.stats))
        store.close()
        lock.close()
    return 0


def _read_secret_file(path):
    import stat
    from host_tools.prompt import read_secret
    if path == "-":
        return read_secret("commerce client secret")
    try:
        mode = os.stat(path).st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise CliError(f"{path} holds a secret and must be readable by its owner only "
                           f"(chmod 600 {path})")
        with open(path) as f:
            secret = f.read().strip()
    except OSError as exc:
        raise CliError(f"cannot read the client secret file {path}: {exc.strerror}") from None
    if not secret:
        raise CliError(f"the client secret file {path} is empty")
    return secret


def _commerce_client(args):
    """The commerce API client from the configuration, or None when no --commerce-url."""
    from urllib.parse import urlsplit
    given = [n for n in ("token_url", "client_id", "client_secret_file", "commerce_ca")
             if getattr(args, n)]
    if not args.commerce_url:
        if given:
            raise CliError(f"--{given[0].replace('_', '-')} needs --commerce-url")
        return None
    url = urlsplit(args.commerce_url)
    if url.scheme != "https" or not url.hostname:
        raise CliError("--commerce-url must be an https:// URL")
    if not args.client_id or not args.client_secret_file:
        raise CliError("--commerce-url needs --client-id and --client-secret-file")
    if args.client_secret_file == "-" and getattr(args, "connection_file", None) == "-":
        raise CliError("standard input can hold one secret: give --connection-file or "
                       "--client-secret-file as a file")
    if args.commerce_retry_max <= 0:
        raise CliError("--commerce-retry-max must be > 0")
    if args.commerce_ca and not os.path.isfile(args.commerce_ca):
        raise CliError(f"--commerce-ca {args.commerce_ca}: no such file")
    token_url = args.token_url or f"https://{url.netloc}/connect/token"
    from host_tools.cloud.commerce.client import Client
    return Client(args.commerce_url, token_url, args.client_id,
                  _read_secret_file(args.client_secret_file), ca=args.commerce_ca)


def _start_webhook(args, bridge, catalogue, tl, wake):
    """The Event Grid webhook on its own thread, with its own store connection; it wakes the
    serve loop to send what it committed."""
    from host_tools.cloud.hub import certs
    from host_tools.cloud.orders.service import OrderService
    from host_tools.cloud.orders.webhook import WebhookServer
    folder = args.webhook_certs or os.path.join(args.data, "certs")
    try:
        paths, _ = certs.ensure(folder)
    except OSError as exc:
        raise CliError(f"cannot make the webhook's certificate in {folder}: {exc}") from None
    hook_store = _open_store(args.data)
    hook_service = OrderService(hook_store, catalogue, tl, bridge=bridge)
    webhook = WebhookServer(bridge.webhook_handler(hook_service, wake), paths["server.pem"],
                            paths["server.key"], args.webhook_host, args.webhook_port)
    webhook.store = hook_store  # closed with it
    try:
        bridge.webhook_url = webhook.start()
    except OSError as exc:
        hook_store.close()
        raise CliError(str(exc)) from None
    bridge.subscribed = False
    return webhook


def _list(args):
    store = _open_store(args.data)
    orders = store.orders(args.device, args.limit)
    if args.json:
        for order in orders:
            _print_json(_describe(order))
        return 0
    if not orders:
        print("no orders")
        return 0
    from host_tools.cloud.orders.catalogue import format_cents
    rows = [("ORDER", "REQUEST", "DEVICE", "STATUS", "TOTAL", "UPDATED", "NEXT")]
    for o in orders:
        total = f"{format_cents(o.amount_cents)} {o.currency}" if o.amount_cents is not None else "-"
        nxt = f"{o.next_status} {_iso(o.next_due)}" if o.next_status else (o.reason or "")
        rows.append((o.order_id or "-", o.request_id, o.device_id, o.status, total,
                     _iso(o.updated_at), nxt))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def _show(args):
    from host_tools.cloud.orders.service import OrderService
    store = _open_store(args.data)
    with _resolve_errors(args.key, args.data):
        order = OrderService(store, None, None).resolve(args.key)
    _print_json(_describe(order, store.history(order.pk)), pretty=True)
    return 0


def _advance(args):
    from host_tools.cloud.orders.lifecycle import IllegalTransition
    service = _offline_service(args)
    with _resolve_errors(args.key, args.data):
        try:
            order = service.advance(args.key, args.to)
        except IllegalTransition as exc:
            raise CliError(f"{args.key}: {exc}") from None
    _print_json(_describe(order))
    return 0


def _cancel(args):
    from host_tools.cloud.orders import lifecycle
    service = _offline_service(args)
    with _resolve_errors(args.key, args.data):
        order, outcome = service.cancel(args.key)
    if outcome == lifecycle.CANCEL_REFUSE:
        raise CliError(f"{args.key} was not cancelled: it is already {order.status}")
    if outcome == lifecycle.CANCEL_REPEAT and order.status != lifecycle.CANCELLED:
        raise CliError(f"{args.key} was not cancelled: it is already {order.status}")
    _print_json(_describe(order))
    return 0


def _profile_set(args):
    import time
    from host_tools.cloud.orders import commerce
    catalogue = service_cli.catalogue(args.catalogue)
    args.payment_token = arg_or_stdin(args.payment_token, "payment token")
    try:
        commerce.check_profile(catalogue, args.name, args.address, args.shipping_method,
                               args.payment_token)
    except ValueError as exc:
        raise CliError(f"profile for {args.device}: {exc}") from None
    if not args.device.strip():
        raise CliError("the device id must not be empty")
    store = _open_store(args.data, create=True)
    with store.transaction():
        store.set_profile(args.device, args.name.strip(), args.address.strip(),
                          args.shipping_method, args.payment_token.strip(), time.time())
    _print_json(commerce.Profile(args.device, args.name.strip(), args.address.strip(),
                                 args.shipping_method, args.payment_token.strip()).as_dict())
    return 0


def _profile_show(args):
    from host_tools.cloud.orders.service import profile_from_row
    store = _open_store(args.data)
    profile = profile_from_row(store.profile(args.device))
    if profile is None:
        raise CliError(f"no profile for device {args.device}; set one with `python -m host_tools "
                       f"orders profile set {args.device} --name .. --address .. "
                       f"--shipping-method .. --payment-token ..`")
    _print_json(profile.as_dict())
    return 0
