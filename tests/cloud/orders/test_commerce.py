"""The orchestrator placing orders through the commerce backend, as the article's Logic App:
the real hub and a paho device, the commerce backend on HTTPS (in a thread, its own clock),
the in-process order service with the commerce bridge and its Event Grid webhook."""
import time

import pytest
import requests

from host_tools.cloud.commerce import eventgrid
from host_tools.cloud.azure import settings
from host_tools.cloud.azure.client import AzureHub
from host_tools.cloud.orders import catalogue, timeline
from host_tools.cloud.orders.commerce_bridge import Bridge, idempotency_key
from host_tools.cloud.orders.service import OrderService
from host_tools.cloud.orders.store import Store
from host_tools.cloud.orders.webhook import WebhookServer
from tests.cloud.commerce.conftest import Backend, cert_paths  # noqa: F401
from tests.cloud.orders.conftest import FakeClock
from tests.cloud.hub.conftest import hub, wait_for  # noqa: F401
from tests.cloud.orders.conftest import set_profile
from tests.cloud.orders.test_with_hub import DEADLINE, device, pump  # noqa: F401


class Orchestrator:
    """The order service wired to the commerce backend, as `orders serve --commerce-url` is."""

    def __init__(self, hub, data_dir, backend, cert_paths):
        self.clock = FakeClock(time.time())
        self.hub, self.data_dir, self.backend, self.cert_paths = hub, data_dir, backend, cert_paths
        self.stores = []
        self.client = backend.client(clock=self.clock)
        self.bridge = Bridge(self.client, "orders", retry_base=1.0, retry_max=8.0)
        self.service = self._service()
        self.hook_service = self._service(connect=None)
        self.webhook = WebhookServer(self.bridge.webhook_handler(self.hook_service,
                                                                 self.service.wake),
                                     cert_paths["server.pem"], cert_paths["server.key"])
        self.bridge.webhook_url = self.webhook.start()
        self.bridge.subscribed = False
        self.store = self.service.store

    def _service(self, connect=True):
        store = Store(str(self.data_dir))
        self.stores.append(store)
        if connect:
            connect = lambda: AzureHub(settings.from_hub_data(self.hub.data_dir))  # noqa: E731
        return OrderService(store, catalogue.load(), timeline.parse(None), connect=connect,
                            clock=self.clock, bridge=self.bridge)

    def pump(self):
        self.service.step(0.05)

    def close(self):
        self.service._drop_client()
        self.webhook.stop()
        self.client.close()
        for store in self.stores:
            store.close()


@pytest.fixture
def backend(tmp_path, cert_paths):  # noqa: F811
    b = Backend(tmp_path / "commerce", cert_paths, FakeClock(time.time()))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def orchestrator(hub, tmp_path, backend, cert_paths):  # noqa: F811
    o = Orchestrator(hub, tmp_path / "orders", backend, cert_paths)
    set_profile(o.store, "button-1")
    yield o
    o.close()


def commerce_orders(backend):
    store = backend.store()
    try:
        return store.orders()
    finally:
        store.close()


def test_order_goes_through_the_commerce_api_and_events_reach_the_device(orchestrator, backend,
                                                                          device):
    dev = device("button-1")
    dev.order("00112233aabbccdd", quantity=2)
    dev.wait_statuses("00112233aabbccdd", ["accepted"], orchestrator.pump)
    assert orchestrator.bridge.subscribed
    props, first = dev.messages()[0]
    assert first["orderId"] == "ORD-000001" and first["eta"].endswith("Z")
    assert props["messageType"] == "orderStatus" and props["$.cid"] == "00112233aabbccdd"
    [placed] = commerce_orders(backend)
    assert placed.idempotency_key == "button-1:00112233aabbccdd"
    lines = [c for c in placed.document["components"] if c["type"] == "CartLineComponent"]
    assert lines[0]["quantity"] == 2 and placed.amount_cents == 2 * 1890 + 495
    # the commerce timeline moves the order; its events bring the statuses
    for expected in (["accepted", "payment_authorized"],
                     ["accepted", "payment_authorized", "shipped"],
                     ["accepted", "payment_authorized", "shipped", "delivered"]):
        backend.clock.advance(2)
        dev.wait_statuses("00112233aabbccdd", expected, orchestrator.pump)
    [order] = orchestrator.store.orders()
    assert order.status == "delivered" and order.amount_cents == 2 * 1890 + 495
    assert [h["source"] for h in orchestrator.store.history(order.pk)] == ["commerce"] * 4


def test_resent_requests_make_one_commerce_order(orchestrator, backend, device):
    dev = device("button-1")
    for _ in range(3):
        dev.order("feedfacecafebeef")
    dev.wait_statuses("feedfacecafebeef", ["accepted"], orchestrator.pump)
    dev.order("feedfacecafebeef")                   # after placement: answered from what we know
    dev.wait_statuses("feedfacecafebeef", ["accepted", "accepted"], orchestrator.pump)
    assert len(commerce_orders(backend)) == 1 and len(orchestrator.store.orders()) == 1


def test_declined_payment_shows_failed_on_the_device(orchestrator, backend, device):
    set_profile(orchestrator.store, "button-1", token="tok_declined_0002")
    dev = device("button-1")
    dev.order("dec1dec1dec1dec1")
    dev.wait_statuses("dec1dec1dec1dec1", ["accepted"], orchestrator.pump)
    backend.clock.advance(2)
    dev.wait_statuses("dec1dec1dec1dec1", ["accepted", "failed"], orchestrator.pump)
    assert dev.messages("dec1dec1dec1dec1")[-1][1]["reason"] == "payment declined"


def test_commerce_refusals_fail_the_request_with_the_reason(orchestrator, backend, device):
    dev = device("button-1")
    dev.order("0000000000000001", sku="CAVIAR")
    dev.order("0000000000000002", quantity=6)
    dev.wait_statuses("0000000000000001", ["failed"], orchestrator.pump)
    dev.wait_statuses("0000000000000002", ["failed"], orchestrator.pump)
    assert dev.messages("0000000000000001")[0][1] == {"orderRequestId": "0000000000000001", "orderId": "",
                                        "status": "failed", "reason": "unknown sku CAVIAR"}
    assert dev.messages("0000000000000002")[0][1]["reason"] == \
        "quantity 6 exceeds the maximum of 5 for COFFEE-1KG"
    other = device("button-2")
    other.order("0000000000000003")
    other.wait_statuses("0000000000000003", ["failed"], orchestrator.pump)
    assert other.messages("0000000000000003")[0][1]["reason"] == "no customer profile for this device"
    assert commerce_orders(backend) == []


def test_cancel_inside_the_window_cancels_the_commerce_order(orchestrator, backend, device):
    dev = device("button-1")
    dev.order("00000000000000c1")
    dev.wait_statuses("00000000000000c1", ["accepted"], orchestrator.pump)
    dev.cancel("00000000000000c1")
    dev.wait_statuses("00000000000000c1", ["accepted", "cancelled"], orchestrator.pump)
    [placed] = commerce_orders(backend)
    assert placed.status == "cancelled" and placed.next_due is None   # its timeline stopped


def test_cancel_outside_the_window_is_refused(orchestrator, backend, device):
    dev = device("button-1")
    dev.order("00000000000000c2")
    dev.wait_statuses("00000000000000c2", ["accepted"], orchestrator.pump)
    backend.clock.advance(4)
    dev.wait_statuses("00000000000000c2", ["accepted", "payment_authorized", "shipped"], orchestrator.pump)
    dev.cancel("00000000000000c2")
    dev.wait_statuses("00000000000000c2", ["accepted", "payment_authorized", "shipped", "shipped"],
                      orchestrator.pump)
    assert dev.messages("00000000000000c2")[-1][1]["reason"] == "cancel refused: already shipped"
    assert commerce_orders(backend)[0].status == "shipped"


def test_cancel_that_commerce_refuses_before_we_heard_of_the_shipment(orchestrator, backend,
                                                                      device):
    """Locally the order looks cancellable; the commerce system knows better."""
    dev = device("button-1")
    dev.order("00000000000000c3")
    dev.wait_statuses("00000000000000c3", ["accepted"], orchestrator.pump)
    store = backend.store()
    subs = store.subscriptions()
    with store.transaction():
        store.delete_subscription("orders")        # the events stop reaching us
    store.close()
    orchestrator.client.advance("ORD-000001", to="shipped")
    dev.cancel("00000000000000c3")
    dev.wait_statuses("00000000000000c3", ["accepted", "shipped"], orchestrator.pump)
    assert dev.messages("00000000000000c3")[-1][1]["reason"] == "cancel refused: already shipped"
    assert subs


def _post(orchestrator, body, kind="Notification"):
    return requests.post(orchestrator.webhook.url, json=body,
                         headers=eventgrid.headers(kind, "orders"),
                         verify=orchestrator.cert_paths["ca.pem"], timeout=10)


def test_an_event_for_an_unknown_order_is_acknowledged_and_changes_nothing(orchestrator,
                                                                           device):
    dev = device("button-1")
    event = eventgrid.event("/x", "/orders/ORD-424242", "Commerce.Order.Shipped",
                            {"orderId": "ORD-424242", "status": "shipped", "version": 3,
                             "idempotencyKey": "nobody:r"}, time.time())
    r = _post(orchestrator, [event])
    assert r.status_code == 200
    assert orchestrator.bridge.stats["unknown_events"] == 1
    assert orchestrator.store.orders() == [] and dev.messages() == []


def test_an_event_racing_its_placement_is_asked_again_later(orchestrator):
    from host_tools.cloud.orders.messages import OrderRequest
    with orchestrator.store.transaction():
        orchestrator.bridge.request_place(orchestrator.store, "button-1",
                                          OrderRequest("00000000000ace01", "COFFEE-1KG", 1), 0)
    event = eventgrid.event("/x", "/orders/ORD-000009", "Commerce.Order.Created",
                            {"orderId": "ORD-000009", "status": "created", "version": 1,
                             "idempotencyKey": idempotency_key("button-1", "00000000000ace01")}, 0)
    assert _post(orchestrator, [event]).status_code == 503


def test_webhook_refuses_a_wrong_code_and_answers_the_handshake(orchestrator):
    url = orchestrator.webhook.url
    r = requests.post(url.split("?")[0] + "?code=guess", json=[],
                      verify=orchestrator.cert_paths["ca.pem"], timeout=10)
    assert r.status_code == 401
    r = _post(orchestrator, [eventgrid.validation_event("/x", "c0de", 0)],
              "SubscriptionValidation")
    assert r.status_code == 200 and r.json() == {"validationResponse": "c0de"}
    assert _post(orchestrator, {"not": "a list"}).status_code == 400


def test_out_of_order_and_repeated_events_do_not_move_the_device_backwards(orchestrator,
                                                                           backend, device):
    dev = device("button-1")
    dev.order("00000000000000a1")
    dev.wait_statuses("00000000000000a1", ["accepted"], orchestrator.pump)
    backend.clock.advance(4)
    dev.wait_statuses("00000000000000a1", ["accepted", "payment_authorized", "shipped"], orchestrator.pump)
    old = eventgrid.event("/x", "/orders/ORD-000001", "Commerce.Order.PaymentAuthorized",
                          {"orderId": "ORD-000001", "status": "payment_authorized",
                           "version": 2, "idempotencyKey": "button-1:00000000000000a1"}, 0)
    assert _post(orchestrator, [old]).status_code == 200
    assert orchestrator.bridge.stats["stale_events"] >= 1
    assert orchestrator.store.orders()[0].status == "shipped"


def test_commerce_down_for_a_minute_orders_are_placed_when_it_is_back(orchestrator, backend,
                                                                      device):
    import socket
    port = int(backend.url.rsplit(":", 1)[1])
    backend.stop()
    # hold the port while the backend is down (bound, not listening: connections are refused)
    # so that nothing else on the machine takes it before the backend comes back
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    dev = device("button-1")
    dev.order("00000000000d0001")
    dev.order("00000000000d0002")
    wait_for(lambda: orchestrator.pump() or len(orchestrator.store.work_due(1e12)) == 2,
             DEADLINE, what="both requests queued for the commerce API")
    for _ in range(6):                       # a minute of retries by the service's clock
        orchestrator.clock.advance(10)
        orchestrator.pump()
    work = orchestrator.store.work_due(1e12)
    assert len(work) == 2 and work[0]["attempts"] >= 3 and work[0]["last_error"]
    assert dev.messages() == []              # nothing to say yet, nothing lost
    holder.close()
    backend.start(port=port)
    orchestrator.clock.advance(10)
    dev.wait_statuses("00000000000d0001", ["accepted"], orchestrator.pump)
    dev.wait_statuses("00000000000d0002", ["accepted"], orchestrator.pump)
    assert sorted(o.idempotency_key for o in commerce_orders(backend)) == \
        ["button-1:00000000000d0001", "button-1:00000000000d0002"]
    assert orchestrator.store.work_due(1e12) == []
    backend.clock.advance(2)                 # and the events flow again
    dev.wait_statuses("00000000000d0001", ["accepted", "payment_authorized"], orchestrator.pump)


def test_idempotency_key_is_readable_when_it_can_be_and_hashed_when_not():
    assert idempotency_key("button-1", "00112233aabbccdd") == "button-1:00112233aabbccdd"
    odd = idempotency_key("shop's button (1)", "00112233aabbccdd")
    assert odd.startswith("h-") and len(odd) == 42
    assert odd == idempotency_key("shop's button (1)", "00112233aabbccdd")
    assert odd != idempotency_key("shop's button (2)", "00112233aabbccdd")


def test_only_progress_moves_the_device_status():
    from host_tools.cloud.orders.commerce_bridge import newer
    assert newer("accepted", "shipped") and newer("shipped", "delivered")
    assert newer("payment_authorized", "cancelled") and newer("accepted", "failed")
    assert not newer("shipped", "payment_authorized") and not newer("shipped", "shipped")
    assert not newer("delivered", "cancelled") and not newer("cancelled", "delivered")


def test_commerce_statuses_map_to_device_statuses():
    from host_tools.cloud.commerce import lifecycle as commerce_lifecycle
    from host_tools.cloud.orders import lifecycle
    from host_tools.cloud.orders.commerce_bridge import DEVICE_STATUS, parse_iso
    assert set(DEVICE_STATUS) == set(commerce_lifecycle.STATUSES)
    assert set(DEVICE_STATUS.values()) == set(lifecycle.STATUSES)
    assert parse_iso("2027-01-15T08:00:00.000Z") == 1800000000.0 and \
        parse_iso("nonsense") is None and parse_iso(None) is None


def test_status_query_is_answered_from_what_the_service_knows(orchestrator, backend, device):
    """A statusQuery gets each placed order's latest status from the local store, without a
    commerce call; a request still being placed gets no answer until its status exists."""
    dev = device("button-1")
    dev.order("0000000000000e01")
    dev.wait_statuses("0000000000000e01", ["accepted"], orchestrator.pump)
    backend.clock.advance(4)
    dev.wait_statuses("0000000000000e01", ["accepted", "payment_authorized", "shipped"],
                      orchestrator.pump)
    backend.stop()                     # the answer must not need the commerce API
    dev.order("0000000000000e02")      # queued, cannot be placed while the backend is down
    wait_for(lambda: orchestrator.pump() or orchestrator.store.work_due(1e12),
             DEADLINE, what="the second request queued")
    dev.query("0000000000000e01", "0000000000000e02")
    dev.wait_statuses("0000000000000e01", ["accepted", "payment_authorized", "shipped",
                                           "shipped"], orchestrator.pump)
    assert dev.statuses("0000000000000e02") == []
    assert orchestrator.service.stats["answers"] == 1
    assert orchestrator.service.stats["unanswered"] == 1
