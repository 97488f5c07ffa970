"""Status changes as Event Grid events: the subscription validation handshake, delivery in the
Event Grid schema with its headers, retries with backoff (by the test's clock) until the
webhook acknowledges, dead-lettering where Event Grid does, and nothing lost over a restart."""
import pytest

from host_tools.cloud.commerce import eventgrid
from host_tools.cloud.commerce.client import Refused
from tests.cloud.commerce.conftest import fill_cart


def place(client, cart="cart-1", key="k1", **kwargs):
    fill_cart(client, cart=cart, **kwargs)
    return client.create_order(cart, key)


def test_subscription_needs_the_validation_handshake(backend, webhook):
    backend.start()
    client = backend.client()
    assert client.subscribe("orders", webhook.url)["provisioningState"] == "Succeeded"
    assert len(webhook.validations) == 1
    headers = webhook.validations[0]
    assert headers["aeg-event-type"] == "SubscriptionValidation"
    assert headers["aeg-subscription-name"] == "ORDERS"


def test_a_webhook_that_does_not_echo_the_code_gets_no_subscription(backend, webhook):
    backend.start()
    client = backend.client()
    webhook.echo_code = False
    with pytest.raises(Refused) as exc:
        client.subscribe("orders", webhook.url)
    assert exc.value.status == 400 and exc.value.code == "validation_failed"
    place(client)
    store = backend.store()
    assert store.subscriptions() == [] and store.deliveries() == []
    store.close()


def test_unreachable_or_plain_http_webhooks_are_refused(backend, webhook):
    backend.start()
    client = backend.client()
    for url in ("https://127.0.0.1:1/events", webhook.url.replace("https:", "http:")):
        with pytest.raises(Refused) as exc:
            client.subscribe("orders", url)
        assert exc.value.status == 400


def test_every_status_change_is_delivered_as_an_event_grid_event(backend, webhook, clock):
    backend.start()
    client = backend.client()
    client.subscribe("orders", webhook.url)
    order = place(client)
    for _ in range(3):
        clock.advance(2)
    events = webhook.wait_acked(4)
    assert [e["eventType"] for e in events] == [
        "Commerce.Order.Created", "Commerce.Order.PaymentAuthorized", "Commerce.Order.Shipped",
        "Commerce.Order.Delivered"]
    first = events[0]
    assert set(first) == {"id", "topic", "subject", "eventType", "eventTime", "data",
                          "dataVersion", "metadataVersion"}
    assert first["subject"] == f"/orders/{order['id']}" and first["dataVersion"] == "1.0"
    assert first["data"] == {"orderId": order["id"], "status": "created", "previousStatus": None,
                             "version": 1, "idempotencyKey": "k1", "cartId": "cart-1",
                             "eta": order["eta"]}
    assert [e["data"]["version"] for e in events] == [1, 2, 3, 4]
    assert len({e["id"] for e in events}) == 4
    headers = webhook.deliveries[0][0]
    assert headers["aeg-event-type"] == "Notification" and headers["aeg-delivery-count"] == "0"
    # each delivery is an array of one event (Event Grid's default batch)
    assert all(len(body) == 1 for _, body, _ in webhook.deliveries)


def test_failed_deliveries_are_retried_with_backoff_until_acknowledged(backend, webhook, clock):
    backend.start("manual", retry_base=10, retry_max=40)
    client = backend.client()
    client.subscribe("orders", webhook.url)
    webhook.fail_next = [500, 503, 429, 404]
    place(client)
    webhook.wait_attempts(1)
    store = backend.store()
    waits = []
    for attempt in range(1, 5):
        _wait_attempts_recorded(store, attempt - 1)
        head = store.deliveries("pending")[0]
        assert head.attempts == attempt
        waits.append(head.next_attempt - clock())
        clock.advance(head.next_attempt - clock() - 0.5)   # not yet due: nothing is sent
        assert len(webhook.wait_attempts(attempt)) == attempt
        clock.advance(0.5)
        webhook.wait_attempts(attempt + 1)
    assert waits == [10, 20, 40, 40]
    event = webhook.wait_acked(1)[0]
    assert event["eventType"] == "Commerce.Order.Created"
    counts = [h["aeg-delivery-count"] for h, _, _ in webhook.deliveries]
    assert counts == ["0", "1", "2", "3", "4"]
    assert len({body[0]["id"] for _, body, _ in webhook.deliveries}) == 1   # the same event
    store.close()


def _wait_attempts_recorded(store, attempt):
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = store.deliveries("pending")
        if not rows or rows[0].attempts > attempt:
            return
        time.sleep(0.01)
    raise AssertionError("the failed attempt was not recorded")


def test_a_failing_event_holds_back_the_later_ones_so_they_arrive_in_order(backend, webhook,
                                                                             clock):
    backend.start("manual", retry_base=5, retry_max=5)
    client = backend.client()
    client.subscribe("orders", webhook.url)
    webhook.fail_next = [500]
    order = place(client)
    webhook.wait_attempts(1)
    client.advance(order["id"], to="shipped")
    clock.advance(5)
    events = webhook.wait_acked(3)
    assert [e["data"]["status"] for e in events] == ["created", "payment_authorized", "shipped"]


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_refusals_event_grid_does_not_retry_are_dead_lettered(backend, webhook, clock, status):
    backend.start("manual")
    client = backend.client()
    client.subscribe("orders", webhook.url)
    webhook.fail_next = [status]
    order = place(client)
    webhook.wait_attempts(1)
    client.advance(order["id"])
    events = webhook.wait_acked(1)
    assert events[0]["eventType"] == "Commerce.Order.PaymentAuthorized"
    store = backend.store()
    dead = store.deliveries("dead")
    assert len(dead) == 1 and dead[0].event["eventType"] == "Commerce.Order.Created"
    assert dead[0].last_error.startswith(f"HTTP {status}")
    store.close()


def test_events_owed_survive_a_restart_and_go_out_after_it(backend, webhook, clock):
    backend.start("manual", retry_base=30)
    client = backend.client()
    client.subscribe("orders", webhook.url)
    webhook.fail_next = [503]
    place(client)
    webhook.wait_attempts(1)
    backend.stop()
    clock.advance(30)
    backend.start("manual", retry_base=30)
    assert webhook.wait_acked(1)[0]["eventType"] == "Commerce.Order.Created"


def test_deleting_a_subscription_stops_its_deliveries(backend, webhook):
    backend.start("manual")
    client = backend.client()
    client.subscribe("orders", webhook.url)
    client._call("DELETE", "/subscriptions/orders")
    place(client)
    store = backend.store()
    assert store.deliveries() == []
    store.close()


def test_subscriber_side_reads_validation_and_notifications():
    code_event = eventgrid.validation_event("/t", "abc", 0)
    assert eventgrid.read_delivery({"aeg-event-type": "SubscriptionValidation"},
                                   [code_event]) == ("validation", "abc")
    note = eventgrid.event("/t", "/orders/1", "Commerce.Order.Shipped", {"orderId": "1"}, 0)
    assert eventgrid.read_delivery({"aeg-event-type": "Notification"}, [note]) == \
        ("events", [note])
    for bad in ({}, [], ["x"], [dict(note, data=None)], [dict(note, id=None)],
                [dict(code_event, data={})]):
        with pytest.raises(eventgrid.BadDelivery):
            eventgrid.read_delivery({}, bad)
    with pytest.raises(eventgrid.BadDelivery):
        eventgrid.read_delivery({"aeg-event-type": "Notification"}, [code_event])


def test_events_read_as_the_event_grid_sdk_models_them(backend, webhook, clock):
    """Azure's own Event Grid SDK as the oracle: what we deliver is an EventGridEvent, and
    the handshake uses the system event name it knows."""
    from azure.eventgrid import EventGridEvent, SystemEventNames
    from datetime import datetime, timezone
    backend.start("manual")
    client = backend.client()
    client.subscribe("orders", webhook.url)
    order = place(client)
    client.advance(order["id"])
    delivered = webhook.wait_acked(2)
    for raw in delivered:
        model = EventGridEvent.from_dict(raw)
        assert (model.id, model.subject, model.event_type, model.data, model.data_version,
                model.topic) == (raw["id"], raw["subject"], raw["eventType"], raw["data"], "1.0",
                                 raw["topic"])
        assert model.metadata_version == "1" and not model.additional_properties
        assert model.event_time == datetime.fromtimestamp(clock(), timezone.utc)
    validation = EventGridEvent.from_dict(eventgrid.validation_event("/t", "c0de", clock()))
    assert validation.event_type == \
        SystemEventNames.EventGridSubscriptionValidationEventName.value
    assert validation.data["validationCode"] == "c0de"
