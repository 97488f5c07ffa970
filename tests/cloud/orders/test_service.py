"""The order service against real SQLite with an injected clock; the outbox stands in for the
hub (what would be sent as C2D). The hub itself is exercised in test_with_hub.py."""
import os
import sqlite3
import stat

import pytest

from host_tools.cloud.orders import lifecycle
from host_tools.cloud.orders.service import Ambiguous, NotFound
from host_tools.cloud.orders.store import Store
from tests.cloud.orders.conftest import cancel_event, order_event, outbox, set_profile, statuses


def test_order_is_placed_once_and_accepted(make_service, clock):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, "a1b2c3d4e5f60718", quantity=2)], {"0": 2})
    assert svc.store.cursors() == {"0": 2}
    [(device, body)] = outbox(svc.store)
    assert device == "dev1"
    assert body == {"orderRequestId": "a1b2c3d4e5f60718", "orderId": "ORD-000001",
                    "status": "accepted", "eta": "2027-01-15T08:00:06Z"}
    [order] = svc.store.orders()
    assert order.amount_cents == 2 * 1890 + 495 and order.currency == "EUR"
    assert order.next_status == "payment_authorized" and order.next_due == clock.now + 2
    [message] = svc.store.pending()
    assert message["correlation_id"] == "a1b2c3d4e5f60718"


def test_resent_request_gets_current_status_not_a_second_order(make_service, clock):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, "00000000000000a1")], {"0": 2})
    clock.advance(2)
    svc.run_due()
    svc.handle_events([order_event(2, "00000000000000a1"), order_event(3, "00000000000000a1")], {"0": 4})  # QoS 1 redelivery + resend
    assert len(svc.store.orders()) == 1
    assert statuses(svc.store) == ["accepted", "payment_authorized", "payment_authorized",
                                   "payment_authorized"]
    assert svc.stats["duplicates"] == 2


def test_same_request_id_on_two_devices_is_two_orders(make_service):
    svc = make_service()
    set_profile(svc.store, "dev1")
    set_profile(svc.store, "dev2")
    svc.handle_events([order_event(1, "5a5a5a5a5a5a5a5a"), order_event(2, "5a5a5a5a5a5a5a5a", device="dev2")], {"0": 3})
    assert sorted(o.order_id for o in svc.store.orders()) == ["ORD-000001", "ORD-000002"]
    with pytest.raises(Ambiguous):
        svc.resolve("5a5a5a5a5a5a5a5a")
    assert svc.resolve("ORD-000002").device_id == "dev2"
    with pytest.raises(NotFound):
        svc.resolve("nothing")


def test_timeline_moves_orders_in_order_and_catches_up(make_service, clock):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, "00000000000000a1")], {"0": 2})
    assert svc.run_due() == 0
    clock.advance(1.9)
    assert svc.run_due() == 0
    clock.advance(0.1)
    assert svc.run_due() == 1
    clock.advance(100)  # the service was away: every step still happens, in order
    assert svc.run_due() == 2
    assert statuses(svc.store) == ["accepted", "payment_authorized", "shipped", "delivered"]
    assert svc.next_wakeup() is None
    delivered = outbox(svc.store)[-1][1]
    assert "eta" not in delivered  # terminal: no eta


def test_cancel_before_shipment_cancels(make_service, clock):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, "00000000000000a1")], {"0": 2})
    clock.advance(2)
    svc.run_due()
    svc.handle_events([cancel_event(2, "00000000000000a1")], {"0": 3})
    clock.advance(100)
    assert svc.run_due() == 0  # nothing scheduled after a cancel
    assert statuses(svc.store) == ["accepted", "payment_authorized", "cancelled"]
    assert svc.resolve("00000000000000a1").status == "cancelled"
    svc.handle_events([cancel_event(3, "00000000000000a1"), order_event(4, "00000000000000a1")], {"0": 5})  # repeats
    assert statuses(svc.store)[-2:] == ["cancelled", "cancelled"]


def test_cancel_after_shipment_is_refused_with_reason(make_service, clock):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, "00000000000000a1")], {"0": 2})
    clock.advance(4)
    svc.run_due()
    svc.handle_events([cancel_event(2, "00000000000000a1")], {"0": 3})
    device, last = outbox(svc.store)[-1]
    assert last["status"] == "shipped" and last["reason"] == "cancel refused: already shipped"
    assert svc.resolve("00000000000000a1").status == "shipped"
    clock.advance(2)
    svc.run_due()
    assert statuses(svc.store)[-1] == "delivered"


def test_cancel_that_overtakes_its_order_wins(make_service):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([cancel_event(1, "00000000000000a1"), order_event(2, "00000000000000a1")], {"0": 3})
    assert statuses(svc.store) == ["cancelled", "cancelled"]
    [order] = svc.store.orders()
    assert order.order_id == "ORD-000001" and order.status == "cancelled"  # never "" (the wire contract)
    assert order.document == {} and order.amount_cents is None


@pytest.mark.parametrize("sku,qty,profile,reason", [
    ("NOPE-1", 1, True, "unknown sku NOPE-1"),
    ("COFFEE-1KG", 1, False, "no customer profile for this device"),
    ("COFFEE-1KG", 9, True, "quantity 9 exceeds the maximum of 5 for COFFEE-1KG"),
])
def test_unplaceable_requests_fail_with_reason_and_stay_failed(make_service, sku, qty, profile,
                                                               reason):
    svc = make_service()
    if profile:
        set_profile(svc.store)
    svc.handle_events([order_event(1, "00000000000000a1", sku=sku, quantity=qty)], {"0": 2})
    set_profile(svc.store)  # a later fix does not place a request that already failed
    svc.handle_events([order_event(2, "00000000000000a1", sku=sku, quantity=qty)], {"0": 3})
    expected = {"orderRequestId": "00000000000000a1", "orderId": "", "status": "failed", "reason": reason}
    assert [b for _, b in outbox(svc.store)] == [expected, expected]
    assert svc.store.allocate_order_id() == "ORD-000001"  # no order number was used


def test_declined_payment_fails_at_authorisation(make_service, clock):
    svc = make_service()
    set_profile(svc.store, token="tok_declined_card")
    svc.handle_events([order_event(1, "00000000000000a1")], {"0": 2})
    clock.advance(10)
    svc.run_due()
    assert statuses(svc.store) == ["accepted", "failed"]
    assert outbox(svc.store)[-1][1]["reason"] == "payment declined"


def test_malformed_and_foreign_telemetry_is_skipped_and_consumed(make_service):
    svc = make_service()
    set_profile(svc.store)
    bad = order_event(1, "00000000000000a0")
    bad["body"] = b"{not json"
    foreign = dict(order_event(2, "00000000000000a0"), properties={}, body=b'{"temperature": 21.5}')
    no_device = order_event(3, "00000000000000a9")
    del no_device["deviceId"]
    bad_quantity = order_event(4, "00000000000000a2", quantity=0)
    svc.handle_events([bad, foreign, no_device, bad_quantity, order_event(5, "00000000000000a1")], {"0": 6})
    assert svc.store.cursors() == {"0": 6}
    assert [b["status"] for _, b in outbox(svc.store)] == ["failed", "accepted"]
    assert outbox(svc.store)[0][1]["reason"] == "invalid request: quantity must be an integer 1-99"
    assert svc.stats["skipped"] == 2
    # the device did not get that answer and sends the same bad request again: answered again
    svc.handle_events([order_event(6, "00000000000000a2", quantity=0)], {"0": 7})
    assert [(b["orderRequestId"], b["status"]) for _, b in outbox(svc.store)][-1] == ("00000000000000a2", "failed")
    assert len([o for o in svc.store.orders() if o.request_id == "00000000000000a2"]) == 1


def test_an_unexpected_error_skips_only_that_event(make_service, monkeypatch):
    svc = make_service()
    set_profile(svc.store)
    real = svc._on_order_request

    def explode_on_r1(device_id, request, now):
        if request.request_id == "00000000000000a1":
            raise RuntimeError("bug")
        return real(device_id, request, now)

    monkeypatch.setattr(svc, "_on_order_request", explode_on_r1)
    svc.handle_events([order_event(1, "00000000000000a1"), order_event(2, "00000000000000a2")], {"0": 3})
    assert [o.request_id for o in svc.store.orders()] == ["00000000000000a2"]
    assert svc.store.cursors() == {"0": 3} and svc.stats["skipped"] == 1


def test_a_storage_failure_mid_batch_loses_and_duplicates_nothing(make_service):
    calls = []

    def ids():
        calls.append(1)
        if len(calls) == 2:  # the second event's C2D cannot be written: the "crash"
            raise sqlite3.OperationalError("disk I/O error")
        return f"m{len(calls)}"

    svc = make_service(new_message_id=ids)
    set_profile(svc.store)
    with pytest.raises(sqlite3.OperationalError):
        svc.handle_events([order_event(1, "00000000000000a1"), order_event(2, "00000000000000a2")], {"0": 3})
    assert svc.store.cursors() == {} and svc.store.orders() == [] and outbox(svc.store) == []
    svc.handle_events([order_event(1, "00000000000000a1"), order_event(2, "00000000000000a2")], {"0": 3})  # the batch again
    assert sorted(o.request_id for o in svc.store.orders()) == ["00000000000000a1", "00000000000000a2"]
    assert statuses(svc.store) == ["accepted", "accepted"]
    assert svc.store.allocate_order_id() == "ORD-000003"


def test_restart_mid_timeline_resumes_without_duplicates(make_service, clock, tmp_path):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, "00000000000000a1")], {"0": 2})
    clock.advance(2)
    svc.run_due()
    svc.store.close()
    clock.advance(2)
    again = make_service()
    assert again.store.cursors() == {"0": 2}
    again.handle_events([order_event(2, "00000000000000a1")], {"0": 3})  # the device re-sent meanwhile
    clock.advance(2)
    again.run_due()
    assert statuses(again.store) == ["accepted", "payment_authorized", "payment_authorized",
                                     "shipped", "delivered"]
    assert len(again.store.orders()) == 1
    history = [h["status"] for h in again.store.history(again.store.orders()[0].pk)]
    assert history == ["accepted", "payment_authorized", "shipped", "delivered"]


def test_operator_advance_and_cancel(make_service):
    svc = make_service("manual")
    set_profile(svc.store)
    svc.handle_events([order_event(1, "00000000000000a1"), order_event(2, "00000000000000a2"), order_event(3, "00000000000000a3")], {"0": 4})
    assert svc.run_due() == 0  # manual: nothing moves by itself
    assert svc.advance("ORD-000001").status == "payment_authorized"
    assert svc.advance("00000000000000a2", to="delivered").status == "delivered"
    order, outcome = svc.cancel("ORD-000001")
    assert (order.status, outcome) == ("cancelled", lifecycle.CANCEL_APPLY)
    order, outcome = svc.cancel("00000000000000a2")
    assert (order.status, outcome) == ("delivered", lifecycle.CANCEL_REFUSE)
    with pytest.raises(lifecycle.IllegalTransition):
        svc.advance("00000000000000a2")
    with pytest.raises(lifecycle.IllegalTransition):
        svc.advance("00000000000000a1", to="shipped")
    with pytest.raises(lifecycle.IllegalTransition):
        svc.advance("00000000000000a3", to="accepted")
    assert [b["status"] for _, b in outbox(svc.store) if b["orderRequestId"] == "00000000000000a2"] == [
        "accepted", "payment_authorized", "shipped", "delivered"]  # a refusal is not sent
    assert svc.resolve("00000000000000a3").status == "accepted"  # the refused moves changed nothing


def test_database_is_private_and_survives_reopen(tmp_path, clock):
    store = Store(str(tmp_path / "o"))
    with store.transaction():
        store.set_cursors({"0": 41})
    store.close()
    mode = stat.S_IMODE(os.stat(tmp_path / "o" / "orders.sqlite3").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "o").st_mode) == 0o700
    again = Store(str(tmp_path / "o"), create=False)
    assert again.cursors() == {"0": 41}
    again.close()
    with pytest.raises(FileNotFoundError):
        Store(str(tmp_path / "missing"), create=False)


def test_every_status_we_send_is_one_the_firmware_accepts(make_service, clock):
    """The device's own validator (firmware/app/schemas.py) applied to each queued C2D with
    the properties the service sends with it."""
    from firmware.app import schemas
    from host_tools.cloud.orders import messages
    svc = make_service()
    set_profile(svc.store)
    ids = [f"{i:016x}" for i in range(1, 8)]
    svc.handle_events([order_event(1, ids[0]), order_event(2, ids[1]),
                       order_event(3, ids[2], sku="NOPE"), order_event(4, ids[3], quantity=0),
                       cancel_event(5, ids[4]), order_event(6, ids[4]),
                       order_event(7, ids[5], device="dev-without-profile")], {"0": 8})
    svc.handle_events([cancel_event(8, ids[0])], {"0": 9})
    clock.advance(10)
    svc.run_due()
    svc.handle_events([cancel_event(9, ids[1]), order_event(10, ids[1])], {"0": 11})
    sent = svc.store.pending(1000)
    assert len(sent) == 13
    seen = set()
    for message in sent:
        props = dict(messages.C2D_PROPERTIES, **{"$.mid": message["message_id"],
                                                 "$.cid": message["correlation_id"],
                                                 "$.ct": messages.CONTENT_TYPE,
                                                 "$.ce": messages.CONTENT_ENCODING})
        parsed = schemas.parse_status(props, message["body"].encode())
        assert isinstance(parsed, dict), (parsed, message["body"])
        seen.add(parsed["status"])
    assert seen == {"accepted", "payment_authorized", "shipped", "delivered", "cancelled", "failed"}
