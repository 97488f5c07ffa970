# Reconciliation on the device (firmware/app/README.md, "statusQuery"): when the app asks the
# cloud for the status of its open orders, what it lists, how often, and how the answers rank.
import json

from firmware.app import methods, orders, schemas
from tests.core.test_app_orders import R1, R2, R3, T, c2d, device, ev, only, order_status


def queries(acts):
    return [a for a in only(acts, "publish") if a[2]["messageType"] == schemas.STATUS_QUERY]


def asked(acts):
    # -> the orderRequestIds of the one statusQuery in acts, or None
    q = queries(acts)
    assert len(q) <= 1, q
    return json.loads(q[0][3])["orderRequestIds"] if q else None


def accepted(s, now, *rids):
    for rid in rids:
        ev(orders.press, s, now, rid)
        c2d(s, now, rid, "accepted", "O-" + rid)


def test_the_query_on_the_wire():
    s = device(maxOpenOrders=3)
    accepted(s, T, R2, R1)
    ev(orders.disconnected, s, T + 1)
    q = queries(ev(orders.connected, s, T + 2))
    assert len(q) == 1
    _, tag, props, body = q[0]
    assert tag == "q%d" % (T + 2) == props["$.mid"]
    assert props == {"$.mid": tag, "$.ct": "application/json", "$.ce": "utf-8",
                     "messageType": "statusQuery"}
    assert body == b'{"type":"statusQuery","orderRequestIds":["%s","%s"]}' % (
        R1.encode(), R2.encode())                 # sorted: the same bytes on both interpreters
    # the PUBACK of a query is nobody's: it changes nothing
    before = json.dumps(methods.status(s))
    assert not only(ev(orders.published, s, T + 3, tag), "save")
    assert json.dumps(methods.status(s)) == before


def test_after_every_reconnect_only_when_the_cloud_has_an_open_order():
    s = device()
    assert asked(ev(orders.connected, s, T)) is None            # nothing open
    ev(orders.press, s, T, R1)
    ev(orders.disconnected, s, T + 1)
    # the request was never PUBACKed: the outbox re-sends it, nothing to ask for
    acts = ev(orders.connected, s, T + 100)
    assert asked(acts) is None and [p[1] for p in only(acts, "publish")] == [R1]
    c2d(s, T + 101, R1, "accepted")
    ev(orders.disconnected, s, T + 102)
    assert asked(ev(orders.connected, s, T + 200)) == [R1]
    c2d(s, T + 201, R1, "delivered")
    ev(orders.disconnected, s, T + 202)
    assert asked(ev(orders.connected, s, T + 300)) is None      # finished: nothing to ask


def test_a_pubacked_request_is_listed_but_triggers_nothing_alone():
    s = device(maxOpenOrders=2)
    ev(orders.press, s, T, R1)
    ev(orders.published, s, T, R1)
    ev(orders.disconnected, s, T + 1)
    acts = ev(orders.connected, s, T + 100)
    assert asked(acts) is None and [p[1] for p in only(acts, "publish")] == [R1]
    # with an order that has a status, the PUBACKed one is asked for too
    ev(orders.published, s, T + 100, R1)
    ev(orders.press, s, T + 101, R2)
    c2d(s, T + 101, R2, "accepted", "O-2")
    ev(orders.disconnected, s, T + 102)
    assert asked(ev(orders.connected, s, T + 200)) == [R1, R2]


def test_no_news_for_resend_seconds_asks_at_most_once_per_resend_seconds():
    s = device(resendSeconds=30)
    accepted(s, T, R1)
    assert asked(ev(orders.tick, s, T + 29)) is None
    assert asked(ev(orders.tick, s, T + 30)) == [R1]
    # no answer: asked again resendSeconds later, not before
    for t in range(T + 31, T + 60):
        assert asked(ev(orders.tick, s, t)) is None
    assert asked(ev(orders.tick, s, T + 60)) == [R1]
    # an answer (even the same status: a duplicate) is news: the clock starts again
    c2d(s, T + 70, R1, "accepted", "O-" + R1)
    assert s["ignored"] == {"duplicate": 1}
    assert asked(ev(orders.tick, s, T + 99)) is None
    assert asked(ev(orders.tick, s, T + 100)) == [R1]
    # a reconnect inside the interval does not ask again
    ev(orders.disconnected, s, T + 101)
    assert asked(ev(orders.connected, s, T + 102)) is None
    assert asked(ev(orders.tick, s, T + 129)) is None
    assert asked(ev(orders.tick, s, T + 130)) == [R1]
    # offline: nothing, whatever the time
    ev(orders.disconnected, s, T + 131)
    assert asked(ev(orders.tick, s, T + 10000)) is None
    # a clock that went back allows one query, then the interval holds from there
    ev(orders.connected, s, T + 10001)
    assert asked(ev(orders.tick, s, T + 5000)) == [R1]
    assert asked(ev(orders.tick, s, T + 5001)) is None


def test_news_for_one_order_does_not_silence_another():
    s = device(maxOpenOrders=2, resendSeconds=30)
    accepted(s, T, R1, R2)
    c2d(s, T + 25, R1, "payment_authorized", "O-" + R1)
    assert asked(ev(orders.tick, s, T + 30)) == [R1, R2]     # R2 heard nothing for 30 s


def test_a_query_is_bounded_by_the_open_orders():
    s = device(maxOpenOrders=10, resendSeconds=10)
    rids = ["%016x" % (0xd0 + i) for i in range(10)]
    accepted(s, T, *rids)
    ids = asked(ev(orders.tick, s, T + 10))
    assert ids == sorted(rids) and len(ids) == schemas.QUERY_MAX
    assert len(schemas.status_query(ids + [R1, R2, R3])) == len(schemas.status_query(ids))


def test_after_a_reboot_the_first_connect_asks():
    s = device()
    log = [ev(orders.press, s, T, R1), c2d(s, T + 1, R1, "shipped")]
    blob = [a for acts in log for a in acts if a[0] == "save"][-1][1]
    assert b"heard" not in blob and len(json.loads(blob)["orders"][R1]) == 6   # RAM only
    s2 = orders.new("1")
    ev(orders.restore, s2, T + 2, blob)
    assert asked(ev(orders.connected, s2, T + 3)) == [R1]


def test_answers_rank_as_any_status():
    # what the service answers: the latest it knows. Offline past the TTL of "shipped" and
    # "delivered", the device still shows "accepted"; the answer "delivered" moves it on
    s = device()
    accepted(s, T, R1)
    ev(orders.disconnected, s, T + 1)
    assert asked(ev(orders.connected, s, T + 86400)) == [R1]
    c2d(s, T + 86401, R1, "delivered", "O-" + R1)
    assert order_status(s, R1) == "delivered" and s["outbox"] == []
    # the same answer twice (a redelivered query): a duplicate; an older one: stale
    c2d(s, T + 86402, R1, "delivered", "O-" + R1)
    c2d(s, T + 86403, R1, "shipped", "O-" + R1)
    assert order_status(s, R1) == "delivered"
    assert s["ignored"] == {"duplicate": 1, "stale": 1}
    # nothing open: no more queries
    assert asked(ev(orders.tick, s, T + 99999)) is None
