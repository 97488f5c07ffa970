# Order messages on the wire (the contract: "Messages on the wire" in firmware/app/README.md):
# build the device's requests, validate the cloud's order-status messages. Pure: no I/O,
# never raises on network input.
#
# Bodies are written out by hand, field by field, so the bytes are the same on MicroPython and
# CPython (MicroPython dicts do not keep insertion order) and a re-send is byte-identical.
import json

from firmware.app import contract

ORDER = contract.ORDER_REQUEST
CANCEL = contract.CANCEL_REQUEST
STATUSES = contract.STATUSES
is_id = contract.is_request_id     # an orderRequestId


def mid(rid, kind):
    # The $.mid of a request: the orderRequestId itself, "<id>-cancel" for its cancel.
    return rid if kind == ORDER else rid + "-cancel"


def props(rid, kind):
    # Telemetry properties for firmware.iothub.topics.telemetry(device_id, props).
    return {"$.mid": mid(rid, kind), "$.ct": "application/json", "$.ce": "utf-8",
            "messageType": kind}


def order_request(rid, sku, quantity, created_at, seq):
    # -> body bytes. sku is a validated setting (ASCII), the numbers are ints.
    return ('{"type":"orderRequest","orderRequestId":"%s","sku":%s,"quantity":%d,'
            '"createdAt":%d,"seq":%d}' % (rid, json.dumps(sku), quantity, created_at, seq)).encode()


def cancel_request(rid, created_at, seq):
    # -> body bytes.
    return ('{"type":"cancelRequest","orderRequestId":"%s","createdAt":%d,"seq":%d}'
            % (rid, created_at, seq)).encode()


def load(body, limit=contract.STATUS_BODY_MAX):
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
    if props.get("messageType") != contract.ORDER_STATUS:
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
    if not contract.is_order_id(oid, status == "failed"):
        return "orderId"
    out = {"orderRequestId": rid, "orderId": oid, "status": status}
    for k in ("reason", "eta"):
        v = doc.get(k)
        if type(v) is str and 0 < len(v) <= contract.NOTE_MAX:
            out[k] = v
    return out
