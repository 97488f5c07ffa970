"""`python -m host_tools commerce ...`: the local commerce backend and its identity server.

  commerce serve   [--data DIR] [--port N] [--certs DIR] [--timeline SPEC] ...
  commerce client add CLIENT_ID [--secret-file FILE | --secret -]
  commerce list | show ORDER | advance ORDER [--to STATUS] | cancel ORDER
Only `serve` listens; the other commands work on the database, and a running `serve` publishes
the events they cause within about half a second.
"""
import os

from host_tools import cli_args
from host_tools.cloud import service_cli
from host_tools.errors import CliError

DEFAULT_DATA = os.path.join(".local", "commerce")


def add_commands(subparsers):
    top = subparsers.add_parser("commerce", help="the local commerce backend (token server, "
                                                 "commerce API, Event Grid events)")
    sub = top.add_subparsers(dest="commerce_command", metavar="SUBCOMMAND", required=True)

    def command(name, func, help_text, parent=sub):
        return cli_args.data_command(parent, name, func, help_text, DEFAULT_DATA,
                                     "commerce data folder")

    p = command("serve", _serve, "run the HTTPS commerce API, its timeline and event deliveries")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443, help="0 picks a free port (default 8443)")
    p.add_argument("--certs", default=None,
                   help="certificate folder made by `certs` (ca.pem, server.pem, server.key); "
                        "created if missing (default DATA/certs)")
    service_cli.add_timeline_options(p, since="creation")
    p.add_argument("--token-lifetime", type=float, default=3600,
                   help="seconds an access token is valid (default 3600)")
    p.add_argument("--retry-base", type=float, default=1.0,
                   help="first event redelivery delay in seconds; doubles up to --retry-max")
    p.add_argument("--retry-max", type=float, default=30.0)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    client = sub.add_parser("client", help="API clients (OAuth2 client credentials)")
    csub = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    p = command("add", _client_add, "register a client (or give it a new secret)", csub)
    p.add_argument("client_id")
    p.add_argument("--secret-file", help="write the new random secret to this file (0600) "
                                         "instead of printing it")
    p.add_argument("--secret", help="'-' reads the secret from standard input instead of "
                                    "making one")

    p = command("list", _list, "list orders, newest first")
    p.add_argument("--limit", type=int, default=50)
    p = command("show", _show, "one order with its history (payment token masked)")
    p.add_argument("order")
    p = command("advance", _advance, "move an order on one status (or up to --to)")
    p.add_argument("order")
    p.add_argument("--to", choices=("payment_authorized", "shipped", "delivered"))
    p = command("cancel", _cancel, "cancel an order that has not shipped")
    p.add_argument("order")


_print_json = service_cli.print_json


def _open_store(data, create=False):
    from host_tools.cloud.commerce.store import Store
    return service_cli.open_store(Store, data, create, "commerce", f"run `python -m host_tools "
                                  f"commerce serve --data {data}` first")


def _offline(args):
    import time
    from host_tools.cloud.commerce.backend import Commerce
    from host_tools.cloud.commerce.schedule import Schedule
    store = _open_store(args.data)
    sched = service_cli.stored_timeline(store.meta("timeline"), Schedule)
    return Commerce(store, service_cli.catalogue(None), sched, time.time)


def _api_errors(fn, *args, **kwargs):
    from host_tools.cloud.commerce.backend import ApiError
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        raise CliError(exc.message) from None


# -- handlers -----------------------------------------------------------------------------
def _serve(args):
    import asyncio
    import logging
    import signal

    from host_tools.cloud.commerce.schedule import Schedule
    from host_tools.cloud.commerce.server import Server
    from host_tools.cloud.hub import certs

    catalogue = service_cli.catalogue(args.catalogue)
    sched = service_cli.timeline(args.timeline, Schedule)
    for name in ("token_lifetime", "retry_base", "retry_max"):
        if getattr(args, name) <= 0:
            raise CliError(f"--{name.replace('_', '-')} must be > 0")
    _check_port(args.host, args.port)   # before anything is written
    _open_store(args.data, create=True).close()   # a damaged database: one line, left alone
    lock = service_cli.serve_lock(args.data, "commerce serve")
    cert_dir = args.certs or os.path.join(args.data, "certs")
    try:
        paths, _ = certs.ensure(cert_dir)
    except OSError as exc:
        raise CliError(f"cannot make certificates in {cert_dir}: {exc}") from None
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s commerce %(levelname)s %(message)s")

    async def run():
        server = Server(args.data, catalogue, sched, paths["server.pem"], paths["server.key"],
                        paths["ca.pem"], args.host, args.port, token_lifetime=args.token_lifetime,
                        retry_base=args.retry_base, retry_max=args.retry_max)
        try:
            url = await server.start()
        except OSError as exc:
            raise CliError(str(exc)) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        service_cli.print_ready("commerce", url=url, apiUrl=url + "/api",
                                tokenUrl=url + "/connect/token",
                                jwksUrl=url + "/.well-known/jwks.json",
                                ca=os.path.abspath(paths["ca.pem"]),
                                data=os.path.abspath(args.data), timeline=sched.as_dict())
        try:
            await stop.wait()
        finally:
            log = logging.getLogger("host_tools.cloud.commerce")
            log.info("stopped: %s", server.deliverer.stats)
            await server.stop()

    try:
        asyncio.run(run())
    finally:
        lock.close()
    return 0


def _check_port(host, port):
    import socket
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another "
                           "--port (0 picks a free one)") from None


def _client_add(args):
    import time
    from host_tools.cloud.commerce import tokens
    from host_tools.cloud.commerce.backend import check_id
    from host_tools.files import write_atomic
    from host_tools.prompt import read_secret
    _api_errors(check_id, args.client_id, "client id")
    if args.secret not in (None, "-"):
        raise CliError("--secret takes only '-' (read it from standard input): a secret on the "
                       "command line would show in the process list")
    secret = read_secret("client secret") if args.secret == "-" else tokens.new_secret()
    if len(secret) < 16:
        raise CliError("a client secret must be at least 16 characters")
    store = _open_store(args.data, create=True)
    with store.transaction():
        salt, digest = tokens.hash_secret(secret)
        store.put_client(args.client_id, salt, digest, time.time())
    store.close()
    if args.secret_file:
        write_atomic(args.secret_file, secret + "\n", mode=0o600)
        _print_json({"clientId": args.client_id, "secretFile": os.path.abspath(args.secret_file)})
    elif args.secret == "-":
        _print_json({"clientId": args.client_id})
    else:
        _print_json({"clientId": args.client_id, "clientSecret": secret})
    return 0


def _list(args):
    from host_tools.cloud.orders.catalogue import format_cents
    store = _open_store(args.data)
    orders = store.orders(args.limit)
    if not orders:
        print("no orders")
        return 0
    rows = [("ORDER", "STATUS", "TOTAL", "KEY")]
    rows += [(o.order_id, o.status, f"{format_cents(o.amount_cents)} {o.currency}",
              o.idempotency_key) for o in orders]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])
    return 0


def _show(args):
    commerce = _offline(args)
    order = commerce.store.order(args.order)
    if order is None:
        raise CliError(f"no order {args.order} in {args.data}")
    _print_json(commerce.order_view(order, history=True), pretty=True)
    return 0


def _advance(args):
    commerce = _offline(args)
    _print_json(_api_errors(commerce.advance, None, args.order, args.to))
    return 0


def _cancel(args):
    commerce = _offline(args)
    _print_json(_api_errors(commerce.cancel, None, args.order, source="operator"))
    return 0
