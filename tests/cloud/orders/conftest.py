"""Shared helpers for the order service tests."""
import json

import pytest

from host_tools.cloud.orders import catalogue, timeline
from host_tools.cloud.orders.service import OrderService
from host_tools.cloud.orders.store import Store


class FakeClock:
    """Injectable time: tests move it, nothing sleeps."""

    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def order_event(seq, request_id, sku="COFFEE-1KG", quantity=1, device="dev1"):
    body = {"type": "orderRequest", "orderRequestId": request_id, "sku": sku,
            "quantity": quantity, "createdAt": 1_800_000_000, "seq": seq}
    return {"seq": seq, "deviceId": device, "enqueuedTime": "2027-01-15T08:00:00Z",
            "systemProperties": {"messageId": request_id, "contentType": "application/json",
                                 "contentEncoding": "utf-8"},
            "properties": {"messageType": "orderRequest"}, "body": json.dumps(body).encode()}


def cancel_event(seq, request_id, device="dev1"):
    body = {"type": "cancelRequest", "orderRequestId": request_id, "createdAt": 1_800_000_000,
            "seq": seq}
    return {"seq": seq, "deviceId": device, "enqueuedTime": "2027-01-15T08:00:00Z",
            "systemProperties": {"messageId": request_id + "-cancel"},
            "properties": {"messageType": "cancelRequest"}, "body": json.dumps(body).encode()}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_service(tmp_path, clock):
    """make_service(timeline_spec=None) -> OrderService on tmp_path/orders (no hub)."""
    opened = []

    def make(spec=None, **kwargs):
        store = Store(str(tmp_path / "orders"))
        opened.append(store)
        return OrderService(store, catalogue.load(), timeline.parse(spec), clock=clock, **kwargs)

    yield make
    for store in opened:
        store.close()


def set_profile(store, device="dev1", token="tok_visa_4242", method="standard"):
    with store.transaction():
        store.set_profile(device, "Ada Lovelace", "12 St James's Sq, London", method, token, 0)


def outbox(store):
    """The queued C2D bodies, oldest first, as (deviceId, body dict)."""
    return [(m["device_id"], json.loads(m["body"])) for m in store.pending(1000)]


def statuses(store, device="dev1"):
    return [b["status"] for d, b in outbox(store) if d == device]


def query_event(seq, request_ids, device="dev1", at=1_800_000_000):
    """A statusQuery as firmware/app/schemas.py builds it (reconciliation)."""
    body = {"type": "statusQuery", "orderRequestIds": request_ids}
    return {"seq": seq, "deviceId": device, "enqueuedTime": "2027-01-15T08:00:00Z",
            "systemProperties": {"messageId": "q%d" % at},
            "properties": {"messageType": "statusQuery"}, "body": json.dumps(body).encode()}
