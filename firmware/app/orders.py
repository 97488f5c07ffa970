# The order button's controller: events in, actions out. Pure: no I/O, no clock, no randomness.
#
#   s = orders.new("1.0.0")
#   acts = orders.restore(s, now, blob)        # blob: bytes the runtime saved last, or None
#   acts = orders.press(s, now, rand_hex)      # ... one function per event, see README.md
#
# Every event function takes the state dict `s` and `now` (Unix seconds, int) first, changes
# `s` in place and returns a list of action tuples for the runtime to perform in order:
#   ("save", blob)                         store blob atomically (always first when present)
#   ("show", screen_id, lines)             display a screen (only when it changed)
#   ("brightness", 0..255)                 set the display brightness
#   ("report", patch dict)                 twin reported patch; the runtime adds "freeHeap"
#   ("publish", props, body, tag)          QoS 1 telemetry; call published(s, now, tag) on PUBACK
#   ("method_response", rid, status, payload)   payload is JSON-able; the runtime encodes it
#   ("flash", seconds)                     blink the display/LED (identify)
#   ("reboot",)                            always last
# Hostile input (C2D, twin, method payloads, the stored blob) never raises: it is ignored
# and counted in s["ign"] (reported as "ignored"). Events that make no sense in the current
# state (a PUBACK for nothing, a press that may not order) leave the orders unchanged.
import json

from firmware.app import schemas, screens, settings

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# an order: [status, orderId, createdAt, seq, cancel requested 0/1, note]
_ST = const(0)
_OID = const(1)
_AT = const(2)
_SEQ = const(3)
_CXL = const(4)
_NOTE = const(5)
# an outbox entry: [kind, orderRequestId, body bytes, last publish time, PUBACKed 0/1]
_KIND = const(0)
_RID = const(1)
_BODY = const(2)
_TPUB = const(3)
_ACKED = const(4)

_BLOB_V = const(1)
_MSG_S = const(5)       # a gesture's answer stays this long, then the home screen returns
_KEEP_DONE = const(2)   # finished orders kept for the screen and duplicate detection
_MAX_NOTE = const(32)
_MAX_BLOB = const(16384)
_MIN_EPOCH = 1704067200  # 2024-01-01: an earlier clock is not set (not const: > 31 bits)

# Order progress, the one transition rule as data: a status from the cloud applies when its
# rank is higher than the order's current rank and the order is not finished (rank _DONE).
# Equal status = duplicate, anything else = stale; both are ignored and counted.
_DONE = const(9)
_WHY = {"late": "cancel window passed", "toolate": "already shipped",
        "nocancel": "order is finished"}
RANK = {"queued": 0, "accepted": 1, "payment_authorized": 2, "shipped": 3,
        "delivered": _DONE, "cancelled": _DONE, "failed": _DONE}


def new(version):
    return {
        "ver": version,
        "cfg": dict(settings.DEFAULTS),   # settings in force (persisted)
        "rej": {},                        # rejected settings: key -> reason
        "dv": 0,                          # highest desired $version applied on this connection
        "seq": 0,                         # last device sequence number used (persisted)
        "orders": {},                     # orderRequestId -> order (persisted)
        "box": [],                        # outbox entries, oldest first (persisted)
        "ign": {},                        # ignored input: reason -> count
        "on": 0, "ever": 0, "auth": 0,    # online; ever connected; credentials refused
        "tw": 0,                          # a whole twin was read since boot (settings known)
        "recon": 0,                       # reconnects since boot
        "msg": None, "until": 0,          # a gesture's answer screen and when it ends
        "clk": False,                     # the clock was set at the last event
        "shown": None,                    # last screen sent to the display
        "rep": None,                      # reported state as the cloud has it (None: offline)
        "dirty": 0,                       # persisted state changed: save before anything else
    }


# --- events ------------------------------------------------------------------------------

def restore(s, now, blob):
    # Boot: load what the last save action stored. None/b"" is a fresh device. A corrupt or
    # old blob is dropped (counted as "blob") and a clean one saved over it. A stored setting
    # today's checks refuse (a firmware update narrowed a range) goes back to its default
    # (counted as "cfg"): the orders and the outbox the customer pressed for are kept.
    if blob:
        if not _load(s, blob):
            _count(s, "blob")
            s["dirty"] = 1
    acts = [("brightness", s["cfg"]["displayBrightness"])]
    return _out(s, now, acts)


def press(s, now, rand_hex):
    # Order once. rand_hex: 16 lowercase hex chars from a real random source (the new
    # orderRequestId); anything else raises ValueError (a runtime bug, not user input).
    if not schemas.is_id(rand_hex) or rand_hex in s["orders"]:
        raise ValueError("rand_hex must be 16 new lowercase hex chars")
    s["msg"] = None
    cfg = s["cfg"]
    n = _open(s)
    if now < _MIN_EPOCH:
        _say(s, now, ("notime",))
    elif not cfg["sku"]:
        _say(s, now, home(s, now))      # "setup" or, while the twin is unread, "connecting"
    elif n >= cfg["maxOpenOrders"]:
        _say(s, now, ("busy", n, cfg["maxOpenOrders"]))
    else:
        s["seq"] += 1
        s["orders"][rand_hex] = ["queued", "", now, s["seq"], 0, ""]
        body = schemas.order_request(rand_hex, cfg["sku"], cfg["quantity"], now, s["seq"])
        s["box"].append([schemas.ORDER, rand_hex, body, 0, 0])
        s["dirty"] = 1
    return _out(s, now, _send(s, now, False))


def long_press(s, now):
    # Cancel the newest open order if it is still inside the cancel window.
    s["msg"] = None
    o = _latest(s, True)
    if o is None:
        _say(s, now, ("nocancel",))
        return _out(s, now, [])
    why = _cancel(s, now, o)
    if why:
        _say(s, now, why)
    return _out(s, now, _send(s, now, False))


def double_press(s, now):
    # Show a status summary.
    s["msg"] = None
    o = _latest(s)
    link = "Online" if s["on"] else "Offline, %d out" % len(s["box"])
    _say(s, now, ("info", _open(s), screens.LABEL[o[1][_ST] if o else ""], link))
    return _out(s, now, [])


def c2d(s, now, props, body):
    # An order-status message (props from topics.parse_c2d, body bytes).
    m = schemas.parse_status(props, body)
    if isinstance(m, str):
        _count(s, m)
        return _out(s, now, [])
    rid = m["orderRequestId"]
    o = s["orders"].get(rid)
    if o is None:
        _count(s, "unknown")                 # not ours, or finished long ago
    elif o[_OID] and m["orderId"] and m["orderId"] != o[_OID]:
        _count(s, "orderId")                 # same request, another order: not trusted
    else:
        st = m["status"]
        note = (m.get("reason") or m.get("eta") or "")[:_MAX_NOTE]
        _ack(s, rid, st)                     # any status for it: the cloud has the request
        if st == o[_ST]:
            _count(s, "duplicate")
            if note:                         # e.g. "cancel refused: already shipped"
                _say(s, now, (st, o[_OID], note, _hint(s)))
        elif RANK[o[_ST]] == _DONE or RANK[st] <= RANK[o[_ST]]:
            _count(s, "stale")
        else:
            o[_ST] = st
            o[_OID] = m["orderId"] or o[_OID]
            o[_NOTE] = note
            s["dirty"] = 1
            s["msg"] = None
            if _latest(s)[0] != rid:         # the home screen shows another order: say it
                _say(s, now, (st, o[_OID], note, _hint(s)))
            _prune(s)
    return _out(s, now, [])


def connected(s, now):
    # The link is up (after every connect): send the whole outbox, report everything.
    s["recon"] += s["ever"]
    s["on"] = s["ever"] = 1
    s["auth"] = 0
    s["rep"] = {}
    s["dv"] = 0   # a twin's version only rises while it exists; a re-created device starts anew
    return _out(s, now, _send(s, now, True))


def disconnected(s, now, reason=None):
    # The link is down; reason "auth" when the hub refused the credentials (CONNACK 4/5).
    s["on"] = 0
    s["rep"] = None
    if reason == "auth":
        s["auth"] = 1
    return _out(s, now, [])


def published(s, now, tag):
    # The hub PUBACKed the publish action with this tag: the entry is "sent" (not done: only
    # an order-status C2D removes it). An unknown tag is ignored.
    for e in s["box"]:
        if schemas.mid(e[_KIND], e[_RID]) == tag:
            e[_ACKED] = 1
    return _out(s, now, [])


def twin(s, now, doc, version=None):
    # Desired settings: a patch (topic .../desired/?$version=n) or a full twin GET response
    # ({"desired": {...}, "reported": {...}}). doc may be bytes/str JSON or already a dict.
    # The desired $version (`version`, else the one in the document) orders them: the hub can
    # answer a GET built from version n after patch n+1 arrived, so a full twin older than
    # the last applied one, or a patch not newer, changes no setting.
    if type(doc) is not dict:
        doc = schemas.load(doc, _MAX_BLOB)[0]
        if type(doc) is not dict:
            _count(s, "twin")
            return _out(s, now, [])
    full = type(doc.get("desired")) is dict
    if full:
        s["tw"] = 1
        rep = doc.get("reported")
        if type(rep) is dict and s["on"]:    # what the cloud has: report only the difference
            s["rep"] = {k: rep[k] for k in rep if type(k) is str and k[:1] != "$"}
        doc = doc["desired"]
    v = doc.get("$version") if version is None else version
    if type(v) is int:
        if v < s["dv"] or (v == s["dv"] and not full):
            if v < s["dv"]:
                _count(s, "oldtwin")
            return _out(s, now, [])
        s["dv"] = v
    acc, rej = settings.apply(s["cfg"], doc, full)
    acts = []
    cfg = s["cfg"]
    for k in acc:
        if cfg[k] != acc[k]:
            s["dirty"] = 1
            if k == "displayBrightness":
                acts.append(("brightness", acc[k]))
        cfg[k] = acc[k]
    s["rej"] = settings.rejected({} if full else s["rej"], doc, acc, rej)
    for k in rej:
        _say(s, now, ("rejected", k, rej[k]))
        break
    return _out(s, now, acts)


def method(s, now, rid, name, payload):
    # A direct method (name and rid from topics.parse_method_request, payload bytes).
    # identify {"seconds": 1..60}?, status, cancel {"orderRequestId": ID}, reboot.
    p, err = (None, None) if not payload else schemas.load(payload)
    acts = []
    if name not in ("identify", "status", "cancel", "reboot"):
        code, res = 404, {"error": "unknown method"}
    elif err:
        code, res = 400, {"error": "payload is not JSON"}
    elif name == "identify":
        n = p.get("seconds", 5) if type(p) is dict else 5 if p is None else 0
        if type(n) is not int or not 1 <= n <= 60:
            code, res = 400, {"error": "seconds: int 1..60"}
        else:
            code, res = 200, {"seconds": n}
            _say(s, now, ("identify",), n)
            acts.append(("flash", n))
    elif name == "status":
        code, res = 200, status(s)
    elif name == "cancel":
        oid = p.get("orderRequestId") if type(p) is dict else None
        o = s["orders"].get(oid) if schemas.is_id(oid) else None
        if not schemas.is_id(oid):
            code, res = 400, {"error": "orderRequestId: 16 hex chars"}
        elif o is None:
            code, res = 404, {"error": "no such order"}
        else:
            why = _cancel(s, now, (oid, o))
            if why and why[0] != "cancelagain":
                code, res = 409, {"error": _WHY[why[0]]}
            else:
                code, res = 200, {"orderRequestId": oid, "cancel": "requested"}
                acts = _send(s, now, False)
    else:  # reboot
        code, res = 200, {"reboot": True}
    acts.insert(0, ("method_response", rid, code, res))
    if name == "reboot":
        acts.append(("reboot",))
    return _out(s, now, acts)


def tick(s, now):
    # Call about once a second: ends answer screens, notices the clock got set, re-sends what
    # waited resendSeconds. Allocates next to nothing when none of that is due.
    acts = _send(s, now, False, s["cfg"]["resendSeconds"]) if s["on"] else []
    if acts or s["clk"] != (now >= _MIN_EPOCH) or (s["msg"] and _over(s, now)):
        return _out(s, now, acts)
    return acts


# --- views -------------------------------------------------------------------------------

def status(s):
    # The current state as a JSON-able dict (the "status" method's answer).
    orders = {}
    for rid in s["orders"]:
        o = s["orders"][rid]
        orders[rid] = {"status": o[_ST], "orderId": o[_OID], "createdAt": o[_AT], "seq": o[_SEQ]}
    return {"state": _state(s), "online": bool(s["on"]), "orders": orders,
            "outbox": [schemas.mid(e[_KIND], e[_RID]) for e in s["box"]],
            "settings": s["cfg"], "rejected": s["rej"], "ignored": s["ign"]}


def reported(s):
    # The reported properties the app owns (the runtime adds freeHeap).
    o = _latest(s)
    return {"firmwareVersion": s["ver"], "state": _state(s), "openOrders": _open(s),
            "lastStatus": o[1][_ST] if o else "", "reconnectCount": s["recon"],
            "outboxDepth": len(s["box"]), "settings": dict(s["cfg"]),
            "rejected": dict(s["rej"]), "ignored": dict(s["ign"])}


def home(s, now):
    # The screen to show when no gesture answer is up: a pure function of the state.
    if s["auth"]:
        return ("auth",)
    if now < _MIN_EPOCH:
        return ("notime",)
    if not s["cfg"]["sku"]:
        # No product yet. It is set in the twin: "setup needed" only once the twin was read.
        if s["tw"]:
            return ("setup",)
        return ("offline",) if s["ever"] and not s["on"] else ("connecting",)
    o = _latest(s)
    hint = _hint(s)
    if o is None:
        if s["on"]:
            return ("ready", s["cfg"]["quantity"], s["cfg"]["sku"])
        return ("offline",) if s["ever"] else ("connecting",)
    o = o[1]
    if o[_ST] == "queued":
        e = _entry(s, schemas.ORDER, _latest(s)[0])
        if not s["on"] or e is None:
            return ("saved", "", "", hint)
        return ("sent" if e[_ACKED] else "sending", "", "", hint)
    return (o[_ST], o[_OID], o[_NOTE], hint)


# --- helpers -----------------------------------------------------------------------------

def _out(s, now, acts):
    # Every event ends here: save first if needed, then the screen, then the report, then
    # what the event produced.
    head = []
    if s["msg"] and _over(s, now):
        s["msg"] = None
    s["clk"] = now >= _MIN_EPOCH
    if s["dirty"]:
        s["dirty"] = 0
        head.append(("save", _blob(s)))
    scr = screens.screen(*(s["msg"] or home(s, now)))
    if scr != s["shown"]:
        s["shown"] = scr
        head.append(("show", scr[0], scr[1]))
    if s["on"] and s["rep"] is not None:
        r = reported(s)
        p = settings.diff(s["rep"], r)
        if p:
            s["rep"] = r
            head.append(("report", p))
    return head + acts


def _over(s, now):
    return not 0 < s["until"] - now <= 3600   # over (or the clock jumped)


def _say(s, now, scr, seconds=_MSG_S):
    s["msg"] = scr
    s["until"] = now + seconds


def _count(s, reason):
    s["ign"][reason] = s["ign"].get(reason, 0) + 1


def _hint(s):
    if s["on"]:
        return ""
    return "Offline" if s["ever"] else "Connecting..."


def _state(s):
    if not s["cfg"]["sku"]:
        return "setup"
    return "ordering" if _open(s) else "ready"


def _open(s):
    n = 0
    for rid in s["orders"]:
        if RANK[s["orders"][rid][_ST]] != _DONE:
            n += 1
    return n


def _latest(s, open_only=False):
    # (rid, order) with the highest seq, or None.
    best = None
    for rid in s["orders"]:
        o = s["orders"][rid]
        if (not open_only or RANK[o[_ST]] != _DONE) and (best is None or o[_SEQ] > best[1][_SEQ]):
            best = (rid, o)
    return best


def _entry(s, kind, rid):
    for e in s["box"]:
        if e[_KIND] == kind and e[_RID] == rid:
            return e
    return None


def _cancel(s, now, pair):
    # Queue a cancel for (rid, order) -> None, or the screen that says why not.
    rid, o = pair
    if RANK[o[_ST]] == _DONE:
        return ("nocancel",)
    if RANK[o[_ST]] >= RANK["shipped"]:
        return ("toolate", screens.LABEL[o[_ST]])
    if o[_CXL]:
        return ("cancelagain",)
    if now - o[_AT] > s["cfg"]["cancelWindowSeconds"]:
        return ("late", s["cfg"]["cancelWindowSeconds"])
    s["seq"] += 1
    o[_CXL] = 1
    s["box"].append([schemas.CANCEL, rid, schemas.cancel_request(rid, now, s["seq"]), 0, 0])
    s["dirty"] = 1
    _say(s, now, ("cancelling", o[_OID]) if s["on"] else ("cancelsaved",))
    return None


def _ack(s, rid, status):
    # The first status for a request removes its order entry; a cancel entry goes once the
    # hub has it (PUBACKed) or the order is finished.
    keep = []
    for e in s["box"]:
        if e[_RID] == rid and (e[_KIND] == schemas.ORDER or e[_ACKED] or RANK[status] == _DONE):
            s["dirty"] = 1
        else:
            keep.append(e)
    s["box"] = keep


def _send(s, now, everything, resend=0):
    # Publish actions for outbox entries: all (connect), those never published (new), or
    # those last published `resend` seconds ago or more (a clock that went back counts too).
    acts = []
    if not s["on"]:
        return acts
    for e in s["box"]:
        if everything or (e[_TPUB] == 0 if not resend else not 0 <= now - e[_TPUB] < resend):
            e[_TPUB] = now
            acts.append(("publish", schemas.props(e[_KIND], e[_RID]), e[_BODY],
                         schemas.mid(e[_KIND], e[_RID])))
    return acts


def _prune(s):
    # Forget all but the newest _KEEP_DONE finished orders.
    done = [(s["orders"][r][_SEQ], r) for r in s["orders"] if RANK[s["orders"][r][_ST]] == _DONE]
    done.sort()
    for seq, rid in done[:-_KEEP_DONE]:
        del s["orders"][rid]


def _blob(s):
    box = [[e[_KIND], e[_RID], e[_BODY].decode()] for e in s["box"]]
    return json.dumps({"v": _BLOB_V, "seq": s["seq"], "cfg": s["cfg"],
                       "orders": s["orders"], "box": box}, separators=(",", ":")).encode()


def _load(s, blob):
    # Validate everything first, change s only if the orders and the outbox are good. Each
    # stored setting that fails today's checks falls back to its default.
    d, err = schemas.load(blob, _MAX_BLOB)
    try:
        if err or d.get("v") != _BLOB_V or type(d["seq"]) is not int or d["seq"] < 0:
            return False
        acc, rej = settings.apply(settings.DEFAULTS, d.get("cfg"), True)
        orders = d["orders"]
        for rid in orders:
            o = orders[rid]
            if not (schemas.is_id(rid) and type(o) is list and len(o) == 6 and o[_ST] in RANK
                    and type(o[_OID]) is str and type(o[_AT]) is int and type(o[_SEQ]) is int
                    and o[_CXL] in (0, 1) and type(o[_NOTE]) is str):
                return False
        if type(d["box"]) is not list:
            return False
        box = []
        waiting = [rid for rid in orders if orders[rid][_ST] == "queued"]
        for e in d["box"]:
            if not (type(e) is list and len(e) == 3 and e[0] in (schemas.ORDER, schemas.CANCEL)
                    and e[1] in orders and type(e[2]) is str):
                return False
            box.append([e[0], e[1], e[2].encode(), 0, 0])
            if e[0] == schemas.ORDER and e[1] in waiting:
                waiting.remove(e[1])
        if waiting:          # a queued order must still be in the outbox, or it never leaves
            return False
    except (AttributeError, KeyError, TypeError, IndexError):
        return False
    s["cfg"] = dict(settings.DEFAULTS)
    s["cfg"].update(acc)
    if rej:
        s["ign"]["cfg"] = s["ign"].get("cfg", 0) + len(rej)
        s["dirty"] = 1                  # save the repaired settings over the bad ones
    s["seq"] = d["seq"]
    s["orders"] = orders
    s["box"] = box
    return True
