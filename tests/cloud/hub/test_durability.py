"""C2D queue semantics and state that must survive a hub restart."""
import json
import time

import pytest

from host_tools.cloud.hub.service_client import ServiceError
from tests.cloud.hub.conftest import wait_for
from tests.cloud.hub.mqtt_peer import Peer


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
