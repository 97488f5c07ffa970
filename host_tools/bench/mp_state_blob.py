# The largest state blob the order core can be driven to save, against the size beyond which
# restore refuses a blob (run by host_tools/bench on MicroPython; tests/core/test_app_state_blob.py
# checks the bound on both interpreters). Only the app's public API: events in, the last
# ("save", blob) out. Prints one JSON line.
#
# The worst case: every setting at its longest, sequence numbers of 9 digits, the most open
# orders the settings allow, each with a cancel waiting in the outbox, plus the finished orders
# kept for the screen; the cloud's strings (orderId, reason) at their longest in whichever
# character costs the most bytes once JSON-encoded. Two shapes of open order are tried (queued:
# both requests in the outbox; accepted: an orderId and a note stored instead).
import json

from firmware.app import orders, schemas, settings

T = 1800000000                  # createdAt: 10 digits until the year 2286
SEQ = 999999000                 # the sequence numbers stay at 9 digits
FILLS = ("x", '"', "\x01", "\u00e9", "\U0001F600")   # 1, 2, 6 and multi-byte in JSON
LONG = 64                       # longer than any limit on orderId and reason


def _last_save(acts, blob):
    for a in acts:
        if a[0] == "save":
            blob = a[1]
    return blob


def _wire(fill, n):
    # n times fill as JSON string text, as short as the cloud could send it (raw UTF-8)
    c = json.dumps(fill)[1:-1] if fill < " " or fill in "\"\\" else fill
    return c * n


def _status(rid, status, fill):
    # the order-status C2D with the longest orderId and reason (up to LONG characters each)
    # that the device still takes (a body has a size limit too)
    props = {"messageType": "orderStatus", "$.cid": rid, "$.ct": "application/json"}
    for n in range(LONG, -1, -1):
        body = ('{"orderRequestId":"%s","orderId":"%s","status":"%s","reason":"%s"}'
                % (rid, _wire(fill, LONG), status, _wire(fill, n))).encode()
        if type(schemas.parse_status(props, body)) is dict:
            return props, body
    body = ('{"orderRequestId":"%s","orderId":"x","status":"%s"}' % (rid, status)).encode()
    return props, body


def _rid(i):
    return "%016x" % (0xabcdef0123456789 - i)


def build(fill, accepted):
    # -> the last blob saved after driving a device to the worst case with strings of `fill`
    s = orders.new("1.0.0")
    blob = _last_save(orders.restore(s, T, None), None)
    top = {k: settings.RANGES[k][1] for k in settings.RANGES}
    top["sku"] = "S" * schemas.SKU_MAX
    top["$version"] = 1
    blob = _last_save(orders.twin(s, T, top), blob)
    d = json.loads(blob)
    d["seq"] = SEQ
    s = orders.new("1.0.0")
    blob = _last_save(orders.restore(s, T, json.dumps(d).encode()), blob)
    i = 0
    for _ in range(orders.KEEP_FINISHED):
        rid = _rid(i)
        i += 1
        blob = _last_save(orders.press(s, T, rid), blob)
        blob = _last_save(orders.c2d(s, T, *_status(rid, "failed", fill)), blob)
    for _ in range(top["maxOpenOrders"]):
        rid = _rid(i)
        i += 1
        blob = _last_save(orders.press(s, T, rid), blob)
        if accepted:
            blob = _last_save(orders.c2d(s, T, *_status(rid, "payment_authorized", fill)), blob)
        payload = json.dumps({"orderRequestId": rid}).encode()
        blob = _last_save(orders.method(s, T, rid, "cancel", payload), blob)
    return blob


def worst():
    # -> (bytes, which case)
    best = (0, "")
    for accepted in (False, True):
        for fill in FILLS:
            n = len(build(fill, accepted))
            if n > best[0]:
                best = (n, "%s orders, strings of %r" % ("accepted" if accepted else "queued", fill))
    return best


if __name__ == "__main__":
    n, case = worst()
    print(json.dumps({"state_blob_max_bytes": n, "state_blob_limit_bytes": orders.MAX_BLOB,
                      "case": case}))
