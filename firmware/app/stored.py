# The order state's stored blob read back at boot (orders.restore calls load()): every part
# checked on its own against what this firmware writes (orders._blob). Pure, as the rest of
# the app. Its own module because only boot needs it: the runtime drops its code from the heap
# once the state is restored (firmware/runtime/device.py), as run from .mpy files the bytecode
# lives in the GC heap.
from firmware.app import schemas, screens, settings
from firmware.app.orders import (BLOB_VERSION, BODY, CANCEL_ASKED, CREATED_AT, KIND, MAX_BLOB,
                                 NOTE, ORDER_ID, RID, SEQ, STATUS, outbox_entry, prune)


def load(s, blob):
    # -> True when the blob was clean. A blob that is not a JSON object of a known version
    # gives nothing. Otherwise each part is checked on its own: settings that fail today's
    # checks fall back to their defaults (counted as "cfg", saved again); every order and
    # outbox entry that passes the structural checks is kept, the rest is refused.
    d, err = schemas.load(blob, MAX_BLOB)
    if err or type(d) is not dict:
        return False
    if d.get("version") == BLOB_VERSION:
        names = ("settings", "outbox")
    elif d.get("v") == 1:
        names = ("cfg", "box")
    else:
        return False
    acc, rej = settings.apply(settings.DEFAULTS, d.get(names[0]), True)
    s["settings"] = dict(settings.DEFAULTS)
    s["settings"].update(acc)
    if rej:
        s["ignored"]["cfg"] = s["ignored"].get("cfg", 0) + len(rej)
        s["unsaved"] = 1
    clean = True
    seq = d.get("seq")
    if type(seq) is not int or seq < 0:
        seq, clean = 0, False
    orders = {}
    stored = d.get("orders")
    if type(stored) is not dict:
        stored, clean = {}, False
    for rid in stored:
        o = stored[rid]
        if _good_order(rid, o):
            o.append(0)                     # heard at: nothing since boot
            orders[rid] = o
            seq = max(seq, o[SEQ])
        else:
            clean = False
    # at most as many open orders as any setting allows (the oldest are kept): the state
    # stays as small as a device can make it, whatever the blob holds
    opened = [(orders[rid][SEQ], rid) for rid in orders
              if not schemas.is_final(orders[rid][STATUS])]
    opened.sort()
    for _, rid in opened[settings.RANGES["maxOpenOrders"][1]:]:
        del orders[rid]
        clean = False
    outbox = []
    stored = d.get(names[1])
    if type(stored) is not list:
        stored, clean = [], False
    for e in stored:
        good = _good_entry(orders, outbox, e)
        if good is None:
            clean = False
        else:
            outbox.append([e[KIND], e[RID], good[0], 0, 0])
            seq = max(seq, good[1])
    # a queued order must still have its request in the outbox, or it never leaves
    for rid in list(orders):
        if orders[rid][STATUS] == "queued" and outbox_entry(outbox, rid, schemas.ORDER) is None:
            del orders[rid]
            clean = False
    kept = [e for e in outbox if e[RID] in orders]      # the cancels of orders just refused
    clean = clean and len(kept) == len(outbox)
    s["seq"] = seq
    s["orders"] = orders
    s["outbox"] = kept
    n = len(orders)
    prune(s)                               # this firmware keeps KEEP_FINISHED at most
    return clean and n == len(s["orders"])


def _good_order(rid, o):
    # A stored order as this firmware writes them (orderId as the contract allows it, the
    # note as the screen shows it).
    return (schemas.is_id(rid) and type(o) is list and len(o) == 6
            and type(o[STATUS]) is str and o[STATUS] in schemas.STATUS_RULE
            and schemas.is_order_id(o[ORDER_ID], True) and type(o[CREATED_AT]) is int
            and type(o[SEQ]) is int and o[SEQ] >= 0 and o[CANCEL_ASKED] in (0, 1)
            and type(o[NOTE]) is str and screens.fit(o[NOTE]) == o[NOTE])


def _good_entry(orders, outbox, e):
    # A stored outbox entry [kind, orderRequestId, body text] -> (body bytes to send, its
    # seq), or None. The body must be exactly what this firmware builds from its own fields
    # (MicroPython's json accepts malformed text, so parsing is not enough), for an order the
    # blob holds that waits for it: an order request while queued, a cancel once one was
    # asked for and while the order is open; one entry of each kind per order.
    if type(e) is not list or len(e) != 3 or type(e[BODY]) is not str:
        return None
    kind, rid = e[KIND], e[RID]
    o = orders.get(rid) if type(rid) is str else None
    if o is None or outbox_entry(outbox, rid, kind) is not None:
        return None
    d = schemas.load(e[BODY], MAX_BLOB)[0]
    if type(d) is not dict:
        return None
    at, seq = d.get("createdAt"), d.get("seq")
    if type(at) is not int or type(seq) is not int or seq < 0:
        return None
    if kind == schemas.ORDER and o[STATUS] == "queued":
        sku, n = d.get("sku"), d.get("quantity")
        if not schemas.is_sku(sku) or not schemas.is_quantity(n):
            return None
        body = schemas.order_request(rid, sku, n, o[CREATED_AT], o[SEQ])
    elif kind == schemas.CANCEL and o[CANCEL_ASKED] and not schemas.is_final(o[STATUS]):
        body = schemas.cancel_request(rid, at, seq)
    else:
        return None
    return (body, seq) if body.decode() == e[BODY] else None
