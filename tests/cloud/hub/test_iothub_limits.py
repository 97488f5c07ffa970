"""What IoT Hub refuses, the local hub refuses, with IoT Hub's answer (limits from the IoT Hub docs:
device twins, MQTT support; see host_tools/cloud/hub/README.md)."""
import json
import socket
import time

import pytest

from host_tools.cloud.hub.service_client import ServiceError
from tests.cloud.hub.conftest import running_hub
from tests.cloud.hub.mqtt_peer import (closed_by_peer, publish_packet, raw_device, read_packet, subscribe_packet,
                                       twin_request)

CONNECT_TIMEOUT = 2
MAX_IDLE = 3
REPORTED = "$iothub/twin/PATCH/properties/reported/?$rid=%s"


@pytest.fixture
def hub(tmp_path):
    with running_hub(tmp_path / "hub", connect_timeout=CONNECT_TIMEOUT) as h:
        yield h


@pytest.fixture
def idle_hub(tmp_path):
    """IoT Hub caps the silence any keep-alive allows at 1767 s; here at MAX_IDLE s."""
    with running_hub(tmp_path / "hub", connect_timeout=CONNECT_TIMEOUT,
                     extra_args=["--max-idle-seconds", str(MAX_IDLE)]) as h:
        yield h


@pytest.fixture
def twin_dev(hub):
    key = hub.add_device("tw")
    s = raw_device(hub, "tw", key)
    s.sendall(subscribe_packet("$iothub/twin/res/#"))
    assert read_packet(s)[0] == 9  # SUBACK
    yield s
    s.close()


def _nest(depth, leaf):
    doc = leaf
    for i in range(depth):
        doc = {"k%d" % i: doc}
    return doc


@pytest.mark.parametrize("patch", [
    {"a.b": 1}, {"a b": 1}, {"$custom": 1}, {"ctl\x01": 1}, {"c1\x85": 1}, {"": 1},
    {"k" * 1025: 1}, {"s": "x" * 4097}, {"n": {"deep": {"a.b": 1}}}, {"l": ["x" * 4097]},
    _nest(11, 1), "not an object",
], ids=["dot", "space", "dollar", "control", "c1-control", "empty-key", "long-key", "long-string",
        "nested-dot", "long-string-in-list", "depth-11", "not-object"])
def test_reported_patch_breaking_twin_rules_is_400_and_changes_nothing(hub, twin_dev, patch):
    status, _ = twin_request(twin_dev, REPORTED % "1", json.dumps(patch).encode(), "1")
    assert status == 400
    assert hub.service.get_twin("tw")["properties"]["reported"]["$version"] == 1
    # the connection stays usable
    assert twin_request(twin_dev, REPORTED % "2", b'{"ok": 1}', "2")[0] == 204


def test_reported_patch_at_the_limits_is_accepted(hub, twin_dev):
    patch = {"k" * 1024: "v" * 4096, "deep": _nest(9, "leaf"), "utf8": "\u00e9" * 2048}
    status, _ = twin_request(twin_dev, REPORTED % "1", json.dumps(patch).encode(), "1")
    assert status == 204
    reported = hub.service.get_twin("tw")["properties"]["reported"]
    assert reported["k" * 1024] == "v" * 4096 and reported["utf8"] == "\u00e9" * 2048


def test_reported_section_over_32_kb_is_400(hub, twin_dev):
    for i in range(8):  # 8 x 4 KB fits in 32 KB (32,768 bytes)
        assert twin_request(twin_dev, REPORTED % i, json.dumps({"f%d" % i: "x" * 4000}).encode(), str(i))[0] == 204
    status, _ = twin_request(twin_dev, REPORTED % "9", json.dumps({"f9": "x" * 4000}).encode(), "9")
    assert status == 400
    assert "f9" not in hub.service.get_twin("tw")["properties"]["reported"]


def test_5000_level_patch_is_400_over_mqtt_and_the_service_api(hub, twin_dev):
    deep = ('{"a":' * 5000 + "1" + "}" * 5000).encode()
    assert twin_request(twin_dev, REPORTED % "1", deep, "1")[0] == 400
    status, body = _raw_service(hub, "PATCH", "/twins/tw", b'{"properties":{"desired":' + deep + b"}}")
    assert status == 400, body
    assert "Traceback" not in open(hub.stderr_path).read()


@pytest.mark.parametrize("desired", [{"a.b": 1}, {"$x": 1}, {"s": "x" * 4097}, _nest(11, 1)],
                         ids=["dot", "dollar", "long-string", "depth-11"])
def test_desired_patch_breaking_twin_rules_is_400(hub, desired):
    hub.add_device("sd")
    with pytest.raises(ServiceError) as exc:
        hub.service.update_desired("sd", desired)
    assert exc.value.status == 400
    assert hub.service.get_twin("sd")["properties"]["desired"]["$version"] == 1


def test_desired_patch_may_carry_the_read_only_version_and_metadata(hub):
    hub.add_device("rd")
    twin = hub.service.update_desired("rd", {"led": 1, "$version": 7, "$metadata": {}})
    assert twin["properties"]["desired"]["led"] == 1


@pytest.mark.parametrize("method,path,body", [
    ("PUT", "/devices/x1", b'{"authentication": "sas"}'),
    ("PUT", "/devices/x1", b'{"authentication": {"symmetricKey": [1]}}'),
    ("PATCH", "/twins/x1", b'{"properties": [1]}'),
    ("PATCH", "/twins/x1", b'{"tags": [1]}'),
    ("POST", "/twins/x1/methods", b'{"methodName": "m", "responseTimeoutInSeconds": "x"}'),
    ("POST", "/test-tooling/faults", b'{"inject": ["nonsense"]}'),
], ids=["auth-not-object", "keys-not-object", "properties-not-object", "tags-not-object",
        "timeout-not-number", "bad-fault"])
def test_bad_service_requests_are_400_never_500(hub, method, path, body):
    hub.add_device("x1")
    status, text = _raw_service(hub, method, path, body)
    assert status == 400, text
    assert "Traceback" not in open(hub.stderr_path).read()


def _raw_service(hub, method, path, body):
    import http.client
    import ssl
    conn = http.client.HTTPSConnection(hub.host, hub.api_port, context=ssl.create_default_context(cafile=hub.ca_pem),
                                       timeout=30)
    conn.request(method, path + "?api-version=2021-04-12", body=body,
                 headers={"Authorization": hub.service._auth(), "Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    return resp.status, text


# ---- MQTT framing ------------------------------------------------------------------------------
def _hidden_publish():
    """A PUBLISH with a wildcard topic whose payload is a valid QoS 1 telemetry PUBLISH."""
    inner = publish_packet("devices/bad/messages/events/", b"smuggled", qos=1, packet_id=9)
    return publish_packet("devices/bad/messages/events/+", inner, qos=0)


@pytest.mark.parametrize("packet", [
    _hidden_publish(),
    publish_packet("devices/bad/messages/events/#", b"x", qos=1),
    b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 16,                      # 5-byte remaining length
    b"\x82\x05\x00\x01\x00\x01#",                                      # SUBSCRIBE without its QoS byte
    b"\x80\x09\x00\x01\x00\x03abc\x01",                                # SUBSCRIBE with reserved flags 0
    b"\x40\x03\x00\x01\x00",                                           # PUBACK one byte too long
    b"\x36\x05\x00\x01a\x00\x01",                                      # QoS 3
    b"\x10\x00",                                                       # a second CONNECT
    b"\x62\x02\x00\x01",                                               # PUBREL (no QoS 2 at IoT Hub)
], ids=["publish-hidden-in-payload", "wildcard-topic", "5-byte-length", "subscribe-short", "subscribe-flags",
        "puback-long", "qos3", "second-connect", "pubrel"])
def test_malformed_packet_closes_the_connection_and_nothing_inside_it_counts(hub, packet):
    key = hub.add_device("bad")
    s = raw_device(hub, "bad", key)
    s.sendall(packet)
    assert closed_by_peer(s), "hub kept the connection open"
    s.close()
    assert not hub.service.events(0, 0, device_id="bad")[0], "a packet inside a malformed one was taken"


def test_partial_packet_is_bounded_by_the_connect_timeout_even_with_keepalive_0(hub):
    key = hub.add_device("slow")
    s = raw_device(hub, "slow", key, keepalive=0)
    s.sendall(b"\x32\x40\x00")  # the start of a PUBLISH that never completes
    start = time.monotonic()
    assert closed_by_peer(s, timeout=CONNECT_TIMEOUT + 8)
    assert time.monotonic() - start < CONNECT_TIMEOUT + 5
    s.close()


def test_plain_tcp_that_never_starts_tls_is_dropped_after_the_connect_timeout(hub):
    s = socket.create_connection((hub.host, hub.mqtt_port), timeout=30)
    start = time.monotonic()
    assert closed_by_peer(s, timeout=CONNECT_TIMEOUT + 10)
    assert time.monotonic() - start < CONNECT_TIMEOUT + 5
    s.close()


@pytest.mark.parametrize("keepalive", [0, 1178, 3000])
def test_keepalive_above_1177_or_0_is_accepted_but_silence_is_capped(idle_hub, keepalive):
    # IoT Hub accepts the CONNECT and caps its server-side timeout at 1767 s; this hub runs with
    # --max-idle-seconds 3 so the cap shows in seconds
    hub = idle_hub
    key = hub.add_device("ka")
    s = raw_device(hub, "ka", key, keepalive=keepalive)  # CONNACK 0
    start = time.monotonic()
    assert closed_by_peer(s, timeout=MAX_IDLE + 10)
    assert time.monotonic() - start >= MAX_IDLE - 0.5
    s.close()


def test_pubacks_come_in_the_order_of_the_publishes(hub):
    key = hub.add_device("ord")
    s = raw_device(hub, "ord", key)
    ids = list(range(1, 31))
    s.sendall(b"".join(publish_packet("devices/ord/messages/events/", b"m%d" % i, qos=1, packet_id=i)
                       for i in ids))
    acks = []
    while len(acks) < len(ids):
        ptype, _, body = read_packet(s)
        assert ptype == 4
        acks.append(int.from_bytes(body, "big"))
    assert acks == ids
    s.close()


def test_retained_telemetry_is_passed_on_with_mqtt_retain(hub):
    key = hub.add_device("ret")
    s = raw_device(hub, "ret", key)
    s.sendall(publish_packet("devices/ret/messages/events/a=1", b"kept?", qos=1, retain=True))
    assert read_packet(s)[0] == 4
    s.sendall(publish_packet("devices/ret/messages/events/", b"plain", qos=1, packet_id=2))
    assert read_packet(s)[0] == 4
    by_body = {}

    def both(e):
        by_body[e["body"]] = e["properties"]
        return b"kept?" in by_body and b"plain" in by_body
    assert hub.service.wait_event(both, 20, device_id="ret")
    assert by_body[b"kept?"] == {"a": "1", "mqtt-retain": "true"}
    assert "mqtt-retain" not in by_body[b"plain"]
    s.close()


def test_documented_subscriptions_only(hub):
    key = hub.add_device("sub")
    s = raw_device(hub, "sub", key)
    filters = ["devices/sub/messages/devicebound/#", "$iothub/twin/res/#",
               "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#"]
    for i, f in enumerate(filters * 2):  # subscribing again does not count twice
        s.sendall(subscribe_packet(f, packet_id=i + 1))
        ptype, _, body = read_packet(s)
        assert ptype == 9 and body[2:] == b"\x01"
    s.sendall(subscribe_packet("devices/sub/messages/devicebound/+", packet_id=20))
    assert closed_by_peer(s)
    s.close()


def test_subscribe_qos_2_is_granted_qos_1(hub):
    key = hub.add_device("q2")
    s = raw_device(hub, "q2", key)
    s.sendall(subscribe_packet("$iothub/twin/res/#", qos=2))
    ptype, _, body = read_packet(s)
    assert ptype == 9 and body == b"\x00\x01\x01"
    s.close()
