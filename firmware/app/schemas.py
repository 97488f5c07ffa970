# The order contract ("Messages on the wire" in firmware/app/README.md) in code: message types,
# order statuses and the rule between them, every limit; building the device's requests and
# validating the cloud's order-status messages. The device uses it (orders, settings) and the
# order service imports it (host_tools/cloud/orders), so both sides hold one set of limits.
# Pure: no I/O, never raises on network input.
#
# Bodies are written out by hand, field by field, so the bytes are the same on MicroPython and
# CPython (MicroPython dicts do not keep insertion order) and a re-send is byte-identical.
import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# message types (telemetry property messageType and the body's "type")
ORDER = "orderRequest"
CANCEL = "cancelRequest"
ORDER_STATUS = "orderStatus"
STATUS_QUERY = "statusQuery"  # device -> cloud: "what is the status of these open orders?"

# The status rule, all of it, in one table: status -> (rank, a cancel is still honoured).
# A status follows the current one when its rank is higher and the current rank is not
# FINAL; the same status again is a duplicate; anything else is stale. "queued" is the
# device's own (requested, no status yet); the cloud sends the other six.
FINAL = const(9)
STATUS_RULE = {
    "queued": (0, True),
    "accepted": (1, True),
    "payment_authorized": (2, True),
    "shipped": (3, False),
    "delivered": (FINAL, False),
    "cancelled": (FINAL, False),
    "failed": (FINAL, False),
}
STATUSES = ("accepted", "payment_authorized", "shipped", "delivered", "cancelled", "failed")

# limits
REQUEST_ID_LEN = const(16)    # orderRequestId: exactly this many lowercase hex characters
SKU_MAX = const(32)           # sku: 1..SKU_MAX of SKU_CHARS
SKU_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
QUANTITY_MAX = const(99)      # quantity: 1..QUANTITY_MAX
ORDER_ID_MAX = const(64)      # orderId: up to this many printable ASCII characters
NOTE_MAX = const(64)          # reason, eta: up to this many characters (longer: dropped)
QUERY_MAX = const(10)         # orderRequestIds in one statusQuery (= maxOpenOrders' ceiling)
STATUS_BODY_MAX = const(512)  # an order-status body in bytes (a real one is ~150)
CLOCK_SET_EPOCH = 1704067200  # 2024-01-01: an earlier clock is not set (not const: > 31 bits)

_HEX = "0123456789abcdef"


def follows(status, current):
    # True when `status` from the cloud moves an order that is `current` forward.
    rank = STATUS_RULE[current][0]
    return rank != FINAL and STATUS_RULE[status][0] > rank


def is_final(status):
    return STATUS_RULE[status][0] == FINAL


def cancel_honoured(status):
    return STATUS_RULE[status][1]


def is_id(x):
    # An orderRequestId: REQUEST_ID_LEN lowercase hex characters.
    if type(x) is not str or len(x) != REQUEST_ID_LEN:
        return False
    for c in x:
        if c not in _HEX:
            return False
    return True


def is_sku(x):
    # A product: 1..SKU_MAX characters of SKU_CHARS.
    if type(x) is not str or not 0 < len(x) <= SKU_MAX:
        return False
    for c in x:
        if c not in SKU_CHARS:
            return False
    return True


def is_quantity(x):
    return type(x) is int and 1 <= x <= QUANTITY_MAX    # bool is not int here (nor on MP)


def is_order_id(x, empty=False):
    # An orderId from the cloud: up to ORDER_ID_MAX printable ASCII characters ("" only if
    # `empty`: a failed order may have none).
    if type(x) is not str or len(x) > ORDER_ID_MAX or not (x or empty):
        return False
    for c in x:
        if not " " <= c <= "~":
            return False
    return True


def mid(rid, kind):
    # The $.mid of a request: the orderRequestId itself, "<id>-cancel" for its cancel.
    return rid if kind == ORDER else rid + "-cancel"


def query_mid(at):
    # The $.mid of a statusQuery: "q" and the time it was asked. A device asks at most once per
    # resendSeconds (>= 10 s), so it names one query; a redelivery of that query keeps it, and
    # it never looks like a request's $.mid (16 hex chars, "-cancel").
    return "q%d" % at


def props(rid, kind):
    # Telemetry properties for firmware.iothub.topics.telemetry(device_id, props).
    return _props(mid(rid, kind), kind)


def query_props(at):
    return _props(query_mid(at), STATUS_QUERY)


def _props(m, kind):
    return {"$.mid": m, "$.ct": "application/json", "$.ce": "utf-8", "messageType": kind}


def order_request(rid, sku, quantity, created_at, seq):
    # -> body bytes. sku is a validated setting (ASCII), the numbers are ints.
    return ('{"type":"orderRequest","orderRequestId":"%s","sku":%s,"quantity":%d,'
            '"createdAt":%d,"seq":%d}' % (rid, json.dumps(sku), quantity, created_at, seq)).encode()


def cancel_request(rid, created_at, seq):
    # -> body bytes.
    return ('{"type":"cancelRequest","orderRequestId":"%s","createdAt":%d,"seq":%d}'
            % (rid, created_at, seq)).encode()


def status_query(rids):
    # -> body bytes: {"type":"statusQuery","orderRequestIds":[ID, ...]}, 1..QUERY_MAX ids (the
    # caller's, validated: they are keys of its own orders).
    return ('{"type":"statusQuery","orderRequestIds":["%s"]}'
            % '","'.join(rids[:QUERY_MAX])).encode()


def load(body, limit=STATUS_BODY_MAX):
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
    if props.get("messageType") != ORDER_STATUS:
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
        if type(v) is str and 0 < len(v) <= NOTE_MAX:
            out[k] = v
    return out
