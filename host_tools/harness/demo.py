"""`demo`: the whole flow on this machine, from a press to a delivered order.

Starts the local IoT Hub, the local commerce backend (token server, commerce API, Event Grid
events) and the order service placing orders through it, provisions a demo button with a
customer profile, and runs the real firmware on the unix MicroPython port in this terminal. A person
presses Enter and watches the display; Ctrl-C stops everything. With --auto (make demo AUTO=1)
nobody is needed: one press, the status timeline is printed, exit 0 once the order is delivered.
"""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from host_tools import processes
from host_tools.cloud.orders.lifecycle import CANCELLED, FAILED, PROGRESS
from host_tools.errors import CliError
from host_tools.harness.console import Console

DEVICE_ID = "demo-button"
SKU = "COFFEE-1KG"
ENDED_BADLY = (CANCELLED, FAILED, "auth")
PROFILE = ["--name", "Ada Lovelace", "--address", "12 Analytical Row, London",
           "--shipping-method", "standard", "--payment-token", "tok_demo_visa_4242"]


def add_commands(sub):
    p = sub.add_parser("demo", help="run hub, commerce backend, order service and the firmware "
                                    "together (make demo)")
    p.add_argument("--auto", action="store_true",
                   help="no person: one press, print the status timeline, exit 0 when delivered")
    p.add_argument("--data", default=".local",
                   help="where the demo keeps hub, orders and device folders (default %(default)s)")
    p.add_argument("--timeline", help="order timeline of the commerce backend, e.g. "
                                      "payment_authorized=1,shipped=4,delivered=6")
    p.add_argument("--timeout", type=float, default=90, help="--auto: seconds until it gives up")
    p.add_argument("--verbose", action="store_true", help="also show the device's EVT lines")
    p.set_defaults(func=cmd_demo)


_console = None   # the interactive demo's Console while it runs: messages go to its log


def _say(text):
    if _console is not None:
        _console.log("demo: " + text)
    else:
        print("demo: " + text, file=sys.stderr, flush=True)


def _host_tools(*args):
    r = subprocess.run([sys.executable, "-m", "host_tools", *args], cwd=processes.REPO,
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise CliError(f"{' '.join(args[:3])} failed: {r.stderr.strip()}")
    return r.stdout


def _folders(args):
    root = os.path.abspath(args.data)
    if args.auto:  # a clean slate every time, so one press always means one new order
        root = os.path.join(root, "demo-auto")
        shutil.rmtree(root, ignore_errors=True)
    return [os.path.join(root, name) for name in ("hub", "orders", "device", "commerce")]


def cmd_demo(args):
    global _console
    signal.signal(signal.SIGTERM, _interrupt)   # a kill stops the hub and the rest too, like Ctrl-C
    from host_tools.fleet import provision
    from host_tools.harness.device_process import DeviceProcess, NoMicroPython

    hub_dir, orders_dir, dev_dir, commerce_dir = _folders(args)
    services, dev = [], None
    try:
        _say("starting the local IoT Hub")
        hub, info = processes.start(["hub", "--data", hub_dir, "--mqtt-port", "0", "--api-port", "0", "--amqp-port", "0"],
                                    os.path.join(hub_dir, "hub.log"), name="hub")
        services.append(hub)
        _say(f"hub on {info['host']}: MQTT {info['mqtt_port']}, service API {info['api_port']}")
        provision.provision_local(DEVICE_ID, dev_dir, hub_dir, info["mqtt_port"], SKU, 1)
        _host_tools("orders", "profile", "set", DEVICE_ID, *PROFILE, "--data", orders_dir)
        _say(f"provisioned {DEVICE_ID} (orders {SKU}) for {PROFILE[1]}")
        commerce_args = _start_commerce(args, hub_dir, orders_dir, commerce_dir, services)
        serve = ["orders", "serve", "--hub-data", hub_dir, "--data", orders_dir, "--poll-timeout",
                 "0.5", *commerce_args]
        orders, _ = processes.start(serve, os.path.join(orders_dir, "serve.log"), name="order service")
        services.append(orders)
        _say("order service running; starting the firmware on the unix MicroPython port")
        if args.auto:
            dev = DeviceProcess(dev_dir).start()
            return _auto(dev, args.timeout)
        with Console(verbose=args.verbose) as console:
            _console = console
            _say(f"running; logs in {os.path.dirname(hub_dir)} (hub, commerce, orders, device)")
            try:
                dev = DeviceProcess(dev_dir, on_line=console.device_line).start()
                return _interactive(dev)
            finally:
                if dev is not None:
                    dev.stop()
                _console = None
    except (processes.ServiceFailed, NoMicroPython) as e:
        raise CliError(str(e)) from None
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    finally:
        if dev is not None:
            dev.stop()
            dev.close()
        for proc in reversed(services):
            processes.stop(proc)


def _start_commerce(args, hub_dir, orders_dir, commerce_dir, services):
    """The commerce backend on a free port with the hub's CA, this orchestrator registered as
    its client (secret in a 0600 file); returns the `orders serve` options that point at it."""
    certs = os.path.join(hub_dir, "certs")
    secret_file = os.path.join(orders_dir, "commerce-client.secret")
    os.makedirs(orders_dir, mode=0o700, exist_ok=True)
    _host_tools("commerce", "client", "add", "demo-orchestrator", "--data", commerce_dir,
                "--secret-file", secret_file)
    serve = ["commerce", "serve", "--data", commerce_dir, "--port", "0", "--certs", certs]
    if args.timeline:
        serve += ["--timeline", args.timeline]
    proc, info = processes.start(serve, os.path.join(commerce_dir, "serve.log"),
                                 name="commerce backend")
    services.append(proc)
    _say(f"commerce backend on {info['url']} (token server, API, Event Grid events)")
    return ["--commerce-url", info["apiUrl"], "--token-url", info["tokenUrl"],
            "--client-id", "demo-orchestrator", "--client-secret-file", secret_file,
            "--commerce-ca", info["ca"], "--webhook-certs", certs]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _interactive(dev):
    done = threading.Event()

    def watch():
        dev.proc.wait()
        done.set()
    threading.Thread(target=watch, daemon=True).start()
    for line in sys.stdin:
        if done.is_set():
            break
        dev.key(line.strip())
        if line.strip() in ("q", "quit"):
            break
    return 0


def _auto(dev, timeout):
    deadline = time.monotonic() + timeout
    dev.wait_screen("ready", timeout)
    mark = dev.mark()
    t0 = time.monotonic()
    dev.gesture("press")
    print("press")
    seen = []
    watch = PROGRESS + ENDED_BADLY
    while True:
        left = deadline - time.monotonic()
        try:
            e = dev.wait(lambda e: e.get("screen") in watch and e["screen"] not in seen,
                         max(left, 0.1), "the next order status", since=mark)
        except AssertionError as err:
            raise CliError(f"no delivery within {timeout:.0f} s; statuses seen: "
                           f"{', '.join(seen) or 'none'}\n{err}") from None
        sid = e["screen"]
        seen.append(sid)
        detail = " ".join(s.strip() for s in e.get("lines", [])[1:] if s.strip())
        print(f"{time.monotonic() - t0:7.2f} s  {sid:<20} {detail}", flush=True)
        if sid == "delivered":
            missing = [s for s in PROGRESS if s not in seen]
            if missing:
                raise CliError("delivered without showing " + ", ".join(missing))
            print("delivered: the order went through every status")
            return 0
        if sid in ENDED_BADLY:
            raise CliError(f"the order ended as {sid}: {detail or 'no reason given'}")
