# The order button's controller: events in, actions out. Pure: no I/O, no clock, no randomness.
#
#   s = orders.new("1.0.0")
#   acts = orders.restore(s, now, blob)        # blob: bytes the runtime saved last, or None
#   acts = orders.press(s, now, rid)           # ... one function per event, see README.md
#
# Every event function takes the state dict `s` and `now` (Unix seconds, int) first, changes
# `s` in place and returns a list of action tuples for the runtime to perform in order:
#   ("save", blob)                         store blob atomically (always first when present)
#   ("show", screen_id, lines)             display a screen (only when it changed)
#   ("brightness", 0..255)                 set the display brightness
#   ("report", patch dict)                 twin reported patch; the runtime adds "freeHeap"
#   ("publish", tag, props, body)          QoS 1 telemetry; call published(s, now, tag) on PUBACK
#   ("method_response", rid, status, payload)   payload is JSON-able; the runtime encodes it
#   ("flash", seconds)                     blink the display/LED (identify)
#   ("reboot",)                            always last
# An identifier comes first wherever there is one: (rid, ...), (tag, ...).
# Hostile input (C2D, twin, method payloads, the stored blob) never raises: it is ignored
# and counted in s["ignored"] (reported as "ignored"; the runtime reads it with ignored(s)).
# Events that make no sense in the current state (a PUBACK for nothing, a press that may not
# order) leave the orders unchanged.
import json

from firmware.app import schemas, screens

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# The layouts of an order and an outbox entry (public: firmware/app/stored.py reads them too).
# an order, s["orders"][orderRequestId]: [status, orderId, createdAt, seq, cancel asked 0/1, note,
# heard at]; the last field (when the cloud last said something about it: a status, also a
# duplicate one, or the press) lives in RAM only and is not part of the blob
STATUS = const(0)
ORDER_ID = const(1)
CREATED_AT = const(2)
SEQ = const(3)
CANCEL_ASKED = const(4)
NOTE = const(5)
HEARD = const(6)
# an outbox entry: [kind, orderRequestId, body bytes, last published at (0: never), PUBACKed 0/1]
KIND = const(0)
RID = const(1)
BODY = const(2)
PUBLISHED_AT = const(3)
PUBACKED = const(4)
# which outbox entries _send publishes
_ALL = const(0)         # every one (after a connect)
_NEW = const(1)         # those never published (after a press or a cancel)
_DUE = const(2)         # those published resendSeconds ago or more (tick)

BLOB_VERSION = const(2)
_ANSWER_S = const(5)    # a gesture's answer stays this long, then the home screen returns
KEEP_FINISHED = const(2)   # finished orders kept for the screen and duplicate detection
MAX_BLOB = const(16384)    # a stored blob larger than this is refused unread


def new(version):
    # firmware/app/settings.py (defaults, checks, applying the desired twin) is loaded only where
    # settings change: here, restore(), twin(), twin_too_large(). The runtime drops its code
    # from the heap afterwards, as run from .mpy files the bytecode lives in the GC heap.
    from firmware.app import settings
    return {
        "firmware_version": version,
        "settings": dict(settings.DEFAULTS),   # settings in force (persisted)
        "rejected": {},                   # rejected settings: key -> reason
        "desired_version": 0,             # highest desired $version applied on this connection
        "seq": 0,                         # last device sequence number used (persisted)
        "queried_at": 0,                  # when the last statusQuery was published (0: never)
        "orders": {},                     # orderRequestId -> order (persisted)
        "outbox": [],                     # outbox entries, oldest first (persisted)
        "ignored": {},                    # ignored input: reason -> count
        "online": 0,                      # the link is up
        "ever_online": 0,                 # it was up at least once since boot
        "auth_refused": 0,                # the hub refused the credentials at the last try
        "twin_read": 0,                   # a whole twin was read since boot (settings known)
        "reconnects": 0,                  # reconnects since boot
        "answer": None,                   # a gesture's answer screen, shown until answer_until
        "answer_until": 0,
        "clock_set": False,               # the clock was set at the last event
        "shown": None,                    # last screen sent to the display
        "cloud_reported": None,           # reported state as the cloud has it (None: offline)
        "unsaved": 0,                     # persisted state changed: save before anything else
    }


# --- events ------------------------------------------------------------------------------

def restore(s, now, blob):
    # Boot: load what the last save action stored. None/b"" is a fresh device. Every part of
    # the blob is checked on its own and what passes is kept; when anything fails (or the
    # blob is not one at all) it counts as "blob" and a clean state is saved over it. A stored
    # setting today's checks refuse (a firmware update narrowed a range) goes back to its
    # default (counted as "cfg"), and the repaired blob is saved.
    if blob:
        from firmware.app import stored   # boot only: the runtime drops its code afterwards
        if not stored.load(s, blob):
            count(s, "blob")
            s["unsaved"] = 1
    acts = [("brightness", s["settings"]["displayBrightness"])]
    return _out(s, now, acts)


def press(s, now, rid):
    # Order once. rid: 16 lowercase hex chars from a real random source (the new
    # orderRequestId); anything else raises ValueError (a runtime bug, not user input).
    if not schemas.is_id(rid) or rid in s["orders"]:
        raise ValueError("rid must be 16 new lowercase hex chars")
    s["answer"] = None
    cfg = s["settings"]
    n = _open(s)
    if now < schemas.CLOCK_SET_EPOCH:
        say(s, now, ("notime",))
    elif not cfg["sku"]:
        say(s, now, home(s, now))      # "setup" or, while the twin is unread, "connecting"
    elif n >= cfg["maxOpenOrders"]:
        say(s, now, ("busy", n, cfg["maxOpenOrders"]))
    else:
        s["seq"] += 1
        s["orders"][rid] = ["queued", "", now, s["seq"], 0, "", now]
        body = schemas.order_request(rid, cfg["sku"], cfg["quantity"], now, s["seq"])
        s["outbox"].append([schemas.ORDER, rid, body, 0, 0])
        s["unsaved"] = 1
    return _out(s, now, _send(s, now, _NEW))


def long_press(s, now):
    # Cancel the newest open order if it is still inside the cancel window.
    s["answer"] = None
    o = _latest(s, True)
    if o is None:
        say(s, now, ("nocancel",))
        return _out(s, now, [])
    why, acts = cancel(s, now, o[0], o[1])
    if why:
        say(s, now, why)
    return _out(s, now, acts)


def double_press(s, now):
    # Show a status summary.
    s["answer"] = None
    o = _latest(s)
    link = "Online" if s["online"] else "Offline, %d out" % len(s["outbox"])
    say(s, now, ("info", _open(s), screens.LABEL[o[1][STATUS] if o else ""], link))
    return _out(s, now, [])


def c2d(s, now, props, body):
    # An order-status message (props from topics.parse_c2d, body bytes).
    m = schemas.parse_status(props, body)
    if isinstance(m, str):
        count(s, m)
        return _out(s, now, [])
    rid = m["orderRequestId"]
    o = s["orders"].get(rid)
    if o is None:
        count(s, "unknown")                 # not ours, or finished long ago
    elif o[ORDER_ID] and m["orderId"] and m["orderId"] != o[ORDER_ID]:
        count(s, "orderId")                 # same request, another order: not trusted
    else:
        status = m["status"]
        note = screens.fit(m.get("reason") or m.get("eta") or "")   # kept as the screen shows it
        _ack(s, rid, status)                 # any status for it: the cloud has the request
        o[HEARD] = now                      # news, even when it is only the same status again
        if status == o[STATUS]:
            count(s, "duplicate")
            if note:                         # e.g. "cancel refused: already shipped"
                say(s, now, (status, o[ORDER_ID], note, _hint(s)))
        elif not schemas.follows(status, o[STATUS]):
            count(s, "stale")
        else:
            o[STATUS] = status
            o[ORDER_ID] = m["orderId"] or o[ORDER_ID]
            o[NOTE] = note
            s["unsaved"] = 1
            s["answer"] = None
            if _latest(s)[0] != rid:         # the home screen shows another order: say it
                say(s, now, (status, o[ORDER_ID], note, _hint(s)))
            prune(s)
    return _out(s, now, [])


def connected(s, now):
    # The link is up (after every connect): send the whole outbox, ask for the status of the
    # open orders the cloud has (statusQuery), report everything.
    s["reconnects"] += s["ever_online"]
    s["online"] = s["ever_online"] = 1
    s["auth_refused"] = 0
    s["cloud_reported"] = {}
    s["desired_version"] = 0   # a twin's version only rises while it exists; a re-created device starts anew
    acts = _send(s, now, _ALL)
    _query(s, now, acts, True)
    return _out(s, now, acts)


def disconnected(s, now, reason=None):
    # The link is down; reason "auth" when the hub refused the credentials (CONNACK 4/5).
    s["online"] = 0
    s["cloud_reported"] = None
    if reason == "auth":
        s["auth_refused"] = 1
    return _out(s, now, [])


def published(s, now, tag):
    # The hub PUBACKed the publish action with this tag: the entry is "sent" (not done: only
    # an order-status C2D removes it). An unknown tag is ignored.
    for e in s["outbox"]:
        if schemas.mid(e[RID], e[KIND]) == tag:
            e[PUBACKED] = 1
    return _out(s, now, [])


def twin(s, now, doc, version=None):
    # Desired settings: a patch (topic .../desired/?$version=n, `version` = n) or, without a
    # version, a full twin GET response ({"desired": {...}, "reported": {...}}). doc may be
    # bytes/str JSON or already a dict. What it changes: firmware/app/settings.py (twin), loaded
    # for it (the runtime drops it afterwards).
    from firmware.app import settings
    return _out(s, now, settings.twin(s, now, doc, version))


def method(s, now, rid, name, payload):
    # A direct method (name and rid from topics.parse_method_request, payload bytes, may be
    # empty). The answer comes first; what the method does follows (reboot last). The methods
    # are firmware/app/methods.py, loaded for the call (the runtime drops it afterwards).
    if type(name) is str:
        from firmware.app import methods
        code, res, acts = methods.answer(s, now, name, payload)
    else:
        code, res, acts = 404, {"error": "unknown method"}, []
    acts.insert(0, ("method_response", rid, code, res))
    return _out(s, now, acts)


def report_again(s, now):
    # The hub did not take a reported patch (429, 5xx...): report the whole current state
    # (not the lost patch: a newer one may have followed it).
    if s["online"]:
        s["cloud_reported"] = {}
    return _out(s, now, [])


def twin_too_large(s, now):
    # The twin (a GET answer or a desired patch) is too large for the device to read: the
    # settings stay as they are and the cloud sees why (reported "rejected").
    from firmware.app import settings
    s["rejected"] = settings.rejected(s["rejected"], {}, {}, {"desired": "twin too large to read"})
    return _out(s, now, [])


def clock_check(s, now):
    # The hub refused the token; the runtime re-syncs the clock before trying again.
    say(s, now, ("clock",), 5)
    return _out(s, now, [])


def tick(s, now):
    # Call about once a second: ends answer screens, notices the clock got set, re-sends what
    # waited resendSeconds, asks for the status of open orders without news for resendSeconds.
    # Allocates next to nothing when none of that is due.
    acts = _send(s, now, _DUE) if s["online"] else []
    _query(s, now, acts, False)
    if acts or s["clock_set"] != (now >= schemas.CLOCK_SET_EPOCH) \
            or (s["answer"] and _answer_over(s, now)):
        return _out(s, now, acts)
    return acts


# --- views -------------------------------------------------------------------------------

def ignored(s):
    # Ignored input so far: reason -> count (the live dict: read it, copy it, do not change it).
    return s["ignored"]


def reported(s):
    # The reported properties the app owns (the runtime adds freeHeap).
    o = _latest(s)
    return {"firmwareVersion": s["firmware_version"], "state": state(s),
            "openOrders": _open(s), "lastStatus": o[1][STATUS] if o else "",
            "reconnectCount": s["reconnects"], "outboxDepth": len(s["outbox"]),
            "settings": dict(s["settings"]), "rejected": dict(s["rejected"]),
            "ignored": dict(s["ignored"])}


def home(s, now):
    # The screen to show when no gesture answer is up: a pure function of the state.
    if s["auth_refused"]:
        return ("auth",)
    if now < schemas.CLOCK_SET_EPOCH:
        return ("notime",)
    cfg = s["settings"]
    if not cfg["sku"]:
        # No product yet. It is set in the twin: "setup needed" only once the twin was read.
        if s["twin_read"]:
            return ("setup",)
        return ("offline",) if s["ever_online"] and not s["online"] else ("connecting",)
    latest = _latest(s)
    hint = _hint(s)
    if latest is None:
        if s["online"]:
            return ("ready", cfg["quantity"], cfg["sku"])
        return ("offline",) if s["ever_online"] else ("connecting",)
    rid, o = latest
    if o[STATUS] == "queued":
        e = outbox_entry(s["outbox"], rid, schemas.ORDER)
        if not s["online"] or e is None:
            return ("saved", "", "", hint)
        return ("sent" if e[PUBACKED] else "sending", "", "", hint)
    return (o[STATUS], o[ORDER_ID], o[NOTE], hint)


# --- helpers -----------------------------------------------------------------------------

def _out(s, now, acts):
    # Every event ends here: save first if needed, then the screen, then the report, then
    # what the event produced.
    head = []
    if s["answer"] and _answer_over(s, now):
        s["answer"] = None
    s["clock_set"] = now >= schemas.CLOCK_SET_EPOCH
    if s["unsaved"]:
        s["unsaved"] = 0
        head.append(("save", _blob(s)))
    scr = screens.screen(*(s["answer"] or home(s, now)))
    if scr != s["shown"]:
        s["shown"] = scr
        head.append(("show", scr[0], scr[1]))
    if s["online"] and s["cloud_reported"] is not None:
        r = reported(s)
        p = diff(s["cloud_reported"], r)
        if p:
            s["cloud_reported"] = r
            head.append(("report", p))
    return head + acts


def diff(old, new):
    # The reported-properties patch that turns `old` into `new`: changed keys, nested dicts
    # patched key by key, keys that disappeared set to None (null deletes in a twin patch).
    p = {}
    for k in new:
        a = old.get(k)
        b = new[k]
        if type(a) is dict and type(b) is dict:
            d = diff(a, b)
            if d:
                p[k] = d
        elif k not in old or a != b or type(a) is not type(b):
            p[k] = b
    for k in old:
        if k not in new:
            p[k] = None
    return p


def _answer_over(s, now):
    return not 0 < s["answer_until"] - now <= 3600   # over (or the clock jumped)


def say(s, now, scr, seconds=_ANSWER_S):
    s["answer"] = scr
    s["answer_until"] = now + seconds


def count(s, reason):
    s["ignored"][reason] = s["ignored"].get(reason, 0) + 1


def _hint(s):
    if s["online"]:
        return ""
    return "Offline" if s["ever_online"] else "Connecting..."


def state(s):
    if not s["settings"]["sku"]:
        return "setup"
    return "ordering" if _open(s) else "ready"


def _open(s):
    n = 0
    for rid in s["orders"]:
        if not schemas.is_final(s["orders"][rid][STATUS]):
            n += 1
    return n


def _latest(s, open_only=False):
    # (rid, order) with the highest seq, or None.
    best = None
    for rid in s["orders"]:
        o = s["orders"][rid]
        if (not open_only or not schemas.is_final(o[STATUS])) \
                and (best is None or o[SEQ] > best[1][SEQ]):
            best = (rid, o)
    return best


def outbox_entry(outbox, rid, kind):
    for e in outbox:
        if e[KIND] == kind and e[RID] == rid:
            return e
    return None


def cancel(s, now, rid, o):
    # Queue a cancel for the order (a long press, the cancel method) -> (None, or the screen that
    # says why not; the publish actions for what is new in the outbox).
    cw = s["settings"]["cancelWindowSeconds"]
    if schemas.is_final(o[STATUS]):
        why = ("nocancel",)
    elif not schemas.cancel_honoured(o[STATUS]):
        why = ("toolate", screens.LABEL[o[STATUS]])
    elif o[CANCEL_ASKED]:
        why = ("cancelagain",)
    elif now - o[CREATED_AT] > cw:
        why = ("late", cw)
    else:
        why = None
        s["seq"] += 1
        o[CANCEL_ASKED] = 1
        s["outbox"].append([schemas.CANCEL, rid, schemas.cancel_request(rid, now, s["seq"]), 0, 0])
        s["unsaved"] = 1
        say(s, now, ("cancelling", o[ORDER_ID]) if s["online"] else ("cancelsaved",))
    return why, _send(s, now, _NEW)


def _ack(s, rid, status):
    # The first status for a request removes its order entry; a cancel entry goes once the
    # hub has it (PUBACKed) or the order is finished.
    keep = []
    for e in s["outbox"]:
        if e[RID] == rid and (e[KIND] == schemas.ORDER or e[PUBACKED]
                               or schemas.is_final(status)):
            s["unsaved"] = 1
        else:
            keep.append(e)
    s["outbox"] = keep


def _send(s, now, which):
    # Publish actions for the outbox entries `which` names (_ALL, _NEW or _DUE), oldest first.
    acts = []
    if not s["online"]:
        return acts
    resend = s["settings"]["resendSeconds"]
    for e in s["outbox"]:
        if which == _ALL:
            go = True
        elif which == _NEW:
            go = e[PUBLISHED_AT] == 0
        else:                                 # due, or the clock went back since
            age = now - e[PUBLISHED_AT]
            go = age >= resend or age < 0
        if go:
            e[PUBLISHED_AT] = now
            tag = schemas.mid(e[RID], e[KIND])
            acts.append(("publish", tag, schemas.props(e[RID], e[KIND]), e[BODY]))
    return acts


def _query(s, now, acts, connect):
    # Append a statusQuery publish to acts when one is due: after a connect (`connect`) or
    # when an open order with a status had no news for resendSeconds. (A still "queued" order
    # triggers none: its request itself is re-sent then, and a re-sent request gets its
    # current status back.) It lists every open order the cloud has (a status arrived, or the
    # hub PUBACKed the request). Never more than one query per resendSeconds (a clock that
    # went back allows one). Nothing is saved: a lost query is asked again resendSeconds
    # later, as its orders still have no news.
    resend = s["settings"]["resendSeconds"]
    age = now - s["queried_at"]
    if not s["online"] or 0 <= age < resend:
        return
    due = False
    for rid in s["orders"]:
        o = s["orders"][rid]
        if o[STATUS] != "queued" and not schemas.is_final(o[STATUS]):
            age = now - o[HEARD]
            if connect or age >= resend or age < 0:
                due = True
                break
    if not due:
        return
    rids = []
    for rid in s["orders"]:
        if _cloud_has(s, rid, s["orders"][rid]):
            rids.append(rid)
    rids.sort()
    s["queried_at"] = now
    acts.append(("publish", schemas.query_mid(now), schemas.query_props(now),
                 schemas.status_query(rids)))


def _cloud_has(s, rid, o):
    # An open order whose request reached the cloud: it has a status, or the hub PUBACKed it.
    if schemas.is_final(o[STATUS]):
        return False
    if o[STATUS] != "queued":
        return True
    e = outbox_entry(s["outbox"], rid, schemas.ORDER)
    return e is not None and e[PUBACKED] == 1


def prune(s):
    # Forget all but the newest KEEP_FINISHED finished orders.
    done = [(s["orders"][r][SEQ], r) for r in s["orders"]
            if schemas.is_final(s["orders"][r][STATUS])]
    done.sort()
    for seq, rid in done[:-KEEP_FINISHED]:
        del s["orders"][rid]


# --- the stored blob ---------------------------------------------------------------------
# {"version": 2, "seq": N, "settings": {...}, "orders": {rid: order}, "outbox": [[kind, rid,
# body text], ...]}. Read back and checked at boot by firmware/app/stored.py (restore()).

def _blob(s):
    outbox = [[e[KIND], e[RID], e[BODY].decode()] for e in s["outbox"]]
    stored = {}
    for rid in s["orders"]:
        stored[rid] = s["orders"][rid][:HEARD]     # "heard at" stays in RAM
    return json.dumps({"version": BLOB_VERSION, "seq": s["seq"], "settings": s["settings"],
                       "orders": stored, "outbox": outbox},
                      separators=(",", ":")).encode()
