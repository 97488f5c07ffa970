"""C2D over MQTT the way IoT Hub does it: a delivered message is locked (invisible) for the lock time;
several may be in flight; PUBACKs complete them strictly in the order of the PUBLISHes; a lock that
expires brings the message back without counting a delivery, until its TTL.

These tests replace two that pinned the old behaviour (redelivered at once after a reconnect, and
dead-lettered after ten reconnects): issue 10 changes exactly that."""
import time

import pytest

from tests.cloud.hub.conftest import running_hub, wait_for
from tests.cloud.hub.mqtt_peer import (closed_by_peer, puback_packet, raw_device, read_packet, read_publish,
                                       subscribe_packet)

LOCK = 3.0


@pytest.fixture
def hub(tmp_path):
    with running_hub(tmp_path / "hub", extra_args=["--c2d-lock-seconds", str(LOCK)]) as h:
        yield h


def _device(hub, device_id, key, subscribe=True):
    s = raw_device(hub, device_id, key)
    if subscribe:
        s.sendall(subscribe_packet("devices/%s/messages/devicebound/#" % device_id))
    return s


def _nothing_arrives(s, seconds):
    """True when no packet at all arrives within `seconds` (the connection stays open)."""
    try:
        read_packet(s, timeout=seconds)
    except TimeoutError:
        return True
    except OSError as exc:  # socket.timeout is TimeoutError on 3.10+; ssl may wrap it
        return "timed out" in str(exc)
    return False


def _queued(hub, device_id):
    return hub.service.get_device(device_id)["cloudToDeviceMessageCount"]


def test_unacknowledged_message_comes_back_after_the_lock_and_not_before(hub):
    key = hub.add_device("u1")
    hub.service.send_c2d("u1", b"status", message_id="m1")
    s = _device(hub, "u1", key)
    qos, pid, topic, body, dup = read_publish(s)
    sent = time.monotonic()
    assert (qos, body, dup) == (1, b"status", False) and "%24.mid=m1" in topic
    s.close()  # no PUBACK, and the connection is gone

    s = _device(hub, "u1", key, subscribe=False)  # CleanSession=0: the subscription is kept
    assert _nothing_arrives(s, max(0.1, LOCK * 0.6 - (time.monotonic() - sent))), "redelivered while locked"
    qos, pid, topic, body, dup = read_publish(s, timeout=LOCK + 10)
    assert body == b"status" and time.monotonic() - sent >= LOCK - 0.3
    s.sendall(puback_packet(pid))
    wait_for(lambda: _queued(hub, "u1") == 0, what="completed")
    assert _nothing_arrives(s, LOCK + 1), "a completed message came back"
    s.close()


def test_lock_expiry_on_a_live_connection_resends_with_dup(hub):
    key = hub.add_device("u2")
    hub.service.send_c2d("u2", b"again")
    s = _device(hub, "u2", key)
    _, pid, _, body, dup = read_publish(s)
    sent = time.monotonic()
    assert not dup
    _, pid2, _, body2, dup2 = read_publish(s, timeout=LOCK + 10)
    assert (pid2, body2, dup2) == (pid, b"again", True) and time.monotonic() - sent >= LOCK - 0.3
    s.sendall(puback_packet(pid))
    wait_for(lambda: _queued(hub, "u2") == 0, what="completed")
    s.close()


def test_several_messages_in_flight_completed_in_order(hub):
    key = hub.add_device("u3")
    for i in range(3):
        hub.service.send_c2d("u3", b"m%d" % i)
    s = _device(hub, "u3", key)
    got = [read_publish(s) for _ in range(3)]  # all three before any PUBACK
    assert [g[3] for g in got] == [b"m0", b"m1", b"m2"]
    for g in got:
        s.sendall(puback_packet(g[1]))
    wait_for(lambda: _queued(hub, "u3") == 0, what="all completed")
    s.close()


def test_puback_out_of_order_closes_the_connection_and_completes_nothing(hub):
    key = hub.add_device("u4")
    hub.service.send_c2d("u4", b"first")
    hub.service.send_c2d("u4", b"second")
    s = _device(hub, "u4", key)
    read_publish(s)
    second = read_publish(s)
    s.sendall(puback_packet(second[1]))
    assert closed_by_peer(s)
    s.close()
    assert _queued(hub, "u4") == 2


def test_lock_expiry_is_not_a_delivery_and_never_dead_letters(tmp_path):
    # IoT Hub's max delivery count (10) counts abandons and rejects; over MQTT a message only
    # comes back on lock expiry, so it cycles until its TTL
    with running_hub(tmp_path / "fast", extra_args=["--c2d-lock-seconds", "0.2"]) as hub:
        key = hub.add_device("u5")
        hub.service.send_c2d("u5", b"cycling")
        s = _device(hub, "u5", key)
        deliveries = [read_publish(s) for _ in range(12)]
        assert all(d[3] == b"cycling" for d in deliveries)
        assert _queued(hub, "u5") == 1
        s.sendall(puback_packet(deliveries[0][1]))
        wait_for(lambda: _queued(hub, "u5") == 0, what="completed after 12 deliveries")
        s.close()


def test_unacknowledged_message_stops_at_its_ttl(tmp_path):
    with running_hub(tmp_path / "ttl", extra_args=["--c2d-lock-seconds", "0.5"]) as hub:
        key = hub.add_device("u6")
        hub.service.send_c2d("u6", b"short", ttl=2)
        hub.service.send_c2d("u6", b"long")
        s = _device(hub, "u6", key)
        wait_for(lambda: _queued(hub, "u6") == 1, timeout=15, what="the short one expired")
        s.close()


def test_a_lock_survives_a_hub_restart_and_the_message_still_comes_back(hub):
    key = hub.add_device("u7")
    hub.service.send_c2d("u7", b"durable")
    s = _device(hub, "u7", key)
    read_publish(s)
    sent = time.monotonic()
    s.close()
    hub.restart()
    s = _device(hub, "u7", key, subscribe=False)
    _, pid, _, body, _ = read_publish(s, timeout=LOCK + 15)
    assert body == b"durable" and time.monotonic() - sent >= LOCK - 0.3
    s.sendall(puback_packet(pid))
    wait_for(lambda: _queued(hub, "u7") == 0, what="completed")
    s.close()
