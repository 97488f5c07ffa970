"""C2D queue semantics and state that must survive a hub restart."""
import json
import time

import pytest

from host_tools.cloud.hub.service_client import ServiceError
from tests.cloud.hub.conftest import wait_for
from tests.cloud.hub.mqtt_peer import Peer, _recv_exact, raw_device, subscribe_packet


def _read_publish(s, timeout=10):
    """Read one PUBLISH from a raw socket -> (qos, packet_id, topic, payload)."""
    s.settimeout(timeout)
    first = _recv_exact(s, 1)[0]
    mult, length = 1, 0
    while True:
        b = _recv_exact(s, 1)[0]
        length += (b & 127) * mult
        mult *= 128
        if not b & 128:
            break
    data = _recv_exact(s, length)
    if first >> 4 != 3:
        return _read_publish(s, timeout) if first >> 4 == 9 else None  # skip SUBACK
    qos = (first >> 1) & 3
    tlen = int.from_bytes(data[:2], "big")
    topic = data[2:2 + tlen].decode()
    pos = 2 + tlen
    pid = None
    if qos:
        pid = int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
    return qos, pid, topic, data[pos:]


def test_unacknowledged_c2d_is_redelivered_after_reconnect(hub):
    key = hub.add_device("r1")
    hub.service.send_c2d("r1", b"first", message_id="m1")
    hub.service.send_c2d("r1", b"second", message_id="m2")

    s = raw_device(hub, "r1", key)
    s.sendall(subscribe_packet("devices/r1/messages/devicebound/#"))
    qos, pid, topic, body = _read_publish(s)
    assert (qos, body) == (1, b"first") and "%24.mid=m1" in topic
    s.close()  # no PUBACK

    s = raw_device(hub, "r1", key)  # CleanSession=0: subscription kept, message comes again
    qos, pid, topic, body = _read_publish(s)
    assert body == b"first"
    s.sendall(b"\x40\x02" + pid.to_bytes(2, "big"))  # PUBACK
    qos, pid2, topic, body = _read_publish(s)
    assert body == b"second"
    s.sendall(b"\x40\x02" + pid2.to_bytes(2, "big"))
    wait_for(lambda: hub.service.get_device("r1")["cloudToDeviceMessageCount"] == 0, what="both completed")
    s.close()


def test_clean_session_drops_queued_c2d(hub):
    key = hub.add_device("r2")
    hub.service.send_c2d("r2", b"old")
    peer = Peer(hub, "r2", key=key, clean_session=True)
    assert peer.connect() == 0
    assert hub.service.get_device("r2")["cloudToDeviceMessageCount"] == 0
    peer.close()


def test_c2d_limits(hub):
    hub.add_device("r3")
    with pytest.raises(ServiceError) as err:
        hub.service.send_c2d("r3", b"x" * (64 * 1024 + 1))
    assert err.value.status == 413
    for i in range(50):
        hub.service.send_c2d("r3", b"%d" % i)
    with pytest.raises(ServiceError) as err:
        hub.service.send_c2d("r3", b"one too many")
    assert err.value.status == 403
    with pytest.raises(ServiceError) as err:
        hub.service.send_c2d("nobody", b"x")
    assert err.value.status == 404


def test_expired_c2d_is_not_delivered(hub):
    key = hub.add_device("r4")
    hub.service.send_c2d("r4", b"stale", ttl=1)
    hub.service.send_c2d("r4", b"fresh")
    wait_for(lambda: hub.service.get_device("r4")["cloudToDeviceMessageCount"] == 2)
    time.sleep(1.1)  # the message's TTL itself is what is under test
    peer = Peer(hub, "r4", key=key)
    assert peer.connect() == 0
    peer.subscribe("devices/r4/messages/devicebound/#")
    peer.wait_message("devices/r4/messages/devicebound/")
    assert [m[1] for m in peer.messages] == [b"fresh"]
    peer.close()


def test_registry_twin_and_undelivered_c2d_survive_a_restart(hub):
    key = hub.add_device("keep")
    peer = Peer(hub, "keep", key=key)
    assert peer.connect() == 0
    peer.subscribe("devices/keep/messages/devicebound/#", "$iothub/twin/res/#")
    peer.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", b'{"fw": "2.0"}', qos=0)
    peer.wait_message("$iothub/twin/res/204/")
    peer.close()
    hub.service.update_desired("keep", {"mode": "eco"})
    hub.service.send_c2d("keep", b"while offline", message_id="off-1", properties={"k": "v"})

    hub.restart()

    dev = hub.service.get_device("keep")
    assert dev["primaryKey"] == key and dev["cloudToDeviceMessageCount"] == 1
    twin = hub.service.get_twin("keep")["properties"]
    assert twin["reported"]["fw"] == "2.0" and twin["desired"]["mode"] == "eco"
    assert twin["desired"]["$version"] == 2

    again = Peer(hub, "keep", key=key)  # subscription of the CleanSession=0 session survived too
    assert again.connect() == 0
    topic, body, qos = again.wait_message("devices/keep/messages/devicebound/")
    assert body == b"while offline" and qos == 1 and "%24.mid=off-1" in topic and topic.endswith("&k=v")
    again.close()


def test_twin_reported_bad_json_is_400_and_changes_nothing(hub):
    key = hub.add_device("tw")
    peer = Peer(hub, "tw", key=key)
    assert peer.connect() == 0
    peer.subscribe("$iothub/twin/res/#", qos=0)
    peer.publish("$iothub/twin/PATCH/properties/reported/?$rid=9", b"{not json", qos=0)
    topic, _, _ = peer.wait_message("$iothub/twin/res/")
    assert topic.startswith("$iothub/twin/res/400/?$rid=9")
    peer.publish("$iothub/twin/PATCH/properties/reported/?$rid=10", b"[1, 2]", qos=0)
    wait_for(lambda: any("rid=10" in m[0] for m in peer.messages))
    assert any(m[0].startswith("$iothub/twin/res/400/?$rid=10") for m in peer.messages)
    peer.publish("$iothub/twin/GET/?$rid=11", b" ", qos=0)
    topic, body, _ = peer.wait_message("$iothub/twin/res/200/")
    assert json.loads(body)["reported"] == {"$version": 1}
    assert not peer.disconnected.is_set()
    peer.close()


def test_twin_reported_patch_merges_and_null_deletes(hub):
    key = hub.add_device("tm")
    peer = Peer(hub, "tm", key=key)
    assert peer.connect() == 0
    peer.subscribe("$iothub/twin/res/#", qos=0)
    peer.publish("$iothub/twin/PATCH/properties/reported/?$rid=a", b'{"a": {"x": 1, "y": 2}, "b": 1}', qos=0)
    peer.publish("$iothub/twin/PATCH/properties/reported/?$rid=b", b'{"a": {"y": null}, "b": null}', qos=0)
    wait_for(lambda: any("rid=b" in m[0] for m in peer.messages))
    topic = next(m[0] for m in peer.messages if "rid=b" in m[0])
    assert topic == "$iothub/twin/res/204/?$rid=b&$version=3"
    reported = hub.service.get_twin("tm")["properties"]["reported"]
    assert reported["a"] == {"x": 1} and "b" not in reported
    peer.close()


def test_telemetry_long_poll_returns_what_arrives_while_waiting(hub):
    import threading
    key = hub.add_device("lp")
    peer = Peer(hub, "lp", key=key)
    assert peer.connect() == 0
    got = []
    t = threading.Thread(target=lambda: got.append(hub.service.events(0, 30, device_id="lp")))
    t.start()
    peer.publish("devices/lp/messages/events/", b"ping", qos=1)
    t.join(40)
    events, nxt = got[0]
    assert [e["body"] for e in events] == [b"ping"] and nxt == events[0]["offset"]  # the Event Hubs offset
    assert hub.service.events(nxt, 0, device_id="lp") == ([], nxt)
    peer.close()


def test_c2d_is_dead_lettered_after_ten_deliveries(hub):
    key = hub.add_device("dl")
    hub.service.send_c2d("dl", b"poison", message_id="p1")
    for attempt in range(10):
        s = raw_device(hub, "dl", key)
        if attempt == 0:
            s.sendall(subscribe_packet("devices/dl/messages/devicebound/#"))
        qos, pid, topic, body = _read_publish(s)
        assert body == b"poison", attempt
        s.close()  # never PUBACKed
    s = raw_device(hub, "dl", key)
    wait_for(lambda: hub.service.get_device("dl")["cloudToDeviceMessageCount"] == 0, what="dead-lettered")
    hub.service.send_c2d("dl", b"next", message_id="n1")
    qos, pid, topic, body = _read_publish(s)
    assert body == b"next" and "%24.mid=n1" in topic
    s.close()
