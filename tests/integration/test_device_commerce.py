"""The real firmware against the real hub, `commerce serve` and `orders serve --commerce-url`:
what the device shows when its orders go through the commerce backend (the article's flow)."""
import json
import os
import subprocess
import sys

import pytest

from host_tools import processes
from tests.integration.conftest import DEADLINE, orders_cli
from tests.integration.test_device_orders import STATUSES, _ready, _subsequence


@pytest.fixture
def commerce_service(hub, tmp_path):
    """commerce_service(token, timeline) -> (orders data folder, commerce data folder): the
    commerce backend and the order service placing orders through it, a profile for button-1."""
    procs = []

    def make(token="tok_visa_4242", timeline="payment_authorized=1,shipped=2,delivered=3"):
        certs = os.path.join(hub.data_dir, "certs")
        orders, commerce = str(tmp_path / "orders"), str(tmp_path / "commerce")
        secret = str(tmp_path / "client.secret")
        assert subprocess.run(
            [sys.executable, "-m", "host_tools", "commerce", "client", "add", "orch",
             "--data", commerce, "--secret-file", secret], cwd=processes.REPO,
            capture_output=True, timeout=60).returncode == 0
        proc, info = processes.start(["commerce", "serve", "--data", commerce, "--port", "0",
                                      "--certs", certs, "--timeline", timeline],
                                     commerce + ".stderr", DEADLINE, name="commerce serve")
        procs.append(proc)
        orders_cli(orders, "profile", "set", "button-1", "--name", "Ada", "--address",
                   "1 Main St", "--shipping-method", "standard", "--payment-token", token)
        proc, _ = processes.start(
            ["orders", "serve", "--hub-data", hub.data_dir, "--data", orders, "--poll-timeout",
             "0.2", "--commerce-url", info["apiUrl"], "--client-id", "orch",
             "--client-secret-file", secret, "--commerce-ca", info["ca"], "--webhook-certs",
             certs], orders + ".stderr", DEADLINE, name="orders serve")
        procs.append(proc)
        return orders, commerce

    yield make
    for proc in reversed(procs):
        processes.stop(proc, DEADLINE)


def test_press_through_the_commerce_backend_shows_every_status(device, commerce_service):
    orders, _ = commerce_service()
    dev = device("button-1")
    _ready(dev)
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("delivered", timeout=DEADLINE + 10, since=mark)
    assert _subsequence(["sending"] + STATUSES, dev.screens(mark)), dev.screens(mark)
    listed = [json.loads(line) for line in orders_cli(orders, "list", "--json").splitlines()]
    assert len(listed) == 1 and listed[0]["status"] == "delivered"


def test_declined_payment_shows_failed(device, commerce_service):
    commerce_service(token="tok_declined_0002")
    dev = device("button-1")
    _ready(dev)
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("failed", timeout=DEADLINE + 10, since=mark)
    shown = dev.screens(mark)
    assert "accepted" in shown and "payment_authorized" not in shown, shown


def test_long_press_inside_the_window_cancels_the_commerce_order(device, commerce_service):
    _, commerce = commerce_service(timeline="manual")
    dev = device("button-1")
    _ready(dev)
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("accepted", since=mark)
    dev.gesture("long")
    dev.wait_screen("cancelled", since=mark)
    from host_tools.cloud.commerce.store import Store
    store = Store(commerce, create=False)
    try:
        assert [o.status for o in store.orders()] == ["cancelled"]
    finally:
        store.close()
