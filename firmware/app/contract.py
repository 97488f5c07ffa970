# The order contract ("Messages on the wire" in firmware/app/README.md) as data: message types,
# order statuses and the rule between them, and every limit. The device uses it (schemas,
# settings, orders) and the order service imports it (host_tools/cloud/orders), so both sides
# hold one set of limits. Pure: no I/O.

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# message types (telemetry property messageType and the body's "type")
ORDER_REQUEST = "orderRequest"
CANCEL_REQUEST = "cancelRequest"
ORDER_STATUS = "orderStatus"

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


def is_request_id(x):
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
