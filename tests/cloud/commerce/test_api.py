"""The commerce API through the client the orchestrator uses: cart -> line -> fulfillment ->
payment -> order, idempotency, the refusals, the timeline, payment decline, cancellation."""
import pytest

from host_tools.cloud.commerce.client import Refused
from tests.cloud.commerce.conftest import fill_cart


def wait_status(client, order_id, status):
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        order = client.get_order(order_id)
        if order["status"] == status:
            return order
        time.sleep(0.01)
    raise AssertionError(f"{order_id} is {order['status']}, expected {status}")


def test_order_is_built_from_cart_line_fulfillment_and_federated_payment(backend, clock):
    backend.start()
    client = backend.client()
    cart = fill_cart(client, quantity=2, method="express")
    assert cart["totals"] == {"subTotal": "37.80", "shipping": "9.95", "grandTotal": "47.75"}
    order = client.create_order("cart-1", "dev1:req-1")
    assert order["id"] == "ORD-000001" and order["status"] == "created"
    assert order["version"] == 1 and order["idempotencyKey"] == "dev1:req-1"
    kinds = [c["type"] for c in order["components"]]
    assert kinds == ["CartLineComponent", "PhysicalFulfillmentComponent",
                     "FederatedPaymentComponent"]
    line, fulfillment, payment = order["components"]
    assert line == {"type": "CartLineComponent", "sku": "COFFEE-1KG",
                    "name": "Coffee beans, 1 kg", "quantity": 2, "unitPrice": "18.90",
                    "lineTotal": "37.80"}
    assert fulfillment["fulfillmentMethod"]["code"] == "express"
    assert fulfillment["shippingParty"]["address"] == "12 St James's Sq, London"
    assert payment == {"type": "FederatedPaymentComponent", "paymentToken": "****4242",
                       "amount": "47.75"}
    assert order["eta"] and order["next"]["status"] == "payment_authorized"
    assert client.get_cart("cart-1")["status"] == "ordered"


def test_every_call_in_the_chain_can_be_repeated(backend):
    """What lets the orchestrator redo the whole chain after a crash anywhere in it."""
    backend.start()
    client = backend.client()
    for _ in range(2):
        fill_cart(client)
    first = client.create_order("cart-1", "dev1:req-1")
    again = client.create_order("cart-1", "dev1:req-1")
    assert again["id"] == first["id"]
    assert client.find_order("dev1:req-1")["id"] == first["id"]
    assert client.find_order("dev1:unknown") is None
    store = backend.store()
    assert len(store.orders()) == 1 and len(store.lines(1)) == 1
    store.close()


def test_replay_is_marked_and_a_reused_key_or_cart_is_refused(backend):
    backend.start()
    client = backend.client()
    fill_cart(client, cart="cart-1")
    fill_cart(client, cart="cart-2")
    client.create_order("cart-1", "key-1")
    r = client.session.post(client.api_url + "/orders", json={"cartId": "cart-1"},
                            headers={"Idempotency-Key": "key-1",
                                     "Authorization": "Bearer " + client.token()},
                            verify=client.verify)
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(Refused) as exc:
        client.create_order("cart-2", "key-1")
    assert exc.value.status == 422 and exc.value.code == "idempotency_key_reused"
    with pytest.raises(Refused) as exc:
        client.create_order("cart-1", "key-2")
    assert exc.value.status == 409 and exc.value.body["orderId"] == "ORD-000001"
    with pytest.raises(Refused) as exc:
        client.put_line("cart-1", "TOWELS-8", 1)
    assert exc.value.status == 409 and exc.value.code == "cart_ordered"


@pytest.mark.parametrize("call,status,code,message", [
    (lambda c: c.put_line("cart-1", "CAVIAR", 1), 422, "unknown_sku", "unknown sku CAVIAR"),
    (lambda c: c.put_line("cart-1", "COFFEE-1KG", 6), 422, "quantity_exceeds_maximum",
     "quantity 6 exceeds the maximum of 5 for COFFEE-1KG"),
    (lambda c: c.put_line("cart-1", "COFFEE-1KG", 0), 400, "bad_request", None),
    (lambda c: c.put_fulfillment("cart-1", "Ada", "x", "drone"), 422, "unknown_shipping_method",
     "shipping method drone is not offered"),
    (lambda c: c.put_payment("cart-1", " "), 400, "bad_request", None),
    (lambda c: c.put_line("no-such-cart", "COFFEE-1KG", 1), 404, "not_found", None),
    (lambda c: c.create_order("cart-1", "k"), 422, "cart_empty", None),
    (lambda c: c.create_order("cart-1", "bad key!"), 400, "bad_request", None),
    (lambda c: c.get_order("ORD-999999"), 404, "not_found", None),
])
def test_refusals_carry_status_code_and_message(backend, call, status, code, message):
    backend.start()
    client = backend.client()
    client.put_cart("cart-1", "dev1", "Ada")
    with pytest.raises(Refused) as exc:
        call(client)
    assert (exc.value.status, exc.value.code) == (status, code)
    if message:
        assert exc.value.message == message


def test_order_needs_fulfillment_and_payment(backend):
    backend.start()
    client = backend.client()
    client.put_cart("cart-1", "dev1", "Ada")
    client.put_line("cart-1", "COFFEE-1KG", 1)
    with pytest.raises(Refused) as exc:
        client.create_order("cart-1", "k")
    assert exc.value.code == "no_fulfillment"
    client.put_fulfillment("cart-1", "Ada", "x", "standard")
    with pytest.raises(Refused) as exc:
        client.create_order("cart-1", "k")
    assert exc.value.code == "no_payment"


def test_orders_of_another_client_are_invisible(backend):
    from tests.cloud.commerce.conftest import add_client, CLIENT_ID
    from host_tools.cloud.commerce.client import Client
    backend.start()
    client = backend.client()
    fill_cart(client)
    order = client.create_order("cart-1", "k1")
    add_client(backend.data_dir, "other-shop", "other-secret-other-secret")
    other = Client(backend.url + "/api", backend.url + "/connect/token", "other-shop",
                   "other-secret-other-secret", ca=backend.cert_paths["ca.pem"],
                   clock=backend.clock)
    assert CLIENT_ID != "other-shop"
    with pytest.raises(Refused) as exc:
        other.get_order(order["id"])
    assert exc.value.status == 404
    assert other.find_order("k1") is None
    with pytest.raises(Refused) as exc:
        other.get_cart("cart-1")
    assert exc.value.status == 404


def test_timeline_moves_the_order_by_the_clock(backend, clock):
    backend.start()
    client = backend.client()
    fill_cart(client)
    order = client.create_order("cart-1", "k1")
    clock.advance(2)
    wait_status(client, order["id"], "payment_authorized")
    clock.advance(2)
    wait_status(client, order["id"], "shipped")
    clock.advance(2)
    done = wait_status(client, order["id"], "delivered")
    assert done["version"] == 4 and "next" not in done and "eta" not in done


def test_overdue_steps_all_happen_in_order_after_a_restart(backend, clock):
    backend.start()
    client = backend.client()
    fill_cart(client)
    order = client.create_order("cart-1", "k1")
    backend.stop()
    clock.advance(60)
    backend.start()
    client = backend.client()
    wait_status(client, order["id"], "delivered")
    store = backend.store()
    assert [h.status for h in store.history(1)] == ["created", "payment_authorized", "shipped",
                                                      "delivered"]
    store.close()


def test_declined_payment_token_ends_the_order_at_authorisation(backend, clock):
    backend.start()
    client = backend.client()
    fill_cart(client, token="tok_declined_0002")
    order = client.create_order("cart-1", "k1")
    clock.advance(2)
    declined = wait_status(client, order["id"], "payment_declined")
    assert declined["reason"] == "payment declined" and "next" not in declined
    clock.advance(60)
    assert client.get_order(order["id"])["status"] == "payment_declined"


def test_manual_timeline_and_advance(backend, clock):
    backend.start("manual")
    client = backend.client()
    fill_cart(client)
    order = client.create_order("cart-1", "k1")
    clock.advance(600)
    assert client.get_order(order["id"])["status"] == "created"
    assert client.advance(order["id"])["status"] == "payment_authorized"
    assert client.advance(order["id"], to="delivered")["status"] == "delivered"
    with pytest.raises(Refused) as exc:
        client.advance(order["id"])
    assert exc.value.status == 409


@pytest.mark.parametrize("moved_to", ["created", "payment_authorized"])
def test_cancel_before_shipment_is_applied(backend, moved_to):
    backend.start("manual")
    client = backend.client()
    fill_cart(client)
    order = client.create_order("cart-1", "k1")
    if moved_to != "created":
        client.advance(order["id"], to=moved_to)
    cancelled = client.cancel(order["id"])
    assert cancelled["status"] == "cancelled" and "next" not in cancelled
    assert client.cancel(order["id"])["status"] == "cancelled"   # asking again answers again


@pytest.mark.parametrize("moved_to", ["shipped", "delivered"])
def test_cancel_after_shipment_is_refused_and_changes_nothing(backend, moved_to):
    backend.start("manual")
    client = backend.client()
    fill_cart(client)
    order = client.create_order("cart-1", "k1")
    client.advance(order["id"], to=moved_to)
    with pytest.raises(Refused) as exc:
        client.cancel(order["id"])
    assert exc.value.status == 409 and exc.value.code == "cancel_refused"
    assert exc.value.message == "cancel refused: already shipped"
    assert client.get_order(order["id"])["status"] == moved_to


def test_cancel_of_a_declined_order_is_refused(backend, clock):
    backend.start()
    client = backend.client()
    fill_cart(client, token="tok_declined_1")
    order = client.create_order("cart-1", "k1")
    clock.advance(2)
    wait_status(client, order["id"], "payment_declined")
    with pytest.raises(Refused) as exc:
        client.cancel(order["id"])
    assert exc.value.message == "order is payment_declined"
