"""Devices that break the rules: each loses its own connection, the hub keeps serving others."""
import ssl
import time

import pytest

from tests.cloud.hub.conftest import running_hub, wait_for
from tests.cloud.hub.mqtt_peer import (Peer, closed_by_peer, connect_packet, publish_packet, raw_device,
                                 subscribe_packet, tls_socket)


CONNECT_TIMEOUT = 2


@pytest.fixture
def hub(tmp_path):
    """A hub that gives a new connection only 2 s to send CONNECT (keeps the half-open tests short)."""
    with running_hub(tmp_path / "hub", connect_timeout=CONNECT_TIMEOUT) as h:
        yield h


@pytest.fixture
def good(hub):
    """A well-behaved device that must keep working while others misbehave."""
    key = hub.add_device("good")
    peer = Peer(hub, "good", key=key)
    assert peer.connect() == 0
    peer.subscribe("devices/good/messages/devicebound/#")
    yield peer
    peer.close()


@pytest.fixture
def bad_key(hub):
    hub.add_device("other")
    return hub.add_device("bad")


def _good_still_served(hub, good, tag):
    good.publish("devices/good/messages/events/", tag.encode(), qos=1)
    assert hub.service.wait_event(lambda e: e["body"] == tag.encode(), 10, device_id="good")
    hub.service.send_c2d("good", tag)
    good.wait_message("devices/good/messages/devicebound/")
    assert not good.disconnected.is_set()


@pytest.mark.parametrize("packet", [
    publish_packet("devices/other/messages/events/", b"spoof", qos=1),
    publish_packet("devices/bad/messages/devicebound/x", b"no", qos=0),
    publish_packet("some/random/topic", b"x", qos=0),
    publish_packet("$iothub/twin/res/200/?$rid=1", b"{}", qos=0),
    subscribe_packet("devices/other/messages/devicebound/#"),
    subscribe_packet("#"),
    publish_packet("devices/bad/messages/events/", b"qos2", qos=2),
    publish_packet("devices/bad/messages/events/%zz=1", b"bad escape", qos=1),
], ids=["other-device-telemetry", "own-c2d-topic", "random-topic", "twin-res", "other-device-c2d-sub",
        "wildcard-sub", "qos2", "malformed-bag"])
def test_rule_breaking_packet_closes_only_that_connection(hub, good, bad_key, packet):
    s = raw_device(hub, "bad", bad_key)
    s.sendall(packet)
    assert closed_by_peer(s), "hub kept the connection open"
    s.close()
    assert not hub.service.events(0, 0, device_id="other")[0], "spoofed telemetry was recorded"
    _good_still_served(hub, good, "after-" + str(packet[:8]))


def test_oversized_publish_closes_connection(hub, good, bad_key):
    s = raw_device(hub, "bad", bad_key)
    try:
        s.sendall(publish_packet("devices/bad/messages/events/", b"x" * (256 * 1024 + 1), qos=1))
    except (ConnectionError, ssl.SSLError):
        pass  # the hub may close as soon as the length is read, while the rest is still going out
    assert closed_by_peer(s)
    s.close()
    assert not hub.service.events(0, 0, device_id="bad")[0]
    _good_still_served(hub, good, "after-oversize")


def test_publish_announcing_a_huge_length_is_not_buffered(hub, good, bad_key):
    s = raw_device(hub, "bad", bad_key)
    # fixed header announcing ~200 MB, then a little data
    s.sendall(b"\x32\xff\xff\xff\x5f" + b"\x00\x05abcde" + b"y" * 1000)
    assert closed_by_peer(s)
    s.close()
    _good_still_served(hub, good, "after-huge-length")


def test_max_size_publish_is_accepted(hub, bad_key):
    s = raw_device(hub, "bad", bad_key)
    topic = "devices/bad/messages/events/"
    body = b"z" * (256 * 1024 - len(topic))
    s.sendall(publish_packet(topic, body, qos=1, packet_id=7))
    s.settimeout(10)
    puback = s.recv(4)
    assert puback == b"\x40\x02\x00\x07"
    s.close()


@pytest.mark.parametrize("garbage", [b"\x00" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff" * 10,
                                     b"\x10\x05\x00\x04MQ"])
def test_garbage_instead_of_connect(hub, good, garbage):
    s = tls_socket(hub)
    s.sendall(garbage)
    assert closed_by_peer(s)
    s.close()
    _good_still_served(hub, good, "after-garbage-%d" % len(garbage))


def test_garbage_after_connect(hub, good, bad_key):
    s = raw_device(hub, "bad", bad_key)
    s.sendall(b"\xf0\x00" + b"\x00" * 32)
    assert closed_by_peer(s)
    s.close()
    _good_still_served(hub, good, "after-garbage-connected")


def test_half_open_without_connect_is_closed(hub, good):
    # TLS handshake done, then silence: the hub waits at most its CONNECT timeout
    s = tls_socket(hub, timeout=20)
    _good_still_served(hub, good, "during-half-open")
    assert closed_by_peer(s, timeout=CONNECT_TIMEOUT + 8)
    s.close()


def test_silent_connection_times_out_at_one_and_a_half_keepalive(hub, good, bad_key):
    s = raw_device(hub, "bad", bad_key, keepalive=1)
    start = time.monotonic()
    assert closed_by_peer(s, timeout=10)
    assert time.monotonic() - start >= 1.0
    s.close()
    _good_still_served(hub, good, "after-keepalive")


def test_plain_tcp_without_tls_is_dropped(hub, good):
    import socket
    s = socket.create_connection((hub.host, hub.mqtt_port), timeout=10)
    s.sendall(connect_packet("good", "x", "y"))
    assert closed_by_peer(s, timeout=15)
    s.close()
    _good_still_served(hub, good, "after-plain-tcp")


def test_many_hostile_connections_at_once(hub, good, bad_key):
    socks = [tls_socket(hub) for _ in range(10)]
    for i, s in enumerate(socks):
        s.sendall(b"\xff" * (i + 1))
    for s in socks:
        assert closed_by_peer(s)
        s.close()
    _good_still_served(hub, good, "after-many")


def test_connack_5_for_unknown_disabled_and_bad_signature(hub):
    key = hub.add_device("dev")
    assert Peer(hub, "ghost", key=key).connect() == 5
    assert Peer(hub, "dev", token=hub.device_token("dev", "A" * 43 + "=")).connect() == 5
    # token for another device
    assert Peer(hub, "dev", token=hub.device_token("ghost", key)).connect() == 5
    # username naming another device
    p = Peer(hub, "dev", key=key)
    p.client.username_pw_set("127.0.0.1/ghost/?api-version=2021-04-12", hub.device_token("dev", key))
    assert p.connect() == 5
    # username without api-version
    p = Peer(hub, "dev", key=key)
    p.client.username_pw_set("127.0.0.1/dev/", hub.device_token("dev", key))
    assert p.connect() == 5
    # expired
    assert Peer(hub, "dev", token=hub.device_token("dev", key, ttl=-1)).connect() == 5
    # disabled
    hub.service.create_device("dev", primary_key=key, status="disabled")
    assert Peer(hub, "dev", key=key).connect() == 5
    hub.service.create_device("dev", primary_key=key, status="enabled")
    assert Peer(hub, "dev", key=key).connect() == 0


def test_rejected_connect_does_not_kick_the_connected_device(hub, good):
    assert Peer(hub, "good", token=hub.device_token("good", "A" * 43 + "=")).connect() == 5
    _good_still_served(hub, good, "after-impostor")


def test_live_connection_is_closed_when_its_token_expires(hub):
    key = hub.add_device("short")
    peer = Peer(hub, "short", token=hub.device_token("short", key, ttl=2))
    assert peer.connect() == 0
    assert peer.disconnected.wait(10), "connection outlived its token"
    peer.client.loop_stop()


def test_disabling_a_device_drops_its_connection(hub):
    key = hub.add_device("dis")
    peer = Peer(hub, "dis", key=key)
    assert peer.connect() == 0
    hub.service.create_device("dis", primary_key=key, status="disabled")
    assert peer.disconnected.wait(10)
    peer.client.loop_stop()
    wait_for(lambda: hub.service.get_device("dis")["connectionState"] == "Disconnected")
