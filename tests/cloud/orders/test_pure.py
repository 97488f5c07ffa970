"""Pure parts of the order service: catalogue, lifecycle table, timeline, wire messages,
order building. No clock, no storage, no hub."""
import json

import pytest

from host_tools.cloud.orders import catalogue, commerce, lifecycle, messages, timeline
from host_tools.cloud.orders.lifecycle import (ACCEPTED, CANCELLED, DELIVERED, FAILED,
                                         PAYMENT_AUTHORIZED, SHIPPED)


# -- catalogue -----------------------------------------------------------------------------
def test_packaged_catalogue_loads_with_demo_skus_and_shipping():
    cat = catalogue.load()
    assert cat.currency == "EUR"
    assert len(cat.products) >= 3
    assert cat.product("COFFEE-1KG").unit_price == 1890
    assert cat.shipping_method("standard").price == 495
    assert cat.product("NOPE") is None


@pytest.mark.parametrize("text,cents", [("0", 0), ("4.95", 495), ("18.9", 1890), ("100", 10000)])
def test_prices_are_exact_cents(text, cents):
    assert catalogue.to_cents(text, "x") == cents
    assert catalogue.format_cents(cents) == f"{cents // 100}.{cents % 100:02d}"


@pytest.mark.parametrize("bad", [4.95, "4.955", "-1", "abc", "NaN", "Infinity", None])
def test_bad_prices_are_refused_with_the_field_named(bad):
    with pytest.raises(catalogue.CatalogueError, match="products.X.unitPrice"):
        catalogue.parse({"currency": "EUR", "products": {"X": {"name": "x", "unitPrice": bad}},
                         "shippingMethods": {"s": {"price": "1"}}}, "c.json")


@pytest.mark.parametrize("sku,quantity,error", [("S" * 33, 5, "a SKU is 1-32"), ("bad sku", 5, "a SKU is"),
                                                ("", 5, "a SKU is"), ("OK-1", 100, "OK-1.maxQuantity")])
def test_a_catalogue_holds_only_what_a_device_can_order(sku, quantity, error):
    # the device's contract (firmware/app/schemas.py): sku 1-32 of A-Z a-z 0-9 - _ ., quantity 1-99
    item = {"name": "x", "unitPrice": "1", "maxQuantity": quantity}
    with pytest.raises(catalogue.CatalogueError, match=error):
        catalogue.parse({"currency": "EUR", "products": {sku: item},
                         "shippingMethods": {"s": {"price": "1"}}}, "c.json")


def test_broken_catalogue_file_is_a_clear_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(catalogue.CatalogueError, match="not valid JSON"):
        catalogue.load(str(path))
    with pytest.raises(catalogue.CatalogueError, match="cannot read"):
        catalogue.load(str(tmp_path / "missing.json"))
    path.write_text(json.dumps({"currency": "EUR", "products": {}, "shippingMethods": {}}))
    with pytest.raises(catalogue.CatalogueError, match="products"):
        catalogue.load(str(path))


# -- lifecycle -----------------------------------------------------------------------------
def test_happy_path_in_order():
    status, seen = ACCEPTED, [ACCEPTED]
    while lifecycle.next_progress(status):
        status = lifecycle.transition(status, lifecycle.ADVANCE)
        seen.append(status)
    assert seen == [ACCEPTED, PAYMENT_AUTHORIZED, SHIPPED, DELIVERED]


@pytest.mark.parametrize("status", [DELIVERED, CANCELLED, FAILED])
def test_terminal_statuses_accept_no_event(status):
    for event in (lifecycle.ADVANCE, lifecycle.CANCEL, lifecycle.FAIL):
        with pytest.raises(lifecycle.IllegalTransition):
            lifecycle.transition(status, event)


def test_cancel_only_before_shipment():
    assert lifecycle.cancel_outcome(ACCEPTED) == lifecycle.CANCEL_APPLY
    assert lifecycle.cancel_outcome(PAYMENT_AUTHORIZED) == lifecycle.CANCEL_APPLY
    assert lifecycle.cancel_outcome(SHIPPED) == lifecycle.CANCEL_REFUSE
    assert lifecycle.cancel_outcome(DELIVERED) == lifecycle.CANCEL_REFUSE
    assert lifecycle.cancel_outcome(CANCELLED) == lifecycle.CANCEL_REPEAT
    assert lifecycle.cancel_outcome(FAILED) == lifecycle.CANCEL_REPEAT
    with pytest.raises(lifecycle.IllegalTransition):
        lifecycle.transition(SHIPPED, lifecycle.CANCEL)


def test_path_to_lists_every_step_and_refuses_going_back():
    assert lifecycle.path_to(ACCEPTED, DELIVERED) == [PAYMENT_AUTHORIZED, SHIPPED, DELIVERED]
    assert lifecycle.path_to(SHIPPED, DELIVERED) == [DELIVERED]
    for status, target in ((SHIPPED, PAYMENT_AUTHORIZED), (SHIPPED, SHIPPED),
                           (CANCELLED, DELIVERED), (ACCEPTED, CANCELLED)):
        with pytest.raises(lifecycle.IllegalTransition):
            lifecycle.path_to(status, target)


# -- timeline ------------------------------------------------------------------------------
def test_default_timeline_is_the_demo_one():
    tl = timeline.parse(None)
    assert tl.as_dict() == {PAYMENT_AUTHORIZED: 2, SHIPPED: 4, DELIVERED: 6}
    assert tl.next_step(ACCEPTED, 100) == (PAYMENT_AUTHORIZED, 102)
    assert tl.next_step(PAYMENT_AUTHORIZED, 100) == (SHIPPED, 104)
    assert tl.next_step(SHIPPED, 100) == (DELIVERED, 106)
    assert tl.next_step(DELIVERED, 100) == (None, None)
    assert tl.next_step(CANCELLED, 100) == (None, None)
    assert tl.eta(100) == 106


def test_timeline_specs_inline_manual_and_file(tmp_path):
    assert timeline.parse("payment_authorized=0.5, shipped=1").as_dict() == {
        PAYMENT_AUTHORIZED: 0.5, SHIPPED: 1}
    manual = timeline.parse("manual")
    assert manual.as_dict() == {} and manual.next_step(ACCEPTED, 0) == (None, None)
    assert manual.eta(0) is None
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"accepted": 0, "payment_authorized": 1, "shipped": 10}))
    tl = timeline.parse(str(path))
    assert tl.as_dict() == {PAYMENT_AUTHORIZED: 1, SHIPPED: 10}
    assert tl.next_step(SHIPPED, 0) == (None, None)  # delivered waits for `orders advance`


@pytest.mark.parametrize("spec,match", [
    ("shipped=4", "in order without gaps"),
    ("payment_authorized=5,shipped=4", "must not decrease"),
    ("payment_authorized=-1", ">= 0"),
    ("payment_authorized=x", "not a number"),
    ("payment_authorized", "should look like"),
    ("paid=1", "unknown status"),
    ("accepted=3", "always immediate"),
    ("/nonexistent/t.json", "cannot read"),
])
def test_bad_timelines_say_what_is_wrong(spec, match):
    with pytest.raises(timeline.TimelineError, match=match):
        timeline.parse(spec)


# -- wire messages -------------------------------------------------------------------------
def _event(body, message_type=None, device="dev1"):
    props = {"messageType": message_type} if message_type else {}
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return {"seq": 1, "deviceId": device, "properties": props, "systemProperties": {},
            "body": body}


def test_order_request_is_parsed():
    req = messages.parse_event(_event({"type": "orderRequest", "orderRequestId": "0123456789abcdef",
                                       "sku": "COFFEE-1KG", "quantity": 2, "createdAt": 1700000000,
                                       "seq": 7}, "orderRequest"))
    assert isinstance(req, messages.OrderRequest)
    assert (req.request_id, req.sku, req.quantity, req.created_at, req.seq) == (
        "0123456789abcdef", "COFFEE-1KG", 2, 1700000000, 7)


def test_cancel_request_is_parsed_from_body_type_alone():
    req = messages.parse_event(_event({"type": "cancelRequest", "orderRequestId": "000000000000ab12"}))
    assert isinstance(req, messages.CancelRequest) and req.request_id == "000000000000ab12"


@pytest.mark.parametrize("body", [b"\x00\x01", b"[1,2]", {"temperature": 21}, b"",
                                  {"type": "heartbeat"}])
def test_other_telemetry_is_not_ours(body):
    assert messages.parse_event(_event(body)) is None


@pytest.mark.parametrize("body,reason,rid", [
    (b"{oops", "not JSON", None),
    (b"\xff\xfe", "not UTF-8", None),
    (b"[]", "not a JSON object", None),
    ({"type": "orderRequest", "sku": "A", "quantity": 1}, "orderRequestId", None),
    ({"type": "orderRequest", "orderRequestId": "a b", "sku": "A", "quantity": 1},
     "orderRequestId", None),
    ({"type": "orderRequest", "orderRequestId": "x" * 65, "sku": "A", "quantity": 1},
     "orderRequestId", None),
    ({"type": "cancelRequest", "orderRequestId": "0000000000000abc"}, "body type", None),
    ({"type": "orderRequest", "orderRequestId": "0000000000000abc", "quantity": 1}, "sku", "0000000000000abc"),
    ({"type": "orderRequest", "orderRequestId": "0000000000000abc", "sku": "A", "quantity": 0},
     "quantity", "0000000000000abc"),
    ({"type": "orderRequest", "orderRequestId": "0000000000000abc", "sku": "A", "quantity": True},
     "quantity", "0000000000000abc"),
    ({"type": "orderRequest", "orderRequestId": "0000000000000abc", "sku": "A", "quantity": "2"},
     "quantity", "0000000000000abc"),
])
def test_malformed_order_messages_are_reported(body, reason, rid):
    with pytest.raises(messages.Malformed, match=reason) as info:
        messages.parse_event(_event(body, "orderRequest"))
    assert info.value.request_id == rid


def test_status_body_matches_the_wire_schema():
    assert messages.status_body("00000000000000d1", "ORD-1", SHIPPED, eta=0) == {
        "orderRequestId": "00000000000000d1", "orderId": "ORD-1", "status": SHIPPED,
        "eta": "1970-01-01T00:00:00Z"}
    assert messages.status_body("00000000000000d1", None, FAILED, reason="unknown sku X") == {
        "orderRequestId": "00000000000000d1", "orderId": "", "status": FAILED, "reason": "unknown sku X"}
    assert json.loads(messages.encode(messages.status_body("r", "o", ACCEPTED))) == {
        "orderRequestId": "r", "orderId": "o", "status": ACCEPTED}


# -- commerce ------------------------------------------------------------------------------
def _profile(method="standard", token="tok_visa_4242"):
    return commerce.Profile("dev1", "Ada Lovelace", "12 St James's Sq, London", method, token)


def test_order_has_cart_line_physical_fulfillment_and_federated_payment():
    cat = catalogue.load()
    doc, amount = commerce.build_order("dev1", messages.OrderRequest("00000000000000d1", "COFFEE-1KG", 2),
                                       _profile("express"), cat)
    assert amount == 2 * 1890 + 995
    line = commerce.component(doc, "CartLineComponent")
    assert (line["sku"], line["quantity"], line["unitPrice"], line["lineTotal"]) == (
        "COFFEE-1KG", 2, "18.90", "37.80")
    ship = commerce.component(doc, "PhysicalFulfillmentComponent")
    assert ship["shippingParty"] == {"name": "Ada Lovelace", "address": "12 St James's Sq, London"}
    assert ship["fulfillmentMethod"]["code"] == "express"
    pay = commerce.component(doc, "FederatedPaymentComponent")
    assert pay == {"type": "FederatedPaymentComponent", "paymentToken": "tok_visa_4242",
                   "amount": "47.75"}
    assert doc["totals"] == {"subTotal": "37.80", "shipping": "9.95", "grandTotal": "47.75"}
    assert commerce.authorize_payment(doc) is None
    assert "tok_visa_4242" not in json.dumps(commerce.redacted(doc))
    assert commerce.component(doc, "FederatedPaymentComponent")["paymentToken"] == "tok_visa_4242"


@pytest.mark.parametrize("sku,qty,profile,reason", [
    ("NOPE", 1, _profile(), "unknown sku NOPE"),
    ("COFFEE-1KG", 6, _profile(), "quantity 6 exceeds the maximum of 5 for COFFEE-1KG"),
    ("COFFEE-1KG", 1, None, "no customer profile for this device"),
    ("COFFEE-1KG", 1, _profile("drone"), "shipping method drone is not offered"),
])
def test_rejections_carry_the_reason(sku, qty, profile, reason):
    with pytest.raises(commerce.Rejected) as info:
        commerce.build_order("dev1", messages.OrderRequest("00000000000000d1", sku, qty), profile,
                             catalogue.load())
    assert info.value.reason == reason


def test_declined_token_fails_payment_authorisation():
    doc, _ = commerce.build_order("dev1", messages.OrderRequest("00000000000000d1", "TOWELS-8", 1),
                                  _profile(token="tok_declined_0001"), catalogue.load())
    assert commerce.authorize_payment(doc) == "payment declined"


def test_profile_checks_and_masking():
    cat = catalogue.load()
    commerce.check_profile(cat, "A", "B", "standard", "tok")
    with pytest.raises(ValueError, match="shipping method"):
        commerce.check_profile(cat, "A", "B", "drone", "tok")
    with pytest.raises(ValueError, match="address"):
        commerce.check_profile(cat, "A", " ", "standard", "tok")
    assert commerce.mask("tok_visa_4242") == "****4242"
    assert commerce.mask("short") == "****"
