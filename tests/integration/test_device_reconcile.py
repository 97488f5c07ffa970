"""Reconciliation end to end: the real firmware (unix MicroPython), the real hub, the real
`orders serve`. A status the device never received (its C2D message expired in the hub) comes
back when the device asks with a statusQuery (firmware/app/README.md, "Messages on the wire").

Each test awaits EVT lines or hub state with deadlines; none sleeps for a fixed time.
"""
import json
import time

from tests.integration.conftest import DEADLINE, orders_cli, wait_for

TTL = 2   # seconds a status waits in the hub (orders serve --c2d-ttl)


def _queries(dev, since):
    return [e for e in dev.find("publish", since) if str(e["publish"]).startswith("q")]


def _ignored(dev, reason, n, since):
    dev.wait(lambda e: (e.get("ignored") or {}).get(reason) == n, since=since,
             what="%s counted %d times" % (reason, n))


def _accepted_button(device, order_service):
    # a manual timeline (statuses move only when the test says), a short C2D TTL; the button
    # has one order, accepted
    svc = order_service("manual", "--c2d-ttl", str(TTL))
    svc.profile("button-1")
    svc.start()
    dev = device("button-1")
    dev.start()
    dev.wait_online()
    dev.wait_screen("ready")
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("accepted", since=mark)
    [order] = svc.orders("button-1")
    return svc, dev, order["orderRequestId"]


def test_offline_past_the_ttl_of_every_status_it_comes_back_delivered(device, order_service, hub):
    svc, dev, rid = _accepted_button(device, order_service)
    dev.stop()                                    # the device is away
    orders_cli(svc.data, "advance", rid, "--to", "delivered")
    # the service sent payment_authorized, shipped and delivered into the hub's queue ...
    wait_for(lambda: hub.service.get_device("button-1")["cloudToDeviceMessageCount"] >= 3,
             DEADLINE, what="three statuses queued in the hub")
    sent = time.time()
    # ... and the hub drops them once their TTL is over
    wait_for(lambda: time.time() > sent + TTL + 0.5, DEADLINE, what="the statuses' TTL to pass")
    mark = dev.mark()
    dev.start()
    dev.wait_screen("delivered", timeout=DEADLINE + 10, since=mark)
    shown = dev.screens(mark)
    assert "payment_authorized" not in shown and "shipped" not in shown, shown   # expired
    [query] = _queries(dev, mark)
    assert dev.find("puback", mark)
    assert svc.orders("button-1")[0]["status"] == "delivered"
    # finished: the next connect asks nothing
    dev.stop()
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    dev.wait_screen("delivered", since=mark)
    assert not _queries(dev, mark)


def test_a_duplicate_answer_and_a_stale_one_change_nothing(device, order_service, hub):
    svc, dev, rid = _accepted_button(device, order_service)
    # a reconnect with an order open: the query's answer is the status the device shows
    dev.stop()
    mark = dev.mark()
    dev.start()
    dev.wait_online(since=mark)
    _ignored(dev, "duplicate", 1, mark)
    assert len(_queries(dev, mark)) == 1
    dev.wait_screen("accepted", since=mark)
    # the order moves on; an answer older than what the device shows arrives late (as a
    # replayed or delayed status would): stale, counted, the screen stays
    orders_cli(svc.data, "advance", rid, "--to", "shipped")
    dev.wait_screen("shipped", since=mark)
    [order] = svc.orders("button-1")
    body = {"orderRequestId": rid, "orderId": order["orderId"], "status": "payment_authorized"}
    hub.service.send_c2d("button-1", json.dumps(body), properties={"messageType": "orderStatus"},
                         correlation_id=rid, content_type="application/json",
                         content_encoding="utf-8")
    _ignored(dev, "stale", 1, mark)
    assert dev.screens(mark)[-1] == "shipped"
