"""DPS's MQTT protocol on the hub's listener, byte for byte as a device sees it (paho)."""
import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from firmware.iothub import dps, sas, topics
from host_tools.cloud import tokens
from tests.cloud.dps.conftest import enroll
from tests.cloud.hub.conftest import hub, wait_for  # noqa: F401  (fixture)


class DpsPeer:
    def __init__(self, hub, scope, reg_id, key=None, token=None, client_id=None, username=None):
        self.messages = []
        self.connack = []
        self.client = mqtt.Client(client_id=client_id or reg_id, clean_session=True, protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=hub.ca_pem)
        token = token or sas.token(dps.dps_resource(scope, reg_id), key, int(time.time()) + 3600,
                                   "registration")
        self.client.username_pw_set(username or dps.dps_username(scope, reg_id), token)
        self.client.on_connect = lambda c, u, f, rc: self.connack.append(rc)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.disconnected = threading.Event()
        self.client.on_disconnect = lambda c, u, rc: self.disconnected.set()
        self.client.connect_async(hub.host, hub.mqtt_port)
        self.client.loop_start()
        wait_for(lambda: self.connack or self.disconnected.is_set(), what="CONNACK")

    def subscribe(self):
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(dps.DPS_RES_FILTER, 1)
        assert done.wait(10)

    def request(self, topic, body, rid):
        self.client.publish(topic, body, 1)

        def answer():
            for t, payload in self.messages:
                res = dps.parse_dps_response(t)
                if res and res[1] == rid:
                    return res[0], res[2], json.loads(payload)
        return wait_for(answer, what="DPS answer to rid " + rid)

    def register(self, reg_id, rid="1"):
        return self.request(dps.dps_register(rid), json.dumps({"registrationId": reg_id}), rid)

    def status(self, op_id, rid="2"):
        return self.request(dps.dps_status(rid, op_id), b"", rid)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def group(hub):
    return enroll(hub, "group", "shop")


def test_register_202_with_retry_after_then_200_assigned(hub, group):
    key = tokens.derive_key(group["primaryKey"], "b-1")
    peer = DpsPeer(hub, group["idScope"], "b-1", key)
    try:
        assert peer.connack == [0]
        peer.subscribe()
        status, retry, body = peer.register("b-1")
        assert (status, retry, body["status"]) == (202, 3, "assigning")   # Azure's retry-after: 3
        status, retry, body = peer.status(body["operationId"])
        assert status == 200 and retry is None
        assert body["status"] == "assigned"
        state = body["registrationState"]
        assert (state["assignedHub"], state["deviceId"], state["status"]) == ("127.0.0.1", "b-1", "assigned")
        assert state["registrationId"] == "b-1" and state["createdDateTimeUtc"].endswith("Z")
    finally:
        peer.close()
    dev = hub.service.get_device("b-1")
    assert dev["primaryKey"] == key
    assert dev["secondaryKey"] == tokens.derive_key(group["secondaryKey"], "b-1")


def test_bad_token_is_answered_401_as_dps_does(hub, group):
    peer = DpsPeer(hub, group["idScope"], "b-2", key=group["primaryKey"])   # the group key itself
    try:
        assert peer.connack == [0]          # DPS checks the token per request, not at CONNECT
        peer.subscribe()
        status, _, body = peer.register("b-2")
        assert status == 401
        assert body["errorCode"] == 401002 and body["message"] == "Unauthorized"
        assert body["trackingId"] and body["timestampUtc"].endswith("Z")
        status, _, body = peer.status("4.0.nope")
        assert status == 401
    finally:
        peer.close()
    assert hub.service.list_devices() == []


def test_unknown_operation_is_404_and_a_body_for_another_registration_400(hub, group):
    key = tokens.derive_key(group["primaryKey"], "b-3")
    peer = DpsPeer(hub, group["idScope"], "b-3", key)
    try:
        peer.subscribe()
        assert peer.status("4.0.nope")[0] == 404
        status, _, body = peer.request(dps.dps_register("9"), json.dumps({"registrationId": "b-4"}), "9")
        assert status == 400 and body["errorCode"] == 400000
        status, _, _ = peer.request(dps.dps_register("10"), b"not json", "10")
        assert status == 400
    finally:
        peer.close()


def test_disabled_enrollment_answers_status_disabled(hub, group):
    ind = enroll(hub, "individual", "solo")
    from tests.cloud.dps.conftest import cli
    assert cli("dps", "disable", "solo", "--data", hub.data_dir)[0] == 0
    peer = DpsPeer(hub, ind["idScope"], "solo", ind["primaryKey"])
    try:
        peer.subscribe()
        status, retry, body = peer.register("solo")
        assert (status, body["status"]) == (202, "assigning")
        status, _, body = peer.status(body["operationId"])
        assert status == 200
        assert body["status"] == "disabled" and body["registrationState"]["status"] == "disabled"
        assert "assignedHub" not in body["registrationState"]
    finally:
        peer.close()
    assert hub.service.list_devices() == []


def test_a_device_connection_is_unaffected_and_dps_topics_are_closed_to_devices(hub, group):
    # a DPS user name whose registration id is not the client id: refused at CONNECT
    peer = DpsPeer(hub, group["idScope"], "b-5", key=group["primaryKey"], client_id="someone-else")
    assert peer.connack == [5]
    peer.close()
    # a DPS connection may not use hub topics: closed
    peer = DpsPeer(hub, group["idScope"], "b-6", tokens.derive_key(group["primaryKey"], "b-6"))
    try:
        peer.client.publish("devices/b-6/messages/events/", b"x", 1)
        assert peer.disconnected.wait(10), "DPS connection publishing telemetry was not closed"
    finally:
        peer.close()


def test_injected_throttling_answers_429_with_retry_after_then_serves_again(hub, group):
    # DPS over its rate limits answers 429 with a retry-after; `dps_register=429:N` /
    # `dps_status=STATUS:N` make the local one do so for the next N requests, before any check
    key = tokens.derive_key(group["primaryKey"], "b-t")
    hub.service.inject_faults(["dps_register=429:2", "dps_status=503:1"])
    peer = DpsPeer(hub, group["idScope"], "b-t", key)
    try:
        peer.subscribe()
        for rid in ("1", "2"):
            status, retry, body = peer.register("b-t", rid=rid)
            assert (status, retry, body["errorCode"]) == (429, 3, 429000)
            assert body["message"] == "Operations are being throttled" and body["trackingId"]
        assert hub.service.list_devices() == []        # a throttled register assigns nothing
        status, retry, body = peer.register("b-t", rid="3")
        assert (status, retry) == (202, 3)
        op = body["operationId"]
        status, retry, _ = peer.status(op, rid="4")
        assert (status, retry) == (503, 3)
        status, retry, body = peer.status(op, rid="5")
        assert (status, body["status"]) == (200, "assigned")
    finally:
        peer.close()
    assert hub.service.faults() == {}
