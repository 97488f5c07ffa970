"""azure-iot-hub's HTTPS runtime calls against the hub: the C2D feedback queue over HTTPS
(IoTHubHttpRuntimeManager: receive, complete, abandon) and the purge of a device's C2D queue
(the SDK's generated client, purge_cloud_to_device_message_queue). The feedback queue is the one
the AMQP readers (uamqp, as azure-iot-hub reads it) use: a batch one reader holds is locked and
invisible to the others until it is settled or the lock (--feedback-lock-seconds) expires.
"""
import json
import time
import uuid

import pytest

from firmware.iothub import sas
from tests.cloud.hub.conftest import running_hub, wait_for
from tests.cloud.hub.mqtt_peer import puback_packet, raw_device, read_publish, subscribe_packet
from host_tools.cloud.hub.store import new_key
from tests.cloud.hub.test_amqp_sdk import connection_strings, policy_key, receive_feedback, with_key

pytest.importorskip("azure.iot.hub")
from azure.iot.hub import IoTHubHttpRuntimeManager, IoTHubRegistryManager  # noqa: E402
from msrest.exceptions import HttpOperationError  # noqa: E402

LOCK = 3.0


@pytest.fixture
def hub(tmp_path, monkeypatch):
    # batches close at the next sweep (0.5 s); a reader holds one for LOCK seconds
    with running_hub(tmp_path / "hub", extra_args=("--feedback-batch-seconds", "0",
                                                   "--feedback-lock-seconds", str(LOCK))) as h:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", h.ca_pem)
        monkeypatch.setenv("SSL_CERT_FILE", h.ca_pem)        # uamqp's trust (azure/local.py)
        yield h


def runtime(hub):
    return IoTHubHttpRuntimeManager.from_connection_string(hub.service_connection_string())


def purge(hub, device_id):
    registry = IoTHubRegistryManager.from_connection_string(hub.service_connection_string())
    return registry.protocol.cloud_to_device_messages.purge_cloud_to_device_message_queue(device_id)


def receive(hub):
    """One feedback message over HTTPS: (lock token, records, response) or None (204). The
    runtime manager's receive_feedback_notification() returns nothing, so the lock token (the
    ETag) is read from the generated client's raw response, as a caller has to."""
    raw = runtime(hub).protocol.cloud_to_device_messages.receive_feedback_notification(raw=True)
    resp = raw.response
    if resp.status_code == 204:
        return None
    assert resp.status_code == 200
    etag = resp.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')      # quoted, as HTTP and IoT Hub send it
    return etag.strip('"'), json.loads(resp.content), resp


def amqp_holder(hub, timeout=20):
    """uamqp (azure-iot-hub's AMQP library) receiving from /messages/servicebound/feedback without
    settling: (client, the first message), held until msg.accept() or client.close()."""
    import uamqp
    from azure.core.credentials import AccessToken
    cs = connection_strings(hub)
    host = cs["service"].split(";")[0].split("=", 1)[1]
    expiry = int(time.time()) + 600
    token = sas.token(host, policy_key(hub, "service"), expiry, policy="service")
    auth = uamqp.authentication.JWTTokenAuth(
        audience="https://" + host, uri="https://" + host, get_token=lambda: AccessToken(token, expiry),
        token_type=b"servicebus.windows.net:sastoken", port=cs["amqpPort"])
    auth.update_token()
    client = uamqp.ReceiveClient("amqps://%s/messages/servicebound/feedback" % host, auth=auth,
                                 auto_complete=False, prefetch=1, timeout=int(timeout * 1000))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = client.receive_message_batch(max_batch_size=1, timeout=1000)
        if msgs:
            return client, msgs[0]
    client.close()
    raise AssertionError("no feedback message over AMQP within %ss" % timeout)


def purged_batch(hub, device_id, *message_ids):
    """Queue C2D messages asking for negative feedback and purge them: one feedback batch of
    "Purged" records. Returns the purge result."""
    for mid in message_ids:
        hub.service.send_c2d(device_id, b"x", message_id=mid, ack="negative")
    return purge(hub, device_id)


def test_purge_answers_the_count_and_gives_purged_feedback_read_over_https(hub):
    hub.add_device("p1")
    result = purged_batch(hub, "p1", "m1", "m2", "m3")
    assert (result.device_id, result.total_messages_purged) == ("p1", 3)
    assert hub.service.get_device("p1")["cloudToDeviceMessageCount"] == 0
    assert purge(hub, "p1").total_messages_purged == 0          # an empty queue purges nothing

    got = wait_for(lambda: receive(hub), what="the Purged feedback over HTTPS")
    token, records, resp = got
    assert [(r["originalMessageId"], r["statusCode"], r["description"], r["deviceId"]) for r in records] == \
        [(m, "Purged", "Purged", "p1") for m in ("m1", "m2", "m3")]
    assert resp.headers["Content-Type"] == "application/vnd.microsoft.iothub.feedback.json"
    assert resp.headers["iothub-userid"] == "local" and resp.headers["iothub-messageid"]
    assert runtime(hub).complete_feedback_notification(token) is None    # 204
    assert receive(hub) is None                                          # completed: gone
    assert runtime(hub).receive_feedback_notification() is None          # 204 through the manager too
    with pytest.raises(HttpOperationError) as exc:                       # completing twice
        runtime(hub).complete_feedback_notification(token)
    assert exc.value.response.status_code == 412
    assert exc.value.response.json()["Message"].startswith("ErrorCode:PreconditionFailed;")


def test_purge_of_an_unknown_device_is_404_and_a_wrong_key_401(hub):
    with pytest.raises(HttpOperationError) as exc:
        purge(hub, "nobody")
    assert exc.value.response.status_code == 404
    assert exc.value.response.json()["Message"].startswith("ErrorCode:NotFound;")
    hub.add_device("p0")
    wrong = with_key(hub.service_connection_string(), key=new_key())
    for call in (lambda: IoTHubRegistryManager.from_connection_string(wrong).protocol
                 .cloud_to_device_messages.purge_cloud_to_device_message_queue("p0"),
                 lambda: IoTHubHttpRuntimeManager.from_connection_string(wrong).receive_feedback_notification()):
        with pytest.raises(HttpOperationError) as exc:
            call()
        assert exc.value.response.status_code == 401


def test_a_message_delivered_and_not_acknowledged_is_purged_and_not_completed_by_its_puback(hub):
    key = hub.add_device("p2")
    hub.service.send_c2d("p2", b"held", message_id="held", ack="full")
    s = raw_device(hub, "p2", key)
    s.sendall(subscribe_packet("devices/p2/messages/devicebound/#"))
    qos, pid, topic, body, dup = read_publish(s)
    assert body == b"held"                                   # delivered, locked, no PUBACK yet
    assert purge(hub, "p2").total_messages_purged == 1        # the locked message is purged too
    s.sendall(puback_packet(pid))                             # too late: completes nothing
    token, records, _ = wait_for(lambda: receive(hub), what="feedback")
    assert [(r["originalMessageId"], r["statusCode"]) for r in records] == [("held", "Purged")]
    runtime(hub).complete_feedback_notification(token)
    hub.service.send_c2d("p2", b"next", message_id="next")
    qos, pid, topic, body, dup = read_publish(s)
    assert body == b"next" and not dup                         # the purged one never comes back
    s.close()


def test_a_batch_held_over_https_is_invisible_to_everyone_until_its_lock_expires(hub):
    hub.add_device("l1")
    purged_batch(hub, "l1", "a")
    first, records, _ = wait_for(lambda: receive(hub), what="feedback")
    taken = time.monotonic()
    assert receive(hub) is None                               # locked: not for a second HTTPS reader
    client, msg = amqp_holder(hub, timeout=LOCK + 15)        # nor for AMQP, until the lock expires
    try:
        assert time.monotonic() - taken >= LOCK - 0.5
        assert json.loads(b"".join(msg.get_data())) == records
        with pytest.raises(HttpOperationError) as exc:        # the first holder lost its lock
            runtime(hub).complete_feedback_notification(first)
        assert exc.value.response.status_code == 412
        with pytest.raises(HttpOperationError):
            runtime(hub).abandon_feedback_notification(first)
        assert receive(hub) is None                           # now the AMQP reader's
        msg.accept()
    finally:
        client.close()
    assert receive(hub) is None                               # accepted: gone (not released by the close)


def test_abandoned_over_https_is_visible_at_once_also_over_amqp_and_dead_lettered_at_ten(hub):
    hub.add_device("d1")
    purged_batch(hub, "d1", "x")
    token, records, _ = wait_for(lambda: receive(hub), what="feedback")
    assert runtime(hub).abandon_feedback_notification(token) is None    # 204
    cs = connection_strings(hub)
    got = receive_feedback(hub, cs, lambda rs: rs)                      # uamqp gets it, accepts it
    assert [r["originalMessageId"] for _, rs in got for r in rs] == ["x"]
    assert receive(hub) is None

    purged_batch(hub, "d1", "y")
    for n in range(10):                                   # feedback.maxDeliveryCount 10
        token, records, _ = wait_for(lambda: receive(hub), what="delivery %d" % (n + 1))
        assert [r["originalMessageId"] for r in records] == ["y"]
        runtime(hub).abandon_feedback_notification(token)
    assert receive(hub) is None                            # dead-lettered
    with pytest.raises(HttpOperationError) as exc:
        runtime(hub).abandon_feedback_notification(str(uuid.uuid4()))
    assert exc.value.response.status_code == 412


def test_a_batch_held_over_amqp_is_invisible_over_https_until_the_reader_lets_go(hub):
    """uamqp (azure-iot-hub's AMQP library) holding a feedback message unsettled: HTTPS readers
    get nothing; when its lock expires HTTPS gets it and the AMQP reader's late accept changes
    nothing; when an AMQP reader's connection ends, what it held is visible at once."""
    hub.add_device("h1")

    purged_batch(hub, "h1", "amqp-held")
    client, msg = amqp_holder(hub)
    held = time.monotonic()
    try:
        assert [r["originalMessageId"] for r in json.loads(b"".join(msg.get_data()))] == ["amqp-held"]
        assert receive(hub) is None                                      # held over AMQP
        token, records, _ = wait_for(lambda: receive(hub), timeout=LOCK + 10, what="the batch after the lock")
        assert time.monotonic() - held >= LOCK - 0.5
        msg.accept()                                                     # too late: changes nothing
    finally:
        client.close()
    wait_for(lambda: "settled after its lock expired" in open(hub.stderr_path).read(), what="the late accept at the hub")
    runtime(hub).complete_feedback_notification(token)                   # still the HTTPS reader's

    purged_batch(hub, "h1", "released")
    client, msg = amqp_holder(hub)
    assert receive(hub) is None
    client.close()                                                       # connection gone: released
    token, records, _ = wait_for(lambda: receive(hub), timeout=LOCK * 0.8, what="the released batch")
    assert [r["originalMessageId"] for r in records] == ["released"]
    runtime(hub).complete_feedback_notification(token)
