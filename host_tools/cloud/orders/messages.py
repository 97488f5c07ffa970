"""Order messages on the wire (firmware/app/README.md): parse telemetry, build order-status C2D.

Pure: a hub event (a dict as ServiceClient.events returns it) in, a request object out;
a status out as the C2D body and properties to hand to ServiceClient.send_c2d.
"""
import json
from datetime import datetime, timezone

from firmware.app import schemas

# The contract (message types, limits) is the device's own schemas module, as the hub imports
# firmware.iothub: one set of limits on both sides of the wire.
ORDER_REQUEST = schemas.ORDER
CANCEL_REQUEST = schemas.CANCEL
ORDER_STATUS = schemas.ORDER_STATUS
STATUS_QUERY = schemas.STATUS_QUERY
_KINDS = (ORDER_REQUEST, CANCEL_REQUEST, STATUS_QUERY)

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
C2D_PROPERTIES = {"messageType": ORDER_STATUS}


class OrderRequest:
    __slots__ = ("request_id", "sku", "quantity", "created_at", "seq")

    def __init__(self, request_id, sku, quantity, created_at=None, seq=None):
        self.request_id, self.sku, self.quantity = request_id, sku, quantity
        self.created_at, self.seq = created_at, seq


class CancelRequest:
    __slots__ = ("request_id", "created_at", "seq")

    def __init__(self, request_id, created_at=None, seq=None):
        self.request_id, self.created_at, self.seq = request_id, created_at, seq


class StatusQuery:
    """The device asks for the latest status of its open orders (reconciliation)."""
    __slots__ = ("request_ids",)

    def __init__(self, request_ids):
        self.request_ids = request_ids


class Malformed(ValueError):
    """An order message we cannot act on as sent.

    request_id is set when the message was an order request whose id could be read, so the
    service can answer `failed` (the device would otherwise re-send it forever)."""

    def __init__(self, reason, kind=None, request_id=None):
        super().__init__(reason)
        self.reason, self.kind, self.request_id = reason, kind, request_id


def _int_or_none(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def valid_request_id(value):
    return schemas.is_id(value)


def parse_event(event):
    """OrderRequest | CancelRequest | StatusQuery for order telemetry, None for other telemetry.

    Raises Malformed when the event claims to be an order message but cannot be read."""
    props = event.get("properties") or {}
    declared = props.get("messageType") if isinstance(props, dict) else None
    ours = declared in _KINDS
    body = event.get("body")
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            if ours:
                raise Malformed("body is not UTF-8", declared) from None
            return None
    if not isinstance(body, str):
        if ours:
            raise Malformed("no body", declared)
        return None
    try:
        data = json.loads(body)
    except ValueError:
        if ours:
            raise Malformed("body is not JSON", declared) from None
        return None
    if not isinstance(data, dict):
        if ours:
            raise Malformed("body is not a JSON object", declared)
        return None
    kind = data.get("type", declared)
    if kind not in _KINDS:
        if ours:
            raise Malformed(f"body type {kind!r} is not {declared}", declared)
        return None
    if declared is not None and declared != kind:
        raise Malformed(f"messageType {declared!r} but body type {kind!r}", kind)
    if kind == STATUS_QUERY:
        return _status_query(data)
    request_id = data.get("orderRequestId")
    if not valid_request_id(request_id):
        raise Malformed("orderRequestId must be %d lowercase hex characters" % schemas.REQUEST_ID_LEN, kind)
    created_at, seq = _int_or_none(data.get("createdAt")), _int_or_none(data.get("seq"))
    if kind == CANCEL_REQUEST:
        return CancelRequest(request_id, created_at, seq)
    sku = data.get("sku")
    if not schemas.is_sku(sku):
        raise Malformed("sku must be 1-%d characters of A-Z a-z 0-9 - _ ." % schemas.SKU_MAX,
                        kind, request_id)
    quantity = data.get("quantity")
    if not schemas.is_quantity(quantity):
        raise Malformed("quantity must be an integer 1-%d" % schemas.QUANTITY_MAX, kind, request_id)
    return OrderRequest(request_id, sku, quantity, created_at, seq)


def _status_query(data):
    ids = data.get("orderRequestIds")
    if not isinstance(ids, list) or not 0 < len(ids) <= schemas.QUERY_MAX:
        raise Malformed("orderRequestIds must be a list of 1-%d ids" % schemas.QUERY_MAX,
                        STATUS_QUERY)
    if not all(valid_request_id(i) for i in ids):
        raise Malformed("orderRequestIds must be %d lowercase hex characters each"
                        % schemas.REQUEST_ID_LEN, STATUS_QUERY)
    return StatusQuery(list(dict.fromkeys(ids)))   # an id listed twice is answered once


def iso_utc(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(request_id, order_id, status, reason=None, eta=None):
    """The order-status C2D body: orderId "" when no order was placed (failed early)."""
    body = {"orderRequestId": request_id, "orderId": order_id or "", "status": status}
    if reason:
        body["reason"] = reason[:schemas.NOTE_MAX]   # a longer one the device would drop
    if eta is not None:
        body["eta"] = iso_utc(eta)
    return body


def encode(body):
    return json.dumps(body, separators=(",", ":"))
