# Order messages on the wire (firmware/app/schemas.py vs "Messages on the wire" in
# firmware/app/README.md).
import json

from firmware.app import schemas

RID = "0123456789abcdef"
OK_PROPS = {"$.mid": "m1", "$.cid": RID, "$.ct": "application/json", "$.ce": "utf-8",
            "messageType": "orderStatus"}


def body(**kw):
    d = {"orderRequestId": RID, "orderId": "O-1", "status": "accepted"}
    d.update(kw)
    return json.dumps(d).encode()


def test_order_request_bytes_are_exact():
    b = schemas.order_request(RID, "SKU-1", 2, 1800000000, 7)
    assert b == (b'{"type":"orderRequest","orderRequestId":"0123456789abcdef","sku":"SKU-1",'
                 b'"quantity":2,"createdAt":1800000000,"seq":7}'), b
    assert json.loads(b) == {"type": "orderRequest", "orderRequestId": RID, "sku": "SKU-1",
                             "quantity": 2, "createdAt": 1800000000, "seq": 7}


def test_cancel_request_bytes_are_exact():
    b = schemas.cancel_request(RID, 1800000030, 8)
    assert b == (b'{"type":"cancelRequest","orderRequestId":"0123456789abcdef",'
                 b'"createdAt":1800000030,"seq":8}'), b


def test_request_props():
    assert schemas.props(RID, schemas.ORDER) == {
        "$.mid": RID, "$.ct": "application/json", "$.ce": "utf-8", "messageType": "orderRequest"}
    assert schemas.props(RID, schemas.CANCEL) == {
        "$.mid": RID + "-cancel", "$.ct": "application/json", "$.ce": "utf-8",
        "messageType": "cancelRequest"}


def test_is_id():
    for x, ok in ((RID, True), ("ffffffffffffffff", True), ("0123456789ABCDEF", False),
                  ("0123456789abcde", False), ("0123456789abcdef0", False), ("", False),
                  ("0123456789abcdeg", False), (None, False), (12345, False),
                  (b"0123456789abcdef", False), ("0123456789abcd\u00e9f", False)):
        assert schemas.is_id(x) is ok, x


def test_valid_statuses():
    for st in schemas.STATUSES:
        assert schemas.parse_status(OK_PROPS, body(status=st)) == {
            "orderRequestId": RID, "orderId": "O-1", "status": st}
    # failed may come without an orderId
    assert schemas.parse_status(OK_PROPS, body(status="failed", orderId="", reason="unknown sku")) == {
        "orderRequestId": RID, "orderId": "", "status": "failed", "reason": "unknown sku"}
    got = schemas.parse_status(OK_PROPS, b'{"orderRequestId":"%s","status":"failed"}' % RID.encode())
    assert got == {"orderRequestId": RID, "orderId": "", "status": "failed"}, got
    # optional fields kept when they are short strings; str and bytearray bodies too
    got = schemas.parse_status(OK_PROPS, body(status="shipped", eta="2026-12-01T10:00:00Z").decode())
    assert got["eta"] == "2026-12-01T10:00:00Z", got
    assert schemas.parse_status(OK_PROPS, bytearray(body()))["status"] == "accepted"
    # minimal props: no $.ct is fine
    assert type(schemas.parse_status({"messageType": "orderStatus", "$.cid": RID}, body())) is dict


def test_bad_optional_fields_are_dropped_not_fatal():
    for extra in ({"reason": 5}, {"reason": ""}, {"reason": "x" * 65}, {"eta": ["2026"]},
                  {"eta": None}, {"unknown": {"deep": [1, 2]}}):
        got = schemas.parse_status(OK_PROPS, body(**extra))
        assert got == {"orderRequestId": RID, "orderId": "O-1", "status": "accepted"}, (extra, got)


def props(**kw):
    p = dict(OK_PROPS)
    for k in kw:
        if kw[k] is None:
            del p[k]
        else:
            p[k] = kw[k]
    return p


HOSTILE = [
    # (props, body, reason)
    (None, body(), "props"),
    ([("messageType", "orderStatus")], body(), "props"),
    (props(messageType=None), body(), "type"),
    (props(messageType="orderRequest"), body(), "type"),
    (props(messageType=None, **{}), body(), "type"),
    (props(**{"$.ct": "text/plain"}), body(), "ct"),
    (OK_PROPS, None, "body"),
    (OK_PROPS, 12, "body"),
    (OK_PROPS, {"orderRequestId": RID}, "body"),
    (OK_PROPS, b" " * 513, "size"),
    (OK_PROPS, b"[" * 100000, "size"),
    (OK_PROPS, b"", "json"),
    (OK_PROPS, b"not json", "json"),
    (OK_PROPS, b"\xff\xfe\x00", "json"),
    (OK_PROPS, b'{"orderRequestId": "\xff"}', "json"),
    (OK_PROPS, b"[" * 500, "json"),
    (OK_PROPS, b'{"orderRequestId":', "json"),
    (OK_PROPS, b"null", "doc"),
    (OK_PROPS, b"[1,2]", "doc"),
    (OK_PROPS, b'"accepted"', "doc"),
    (OK_PROPS, body(orderRequestId=None), "id"),
    (OK_PROPS, body(orderRequestId=123), "id"),
    (OK_PROPS, body(orderRequestId=RID.upper()), "id"),
    (OK_PROPS, body(orderRequestId=RID + "\u00e9"), "id"),
    (OK_PROPS, b'{"orderId":"O-1","status":"accepted"}', "id"),
    (props(**{"$.cid": None}), body(), "cid"),
    (props(**{"$.cid": "ffffffffffffffff"}), body(), "cid"),
    (OK_PROPS, body(status="ACCEPTED"), "status"),
    (OK_PROPS, body(status="refunded"), "status"),
    (OK_PROPS, body(status=None), "status"),
    (OK_PROPS, body(status=["accepted"]), "status"),
    (OK_PROPS, body(status={"a": 1}), "status"),
    (OK_PROPS, b'{"orderRequestId":"%s","orderId":"O-1"}' % RID.encode(), "status"),
    (OK_PROPS, body(orderId=""), "orderId"),
    (OK_PROPS, body(orderId=None), "orderId"),
    (OK_PROPS, body(orderId=42), "orderId"),
    (OK_PROPS, body(orderId="O" * 65), "orderId"),
    (OK_PROPS, b'{"orderRequestId":"%s","status":"shipped"}' % RID.encode(), "orderId"),
]


def test_hostile_input_gives_a_reason_never_raises():
    for p, b, want in HOSTILE:
        got = schemas.parse_status(p, b)
        assert got == want, (p, b[:40] if type(b) is bytes else b, got, want)


def test_trailing_data_and_every_truncation_are_refused():
    full = body(status="delivered")
    assert type(schemas.parse_status(OK_PROPS, full)) is dict
    assert schemas.parse_status(OK_PROPS, full + b"x") == "json"
    for n in range(len(full)):
        got = schemas.parse_status(OK_PROPS, full[:n])
        assert type(got) is str, (n, got)


def test_load():
    assert schemas.load(b'{"a":1}') == ({"a": 1}, None)
    assert schemas.load(b"x" * 10, limit=5) == (None, "size")
    assert schemas.load(memoryview(b"1")) == (None, "body")


def _app_file(name):
    here = __file__
    root = here[:here.rfind("/tests/core/")] if "/tests/core/" in here else "."
    with open(root + "/firmware/app/" + name) as f:
        return f.read()


def _wire_section():
    text = _app_file("README.md")
    start = text.find("\n## Messages on the wire\n")
    assert start >= 0, "README.md has no 'Messages on the wire' section"
    end = text.find("\n## ", start + 5)
    return text[start:end if end > 0 else len(text)]


# every word of the contract that schemas.py puts on (or reads from) the wire
WIRE_WORDS = [schemas.ORDER, schemas.CANCEL, "orderStatus", "$.mid", "$.cid", "$.ct", "$.ce",
              "application/json", "utf-8", "messageType", "-cancel", "orderRequestId",
              "orderId", "createdAt", "seq", "sku", "quantity", "reason", "eta",
              "cancel refused: already shipped"] + list(schemas.STATUSES)


def test_wire_contract_lives_in_the_app_readme():
    wire = _wire_section()
    for word in WIRE_WORDS:
        assert word in wire, word


APP_FILES = ["README.md", "__init__.py", "gestures.py", "orders.py",
             "schemas.py", "screens.py", "settings.py"]


def test_app_files_point_nowhere_outside_the_repo():
    for name in APP_FILES:
        text = _app_file(name)
        assert "/tmp/" not in text and "WIRE.md" not in text, name
    readme = _app_file("README.md")
    for word in ("`freeHeap`", "`link`", ".venv/bin/pytest", ".venv/bin/micropython"):
        assert word in readme, word


def test_the_status_rule_is_one_table():
    # accepted < payment_authorized < shipped < delivered; cancelled and failed end an open
    # order; nothing follows a final status; a cancel is honoured only before shipment
    order = ("queued", "accepted", "payment_authorized", "shipped", "delivered")
    for i, cur in enumerate(order):
        for j, new in enumerate(order[1:]):
            assert schemas.follows(new, cur) == (j + 1 > i and cur != "delivered"), (cur, new)
        for end in ("cancelled", "failed"):
            assert schemas.follows(end, cur) == (cur != "delivered"), (cur, end)
    for end in ("delivered", "cancelled", "failed"):
        assert schemas.is_final(end) and not schemas.cancel_honoured(end)
        for new in schemas.STATUSES:
            assert not schemas.follows(new, end)
    assert [s for s in order if schemas.cancel_honoured(s)] == list(order[:3])
    assert set(schemas.STATUSES) | {"queued"} == set(schemas.STATUS_RULE)


def test_the_contract_limits():
    assert schemas.is_sku("A" * 32) and not schemas.is_sku("A" * 33) and not schemas.is_sku("")
    assert not schemas.is_sku("a b") and not schemas.is_sku(None) and schemas.is_sku("a-Z_0.9")
    assert schemas.is_quantity(1) and schemas.is_quantity(99)
    for q in (0, 100, True, 1.0, "1", None):
        assert not schemas.is_quantity(q), q
    assert schemas.is_order_id("O" * 64) and not schemas.is_order_id("O" * 65)
    assert schemas.is_order_id('ORD-1 "x" ~') and not schemas.is_order_id("ORD-\u00e9")
    assert not schemas.is_order_id("") and schemas.is_order_id("", True)
    assert not schemas.is_order_id("a\x00") and not schemas.is_order_id(5)
