# The worst-case state blob (host_tools/bench/mp_state_blob.py drives a device to it through
# the public API) stays at least 25% under the size beyond which restore refuses a blob.
from firmware.app import methods, orders
from host_tools.bench import mp_state_blob


def test_worst_case_blob_keeps_a_quarter_of_headroom():
    n, case = mp_state_blob.worst()
    assert 0 < n <= orders.MAX_BLOB * 3 // 4, (n, case)


def test_the_worst_case_is_a_full_device():
    # the builder really reached the limits: most open orders, each with a cancel waiting
    blob = mp_state_blob.build("x", False)
    s = orders.new("1")
    orders.restore(s, mp_state_blob.T, blob)
    assert not orders.ignored(s)
    st = methods.status(s)
    assert len(st["orders"]) == 12 and len(st["outbox"]) == 20, (len(st["orders"]), st["outbox"])
    assert s["seq"] >= 100000000
