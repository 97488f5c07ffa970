# Memory budget of the hot paths (MicroPython only: CPython has no gc.mem_alloc, so these
# tests pass there without measuring). Byte counts are deterministic, not timing.
import gc

from firmware.app import gestures, orders

T = 1800000000
R = "00000000000000a1"


def measure(fn, *args):
    if not hasattr(gc, "mem_alloc"):
        fn(*args)
        return 0
    gc.collect()
    before = gc.mem_alloc()
    fn(*args)
    return gc.mem_alloc() - before


def idle_feeds(g):
    for t in range(1000, 2000, 10):
        gestures.feed(g, 0, t)


def test_idle_polling_allocates_nothing():
    g = gestures.new()
    gestures.feed(g, 0, 0)
    assert measure(idle_feeds, g) == 0


def device_with_a_finished_order():
    s = orders.new("1.0.0")
    orders.restore(s, T, None)
    orders.twin(s, T, {"sku": "SKU-1"})
    orders.connected(s, T)
    orders.press(s, T, R)
    orders.c2d(s, T, {"messageType": "orderStatus", "$.cid": R},
               b'{"orderRequestId":"%s","orderId":"O-1","status":"delivered"}' % R.encode())
    orders.tick(s, T + 10)
    return s


def test_idle_tick_is_cheap_and_state_is_small():
    if hasattr(gc, "mem_alloc"):
        gc.collect()
        before = gc.mem_alloc()
    s = device_with_a_finished_order()
    if hasattr(gc, "mem_alloc"):
        gc.collect()
        size = gc.mem_alloc() - before
        assert 0 < size < 8192, size      # live state: 2.5-5 KB on 64-bit unix
    assert measure(orders.tick, s, T + 11) <= 256
