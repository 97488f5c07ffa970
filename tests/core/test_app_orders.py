# The order controller (firmware/app/orders.py), driven event by event like the runtime would.
import json

from firmware.app import orders, schemas, screens, settings
from tests.core.check import raises

T = 1800000000          # a set clock (2027)
R1 = "00000000000000a1"
R2 = "00000000000000b2"
R3 = "00000000000000c3"


# --- helpers -----------------------------------------------------------------------------

def kinds(acts):
    return [a[0] for a in acts]


def only(acts, kind):
    return [a for a in acts if a[0] == kind]


def shown(acts):
    # The screen id shown by these actions (None if the screen did not change).
    s = only(acts, "show")
    assert len(s) <= 1, acts
    return s[0][1] if s else None


def well_formed(acts):
    # Every action is one the README documents, in the documented order.
    order = {"save": 0, "show": 1, "report": 2}
    last = 0
    for a in acts:
        assert type(a) is tuple and a, a
        assert a[0] in ("save", "show", "brightness", "report", "publish", "method_response",
                        "flash", "reboot"), a
        rank = order.get(a[0], 3)
        assert rank >= last, ("out of order", acts)
        last = rank
        if a[0] == "show":
            assert a[2] == screens.screen(a[1], *([""] * 4))[1] or len(a[2]) <= 4
            for line in a[2]:
                assert len(line) <= 16, a
        if a[0] == "save":
            json.loads(a[1])
        if a[0] == "publish":
            assert a[1] == a[2]["$.mid"] and type(a[3]) is bytes, a
        if a[0] == "report":
            json.dumps(a[1])
    if "reboot" in kinds(acts):
        assert acts[-1] == ("reboot",), acts
    return acts


def ev(fn, s, *args):
    return well_formed(fn(s, *args))


def device(online=True, **cfg):
    # A configured device after boot; cfg overrides the settings the cloud sends.
    s = orders.new("1.2.3")
    ev(orders.restore, s, T, None)
    desired = {"sku": "SKU-1", "quantity": 2, "$version": 1}
    desired.update(cfg)
    ev(orders.twin, s, T, json.dumps(desired).encode())
    if online:
        ev(orders.connected, s, T)
    return s


def status(rid, st, oid="O-1", **extra):
    props = {"$.mid": "c2d-1", "$.cid": rid, "$.ct": "application/json", "$.ce": "utf-8",
             "messageType": "orderStatus"}
    doc = {"orderRequestId": rid, "status": st}
    if oid is not None:
        doc["orderId"] = oid
    doc.update(extra)
    return props, json.dumps(doc).encode()


def c2d(s, now, rid, st, oid="O-1", **extra):
    p, b = status(rid, st, oid, **extra)
    return ev(orders.c2d, s, now, p, b)


def box(s):
    return [schemas.mid(e[1], e[0]) for e in s["outbox"]]


def order_status(s, rid):
    return s["orders"][rid][0]


# --- ordering ----------------------------------------------------------------------------

def test_press_online_saves_then_shows_then_publishes():
    s = device()
    acts = ev(orders.press, s, T + 1, R1)
    assert kinds(acts) == ["save", "show", "report", "publish"], kinds(acts)
    saved = json.loads(acts[0][1])
    assert saved["orders"][R1][0] == "queued" and saved["outbox"][0][1] == R1
    assert shown(acts) == "sending"
    _, tag, props, body = acts[3]
    assert props == schemas.props(R1, schemas.ORDER) and tag == R1
    assert json.loads(body) == {"type": "orderRequest", "orderRequestId": R1, "sku": "SKU-1",
                                "quantity": 2, "createdAt": T + 1, "seq": 1}
    # PUBACK: "sent", still in the outbox until the cloud answers
    acts = ev(orders.published, s, T + 2, R1)
    assert shown(acts) == "sent" and box(s) == [R1] and only(acts, "save") == []
    acts = c2d(s, T + 3, R1, "accepted")
    assert box(s) == [] and kinds(acts)[:2] == ["save", "show"] and shown(acts) == "accepted"


def test_press_offline_queues_and_sends_on_connect():
    s = device(online=False)
    acts = ev(orders.press, s, T + 1, R1)
    assert kinds(acts) == ["save", "show"] and shown(acts) == "saved", acts
    assert acts[1][2][3] == "Connecting..."
    acts = ev(orders.connected, s, T + 50)
    pubs = only(acts, "publish")
    assert [p[1] for p in pubs] == [R1]
    assert json.loads(pubs[0][3])["createdAt"] == T + 1   # the request as it was made
    assert shown(acts) == "sending"


def test_second_press_is_blocked_while_an_order_is_open():
    s = device()
    ev(orders.press, s, T + 1, R1)
    before = json.dumps(s["orders"]), box(s), s["seq"]
    acts = ev(orders.press, s, T + 5, R2)
    assert kinds(acts) == ["show"] and shown(acts) == "busy", acts
    assert acts[0][2][2] == "1 open, max 1"
    assert (json.dumps(s["orders"]), box(s), s["seq"]) == before
    # still blocked after acceptance and shipping; free again once delivered
    c2d(s, T + 6, R1, "accepted")
    c2d(s, T + 7, R1, "shipped")
    assert shown(ev(orders.press, s, T + 8, R2)) == "busy"
    c2d(s, T + 9, R1, "delivered")
    acts = ev(orders.press, s, T + 10, R2)
    assert [p[1] for p in only(acts, "publish")] == [R2]
    assert json.loads(only(acts, "publish")[0][3])["seq"] == 2


def test_failed_and_cancelled_orders_free_the_button_too():
    for end in ("failed", "cancelled"):
        s = device()
        ev(orders.press, s, T + 1, R1)
        c2d(s, T + 2, R1, end, oid="" if end == "failed" else "O-1", reason="unknown sku")
        assert orders._open(s) == 0
        assert only(ev(orders.press, s, T + 3, R2), "publish")


def test_max_open_orders_two_allows_two():
    s = device(maxOpenOrders=2)
    assert only(ev(orders.press, s, T + 1, R1), "publish")
    assert only(ev(orders.press, s, T + 2, R2), "publish")
    acts = ev(orders.press, s, T + 3, R3)
    assert shown(acts) == "busy" and acts[0][2][2] == "2 open, max 2"
    assert sorted(s["orders"]) == [R1, R2] and box(s) == [R1, R2]


def test_press_needs_setup_and_a_clock():
    s = orders.new("1")
    acts = ev(orders.restore, s, T, None)
    assert shown(acts) == "connecting"     # no sku yet, but the twin that sets it is unread
    ev(orders.connected, s, T)
    acts = ev(orders.press, s, T, R1)      # a press before the twin is read orders nothing
    assert shown(acts) in ("connecting", None) and s["orders"] == {} and not only(acts, "publish")
    acts = ev(orders.tick, s, T + 60)
    acts = ev(orders.twin, s, T + 60, {"desired": {"$version": 1}, "reported": {}})
    assert shown(acts) == "setup"          # the twin was read and names no product
    acts = ev(orders.press, s, T + 61, R1)
    assert shown(acts) in ("setup", None) and s["orders"] == {} and not only(acts, "publish")
    s = device()
    acts = ev(orders.press, s, 1000, R1)           # clock not set (1970 + 1000 s)
    assert shown(acts) == "notime" and s["orders"] == {}
    acts = ev(orders.tick, s, T)                   # once the clock is set: ready
    assert shown(acts) == "ready"


def test_bad_random_value_raises_and_changes_nothing():
    s = device()
    for bad in ("", "xyz", R1.upper(), b"00000000000000a1", None, 7):
        raises(ValueError, orders.press, s, T, bad)
    ev(orders.press, s, T, R1)
    raises(ValueError, orders.press, s, T, R1)    # an id already in use
    assert list(s["orders"]) == [R1] and s["seq"] == 1


# --- cancel ------------------------------------------------------------------------------

def test_cancel_inside_the_window():
    s = device()
    ev(orders.press, s, T + 1, R1)
    acts = ev(orders.long_press, s, T + 61)        # exactly cancelWindowSeconds later
    assert kinds(acts)[0] == "save" and shown(acts) == "cancelling"
    pub = only(acts, "publish")
    assert len(pub) == 1 and pub[0][1] == R1 + "-cancel"
    assert pub[0][2] == schemas.props(R1, schemas.CANCEL)
    assert json.loads(pub[0][3]) == {"type": "cancelRequest", "orderRequestId": R1,
                                     "createdAt": T + 61, "seq": 2}
    # a second long press does not send another
    acts = ev(orders.long_press, s, T + 62)
    assert shown(acts) == "cancelagain" and not only(acts, "publish")
    assert box(s) == [R1, R1 + "-cancel"]
    c2d(s, T + 63, R1, "cancelled")
    assert box(s) == [] and order_status(s, R1) == "cancelled"


def test_cancel_outside_the_window_says_so():
    s = device(cancelWindowSeconds=30)
    ev(orders.press, s, T + 1, R1)
    acts = ev(orders.long_press, s, T + 32)
    assert shown(acts) == "late" and acts[0][2] == ("Cannot cancel", "Window passed", "(30 s)")
    assert not only(acts, "publish") and not only(acts, "save") and box(s) == [R1]
    # the answer screen goes back to the order's screen after a few seconds
    assert shown(ev(orders.tick, s, T + 33)) is None
    assert shown(ev(orders.tick, s, T + 40)) == "sending"


def test_cancel_refused_when_nothing_is_open_or_it_shipped():
    s = device()
    assert shown(ev(orders.long_press, s, T)) == "nocancel"
    ev(orders.press, s, T + 1, R1)
    c2d(s, T + 2, R1, "shipped")
    acts = ev(orders.long_press, s, T + 3)
    assert shown(acts) == "toolate" and acts[0][2][1] == "Already shipped"
    assert box(s) == []


def test_cancel_window_zero_disables_cancel():
    s = device(cancelWindowSeconds=0)
    ev(orders.press, s, T + 1, R1)
    assert shown(ev(orders.long_press, s, T + 2)) == "late"


def test_cancel_offline_is_saved_and_sent_after_the_order():
    s = device(online=False)
    ev(orders.press, s, T + 1, R1)
    acts = ev(orders.long_press, s, T + 5)
    assert kinds(acts)[:2] == ["save", "show"] and shown(acts) == "cancelsaved"
    acts = ev(orders.connected, s, T + 100)
    assert [p[1] for p in only(acts, "publish")] == [R1, R1 + "-cancel"]


def test_cancel_entry_leaves_the_outbox_only_when_the_hub_has_it_or_the_order_ends():
    s = device()
    ev(orders.press, s, T + 1, R1)
    c2d(s, T + 2, R1, "accepted")
    ev(orders.long_press, s, T + 3)
    c2d(s, T + 4, R1, "payment_authorized")        # crossed the cancel on the wire
    assert box(s) == [R1 + "-cancel"]
    ev(orders.published, s, T + 5, R1 + "-cancel")
    c2d(s, T + 6, R1, "payment_authorized", reason="cancel refused: already shipped")
    assert box(s) == []


def test_cancel_refused_by_the_cloud_shows_the_reason():
    s = device()
    ev(orders.press, s, T + 1, R1)
    c2d(s, T + 2, R1, "shipped")
    acts = c2d(s, T + 3, R1, "shipped", reason="cancel refused: already shipped")
    assert shown(acts) == "shipped" and acts[0][2][2] == "cancel refused: "
    assert s["ignored"] == {"duplicate": 1}


# --- order-status messages ---------------------------------------------------------------

def test_status_progression_and_what_is_ignored():
    s = device()
    ev(orders.press, s, T + 1, R1)
    steps = [
        # (status, orderId, applied status afterwards, counter bumped)
        ("accepted", "O-1", "accepted", None),
        ("accepted", "O-1", "accepted", "duplicate"),
        ("shipped", "O-1", "shipped", None),                  # skipping a step is fine
        ("payment_authorized", "O-1", "shipped", "stale"),   # out of order: older news
        ("accepted", "O-1", "shipped", "stale"),
        ("shipped", "O-2", "shipped", "orderId"),            # another order for the same id
        ("delivered", "O-1", "delivered", None),
        ("delivered", "O-1", "delivered", "duplicate"),
        ("cancelled", "O-1", "delivered", "stale"),          # nothing follows a final status
        ("failed", "", "delivered", "stale"),
    ]
    counts = {}
    for st, oid, want, bump in steps:
        before = dict(s["ignored"])
        acts = c2d(s, T + 2, R1, st, oid)
        assert order_status(s, R1) == want, (st, order_status(s, R1))
        if bump:
            counts[bump] = counts.get(bump, 0) + 1
            assert not only(acts, "save"), (st, acts)
        else:
            assert s["ignored"] == before and only(acts, "save"), st
        assert s["ignored"] == counts, (st, s["ignored"])


def test_foreign_and_malformed_messages_are_counted_and_change_nothing():
    s = device()
    ev(orders.press, s, T + 1, R1)
    snapshot = json.dumps(s["orders"]), box(s)
    p, b = status(R1, "accepted")
    cases = [
        (status(R2, "accepted"), "unknown"),
        ((dict(p, messageType="somethingElse"), b), "type"),
        ((dict(p, **{"$.cid": R2}), b), "cid"),
        ((p, b"\x00\xff garbage"), "json"),
        ((p, b"{" * 600), "size"),
        ((p, b'{"orderRequestId":"%s","status":"lost","orderId":"O-1"}' % R1.encode()), "status"),
        ((p, b"[]"), "doc"),
        ((None, None), "props"),
        (({}, b""), "type"),
    ]
    for (props, body), reason in cases:
        acts = ev(orders.c2d, s, T + 2, props, body)
        assert s["ignored"].get(reason), (reason, s["ignored"])
        assert not only(acts, "save") and not only(acts, "publish")
    assert (json.dumps(s["orders"]), box(s)) == snapshot
    # the counters reach the cloud
    rep = orders.reported(s)["ignored"]
    assert rep["unknown"] == 1 and rep["json"] == 1


def test_fuzzed_c2d_never_raises():
    s = device()
    ev(orders.press, s, T + 1, R1)
    bodies = [b"", b"{}", b"null", b"1e999", b'"\\ud800"', b'{"orderRequestId":"%s"}' % R1.encode(),
              b'{"orderRequestId":"%s","status":"accepted","orderId":{"x":1}}' % R1.encode(),
              b'{"orderRequestId":"%s","status":"accepted","orderId":"\xc3\xa9\xe2\x98\x83"}' % R1.encode(),
              "\u2603".encode(), bytearray(b"{}"), "text", None, 5, [1], {"a": 1}]
    props = [None, {}, {"messageType": "orderStatus"}, {"messageType": "orderStatus", "$.cid": R1},
             {"messageType": None, "$.cid": None}, "messageType=orderStatus", [], 3]
    for p in props:
        for b in bodies:
            ev(orders.c2d, s, T + 2, p, b)
    assert order_status(s, R1) in ("queued", "accepted")


def test_order_id_is_printable_ascii_and_shown_safely():
    # The contract: orderId is up to 64 printable ASCII characters; anything else is refused
    # (it is stored and compared, and the stored state has a size bound to keep).
    s = device()
    ev(orders.press, s, T + 1, R1)
    c2d(s, T + 2, R1, "accepted", oid="Bestellung-\u00e9\u2603-123456789")
    assert order_status(s, R1) == "queued" and s["ignored"] == {"orderId": 1}
    c2d(s, T + 2, R1, "accepted", oid="x" * 65)
    assert order_status(s, R1) == "queued" and s["ignored"] == {"orderId": 2}
    acts = c2d(s, T + 3, R1, "accepted", oid='Bestellung-"{}"-123456789')
    assert acts[1][2][1] == 'Bestellung-"{}"-', acts[1]


def test_note_is_kept_as_the_screen_shows_it():
    s = device()
    ev(orders.press, s, T + 1, R1)
    acts = c2d(s, T + 2, R1, "accepted", reason="\u00e9t\u00e9 \u2603 and a long reason behind")
    assert acts[1][2][2] == "?t? ? and a long"
    assert s["orders"][R1][5] == "?t? ? and a long"


def test_old_finished_orders_are_forgotten():
    s = device()
    for i, rid in enumerate((R1, R2, R3)):
        ev(orders.press, s, T + 10 * i, rid)
        c2d(s, T + 10 * i + 1, rid, "delivered", oid="O-%d" % i)
    assert sorted(s["orders"]) == [R2, R3]
    acts = c2d(s, T + 50, R1, "delivered", oid="O-0")
    assert s["ignored"]["unknown"] == 1 and not only(acts, "save")


# --- outbox and reboot -------------------------------------------------------------------

def test_resend_after_resend_seconds_until_the_cloud_answers():
    s = device(resendSeconds=30)
    ev(orders.press, s, T, R1)
    ev(orders.published, s, T + 1, R1)
    assert not only(ev(orders.tick, s, T + 29), "publish")
    pubs = only(ev(orders.tick, s, T + 30), "publish")
    assert [p[1] for p in pubs] == [R1]
    assert not only(ev(orders.tick, s, T + 31), "publish")
    assert only(ev(orders.tick, s, T + 60), "publish")
    c2d(s, T + 61, R1, "accepted")
    # the request is answered: never re-sent again (a statusQuery asks for news instead)
    assert [p[1][0] for p in only(ev(orders.tick, s, T + 1000), "publish")] == ["q"]
    # offline: nothing is published, whatever the time
    s = device(online=False)
    ev(orders.press, s, T, R1)
    assert not only(ev(orders.tick, s, T + 1000), "publish")


def test_every_connect_resends_everything_unanswered():
    s = device()
    ev(orders.press, s, T, R1)
    ev(orders.published, s, T + 1, R1)
    ev(orders.disconnected, s, T + 2)
    acts = ev(orders.connected, s, T + 3)
    assert [p[1] for p in only(acts, "publish")] == [R1]
    assert only(acts, "report")[0][1]["reconnectCount"] == 1


def last_save(acts_list):
    blob = None
    for acts in acts_list:
        for a in acts:
            if a[0] == "save":
                blob = a[1]
    return blob


def test_reboot_keeps_the_order_request_id_and_resends_the_same_bytes():
    s = device(online=False)
    log = [ev(orders.press, s, T + 1, R1)]
    first = s["outbox"][0][2]
    # power cut; the runtime boots with the blob it stored last
    blob = last_save(log)
    s2 = orders.new("1.2.3")
    acts = ev(orders.restore, s2, T + 500, blob)
    assert not only(acts, "save") and s2["ignored"] == {}
    assert shown(acts) == "saved"
    assert s2["settings"]["sku"] == "SKU-1" and s2["settings"]["quantity"] == 2
    acts = ev(orders.connected, s2, T + 501)
    pubs = only(acts, "publish")
    assert [p[1] for p in pubs] == [R1] and pubs[0][3] == first
    # the sequence goes on where it was
    c2d(s2, T + 502, R1, "delivered")
    acts = ev(orders.press, s2, T + 503, R2)
    assert json.loads(only(acts, "publish")[0][3])["seq"] == 2


def test_reboot_after_a_status_does_not_resend():
    s = device()
    log = [ev(orders.press, s, T + 1, R1), c2d(s, T + 2, R1, "accepted")]
    s2 = orders.new("1")
    ev(orders.restore, s2, T + 3, last_save(log))
    assert order_status(s2, R1) == "accepted" and s2["orders"][R1][1] == "O-1"
    # not the request again: a statusQuery for it (the answer may have expired meanwhile)
    pubs = only(ev(orders.connected, s2, T + 4), "publish")
    assert [(p[1], p[2]["messageType"]) for p in pubs] == [("q%d" % (T + 4), "statusQuery")]
    c2d(s2, T + 5, R1, "accepted")
    assert s2["ignored"] == {"duplicate": 1}


def good_blob():
    s = device(online=False)
    acts = ev(orders.press, s, T + 1, R1)
    return json.loads(acts[0][1])


def corrupt(**change):
    d = good_blob()
    for k in change:
        d[k] = change[k]
    return json.dumps(d).encode()


def test_corrupt_or_old_blobs_start_clean_and_are_counted():
    # Nothing in these blobs passes: not JSON, another version, or the only order fails a
    # check (or loses its outbox entry, so it could never leave).
    d = good_blob()
    bad_order = dict(d["orders"])
    bad_order[R1] = ["queued", "", "yesterday", 1, 0, ""]
    blobs = [
        b"garbage", b"\xff\xfe", b"{}", b"[]", b"null", b"{" * 50000, b'{"v":1}',
        corrupt(version=0), corrupt(version=1), corrupt(version=3),
        corrupt(orders=[]), corrupt(orders="orders"), corrupt(orders=None),
        corrupt(orders={"nothex": ["queued", "", 1, 1, 0, ""]}), corrupt(orders=bad_order),
        corrupt(orders={R1: ["lost", "", 1, 1, 0, ""]}), corrupt(outbox=[["orderRequest", R2, "{}"]]),
        corrupt(outbox=[["order", R1, "{}"]]), corrupt(outbox={}), corrupt(outbox=[[1, 2]]),
        corrupt(outbox="x"), corrupt(outbox=[]), json.dumps(d).encode()[:-1],
    ]
    for blob in blobs:
        s = orders.new("1")
        acts = ev(orders.restore, s, T, blob)
        assert s["ignored"]["blob"] == 1, blob[:60]
        assert s["orders"] == {} and s["outbox"] == [] and s["seq"] in (0, 1), blob[:60]
        assert kinds(acts)[0] == "save"                # a clean blob replaces the bad one
        assert json.loads(acts[0][1])["orders"] == {}
        assert shown(acts) == "connecting"


def restored(blob):
    s = orders.new("1")
    acts = ev(orders.restore, s, T + 2, blob)
    return s, acts


def test_a_blob_with_a_bad_part_keeps_every_part_that_passes():
    # The issue 14 rule: set the bad parts aside, keep the order the customer pressed for,
    # and save the clean state at once (the runtime keeps the bad file as state.json.corrupt).
    for change in ({"seq": -1}, {"seq": "1"}, {"junk": 1} and {"seq": None}):
        s, acts = restored(corrupt(**change))
        assert s["ignored"] == {"blob": 1}, (change, s["ignored"])
        assert list(s["orders"]) == [R1] and box(s) == [R1] and s["seq"] == 1, change
        saved = json.loads(acts[0][1])
        assert kinds(acts)[0] == "save" and saved["seq"] == 1 and list(saved["orders"]) == [R1]
        assert [p[1] for p in only(ev(orders.connected, s, T + 3), "publish")] == [R1]


def two_orders_blob():
    # R1 accepted with a cancel asked for (its cancel entry waits), R2 queued; and its acts.
    s = device(online=False, maxOpenOrders=3)
    ev(orders.press, s, T + 1, R1)
    c2d(s, T + 2, R1, "accepted")
    ev(orders.long_press, s, T + 3)
    log = [ev(orders.press, s, T + 4, R2)]
    return json.loads(last_save(log))


def test_restore_refuses_each_unusable_outbox_entry_and_keeps_the_rest():
    # Regression (issue 14, defect 4): a body that is not what the device builds, that names
    # another order, a second entry for the same request, a cancel whose order never asked
    # for one. Each is refused on its own; the good entries and their orders stay.
    good = two_orders_blob()
    c_entry, r2_entry = good["outbox"]
    assert c_entry[:2] == ["cancelRequest", R1] and r2_entry[:2] == ["orderRequest", R2]
    r2_body = r2_entry[2]
    bad_entries = [
        ["orderRequest", R2, r2_body[:-1] + ":1}"],                          # MicroPython parses it
        ["orderRequest", R2, "[1 2]"],
        ["orderRequest", R2, r2_body[:-1]],
        ["orderRequest", R2, r2_body.replace(R2, R1)],                     # names another order
        ["orderRequest", R2, r2_body.replace('"quantity":2', '"quantity":0')],
        ["orderRequest", R2, r2_body.replace("SKU-1", "bad sku")],
        ["orderRequest", R2, r2_body.replace("orderRequest", "cancelRequest", 1)],
        ["orderRequest", R2, "\ud800"],                                   # a lone surrogate
        ["cancelRequest", R2, c_entry[2].replace(R1, R2)],                 # R2 asked no cancel
        ["orderRequest", R1, r2_body.replace(R2, R1)],                     # R1 is not queued
        c_entry,                                                            # twice the same
        ["orderRequest", R3, r2_body.replace(R2, R3)],                      # no such order
    ]
    for bad in bad_entries:
        d = json.loads(json.dumps(good))
        d["outbox"].append(bad)
        if bad[0] == "orderRequest" and bad[1] == R2:
            d["outbox"].remove(r2_entry)           # the only entry for R2 is the bad one
        s, acts = restored(json.dumps(d).encode())
        assert s["ignored"] == {"blob": 1}, (bad, s["ignored"])
        assert R1 + "-cancel" in box(s), bad                         # the good parts stay
        if bad[0] == "orderRequest" and bad[1] == R2:
            assert sorted(s["orders"]) == [R1] and box(s) == [R1 + "-cancel"], (bad, box(s))
        else:
            assert sorted(s["orders"]) == [R1, R2] and box(s) == [R1 + "-cancel", R2], bad
        assert json.loads(acts[0][1])["outbox"] == [e for e in good["outbox"] if e[1] in s["orders"]]
        well_formed(orders.connected(s, T + 5))
    # the untouched blob is clean: nothing is counted or saved
    s, acts = restored(json.dumps(good).encode())
    assert s["ignored"] == {} and not only(acts, "save") and box(s) == [R1 + "-cancel", R2]


def test_restore_refuses_a_cancel_entry_for_an_order_that_asked_none():
    good = two_orders_blob()
    good["orders"][R1][4] = 0                   # the cancel flag is off
    s, acts = restored(json.dumps(good).encode())
    assert s["ignored"] == {"blob": 1} and box(s) == [R2] and sorted(s["orders"]) == [R1, R2]


def test_restore_never_raises_on_a_lone_surrogate_or_odd_strings():
    # Regression (issue 14, defect 3): CPython's str.encode raised UnicodeEncodeError on a
    # stored body with a lone surrogate; MicroPython read it as a garbage body.
    good = two_orders_blob()
    for text in (b"\\ud800", b"\\udfff\\ud800", b"\\u0000", b"\\ud83d\\ude00"):
        for where in range(4):
            d = json.loads(json.dumps(good))
            if where == 0:
                d["outbox"][1][2] = "HERE"
            elif where == 1:
                d["outbox"][1][2] = d["outbox"][1][2][:-1] + "HERE}"
            elif where == 2:
                d["orders"][R1][1] = "HERE"
            else:
                d["orders"][R1][5] = "HERE"
            s, acts = restored(json.dumps(d).encode().replace(b"HERE", text))
            assert s["ignored"].get("blob") == 1, (text, where)
            assert list(s["orders"]) == ([R1] if where < 2 else [R2]), (text, where)
            well_formed(orders.connected(s, T + 9))


def test_restore_keeps_no_more_open_orders_than_a_device_can_have():
    d = good_blob()
    body = d["outbox"][0][2]
    for i in range(11):                         # R1 (seq 1) and 11 more: 12 open orders
        rid = "%016x" % (0xf0 + i)
        d["orders"][rid] = ["queued", "", T + 1, 2 + i, 0, ""]
        d["outbox"].append(["orderRequest", rid, body.replace(R1, rid).replace('"seq":1', '"seq":%d' % (2 + i))])
    s, acts = restored(json.dumps(d).encode())
    assert s["ignored"] == {"blob": 1} and len(s["orders"]) == 10 and len(s["outbox"]) == 10
    assert R1 in s["orders"] and "%016x" % 0xfa not in s["orders"]     # the oldest stay


def test_restore_never_reuses_a_sequence_number():
    good = two_orders_blob()                  # R1 seq 1, its cancel seq 2, R2 seq 3
    good["seq"] = 1
    del good["orders"][R2]
    good["outbox"] = good["outbox"][:1]
    s, acts = restored(json.dumps(good).encode())
    assert s["seq"] == 2 and box(s) == [R1 + "-cancel"]


def test_restore_refuses_orders_that_are_not_an_object():
    # Regression (issue 14, defect 2): a list or a string was accepted, the next press raised
    # TypeError, and every later save wrote the bad value back.
    for bad in ([], "", [[R1]], "orders", 5):
        s, acts = restored(corrupt(orders=bad, outbox=[]))
        assert s["orders"] == {} and s["ignored"]["blob"] == 1
        assert json.loads(acts[0][1])["orders"] == {}
        s["settings"]["sku"] = "SKU-1"
        ev(orders.connected, s, T + 3)
        assert only(ev(orders.press, s, T + 4, R2), "publish")


def test_a_version_1_blob_is_read():
    # the blob before the state's keys were named (v, cfg, box): an update keeps the orders
    body = schemas.order_request(R1, "SKU-1", 2, T + 1, 1).decode()
    v1 = {"v": 1, "seq": 1, "cfg": {"sku": "SKU-1", "quantity": 2},
          "orders": {R1: ["queued", "", T + 1, 1, 0, ""]}, "box": [["orderRequest", R1, body]]}
    s, acts = restored(json.dumps(v1).encode())
    assert s["ignored"] == {} and box(s) == [R1] and s["settings"]["quantity"] == 2
    assert [p[3] for p in only(ev(orders.connected, s, T + 3), "publish")] == [body.encode()]
    saved = json.loads(last_save([c2d(s, T + 4, R1, "accepted")]))
    assert saved["version"] == 2 and saved["orders"][R1][0] == "accepted" and "v" not in saved


def test_ignored_is_the_public_view_of_the_counters():
    s = device()
    ev(orders.c2d, s, T, None, None)
    assert orders.ignored(s) == {"props": 1} == orders.reported(s)["ignored"]


STORED_CFG = [
    # (stored cfg, settings in force after restore, count under "cfg")
    ({"sku": "SKU-1", "quantity": 500}, {"sku": "SKU-1", "quantity": 1}, 1),   # range narrowed
    ({"sku": "bad sku!", "quantity": 0, "resendSeconds": 5}, {}, 3),
    ({"sku": "SKU-1", "removedSetting": 3}, {"sku": "SKU-1"}, 1),
    ({"sku": "SKU-1"}, {"sku": "SKU-1"}, 0),       # a setting added since: its default
    ([], {}, 1), (None, {}, 1), ("cfg", {}, 1),
]


def test_bad_stored_setting_falls_back_to_default_and_keeps_the_orders():
    for cfg, want, bad in STORED_CFG:
        d = good_blob()
        if cfg is None:
            del d["settings"]
        else:
            d["settings"] = cfg
        s = orders.new("1")
        acts = ev(orders.restore, s, T + 2, json.dumps(d).encode())
        assert s["settings"] == dict(settings.DEFAULTS, **want), (cfg, s["settings"])
        assert s["ignored"] == ({"cfg": bad} if bad else {}), (cfg, s["ignored"])
        assert list(s["orders"]) == [R1] and box(s) == [R1] and s["seq"] == 1   # order kept
        if bad:
            saved = json.loads(only(acts, "save")[0][1])
            assert saved["settings"] == s["settings"] and list(saved["orders"]) == [R1]
        else:
            assert not only(acts, "save")
        acts = ev(orders.connected, s, T + 3)
        assert [a[1] for a in only(acts, "publish")] == [R1]    # the pressed order still goes out


# --- link and twin -----------------------------------------------------------------------

def test_link_screens():
    s = orders.new("1")
    ev(orders.twin, s, T, {"sku": "A"})
    assert s["shown"][0] == "connecting"
    assert shown(ev(orders.connected, s, T)) == "ready"
    assert shown(ev(orders.disconnected, s, T, "timeout")) == "offline"
    assert shown(ev(orders.disconnected, s, T, "auth")) == "auth"
    assert shown(ev(orders.press, s, T, R1)) is None       # still auth: the order waits
    assert box(s) == [R1]
    acts = ev(orders.connected, s, T + 5)
    assert shown(acts) == "sending" and only(acts, "publish")


def test_double_press_shows_a_summary():
    s = device()
    ev(orders.press, s, T, R1)
    c2d(s, T + 1, R1, "payment_authorized")
    acts = ev(orders.double_press, s, T + 2)
    assert acts[0][1:] == ("info", ("Status", "1 open", "Last: paid", "Online"))
    ev(orders.disconnected, s, T + 3)
    acts = ev(orders.double_press, s, T + 4)
    assert acts[0][2][3] == "Offline, 0 out"


def test_twin_rejects_bad_settings_and_keeps_the_old_value():
    s = device()
    acts = ev(orders.twin, s, T + 1, b'{"quantity": 500, "maxOpenOrders": 3, "$version": 2}')
    assert s["settings"]["quantity"] == 2 and s["settings"]["maxOpenOrders"] == 3
    assert shown(acts) == "rejected" and acts[1][2] == ("Setting rejected", "quantity", "int 1..99")
    rep = only(acts, "report")[0][1]
    assert rep["rejected"] == {"quantity": "int 1..99"} and rep["settings"] == {"maxOpenOrders": 3}
    # fixed later: the rejection is withdrawn from the reported twin with null
    acts = ev(orders.twin, s, T + 2, b'{"quantity": 5, "$version": 3}')
    rep = only(acts, "report")[0][1]
    assert rep == {"rejected": {"quantity": None}, "settings": {"quantity": 5}}, rep


def test_twin_typo_deleted_with_null_is_no_rejection():
    s = device()
    acts = ev(orders.twin, s, T + 1, {"quantty": 3, "$version": 2})
    assert shown(acts) == "rejected" and s["rejected"] == {"quantty": "unknown setting"}
    # the only way to delete a key from a twin is null: that withdraws the rejection
    acts = ev(orders.twin, s, T + 2, {"quantty": None, "$version": 3})
    assert shown(acts) != "rejected" and s["rejected"] == {}, acts
    assert only(acts, "report")[0][1] == {"rejected": {"quantty": None}}
    assert ev(orders.twin, s, T + 3, {"neverSeen": None}) == []


def test_twin_rejections_are_all_reported_within_a_size_bound():
    s = device()
    for p in range(5):
        patch = {"$version": 2 + p}
        for i in range(10):
            patch["typo%d_%d" % (p, i)] = i
        ev(orders.twin, s, T + 1 + p, patch)
        assert len(orders.reported(s)["rejected"]) == 10 * (p + 1), p
    patch = {"$version": 10}
    for i in range(300):
        patch["flood%03d" % i] = i
    ev(orders.twin, s, T + 10, patch)
    rej = orders.reported(s)["rejected"]
    assert len(json.dumps(rej)) < 2400 and "_more" in rej


def full(version, **desired):
    desired["$version"] = version
    return {"desired": desired, "reported": {"$version": 1}}


TWIN_ORDER = [
    # (documents in arrival order, the quantity in force after them, ignored as "oldtwin")
    # the race: GET answered from version 2 arrives after patch 3 was applied
    ([{"quantity": 5, "$version": 3}, full(2, sku="SKU-1", quantity=4)], 5, 1),
    ([full(3, sku="SKU-1", quantity=5), {"quantity": 4, "$version": 2}], 5, 1),
    ([{"quantity": 5, "$version": 3}, {"quantity": 6, "$version": 3}], 5, 0),   # redelivered
    ([{"quantity": 5, "$version": 3}, full(3, sku="SKU-1", quantity=6)], 6, 0),  # GET is the truth
    ([{"quantity": 5, "$version": 3}, full(4, sku="SKU-1", quantity=7)], 7, 0),
    ([{"quantity": 5, "$version": 5}, {"quantity": 6, "$version": 7}], 6, 0),   # a gap is fine
    ([{"quantity": 5, "$version": 3}, {"quantity": 6}], 6, 0),                  # no version: applied
    ([{"quantity": 5, "$version": 3}, {"quantity": 6, "$version": "9"}], 6, 0),
    ([(4, {"quantity": 5}), (3, {"quantity": 6, "$version": 9})], 5, 1),       # the topic's version wins
]


def test_twin_desired_version_is_never_undone():
    for docs, quantity, old in TWIN_ORDER:
        s = device()                       # settings from patch $version 1: quantity 2
        for i, doc in enumerate(docs):
            args = (doc[1], doc[0]) if type(doc) is tuple else (doc,)
            ev(orders.twin, s, T + 1 + i, *args)
        assert s["settings"]["quantity"] == quantity, (docs, s["settings"])
        assert s["ignored"].get("oldtwin", 0) == old, (docs, s["ignored"])
        assert s["settings"]["sku"] == "SKU-1"


def test_twin_old_full_answer_still_sets_what_the_cloud_reported():
    s = device()
    ev(orders.twin, s, T + 1, {"quantity": 5, "$version": 3})
    doc = full(2, sku="SKU-1", quantity=4)
    doc["reported"] = dict(orders.reported(s), oldKey=1)
    acts = ev(orders.twin, s, T + 2, doc)
    assert s["settings"]["quantity"] == 5 and s["twin_read"] == 1
    assert only(acts, "report")[0][1] == {"oldKey": None, "ignored": {"oldtwin": 1}}


def test_twin_version_holds_for_one_connection_only():
    s = device()
    ev(orders.twin, s, T + 1, {"quantity": 5, "$version": 3})
    ev(orders.twin, s, T + 2, full(2, sku="SKU-1", quantity=4))   # stale GET on this connection
    assert s["settings"]["quantity"] == 5 and s["ignored"] == {"oldtwin": 1}
    # reconnected to a device re-created in the hub: its twin's versions start again, and the
    # full GET after connect is what the cloud wants now
    ev(orders.disconnected, s, T + 3)
    ev(orders.connected, s, T + 4)
    ev(orders.twin, s, T + 5, full(1, sku="SKU-2", quantity=2))
    assert s["settings"]["sku"] == "SKU-2" and s["settings"]["quantity"] == 2
    # nothing about versions is saved: after a reboot the first twin is taken as it is
    acts = ev(orders.twin, s, T + 6, {"quantity": 3, "$version": 2})
    assert "desired_version" not in json.loads(only(acts, "save")[0][1])
    r = orders.new("1.2.3")
    ev(orders.restore, r, T + 7, only(acts, "save")[0][1])
    ev(orders.connected, r, T + 8)
    ev(orders.twin, r, T + 9, full(1, sku="SKU-2", quantity=4))
    assert r["settings"]["quantity"] == 4


def test_full_twin_reports_only_the_difference():
    s = device()
    cloud = dict(orders.reported(s), freeHeap=50000, oldKey=1, **{"$version": 7})
    cloud["rejected"] = {"sku": "stale"}
    doc = {"desired": {"sku": "SKU-1", "quantity": 2, "$version": 1}, "reported": cloud}
    acts = ev(orders.twin, s, T + 1, json.dumps(doc).encode())
    rep = only(acts, "report")[0][1]
    assert rep == {"freeHeap": None, "oldKey": None, "rejected": {"sku": None}}, rep
    # the runtime overwrites freeHeap with the real figure, so only oldKey really goes away


def test_a_patch_named_desired_is_a_patch_not_a_whole_twin():
    # Regression (issue 14, defect 1): a desired property called "desired" made a patch look
    # like a full twin GET answer: every setting went back to its default (the sku emptied,
    # the button stopped ordering), earlier rejections were wiped and a "reported" object in
    # the patch replaced the device's copy of the cloud's reported state.
    s = device(maxOpenOrders=3)
    ev(orders.twin, s, T + 1, {"quantity": 500}, 2)
    assert s["rejected"] == {"quantity": "int 1..99"}
    cfg = dict(s["settings"])
    for i, doc in enumerate((b'{"desired": {}}', b'{"desired": {"sku": "X"}, "reported": {}}',
                             {"desired": {}, "reported": {"firmwareVersion": "0"}})):
        acts = ev(orders.twin, s, T + 2 + i, doc, 3 + i)
        assert s["settings"] == cfg, (doc, s["settings"])            # nothing reset, nothing set
        assert s["rejected"]["desired"] == "unknown setting" and s["rejected"]["quantity"] == "int 1..99"
        assert i or shown(acts) == "rejected"
        rep = only(acts, "report")
        assert not rep or ("firmwareVersion" not in rep[0][1] and "settings" not in rep[0][1]), rep
        assert s["cloud_reported"] == orders.reported(s)        # the device's copy was not replaced
    assert only(ev(orders.press, s, T + 9, R1), "publish")
    # the same document without a version is the full twin GET answer it looks like
    ev(orders.twin, s, T + 10, {"desired": {"sku": "SKU-2"}, "reported": {}})
    assert s["settings"]["sku"] == "SKU-2" and s["settings"]["quantity"] == 1


def test_twin_brightness_and_garbage():
    s = device()
    acts = ev(orders.twin, s, T, {"displayBrightness": 10})
    assert ("brightness", 10) in acts
    for doc in (b"not json", b"[1]", b"\xff", None, 5, b"{" * 20000):
        ev(orders.twin, s, T, doc)
    assert s["settings"]["displayBrightness"] == 10 and s["settings"]["sku"] == "SKU-1"
    assert s["ignored"]["twin"] == 6 and s["rejected"] == {}


def test_no_change_no_action():
    s = device()
    assert ev(orders.tick, s, T + 1) == []
    assert ev(orders.published, s, T + 1, "nothing") == []
    assert ev(orders.twin, s, T + 1, {"sku": "SKU-1"}) == []


# --- direct methods ----------------------------------------------------------------------

def respond(acts):
    r = only(acts, "method_response")
    assert len(r) == 1, acts
    return r[0][1:]


def test_methods():
    s = device()
    ev(orders.press, s, T, R1)
    acts = ev(orders.method, s, T, "7", "identify", b"")
    assert respond(acts) == ("7", 200, {"seconds": 5}) and ("flash", 5) in acts
    assert shown(acts) == "identify"
    acts = ev(orders.method, s, T, "8", "identify", b'{"seconds": 20}')
    assert ("flash", 20) in acts and s["answer_until"] == T + 20
    for bad in (b'{"seconds": 0}', b'{"seconds": "5"}', b"[]", b"{oops"):
        assert respond(ev(orders.method, s, T, "9", "identify", bad))[1] == 400, bad
    rid, code, doc = respond(ev(orders.method, s, T, "10", "status", None))
    assert code == 200 and doc["orders"][R1]["status"] == "queued" and doc["outbox"] == [R1]
    json.dumps(doc)
    assert respond(ev(orders.method, s, T, "11", "selfDestruct", b"{}"))[1:] == (
        404, {"error": "unknown method"})
    for name in ("", None, ["status"], b"status"):
        assert respond(ev(orders.method, s, T, "12", name, b""))[1] == 404, name


def test_cancel_method():
    s = device()
    ev(orders.press, s, T, R1)
    for payload, code in ((b"", 400), (b"{}", 400), (b'{"orderRequestId": 5}', 400),
                          (b"not json", 400), (b'{"orderRequestId": "%s"}' % R2.encode(), 404)):
        acts = ev(orders.method, s, T, "1", "cancel", payload)
        assert respond(acts)[1] == code, (payload, acts)
        assert not only(acts, "publish")
    acts = ev(orders.method, s, T + 10, "2", "cancel", b'{"orderRequestId": "%s"}' % R1.encode())
    assert respond(acts) == ("2", 200, {"orderRequestId": R1, "cancel": "requested"})
    assert [p[1] for p in only(acts, "publish")] == [R1 + "-cancel"]
    assert kinds(acts)[0] == "save"
    # asking again is fine and sends nothing new
    acts = ev(orders.method, s, T + 11, "3", "cancel", b'{"orderRequestId": "%s"}' % R1.encode())
    assert respond(acts)[1] == 200 and not only(acts, "publish")
    # outside the window: 409
    s = device()
    ev(orders.press, s, T, R1)
    acts = ev(orders.method, s, T + 61, "4", "cancel", b'{"orderRequestId": "%s"}' % R1.encode())
    assert respond(acts)[1:] == (409, {"error": "cancel window passed"})
    c2d(s, T + 62, R1, "delivered")
    acts = ev(orders.method, s, T + 63, "5", "cancel", b'{"orderRequestId": "%s"}' % R1.encode())
    assert respond(acts)[1:] == (409, {"error": "order is finished"})


def test_reboot_method_answers_first():
    s = device()
    acts = ev(orders.method, s, T, "5", "reboot", b"")
    assert kinds(acts)[-2:] == ["method_response", "reboot"]


def test_report_again_sends_the_whole_reported_state():
    # the hub did not take a patch (429/5xx): the next report is everything, not the lost diff
    s = device()
    ev(orders.tick, s, T + 1)
    assert not only(ev(orders.tick, s, T + 2), "report")   # nothing changed: nothing to report
    rep = only(ev(orders.report_again, s, T + 3), "report")
    assert len(rep) == 1 and rep[0][1] == orders.reported(s)
    offline = device(online=False)
    assert not only(ev(orders.report_again, offline, T + 3), "report")


def test_a_twin_too_large_to_read_is_reported_and_changes_no_setting():
    s = device()
    before = dict(orders.reported(s)["settings"])
    acts = ev(orders.twin_too_large, s, T + 1)
    rep = only(acts, "report")
    assert rep and rep[0][1]["rejected"] == {"desired": "twin too large to read"}
    assert orders.reported(s)["settings"] == before
    # a twin read in full later clears it
    ev(orders.twin, s, T + 2, {"desired": {"sku": "SKU-1", "$version": 5}, "reported": {}})
    assert orders.reported(s)["rejected"] == {}


def test_clock_check_says_so_for_a_while():
    s = device()
    assert shown(ev(orders.clock_check, s, T + 1)) == "clock"
    assert shown(ev(orders.tick, s, T + 10)) != "clock"
