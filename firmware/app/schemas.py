# Order messages on the wire (the contract: "Messages on the wire" in firmware/app/README.md):
# build the device's requests, validate the cloud's order-status messages. Pure: no I/O,
# never raises on network input.
#
# Bodies are written out by hand, field by field, so the bytes are the same on MicroPython and
# CPython (MicroPython dicts do not keep insertion order) and a re-send is byte-identical.
import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

ORDER = "orderRequest"
CANCEL = "cancelRequest"
STATUSES = ("accepted", "payment_authorized", "shipped", "delivered", "cancelled", "failed")

_MAX_BODY = const(512)   # a real order-status body is ~150 bytes; bigger is refused unparsed
_MAX_ID = const(64)      # orderId
_MAX_NOTE = const(64)    # reason, eta
_HEX = "0123456789abcdef"


def is_id(x):
    # An orderRequestId: 16 lowercase hex characters.
    if type(x) is not str or len(x) != 16:
        return False
    for c in x:
        if c not in _HEX:
            return False
    return True


def is_order_id(x, empty=False):
    # An orderId from the cloud: up to 64 printable ASCII characters ("" only if `empty`).
    if type(x) is not str or len(x) > _MAX_ID or not (x or empty):
        return False
    for c in x:
        if not " " <= c <= "~":
            return False
    return True


def mid(kind, rid):
    # The $.mid of a request: the orderRequestId itself, "<id>-cancel" for its cancel.
    return rid if kind == ORDER else rid + "-cancel"


def props(kind, rid):
    # Telemetry properties for firmware.iothub.topics.telemetry(device_id, props).
    return {"$.mid": mid(kind, rid), "$.ct": "application/json", "$.ce": "utf-8",
            "messageType": kind}


def order_request(rid, sku, quantity, created_at, seq):
    # -> body bytes. sku is a validated setting (ASCII), the numbers are ints.
    return ('{"type":"orderRequest","orderRequestId":"%s","sku":%s,"quantity":%d,'
            '"createdAt":%d,"seq":%d}' % (rid, json.dumps(sku), quantity, created_at, seq)).encode()


def cancel_request(rid, created_at, seq):
    # -> body bytes.
    return ('{"type":"cancelRequest","orderRequestId":"%s","createdAt":%d,"seq":%d}'
            % (rid, created_at, seq)).encode()


def load(body, limit=_MAX_BODY):
    # bytes/str JSON -> (value, None) or (None, reason). Size is checked before parsing.
    if type(body) not in (bytes, bytearray, str):
        return None, "body"
    if len(body) > limit:
        return None, "size"
    try:
        return json.loads(body), None
    except Exception:  # ValueError, UnicodeError, RecursionError: all just "not JSON"
        return None, "json"


def parse_status(props, body):
    # An order-status C2D (property dict from topics.parse_c2d, body bytes) ->
    #   {"orderRequestId", "orderId", "status"[, "reason"][, "eta"]}  or a reason string:
    #   props, type, ct, body, size, json, doc, id, cid, status, orderId.
    # orderId is "" only for "failed". reason/eta that are not short strings are dropped
    # (display-only: a bad one must not cost the device the status itself).
    if type(props) is not dict:
        return "props"
    if props.get("messageType") != "orderStatus":
        return "type"
    if props.get("$.ct", "application/json") != "application/json":
        return "ct"
    doc, err = load(body)
    if err:
        return err
    if type(doc) is not dict:
        return "doc"
    rid = doc.get("orderRequestId")
    if not is_id(rid):
        return "id"
    if props.get("$.cid") != rid:
        return "cid"
    status = doc.get("status")
    if status not in STATUSES:
        return "status"
    oid = doc.get("orderId", "")
    if not is_order_id(oid, status == "failed"):
        return "orderId"
    out = {"orderRequestId": rid, "orderId": oid, "status": status}
    for k in ("reason", "eta"):
        v = doc.get(k)
        if type(v) is str and 0 < len(v) <= _MAX_NOTE:
            out[k] = v
    return out
