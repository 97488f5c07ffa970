# The direct methods (orders.method calls answer()): what each does and what it answers. Its own
# module because methods are rare: the runtime drops its code from the heap after each call
# (firmware/runtime/device.py), as run from .mpy files the bytecode lives in the GC heap. Pure,
# as the rest of the app.
from firmware.app import orders, schemas
from firmware.app.orders import CREATED_AT, KIND, ORDER_ID, RID, SEQ, STATUS

_WHY = {"late": "cancel window passed", "toolate": "already shipped",
        "nocancel": "order is finished"}


def answer(s, now, name, payload):
    # name: a str; payload: bytes, may be empty -> (status code, answer (JSON-able), actions).
    if name not in ("identify", "status", "cancel", "reboot"):
        return 404, {"error": "unknown method"}, []
    p, err = (None, None) if not payload else schemas.load(payload)
    if err:
        return 400, {"error": "payload is not JSON"}, []
    if name == "identify":
        # {"seconds": 1..60} optional, default 5: flash the display that long
        n = p.get("seconds", 5) if type(p) is dict else 5 if p is None else 0
        if type(n) is not int or not 1 <= n <= 60:
            return 400, {"error": "seconds: int 1..60"}, []
        orders.say(s, now, ("identify",), n)
        return 200, {"seconds": n}, [("flash", n)]
    if name == "status":
        return 200, status(s), []
    if name == "reboot":
        return 200, {"reboot": True}, [("reboot",)]
    # cancel {"orderRequestId": ID}: as a long press for that order; asking again is fine
    rid = p.get("orderRequestId") if type(p) is dict else None
    if not schemas.is_id(rid):
        return 400, {"error": "orderRequestId: 16 hex chars"}, []
    o = s["orders"].get(rid)
    if o is None:
        return 404, {"error": "no such order"}, []
    why, acts = orders.cancel(s, now, rid, o)
    if why and why[0] != "cancelagain":
        return 409, {"error": _WHY[why[0]]}, []
    return 200, {"orderRequestId": rid, "cancel": "requested"}, acts


def status(s):
    # The current state as a JSON-able dict (the "status" method's answer).
    out = {}
    for rid in s["orders"]:
        o = s["orders"][rid]
        out[rid] = {"status": o[STATUS], "orderId": o[ORDER_ID],
                    "createdAt": o[CREATED_AT], "seq": o[SEQ]}
    return {"state": orders.state(s), "online": bool(s["online"]), "orders": out,
            "outbox": [schemas.mid(e[RID], e[KIND]) for e in s["outbox"]],
            "settings": s["settings"], "rejected": s["rejected"], "ignored": s["ignored"]}
