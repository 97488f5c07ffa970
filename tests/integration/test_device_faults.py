"""The firmware against every error IoT Hub can return (issue 10), injected by the local hub:
the device ends online with the right settings, and no order is lost or doubled.

The `hub` fixture here overrides the conftest one: a C2D lock of LOCK seconds (IoT Hub: 60)."""
import time

import pytest

from tests.cloud.hub.conftest import running_hub, wait_for
from tests.integration.conftest import DEADLINE, SKU

LOCK = 3
STATUSES = ["accepted", "payment_authorized", "shipped", "delivered"]


@pytest.fixture
def hub(tmp_path):
    with running_hub(tmp_path / "hub", extra_args=["--c2d-lock-seconds", str(LOCK)]) as h:
        yield h


def _ready_button(device, order_service, timeline="payment_authorized=1,shipped=2,delivered=3", **config):
    svc = order_service(timeline)
    svc.profile("button-1")
    svc.start()
    dev = device("button-1", **config)
    return svc, dev


def _reported(hub, device_id="button-1"):
    return hub.service.get_twin(device_id)["properties"]["reported"]


def test_twin_get_throttled_and_failing_is_retried_until_the_button_has_its_product(device, hub):
    hub.service.inject_faults(["twin_get=429:1"])
    dev = device("button-1")
    dev.start()
    dev.wait_online()
    dev.wait(lambda e: e.get("twin_status") == 429, what="the 429")
    hub.service.inject_faults(["twin_get=500:2"])
    dev.wait_screen("ready", timeout=DEADLINE + 20)   # 429: 7.5..15 s, then 500s: ~1..3 s
    statuses = [e["twin_status"] for e in dev.find("twin_status")]
    assert statuses == [429, 500, 500], statuses
    retries = dev.find("twin_get")
    assert len(retries) == 3 and [r["attempt"] for r in retries] == [1, 2, 3]
    wait_for(lambda: _reported(hub).get("settings", {}).get("sku") == SKU, DEADLINE, what="reported sku")
    assert not dev.find("link", 0) or all(e["link"] == "online" for e in dev.find("link"))


def test_reported_patch_not_taken_is_sent_again_as_the_whole_state(device, hub):
    hub.service.inject_faults(["twin_patch=503:2"])
    dev = device("button-1")
    dev.start()
    dev.wait_online()
    dev.wait(lambda e: e.get("report_status") == 503, what="a refused report")
    wait_for(lambda: _reported(hub).get("settings", {}).get("sku") == SKU, DEADLINE + 60,
             what="the reported state after the retries")
    rep = _reported(hub)
    assert rep["firmwareVersion"] and rep["state"] and "rejected" in rep
    assert dev.find("report_again")


def test_connack_3_is_retried_later(device, hub):
    hub.service.inject_faults(["connect=3:1"])
    dev = device("button-1")
    dev.start()
    dev.wait_screen("ready", timeout=DEADLINE + 20)  # CONNACK 3: LATER policy, 7.5..15 s
    assert hub.service.faults() == {}


def test_connection_dropped_mid_order_places_it_exactly_once(device, hub, order_service):
    svc, dev = _ready_button(device, order_service)
    dev.start()
    dev.wait_screen("ready")
    mark = dev.mark()
    hub.service.inject_faults(["drop=1"])  # the order request's PUBLISH kills the connection
    dev.gesture("press")
    dev.wait(lambda e: e.get("link") == "offline", since=mark, what="the drop")
    dev.wait_screen("delivered", timeout=DEADLINE + 30, since=mark)
    assert len(svc.orders("button-1")) == 1


def test_lost_puback_brings_the_status_back_after_the_lock_and_nothing_doubles(device, hub, order_service):
    svc, dev = _ready_button(device, order_service, "manual")
    dev.start()
    dev.wait_screen("ready")
    hub.service.inject_faults(["c2d_lock=1"])   # the PUBACK of the next C2D (accepted) is lost
    mark = dev.mark()
    dev.gesture("press")
    dev.wait_screen("accepted", since=mark)
    first = time.monotonic()
    # the same message comes back after the lock, not before; the device takes it once
    dev.wait(lambda e: len([c for c in dev.find("c2d", mark)]) >= 2, timeout=LOCK + DEADLINE, since=mark,
             what="the redelivery")
    assert time.monotonic() - first >= LOCK - 1
    c2d = dev.find("c2d", mark)
    assert c2d[0]["c2d"]["$.mid"] == c2d[1]["c2d"]["$.mid"]
    wait_for(lambda: hub.service.get_device("button-1")["cloudToDeviceMessageCount"] == 0, DEADLINE)
    orders = svc.orders("button-1")
    assert len(orders) == 1, orders


def test_a_status_the_device_had_no_memory_for_is_delivered_again_after_the_reconnect(device, hub, order_service):
    # out of memory in the C2D handler: no PUBACK, the link drops, and the same message comes
    # back (after its lock) on the new connection; nothing is lost or doubled
    svc, dev = _ready_button(device, order_service, "manual")
    dev.start()
    dev.wait_screen("ready")
    dev.gesture("oom")          # the unix HAL: the next C2D's handler raises MemoryError
    mark = dev.mark()
    dev.gesture("press")
    first = dev.wait(lambda e: "c2d" in e, since=mark, what="the first delivery")["c2d"]["$.mid"]
    dev.wait(lambda e: e.get("reason") == "handler out of memory", since=mark, what="the drop")
    dev.wait(lambda e: [c["c2d"]["$.mid"] for c in dev.find("c2d", mark)].count(first) >= 2,
             timeout=LOCK + DEADLINE, since=mark, what="the same message again")
    dev.wait_screen("accepted", since=mark)
    wait_for(lambda: hub.service.get_device("button-1")["cloudToDeviceMessageCount"] == 0, DEADLINE,
             what="the message completed")
    assert len(svc.orders("button-1")) == 1


def test_several_c2d_at_once_with_an_oversized_one_are_acknowledged_in_order(device, hub):
    # the hub closes the connection on a PUBACK out of order: staying online is the assertion
    dev = device("button-1")
    dev.start()
    dev.wait_screen("ready")
    mark = dev.mark()
    hub.service.send_c2d("button-1", b'{"x": 1}', message_id="a")
    hub.service.send_c2d("button-1", b"y" * 20000, message_id="big")   # over the device's 16 KB
    hub.service.send_c2d("button-1", b'{"x": 3}', message_id="c")
    wait_for(lambda: hub.service.get_device("button-1")["cloudToDeviceMessageCount"] == 0, DEADLINE,
             what="all three completed")
    assert not [e for e in dev.find("link", mark) if e["link"] == "offline"], dev.tail()


def test_a_wrong_clock_is_resynced_after_the_token_is_refused(device, hub):
    # the device's clock is 2 hours late: every token it makes has expired (CONNACK 5); NTP
    # (ORDER_DEVICE_NTP) answers once asked
    dev = device("button-1", env={"ORDER_DEVICE_TIME_OFFSET": "-7200", "ORDER_DEVICE_NTP": "1"})
    dev.start()
    dev.wait(lambda e: e.get("link") == "auth_error", what="the refused token")
    dev.wait_screen("clock")
    ev = dev.wait(lambda e: e.get("clock") == "resync", what="the re-sync")
    assert ev["moved"] >= 7000
    dev.wait_screen("ready", timeout=DEADLINE + 10)


def test_a_twin_too_large_to_read_is_reported(device, hub):
    dev = device("button-1")
    big = {"note%d" % i: "n" * 4000 for i in range(5)}   # ~20 KB desired, over the device's 16 KB
    hub.service.update_desired("button-1", big)
    dev.start()
    dev.wait_online()
    wait_for(lambda: "twin" in str(_reported(hub).get("rejected", {})), DEADLINE,
             what="the too-large twin reported")
    assert dev.running()
