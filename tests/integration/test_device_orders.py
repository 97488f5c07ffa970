"""The real firmware (unix MicroPython) against the real local hub and the real order service.

Each test awaits EVT lines with deadlines (device_harness.py); none sleeps for a fixed time.
"""
from tests.integration.conftest import DEADLINE

STATUSES = ["accepted", "payment_authorized", "shipped", "delivered"]


def _subsequence(want, got):
    it = iter(got)
    return all(any(x == w for x in it) for w in want)


def _ready(dev):
    dev.start()
    dev.wait_online()
    dev.wait_screen("ready")


def _ready_button(device, order_service, *timeline):
    # The order service running with a customer for button-1, and button-1 online and ready.
    svc = order_service(*timeline)
    svc.profile("button-1")
    svc.start()
    dev = device("button-1")
    _ready(dev)
    return svc, dev


def test_press_is_delivered_with_every_status_shown_in_order(device, order_service):
    svc, dev = _ready_button(device, order_service)
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("delivered", timeout=DEADLINE + 10, since=mark)
    shown = dev.screens(mark)
    assert _subsequence(["sending"] + STATUSES, shown), shown
    assert shown.index("sending") < shown.index("accepted")
    orders = svc.orders("button-1")
    assert len(orders) == 1, orders
    assert dev.find("puback", mark), "the order request was never PUBACKed"


def test_second_press_while_an_order_is_open_places_no_second_order(device, order_service):
    svc, dev = _ready_button(device, order_service, "manual")   # the order stays open
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("accepted", since=mark)
    dev.gesture("press")
    dev.wait_screen("busy", since=mark)
    assert len(dev.find("publish", mark)) == 1
    assert len(svc.orders("button-1")) == 1


def test_keyboard_enter_is_a_press(device, order_service):
    svc, dev = _ready_button(device, order_service, "manual")
    mark = dev.mark()
    dev.key("")
    dev.wait_screen("accepted", since=mark)
    assert dev.find("gesture", mark)[0]["gesture"] == "press"


def test_long_press_inside_the_window_cancels(device, order_service):
    svc, dev = _ready_button(device, order_service, "manual")
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("accepted", since=mark)
    dev.gesture("long")
    dev.wait_screen("cancelling", since=mark)
    dev.wait_screen("cancelled", since=mark)
    orders = svc.orders("button-1")
    assert len(orders) == 1 and orders[0]["status"] == "cancelled", orders


def test_hub_down_at_the_press_order_waits_and_is_placed_once(device, order_service, hub):
    svc, dev = _ready_button(device, order_service)
    mark = dev.mark()
    hub.stop()
    dev.wait(lambda e: e.get("link") == "offline", since=mark, what="link offline")
    dev.gesture("press")
    dev.wait_screen("saved", since=mark)
    assert not dev.find("puback", mark)
    hub.restart()
    dev.wait_online(timeout=DEADLINE + 10, since=mark)
    dev.wait_screen("delivered", timeout=DEADLINE + 10, since=mark)
    assert len(svc.orders("button-1")) == 1


def test_power_cut_right_after_the_press_gives_exactly_one_order(device, order_service):
    svc, dev = _ready_button(device, order_service)
    mark = dev.mark()
    dev.gesture("press")
    dev.wait(lambda e: "saved" in e, since=mark, what="order saved")
    dev.kill()
    mark = dev.mark()
    dev.start()
    dev.wait_screen("delivered", timeout=DEADLINE + 10, since=mark)
    assert len(svc.orders("button-1")) == 1
    # and after delivery nothing is re-sent: the outbox is empty
    dev.stop()
    mark = dev.mark()
    dev.start()
    dev.wait_screen("delivered", since=mark)
    dev.wait_online(since=mark)
    assert len(svc.orders("button-1")) == 1
