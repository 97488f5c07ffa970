"""The order service against the real local hub (a `python -m host_tools hub` process).

A device is a paho-mqtt client over TLS with a SAS token, publishing order and cancel requests
exactly as the wire contract (firmware/app/README.md) describes and collecting the order-status
C2D messages it receives. The service runs in-process with an injected clock (so the timeline moves only when the test says)
or as the real `orders serve` CLI process. Every wait polls a condition with a deadline.
"""
import json
import logging
import os
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from firmware.app import schemas
from firmware.iothub import topics
from host_tools import processes
from host_tools.cloud.azure import settings
from host_tools.cloud.azure.client import AzureHub, HubUnavailable
from host_tools.cloud.orders import catalogue, timeline
from host_tools.cloud.orders.service import OrderService
from host_tools.cloud.orders.store import Store
from tests.cloud.hub.conftest import hub, wait_for  # noqa: F401  (the `hub` fixture)
from tests.cloud.orders.conftest import FakeClock, set_profile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEADLINE = 20


class Device:
    """A device on the hub: publishes requests (QoS 1), records every C2D it receives."""

    def __init__(self, hub, device_id, subscribe=True, key=None):
        self.id = device_id
        self._subscribe = subscribe
        self.hub = hub
        self.key = key or hub.add_device(device_id)   # key: a device the hub already has
        self.received = []  # (topic properties, body dict), in arrival order
        self.raw = []  # (topic properties, body bytes)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(client_id=device_id, clean_session=False,
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(hub.username(device_id), hub.device_token(device_id, self.key))
        self.client.tls_set(ca_certs=hub.ca_pem)
        self.client.on_connect = self._on_connect
        self._connected = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(hub.host, hub.mqtt_port, keepalive=60)
        self.client.loop_start()
        assert self._connected.wait(DEADLINE), "device did not connect"
        if subscribe:
            assert self._subscribed.wait(DEADLINE), "device did not subscribe"

    def _on_connect(self, client, userdata, flags, rc):
        assert rc == 0, f"CONNACK {rc}"
        self._connected.set()
        if self._subscribe:
            client.subscribe(topics.c2d_filter(self.id), qos=1)

    def subscribe(self):
        self._subscribe = True
        self.client.subscribe(topics.c2d_filter(self.id), qos=1)
        assert self._subscribed.wait(DEADLINE), "device did not subscribe"

    def _on_message(self, client, userdata, msg):
        props = topics.parse_c2d(msg.topic, self.id)
        if props is None:
            return
        with self._lock:
            self.received.append((props, json.loads(msg.payload)))
            self.raw.append((props, bytes(msg.payload)))

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()

    # -- requests as the firmware sends them (the wire contract) ------------------------
    def publish(self, body, props):
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        info = self.client.publish(topics.telemetry(self.id, props), payload, qos=1)
        info.wait_for_publish(DEADLINE)
        assert info.is_published(), "no PUBACK from the hub"

    def order(self, request_id, sku="COFFEE-1KG", quantity=1, seq=1):
        self.publish({"type": "orderRequest", "orderRequestId": request_id, "sku": sku,
                      "quantity": quantity, "createdAt": int(time.time()), "seq": seq},
                     {"$.mid": request_id, "$.ct": "application/json", "$.ce": "utf-8",
                      "messageType": "orderRequest"})

    def query(self, *request_ids):
        at = int(time.time())
        self.publish(schemas.status_query(list(request_ids)), schemas.query_props(at))

    def cancel(self, request_id, seq=2):
        self.publish({"type": "cancelRequest", "orderRequestId": request_id,
                      "createdAt": int(time.time()), "seq": seq},
                     {"$.mid": request_id + "-cancel", "$.ct": "application/json",
                      "$.ce": "utf-8", "messageType": "cancelRequest"})

    # -- what arrived -----------------------------------------------------------------------
    def messages(self, request_id=None):
        with self._lock:
            return [(p, b) for p, b in self.received
                    if request_id is None or b.get("orderRequestId") == request_id]

    def statuses(self, request_id=None):
        return [b["status"] for _, b in self.messages(request_id)]

    def wait_statuses(self, request_id, expected, pump=None):
        """Wait until exactly `expected` arrived for request_id (pump() drives the service)."""
        def arrived():
            if pump:
                pump()
            got = self.statuses(request_id)
            assert got == expected[:len(got)], f"got {got}, expected {expected}"
            return got == expected
        wait_for(arrived, DEADLINE, what=f"{expected} for {request_id}")


@pytest.fixture
def device(hub):
    made = []

    def make(device_id="button-1", subscribe=True):
        d = Device(hub, device_id, subscribe)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


@pytest.fixture
def service(hub, tmp_path):
    """service(spec=None) -> an in-process OrderService on the hub, clock at `.clock`."""
    opened = []
    clock = FakeClock(time.time())

    def make(spec=None, connect=None, **kwargs):
        store = Store(str(tmp_path / "orders"))
        svc = OrderService(store, catalogue.load(), timeline.parse(spec),
                           connect=connect or (lambda: AzureHub(settings.from_hub_data(hub.data_dir))),
                           clock=clock, **kwargs)
        svc.clock_ = clock
        opened.append(svc)
        return svc

    yield make
    for svc in opened:
        svc._drop_client()
        svc.store.close()


def pump(svc):
    """One short turn of the service loop (the test thread is the service thread)."""
    return lambda: svc.step(0.05)


def drive(svc, predicate, what, turn=None):
    """Turn the service (or call `turn`) until predicate() holds, with a deadline."""
    def done():
        (turn or pump(svc))()
        return predicate()
    wait_for(done, DEADLINE, what=what)


def test_statuses_arrive_in_order_with_wire_properties(service, device):
    svc = service()
    set_profile(svc.store, "button-1")
    dev = device("button-1")
    dev.order("00112233aabbccdd", quantity=2)
    dev.wait_statuses("00112233aabbccdd", ["accepted"], pump(svc))
    svc.clock_.advance(2)
    dev.wait_statuses("00112233aabbccdd", ["accepted", "payment_authorized"], pump(svc))
    svc.clock_.advance(4)  # shipped and delivered are both due now: still sent in order
    dev.wait_statuses("00112233aabbccdd",
                      ["accepted", "payment_authorized", "shipped", "delivered"], pump(svc))
    props, first = dev.messages()[0]
    assert first["orderId"] == "ORD-000001" and first["eta"].endswith("Z")
    assert props["$.cid"] == "00112233aabbccdd"
    assert props["$.ct"] == "application/json" and props["$.ce"] == "utf-8"
    # firmware/app/schemas.parse_status drops a C2D whose messageType is not exactly this
    assert props.get("messageType") == "orderStatus", (
        f"C2D app property names must keep their case through the hub: got {sorted(props)}")
    for props, raw in dev.raw:  # what the device's own validator makes of each
        assert isinstance(schemas.parse_status(props, raw), dict)
    assert len({p["$.mid"] for p, _ in dev.messages()}) == 4  # each C2D its own message id
    [order] = svc.store.orders()
    assert order.amount_cents == 2 * 1890 + 495 and order.status == "delivered"
    # sent statuses leave the outbox with the next transaction (one commit per batch)
    drive(svc, lambda: svc.store.pending_count() == 0, "the outbox emptied")


def test_resent_requests_place_one_order_and_echo_its_status(service, device, hub):
    svc = service()
    set_profile(svc.store, "button-1")
    dev = device("button-1")
    for _ in range(3):  # the outbox re-sends on every connect and after resendSeconds
        dev.order("feedfacecafebeef")
    dev.wait_statuses("feedfacecafebeef", ["accepted"] * 3, pump(svc))
    assert len(svc.store.orders()) == 1
    assert len({b["orderId"] for _, b in dev.messages()}) == 1
    svc.clock_.advance(2)
    drive(svc, lambda: dev.statuses()[-1:] == ["payment_authorized"], "payment_authorized")
    dev.order("feedfacecafebeef")  # a re-send after progress gets the current status back
    dev.wait_statuses("feedfacecafebeef", ["accepted"] * 3 + ["payment_authorized"] * 2, pump(svc))
    assert len(svc.store.orders()) == 1


def test_cancel_before_shipment_and_refused_after(service, device):
    svc = service()
    set_profile(svc.store, "button-1")
    dev = device("button-1")
    dev.order("aaaaaaaaaaaaaaa1")
    dev.order("bbbbbbbbbbbbbbb2")
    dev.wait_statuses("bbbbbbbbbbbbbbb2", ["accepted"], pump(svc))
    dev.cancel("aaaaaaaaaaaaaaa1")
    dev.wait_statuses("aaaaaaaaaaaaaaa1", ["accepted", "cancelled"], pump(svc))
    svc.clock_.advance(4)
    dev.wait_statuses("bbbbbbbbbbbbbbb2", ["accepted", "payment_authorized", "shipped"], pump(svc))
    dev.cancel("bbbbbbbbbbbbbbb2")
    dev.wait_statuses("bbbbbbbbbbbbbbb2",
                      ["accepted", "payment_authorized", "shipped", "shipped"], pump(svc))
    assert dev.messages("bbbbbbbbbbbbbbb2")[-1][1]["reason"] == "cancel refused: already shipped"
    svc.clock_.advance(100)
    dev.wait_statuses("bbbbbbbbbbbbbbb2", ["accepted", "payment_authorized", "shipped",
                                           "shipped", "delivered"], pump(svc))
    assert dev.statuses("aaaaaaaaaaaaaaa1") == ["accepted", "cancelled"]  # nothing after cancel


def test_unknown_sku_and_missing_profile_fail_with_reason(service, device):
    svc = service()
    set_profile(svc.store, "button-1")
    with_profile, without = device("button-1"), device("button-2")
    with_profile.order("1111111111111111", sku="NO-SUCH-SKU")
    without.order("2222222222222222")
    with_profile.wait_statuses("1111111111111111", ["failed"], pump(svc))
    without.wait_statuses("2222222222222222", ["failed"], pump(svc))
    assert with_profile.messages()[0][1] == {"orderRequestId": "1111111111111111", "orderId": "",
                                            "status": "failed",
                                            "reason": "unknown sku NO-SUCH-SKU"}
    assert without.messages()[0][1]["reason"] == "no customer profile for this device"


def test_malformed_telemetry_is_skipped_and_service_goes_on(service, device):
    svc = service()
    set_profile(svc.store, "button-1")
    dev = device("button-1")
    dev.publish(b"{this is not json", {"messageType": "orderRequest"})
    dev.publish(b'{"temperature": 21.5}', {"kind": "telemetry"})
    dev.publish({"type": "orderRequest", "sku": "COFFEE-1KG"}, {"messageType": "orderRequest"})
    other = device("sensor-9")  # a foreign device on the same hub, maybe another partition
    other.publish(b'{"type": "reading", "value": 3}', {"messageType": "somethingElse"})
    other.publish(b"\xff\xfe not utf-8", {})
    dev.order("3333333333333333")
    dev.wait_statuses("3333333333333333", ["accepted"], pump(svc))
    drive(svc, lambda: svc.stats["ignored"] == 3, "the foreign telemetry counted", lambda: svc.poll(0.05))
    assert dev.statuses() == ["accepted"] and other.statuses() == []
    assert svc.stats["skipped"] == 2 and svc.stats["ignored"] == 3


def test_restart_mid_timeline_resumes_without_duplicates(service, device, hub):
    first = service()
    set_profile(first.store, "button-1")
    dev = device("button-1")
    dev.order("4444444444444444")
    dev.wait_statuses("4444444444444444", ["accepted"], pump(first))
    first.clock_.advance(2)
    dev.wait_statuses("4444444444444444", ["accepted", "payment_authorized"], pump(first))
    cursor = first.store.cursors()
    first._drop_client()
    first.store.close()  # the service stops between payment and shipment
    dev.order("4444444444444444")  # ... and the device re-sends while it is down
    second = service()  # same data folder, same (injected) clock
    assert second.store.cursors() == cursor
    # the re-sent request is read (and answered) before the shipment falls due
    drive(second, lambda: second.stats["duplicates"] == 1, "the re-sent request read",
          lambda: second.poll(0.05))
    first.clock_.advance(2)
    dev.wait_statuses("4444444444444444", ["accepted", "payment_authorized",
                                           "payment_authorized", "shipped"], pump(second))
    second.clock_.advance(2)
    dev.wait_statuses("4444444444444444", ["accepted", "payment_authorized",
                                           "payment_authorized", "shipped", "delivered"],
                      pump(second))
    assert len(second.store.orders()) == 1
    for _ in range(5):  # and nothing more comes: no replayed events, no repeated statuses
        second.step(0.05)
    assert len(dev.statuses()) == 5


def test_status_survives_a_hub_outage_in_the_outbox(service, device, hub):
    svc = service()
    set_profile(svc.store, "button-1")
    dev = device("button-1")
    dev.order("5555555555555555")
    dev.wait_statuses("5555555555555555", ["accepted"], pump(svc))
    hub.stop()
    svc.clock_.advance(2)
    assert svc.run_due() == 1
    with pytest.raises(HubUnavailable):
        svc.flush()  # the hub is gone: the status stays queued
    assert svc.store.pending_count() == 1
    hub.restart()
    dev.wait_statuses("5555555555555555", ["accepted", "payment_authorized"], pump(svc))
    drive(svc, lambda: svc.store.pending_count() == 0, "the outbox emptied")


def test_status_for_a_deleted_device_is_dropped_and_others_go_on(service, device, hub):
    svc = service()
    set_profile(svc.store, "button-1")
    set_profile(svc.store, "button-2")
    gone, stays = device("button-1"), device("button-2")
    gone.order("9999999999999991")
    stays.order("9999999999999992")
    drive(svc, lambda: len(svc.store.orders()) == 2, "both orders", lambda: svc.poll(0.05))
    gone.close()
    hub.service.delete_device("button-1")
    stays.wait_statuses("9999999999999992", ["accepted"], pump(svc))
    # the hub said 404: nothing left to retry (sent ones leave with the next transaction)
    drive(svc, lambda: svc.store.pending_count() == 0, "the outbox emptied")


def test_a_full_c2d_queue_is_waited_out_in_order(service, device, hub):
    svc = service("manual")
    set_profile(svc.store, "button-1")
    dev = device("button-1", subscribe=False)  # C2D piles up in the hub (50 at most)
    for i in range(51):
        dev.order(f"{i:016x}")
    drive(svc, lambda: len(svc.store.orders()) == 51, "51 orders")
    drive(svc, lambda: [m["attempts"] > 0 for m in svc.store.pending()] == [True],
          "the 51st status refused and kept")
    assert svc.store.pending_count() == 1  # the 51st: refused (403), kept, retried
    dev.subscribe()
    drive(svc, lambda: len(dev.statuses()) == 51, "51 statuses at the device")
    assert [b["orderRequestId"] for _, b in dev.messages()] == [f"{i:016x}" for i in range(51)]
    assert svc.store.pending_count() == 0


def test_serve_loop_rides_out_a_hub_restart(service, device, hub):
    svc = service()
    set_profile(svc.store, "button-1")
    dev = device("button-1")
    stop = threading.Event()
    loop = threading.Thread(target=svc.serve, args=(stop, 0.1), daemon=True)
    loop.start()
    try:
        dev.order("abcdefabcdefabcd")
        dev.wait_statuses("abcdefabcdefabcd", ["accepted"])
        hub.stop()
        svc.clock_.advance(2)
        hub.restart()  # same ports; the service re-reads hub.json either way
        dev.wait_statuses("abcdefabcdefabcd", ["accepted", "payment_authorized"])
    finally:
        stop.set()
        loop.join(DEADLINE)
    assert not loop.is_alive(), "serve() did not return after stop was set"
    assert svc.store.pending_count() == 0


# azure-eventhub's next load-balancing pass after a failed one (load_balancing_interval, its
# default, which AzureHub keeps): until then a partition whose receiver gave up is not read.
SDK_LOAD_BALANCING_S = 30


class _SdkGaveUp(logging.Handler):
    """When azure-eventhub's event processor first said it gave up (its WARNINGs: a
    load-balancing pass that could not reach the hub, a receiver out of its retries)."""

    LOGGER = "azure.eventhub._eventprocessor.event_processor"

    def __init__(self):
        super().__init__(logging.WARNING)
        self.at = None

    def emit(self, record):
        if self.at is None:
            self.at = time.monotonic()

    def __enter__(self):
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger(self.LOGGER).removeHandler(self)


def _raises_unavailable(client):
    try:
        client.next_events(0.1)
    except HubUnavailable:
        return True
    return False


def test_receivers_that_found_no_hub_make_next_events_say_the_hub_is_unavailable(hub):
    # The receivers' first pass lists the partitions; when it finds no hub (the SDK's own
    # retries, retry_total=2, are a few seconds) the SDK tries again only at its next
    # load-balancing pass, 30-36 s later. next_events must say so at once (HubUnavailable),
    # so the service reconnects on its own backoff (next test). (A receiver that was already
    # reading when the hub went away does not give up: the SDK reconnects it by itself.)
    client = AzureHub(settings.from_hub_data(hub.data_dir))
    try:
        hub.stop()
        client.start({p: -1 for p in client.partition_info})
        wait_for(lambda: _raises_unavailable(client), DEADLINE,
                 what="HubUnavailable once the receivers gave up")
    finally:
        client.close()


def test_an_order_sent_after_a_long_hub_outage_is_placed_on_the_services_backoff(service, hub):
    # What failed in tests/integration (test_hub_down_at_the_press_...) on a loaded machine:
    # the service connects, the hub goes away before its receivers have read anything and
    # stays away until they gave up; an order sent once the hub is back was read only at the
    # SDK's next load-balancing pass, 30-36 s after they gave up. The serve loop reconnects
    # after at most service._MAX_BACKOFF (5 s) between attempts: the order must be accepted
    # before the SDK's pass could have read it, whatever the machine's speed spends of that
    # (the hub's restart, the reconnect).
    first = []

    def connect():
        client = AzureHub(settings.from_hub_data(hub.data_dir))
        if not first:
            first.append(client)
            hub.stop()      # connected, the receivers not yet started
        return client

    svc = service(connect=connect)
    set_profile(svc.store, "button-1")
    key = hub.add_device("button-1")
    stop = threading.Event()
    loop = threading.Thread(target=svc.serve, args=(stop, 0.1), daemon=True)
    with _SdkGaveUp() as gave_up:
        loop.start()
        try:
            wait_for(lambda: gave_up.at, DEADLINE, what="the receivers to give up")
            hub.restart()
            dev = Device(hub, "button-1", key=key)
            try:
                dev.order("cdcdcdcdcdcdcdcd")
                left = gave_up.at + SDK_LOAD_BALANCING_S - time.monotonic()
                wait_for(lambda: dev.statuses("cdcdcdcdcdcdcdcd") == ["accepted"], left,
                         what="accepted before the SDK's next load-balancing pass")
            finally:
                dev.close()
        finally:
            stop.set()
            loop.join(DEADLINE)
    assert not loop.is_alive(), "serve() did not return after stop was set"
    assert len(svc.store.orders()) == 1


def test_a_reset_hub_is_read_from_the_start(service, device):
    svc = service()
    set_profile(svc.store, "button-1")
    with svc.store.transaction():
        svc.store.set_cursors({"0": 10_000, "1": 10_000})  # left over from a hub data folder that is gone
    dev = device("button-1")
    dev.order("6666666666666666")
    dev.wait_statuses("6666666666666666", ["accepted"], pump(svc))


# -- the real CLI process ------------------------------------------------------------------
def _cli(*args, check=True):
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "host_tools", "orders", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


class Serve:
    """`orders serve` as a process (host_tools.processes, like the demo)."""

    def __init__(self, hub, data, *extra):
        self.proc, self.ready = processes.start(
            ["orders", "serve", "--hub-data", hub.data_dir, "--data", data, "--poll-timeout", "0.2",
             *extra], data + ".stderr", DEADLINE, name="orders serve")

    def stop(self):
        return processes.stop(self.proc, DEADLINE)


def test_cli_serve_runs_a_real_timeline(hub, device, tmp_path):
    data = str(tmp_path / "orders")
    _cli("profile", "set", "button-1", "--name", "Ada", "--address", "1 Main St",
         "--shipping-method", "express", "--payment-token", "tok_visa_4242", "--data", data)
    serve = Serve(hub, data, "--timeline", "payment_authorized=0.1,shipped=0.2,delivered=0.3")
    try:
        assert serve.ready["ready"] is True and serve.ready["timeline"]["delivered"] == 0.3
        dev = device("button-1")
        dev.order("7777777777777777", sku="TOWELS-8", quantity=3)
        dev.wait_statuses("7777777777777777",
                          ["accepted", "payment_authorized", "shipped", "delivered"])
    finally:
        assert serve.stop() == 0
    shown = json.loads(_cli("show", "7777777777777777", "--data", data).stdout)
    assert shown["status"] == "delivered"
    assert [h["status"] for h in shown["history"]] == [
        "accepted", "payment_authorized", "shipped", "delivered"]
    payment = [c for c in shown["order"]["components"] if c["type"] == "FederatedPaymentComponent"]
    assert payment == [{"type": "FederatedPaymentComponent", "paymentToken": "****4242",
                        "amount": "32.42"}]  # 3 x 7.49 + 9.95 express


def test_cli_manual_advance_and_serve_restart(hub, device, tmp_path):
    data = str(tmp_path / "orders")
    _cli("profile", "set", "button-1", "--name", "Ada", "--address", "1 Main St",
         "--shipping-method", "standard", "--payment-token", "tok_visa_4242", "--data", data)
    dev = device("button-1")
    serve = Serve(hub, data, "--timeline", "manual")
    try:
        dev.order("8888888888888888")
        dev.wait_statuses("8888888888888888", ["accepted"])
        advanced = json.loads(_cli("advance", "8888888888888888", "--data", data).stdout)
        assert advanced["status"] == "payment_authorized"
        dev.wait_statuses("8888888888888888", ["accepted", "payment_authorized"])
    finally:
        assert serve.stop() == 0
    # while the service is down: an operator ships, the device re-sends its request
    assert json.loads(_cli("advance", "ORD-000001", "--data", data).stdout)["status"] == "shipped"
    dev.order("8888888888888888")
    refused = _cli("cancel", "ORD-000001", "--data", data, check=False)
    assert refused.returncode == 2 and "already shipped" in refused.stderr
    assert refused.stderr.count("\n") == 1
    serve = Serve(hub, data, "--timeline", "manual")
    try:
        expected = ["accepted", "payment_authorized", "shipped", "shipped"]
        dev.wait_statuses("8888888888888888", expected)
        _cli("advance", "8888888888888888", "--to", "delivered", "--data", data)
        dev.wait_statuses("8888888888888888", expected + ["delivered"])
        again = _cli("advance", "8888888888888888", "--data", data, check=False)
        assert again.returncode == 2 and "delivered" in again.stderr
    finally:
        assert serve.stop() == 0
    listed = _cli("list", "--json", "--data", data).stdout.splitlines()
    assert len(listed) == 1 and json.loads(listed[0])["status"] == "delivered"


def test_cli_serve_without_hub_is_one_clear_error(tmp_path):
    proc = _cli("serve", "--hub-data", str(tmp_path / "nohub"), "--data", str(tmp_path / "o"),
                check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no hub is running") and proc.stderr.count("\n") == 1


# -- Azure's shape: partitions, kill -9 ------------------------------------------------------
def _devices_on_both_partitions(n_each=2):
    from host_tools.cloud.hub.amqp.rules import partition_of
    picked = {0: [], 1: []}
    i = 0
    while min(len(v) for v in picked.values()) < n_each:
        name = f"button-{i}"
        p = partition_of(name, 2)
        if len(picked[p]) < n_each:
            picked[p].append(name)
        i += 1
    return [d for pair in zip(picked[0], picked[1]) for d in pair]  # interleaved


def test_kill_9_mid_stream_loses_and_duplicates_nothing_across_two_partitions(hub, device, tmp_path):
    names = _devices_on_both_partitions()
    data = str(tmp_path / "orders")
    for name in names:
        _cli("profile", "set", name, "--name", "Ada", "--address", "1 Main St",
             "--shipping-method", "standard", "--payment-token", "tok_visa_4242", "--data", data)
    devs = [device(name) for name in names]
    per_device = 30
    requests = {d.id: [f"{i:02x}{k:014x}" for k in range(per_device)] for i, d in enumerate(devs)}
    stop = threading.Event()

    def publish(d):  # the devices keep ordering, interleaved, through the crash
        for rid in requests[d.id]:
            if stop.is_set():
                return
            d.order(rid)
    serve = Serve(hub, data, "--timeline", "manual")
    workers = [threading.Thread(target=publish, args=(d,), daemon=True) for d in devs]
    for w in workers:
        w.start()
    wait_for(lambda: sum(len(d.statuses()) for d in devs) >= 10, DEADLINE, what="the first statuses")
    serve.proc.kill()  # kill -9 mid-stream
    serve.proc.wait()
    serve = Serve(hub, data, "--timeline", "manual")
    try:
        for w in workers:
            w.join(DEADLINE * 3)
        total = len(names) * per_device
        wait_for(lambda: all(set(b["orderRequestId"] for _, b in d.messages()) == set(requests[d.id])
                             for d in devs), DEADLINE * 3, what="an answer to every request")
    finally:
        assert serve.stop() == 0
    listed = [json.loads(line) for line in _cli("list", "--json", "--limit", "100000", "--data", data).stdout.splitlines()]
    assert len(listed) == total, "one order per request, none lost, none twice"
    assert {(o["deviceId"], o["orderRequestId"]) for o in listed} == {
        (d, r) for d, rs in requests.items() for r in rs}
    for d in devs:
        accepted = [(p, b) for p, b in d.messages() if b["status"] == "accepted"]
        # a status re-sent after the crash keeps its message id: the device sees it as a repeat
        assert len({p.get("$.mid") for p, _ in accepted}) == per_device
        assert len({b["orderId"] for _, b in accepted}) == per_device


def test_cli_serve_from_a_connection_file_as_the_portal_shows_it(hub, device, tmp_path):
    strings = json.loads(subprocess.run(
        [sys.executable, "-m", "host_tools", "hub", "connection-strings", "--data", hub.data_dir],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout)
    conf = tmp_path / "hub-connection.json"
    conf.write_text(json.dumps(strings))
    data = str(tmp_path / "orders")
    os.chmod(conf, 0o644)  # others can read the keys: refused before anything starts
    loose = _cli("serve", "--connection-file", str(conf), "--data", data, check=False)
    assert loose.returncode == 2 and loose.stderr.count("\n") == 1 and "chmod 600" in loose.stderr
    os.chmod(conf, 0o600)
    _cli("profile", "set", "button-1", "--name", "Ada", "--address", "1 Main St",
         "--shipping-method", "standard", "--payment-token", "tok_visa_4242", "--data", data)
    proc, ready = processes.start(["orders", "serve", "--connection-file", str(conf), "--data", data,
                                   "--poll-timeout", "0.2", "--timeline", "manual"],
                                  data + ".stderr", DEADLINE, name="orders serve")
    try:
        assert ready["hub"] == str(conf) and ready["hubData"] is None
        dev = device("button-1")
        dev.order("c0c0c0c0c0c0c0c0")
        dev.wait_statuses("c0c0c0c0c0c0c0c0", ["accepted"])
    finally:
        assert processes.stop(proc, DEADLINE) == 0


def test_statuses_expired_in_the_c2d_queue_are_answered_again_on_a_query(service, device):
    # --c2d-ttl 1: every status expires in the hub while the device does not listen; the
    # device's statusQuery brings the latest one, and only that
    svc = service("manual", c2d_ttl=1)
    set_profile(svc.store, "button-1")
    dev = device("button-1", subscribe=False)
    dev.order("7777777777777777")
    drive(svc, lambda: len(svc.store.orders()) == 1, "the order")
    svc.advance("7777777777777777", to="delivered")
    drive(svc, lambda: svc.store.pending_count() == 0, "four statuses accepted by the hub")
    sent = time.time()
    wait_for(lambda: time.time() > sent + 1.5, DEADLINE, what="the statuses' TTL to pass")
    dev.subscribe()
    dev.query("7777777777777777", "7777777777777778")   # the second is nobody's: no answer
    drive(svc, lambda: dev.statuses(), "an answer")
    assert dev.statuses() == ["delivered"]
    [(props, body)] = dev.messages()
    assert props["$.cid"] == "7777777777777777" and props["messageType"] == "orderStatus"
    assert svc.stats["queries"] == 1 and svc.stats["answers"] == 1 and svc.stats["unanswered"] == 1
