"""Reconciliation in the order service: a device's statusQuery is answered with the latest
status of each of its listed orders (firmware/app/README.md, "Messages on the wire"). Real
SQLite, an injected clock; the outbox stands in for the hub (test_with_hub.py sends them)."""
import json
import sqlite3

import pytest

from firmware.app import schemas
from host_tools.cloud.orders import messages
from tests.cloud.orders.conftest import (cancel_event, order_event, outbox, query_event,
                                         set_profile)

R1, R2, R3 = "00000000000000a1", "00000000000000a2", "00000000000000a3"


def answers(store, since=0):
    return [(d, b["orderRequestId"], b["status"]) for d, b in outbox(store)[since:]]


def test_a_query_gets_the_latest_status_of_each_listed_order(make_service, clock):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, R1), order_event(2, R2), cancel_event(3, R2)], {"0": 4})
    clock.advance(100)
    svc.run_due()                               # R1 delivered meanwhile; R2 stays cancelled
    before = len(outbox(svc.store))
    svc.handle_events([query_event(4, [R1, R2])], {"0": 5})
    assert svc.store.cursors() == {"0": 5}
    assert answers(svc.store, before) == [("dev1", R1, "delivered"), ("dev1", R2, "cancelled")]
    # an ordinary orderStatus message each, as the device parses it: same order id, no eta
    # on a finished order
    for m in svc.store.pending(1000)[before:]:
        body = m["body"] if isinstance(m["body"], bytes) else m["body"].encode()
        props = {"messageType": "orderStatus", "$.cid": m["correlation_id"],
                 "$.ct": messages.CONTENT_TYPE}
        parsed = schemas.parse_status(props, body)
        assert type(parsed) is dict and "eta" not in parsed
        assert parsed["orderId"] == svc.store.find("dev1", parsed["orderRequestId"]).order_id
    assert svc.stats["queries"] == 1 and svc.stats["answers"] == 2


def test_asked_again_answered_again(make_service):
    # a redelivered query (same $.mid) or the next one: the same status again, which the device
    # counts as a duplicate; nothing about the order changes
    svc = make_service("manual")
    set_profile(svc.store)
    svc.handle_events([order_event(1, R1)], {"0": 2})
    svc.handle_events([query_event(2, [R1]), query_event(3, [R1])], {"0": 4})
    assert answers(svc.store) == [("dev1", R1, "accepted")] * 3
    [order] = svc.store.orders()
    assert order.status == "accepted" and len(svc.store.history(order.pk)) == 1


def test_a_failed_request_is_answered_failed_with_its_reason(make_service):
    svc = make_service()
    set_profile(svc.store)
    svc.handle_events([order_event(1, R1, sku="NO-SUCH-SKU")], {"0": 2})
    svc.handle_events([query_event(2, [R1])], {"0": 3})
    first, again = outbox(svc.store)
    assert first == again and again[1]["status"] == "failed" and again[1]["orderId"] == ""


def test_unknown_and_foreign_ids_get_no_answer(make_service):
    svc = make_service("manual")
    set_profile(svc.store, "dev1")
    set_profile(svc.store, "dev2")
    svc.handle_events([order_event(1, R1), order_event(2, R2, device="dev2")], {"0": 3})
    before = len(outbox(svc.store))
    # R2 is dev2's, R3 nobody's: dev1 learns nothing about either, R1 is answered
    svc.handle_events([query_event(3, [R2, R3, R1])], {"0": 4})
    assert answers(svc.store, before) == [("dev1", R1, "accepted")]
    assert svc.stats["unanswered"] == 2 and svc.stats["answers"] == 1
    assert svc.store.cursors() == {"0": 4}


@pytest.mark.parametrize("body, why", [
    ({"type": "statusQuery"}, "list"),
    ({"type": "statusQuery", "orderRequestIds": []}, "list"),
    ({"type": "statusQuery", "orderRequestIds": R1}, "list"),
    ({"type": "statusQuery", "orderRequestIds": [R1] * (schemas.QUERY_MAX + 1)}, "list"),
    ({"type": "statusQuery", "orderRequestIds": [R1, "00000000000000A2"]}, "hex"),
    ({"type": "statusQuery", "orderRequestIds": [R1, 5]}, "hex"),
    ({"type": "orderRequest", "orderRequestIds": [R1]}, "type"),
    ("not json", "JSON"),
])
def test_a_malformed_query_is_counted_skipped_and_consumed(make_service, body, why):
    svc = make_service("manual")
    set_profile(svc.store)
    svc.handle_events([order_event(1, R1)], {"0": 2})
    bad = query_event(2, [R1])
    bad["body"] = (body if isinstance(body, str) else json.dumps(body)).encode()
    svc.handle_events([bad, order_event(3, R2)], {"0": 4})   # the partition goes on
    assert svc.stats["skipped"] == 1 and svc.stats["queries"] == 0
    assert answers(svc.store) == [("dev1", R1, "accepted"), ("dev1", R2, "accepted")]
    assert svc.store.cursors() == {"0": 4}
    with pytest.raises(messages.Malformed, match=why):
        messages.parse_event(bad)


def test_a_query_without_a_device_is_skipped(make_service):
    svc = make_service("manual")
    set_profile(svc.store)
    svc.handle_events([order_event(1, R1)], {"0": 2})
    q = query_event(2, [R1])
    del q["deviceId"]
    svc.handle_events([q], {"0": 3})
    assert svc.stats["skipped"] == 1 and len(outbox(svc.store)) == 1


def test_an_id_listed_twice_is_answered_once(make_service):
    svc = make_service("manual")
    set_profile(svc.store)
    svc.handle_events([order_event(1, R1)], {"0": 2})
    svc.handle_events([query_event(2, [R1, R1])], {"0": 3})
    assert answers(svc.store) == [("dev1", R1, "accepted")] * 2


def test_answers_commit_with_the_cursor(make_service):
    # a failure before the batch commits leaves no answer and no cursor: the replay answers once
    calls = []

    def ids():
        calls.append(1)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        return f"m{len(calls)}"

    svc = make_service("manual", new_message_id=ids)
    set_profile(svc.store)
    svc.handle_events([order_event(1, R1), order_event(2, R2)], {"0": 3})
    with pytest.raises(sqlite3.OperationalError):
        svc.handle_events([query_event(3, [R1, R2])], {"0": 4})
    assert svc.store.cursors() == {"0": 3} and len(outbox(svc.store)) == 2
    svc.handle_events([query_event(3, [R1, R2])], {"0": 4})
    assert svc.store.cursors() == {"0": 4}
    assert answers(svc.store)[2:] == [("dev1", R1, "accepted"), ("dev1", R2, "accepted")]
