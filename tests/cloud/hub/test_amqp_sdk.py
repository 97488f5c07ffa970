"""The hub's AMQP side against the official service SDKs: azure-eventhub (EventHubConsumerClient,
pure-Python AMQP) reads telemetry that the official device SDK sent; azure-iot-hub
(send_c2d_message over uamqp) reaches a device; feedback; the real refusals.

The device SDK needs MQTT on 8883 (fixture hub_8883); the AMQP side is on a free port.
"""
import json
import subprocess
import sys
import threading
import time
import uuid

import pytest

from firmware.iothub import sas
from host_tools.cloud.azure import local
from host_tools.cloud.hub.amqp.rules import partition_of
from tests.cloud.hub.conftest import REPO, running_hub, wait_for
from tests.cloud.hub.mqtt_peer import Peer

pytest.importorskip("azure.eventhub")
pytest.importorskip("azure.iot.hub")
from azure.core.credentials import AzureSasCredential  # noqa: E402
from azure.eventhub import EventHubConsumerClient, TransportType  # noqa: E402
from azure.eventhub.exceptions import AuthenticationError, ConnectError, EventHubError  # noqa: E402
from azure.iot.device import IoTHubDeviceClient, Message  # noqa: E402
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402
from proton import Message as AmqpMessage  # noqa: E402
from proton import SSLDomain  # noqa: E402
from proton.utils import BlockingConnection, SendException  # noqa: E402


def connection_strings(hub):
    out = subprocess.run([sys.executable, "-m", "host_tools", "hub", "connection-strings", "--data", hub.data_dir],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def consumer(cs, conn_str=None, group="$Default", **kw):
    return EventHubConsumerClient.from_connection_string(
        conn_str or cs["eventHub"], consumer_group=group, connection_verify=cs["caFile"],
        custom_endpoint_address=cs["eventHubEndpoint"], transport_type=TransportType.Amqp, retry_total=0, **kw)


class Reader:
    """client.receive() in a thread; events collected as (partition id, event)."""

    def __init__(self, client, **kw):
        self.client = client
        self.events = []
        self.errors = []
        self.thread = threading.Thread(target=client.receive, daemon=True, kwargs=dict(
            on_event=lambda pc, ev: ev is not None and self.events.append((pc.partition_id, ev)),
            on_error=lambda pc, err: self.errors.append(err), **kw))
        self.thread.start()

    def wait(self, n, what="events", timeout=20):
        return wait_for(lambda: len(self.events) >= n and self.events, timeout, what=what)

    def close(self):
        self.client.close()
        self.thread.join(10)


def registry(cs, conn_str=None):
    local.trust(cs["caFile"])
    local.uamqp_port(cs["amqpPort"])
    return IoTHubRegistryManager.from_connection_string(conn_str or cs["service"])


def with_key(conn_str, key=None, policy=None):
    parts = dict(p.split("=", 1) for p in conn_str.strip(";").split(";"))
    if key:
        parts["SharedAccessKey"] = key
    if policy:
        parts["SharedAccessKeyName"] = policy
    return ";".join("%s=%s" % kv for kv in parts.items())


def policy_key(hub, name):
    with open(hub.data_dir + "/policies.json") as f:
        return json.load(f)[name]


def proton_client(cs):
    """A raw AMQP client (proton) over TLS that trusts the hub's CA and checks its name."""
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_trusted_ca_db(cs["caFile"])
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, cs["caFile"])
    return BlockingConnection("amqps://localhost:%d" % cs["amqpPort"], ssl_domain=domain, timeout=20,
                              allowed_mechs="ANONYMOUS")


def put_token(hub, cs, audience, token, token_type="servicebus.windows.net:sastoken"):
    """One raw $cbs put-token (proton as the client); returns (status-code, description)."""
    conn = proton_client(cs)
    try:
        receiver = conn.create_receiver("$cbs", dynamic=False, name="cbs-in")
        sender = conn.create_sender("$cbs", name="cbs-out")
        sender.send(AmqpMessage(body=token, id=7, reply_to="$cbs", properties={
            "operation": "put-token", "type": token_type, "name": audience}))
        reply = receiver.receive(timeout=20)   # replies come settled
        assert reply.correlation_id == 7
        return reply.properties["status-code"], reply.properties["status-description"]
    finally:
        conn.close()


@pytest.fixture
def sdk_device(hub_8883):
    device_id = "amqp-" + uuid.uuid4().hex[:8]
    key = hub_8883.add_device(device_id)
    with open(hub_8883.ca_pem) as f:
        ca = f.read()
    client = IoTHubDeviceClient.create_from_connection_string(
        hub_8883.connection_string(device_id, key), server_verification_cert=ca)
    yield device_id, client
    client.shutdown()


def test_event_hub_consumer_reads_device_sdk_telemetry_and_resumes_from_a_checkpoint(hub_8883, sdk_device):
    device_id, device = sdk_device
    cs = connection_strings(hub_8883)
    device.connect()
    for i in range(3):
        msg = Message('{"n":%d}' % i, message_id="m-%d" % i, content_type="application/json",
                      content_encoding="utf-8")
        msg.custom_properties["kind"] = "order"
        device.send_message(msg)
    client = consumer(cs)
    assert client.get_partition_ids() == [str(i) for i in range(cs["partitions"])]
    mine = str(partition_of(device_id, cs["partitions"]))
    props = client.get_partition_properties(mine)
    assert not props["is_empty"] and props["last_enqueued_sequence_number"] >= 2
    reader = Reader(client, starting_position="-1")
    try:
        wait_for(lambda: len([e for _, e in reader.events if e.body_as_str().startswith('{"n"')
                              and e.system_properties[b"iothub-connection-device-id"] == device_id.encode()]) >= 3,
                 20, what="three events from the device")
    finally:
        reader.close()
    ours = [(p, e) for p, e in reader.events
            if e.system_properties.get(b"iothub-connection-device-id") == device_id.encode()]
    assert [e.body_as_str() for _, e in ours] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert {p for p, _ in ours} == {mine}, "all of a device's telemetry is on its partition"
    first = ours[0][1]
    assert first.properties == {b"kind": b"order"}
    assert first.system_properties[b"message-id"] == b"m-0"
    assert first.system_properties[b"content-type"] == b"application/json"
    assert first.system_properties[b"content-encoding"] == b"utf-8"
    assert b"iothub-enqueuedtime" in first.system_properties
    assert first.enqueued_time is not None and first.sequence_number >= 0
    seqs = [e.sequence_number for _, e in ours]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3

    # checkpoint after the first event: a new client from that offset gets exactly the rest
    checkpoint = ours[0][1].offset
    resumed = Reader(consumer(cs), partition_id=mine, starting_position=checkpoint)
    try:
        # a sentinel sent after the checkpoint: once it is in, any repeat would be in too
        device.send_message(Message("end"))
        wait_for(lambda: any(e.body_as_str() == "end" for _, e in resumed.events), 20, what="the sentinel")
    finally:
        resumed.close()
    again = [e.body_as_str() for _, e in resumed.events
             if e.system_properties.get(b"iothub-connection-device-id") == device_id.encode()]
    assert again == ['{"n":1}', '{"n":2}', "end"]


def test_filters_by_sequence_number_and_enqueued_time_and_latest(hub):
    cs = connection_strings(hub)
    key = hub.add_device("f1")
    peer = Peer(hub, "f1", key)
    assert peer.connect() == 0
    for i in range(3):
        peer.publish("devices/f1/messages/events/", b"e%d" % i)
    part = str(partition_of("f1", cs["partitions"]))
    wait_for(lambda: consumer(cs).get_partition_properties(part)["last_enqueued_sequence_number"] == 2,
             10, what="three stored events")
    by_seq = Reader(consumer(cs), partition_id=part, starting_position=1, starting_position_inclusive=True)
    latest = Reader(consumer(cs), partition_id=part, starting_position="@latest")
    try:
        by_seq.wait(2)
        assert [e.body_as_str() for _, e in by_seq.events] == ["e1", "e2"]
        wait_for(lambda: "'latest')" in open(hub.stderr_path).read(), 20, what="the @latest reader attached")
        peer.publish("devices/f1/messages/events/", b"e3")
        latest.wait(1)
        assert [e.body_as_str() for _, e in latest.events] == ["e3"]
    finally:
        by_seq.close()
        latest.close()
        peer.close()


def test_a_sequence_number_past_the_last_is_refused_as_event_hubs_refuses_it(hub):
    """Event Hubs: a receiver whose sequence number is past the partition's last one fails with
    "The supplied sequence number 'N' is invalid. The last sequence number in the system is 'M'"
    (inclusive or not); at the last one it attaches: inclusive gets that event, exclusive waits
    for the next. The error is not retried (com.microsoft:argument-error)."""
    cs = connection_strings(hub)
    key = hub.add_device("s1")
    part = str(partition_of("s1", cs["partitions"]))
    other = str(1 - int(part))                          # never written to: its last is -1
    peer = Peer(hub, "s1", key)
    assert peer.connect() == 0
    for i in range(3):
        peer.publish("devices/s1/messages/events/", b"e%d" % i)
    wait_for(lambda: consumer(cs).get_partition_properties(part)["last_enqueued_sequence_number"] == 2,
             10, what="three stored events")
    readers = {}
    try:
        for name, partition, position, inclusive in (("past", part, 3, True), ("past-exclusive", part, 3, False),
                                                     ("far", part, 10_000, False), ("empty", other, 0, True)):
            readers[name] = Reader(consumer(cs), partition_id=partition, starting_position=position,
                                   starting_position_inclusive=inclusive)
        readers["last"] = Reader(consumer(cs), partition_id=part, starting_position=2, starting_position_inclusive=True)
        readers["next"] = Reader(consumer(cs), partition_id=part, starting_position=2)
        readers["empty-start"] = Reader(consumer(cs), partition_id=other, starting_position=-1)
        for name, supplied, last in (("past", 3, 2), ("past-exclusive", 3, 2), ("far", 10_000, 2), ("empty", 0, -1)):
            reader = readers[name]
            wait_for(lambda: reader.errors, 20, what="the error of the %s reader" % name)
            assert isinstance(reader.errors[0], ConnectError), reader.errors
            assert ("The supplied sequence number '%d' is invalid. The last sequence number in the system is '%d'"
                    % (supplied, last)) in str(reader.errors[0])
            assert not reader.events
        readers["last"].wait(1)
        assert [e.body_as_str() for _, e in readers["last"].events] == ["e2"]
        peer.publish("devices/s1/messages/events/", b"e3")
        readers["next"].wait(1)
        assert [e.body_as_str() for _, e in readers["next"].events] == ["e3"]
        assert not readers["next"].errors and not readers["last"].errors and not readers["empty-start"].errors
    finally:
        for reader in readers.values():
            reader.close()
        peer.close()


def test_consumer_groups_default_and_created_by_the_cli(hub):
    cs = connection_strings(hub)
    bad = Reader(consumer(cs, group="nope"), partition_id="0", starting_position="-1")
    wait_for(lambda: bad.errors, 20, what="an error for an unknown consumer group")
    bad.close()
    out = subprocess.run([sys.executable, "-m", "host_tools", "consumer-group", "add", "orders", "--data",
                          hub.data_dir], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "orders" in out.stdout.split()
    key = hub.add_device("g1")
    peer = Peer(hub, "g1", key)
    assert peer.connect() == 0
    peer.publish("devices/g1/messages/events/", b"hello")
    good = Reader(consumer(cs, group="orders"), starting_position="-1")
    try:
        good.wait(1)
        assert good.events[0][1].body_as_str() == "hello"
    finally:
        good.close()
        peer.close()


def test_send_c2d_message_reaches_the_device_sdk_and_feedback_arrives(hub_8883, sdk_device):
    device_id, device = sdk_device
    cs = connection_strings(hub_8883)
    received = []
    device.on_message_received = received.append
    device.connect()
    rm = registry(cs)
    rm.send_c2d_message(device_id, '{"status":"shipped"}',
                        {"contentType": "application/json", "contentEncoding": "utf-8",
                         "messageId": "c2d-42", "correlationId": "req-1", "iothub-ack": "full", "order": "o-7"})
    wait_for(lambda: received, 20, what="the C2D message at the device")
    m = received[0]
    assert m.data == b'{"status":"shipped"}'
    assert m.message_id == "c2d-42" and m.correlation_id == "req-1"
    assert m.content_type == "application/json"
    assert m.custom_properties.get("order") == "o-7"

    # a feedback batch closes 15 s after the previous one at most (feedback.py): 40 s covers it
    records = [r for _, batch in receive_feedback(hub_8883, cs, lambda rs: any(
        r["originalMessageId"] == "c2d-42" for r in rs), timeout=40) for r in batch]
    mine = [r for r in records if r["originalMessageId"] == "c2d-42"]
    assert mine and mine[0]["deviceId"] == device_id and mine[0]["description"] == "Success"


def receive_feedback(hub, cs, done, timeout=20):
    """Feedback messages from /messages/servicebound/feedback over uamqp (the AMQP library of
    azure-iot-hub), each accepted, until done(records so far): [(uamqp message, [records])]."""
    import uamqp
    from uamqp import authentication
    host = cs["service"].split(";")[0].split("=", 1)[1]
    key = policy_key(hub, "service")
    expiry = int(time.time()) + 600
    token = sas.token(host, key, expiry, policy="service")
    # the SDK signs the plain host name (no url-encoding): same text for a host without ':'
    auth = authentication.JWTTokenAuth(audience="https://" + host, uri="https://" + host,
                                       get_token=lambda: _access(token, expiry),
                                       token_type=b"servicebus.windows.net:sastoken", port=cs["amqpPort"])
    auth.update_token()
    client = uamqp.ReceiveClient("amqps://%s/messages/servicebound/feedback" % host, auth=auth,
                                 timeout=int(timeout * 1000))
    out = []
    try:
        deadline = time.monotonic() + timeout
        while not done([r for _, rs in out for r in rs]) and time.monotonic() < deadline:
            for msg in client.receive_message_batch(max_batch_size=10, timeout=2000):
                out.append((msg, json.loads(b"".join(msg.get_data()))))
                msg.accept()
    finally:
        client.close()
    return out


def _access(token, expiry):
    from azure.core.credentials import AccessToken
    return AccessToken(token, expiry)


def _unbatched_records(hub):
    import sqlite3
    db = sqlite3.connect(hub.data_dir + "/hub.sqlite3")
    try:
        return db.execute("SELECT COUNT(*) FROM c2d_feedback WHERE state='queued' AND batch IS NULL").fetchone()[0]
    finally:
        db.close()


def test_feedback_is_batched_and_pending_records_survive_a_restart(tmp_path):
    """Expired C2D messages (sent with azure-iot-hub, iothub-ack full) give Expired records;
    those made within the batch window wait, survive a restart of the hub, and then arrive
    together in one feedback message, shaped as IoT Hub sends it."""
    with running_hub(tmp_path / "hub", extra_args=("--feedback-batch-seconds", "3600")) as hub:
        cs = connection_strings(hub)
        hub.add_device("fb")                             # never connects: its messages expire

        def send(mid):
            rm = registry(cs)
            rm.send_c2d_message("fb", "x", {"messageId": mid, "iothub-ack": "full",
                                            "expiryTimeUtc": int((time.time() + 1) * 1000)})
        send("a")
        first = receive_feedback(hub, cs, lambda rs: any(r["originalMessageId"] == "a" for r in rs))
        assert [(r["originalMessageId"], r["statusCode"]) for _, rs in first for r in rs] == [("a", "Expired")]
        for mid in ("b", "c", "d"):
            send(mid)
        # the window (an hour) is open since "a" went out: their records wait, in the database
        wait_for(lambda: _unbatched_records(hub) == 3, 20, what="three pending feedback records")

        hub.extra_args = ["--feedback-batch-seconds", "0"]
        hub.restart()
        cs = connection_strings(hub)
        got = receive_feedback(hub, cs, lambda rs: len(rs) >= 3)
    assert len(got) == 1                                 # one message, three records
    msg, records = got[0]
    assert [r["originalMessageId"] for r in records] == ["b", "c", "d"]
    assert {r["statusCode"] for r in records} == {r["description"] for r in records} == {"Expired"}
    assert all(r["deviceId"] == "fb" and r["deviceGenerationId"] and r["enqueuedTimeUtc"].endswith("Z")
               for r in records)
    assert msg.properties.content_type == b"application/vnd.microsoft.iothub.feedback.json"
    assert msg.properties.user_id == b"local"
    assert isinstance(msg.annotations[b"iothub-enqueuedtime"], int)


def test_receivers_asking_for_expired_events_start_at_the_oldest_retained(tmp_path):
    """With --retention-hours 1, events enqueued two hours ago (written into the hub's store
    with that time, the clock we cannot wait for) are removed by the retention pass at start;
    azure-eventhub's receivers from sequence number 0, from the offset of an expired event and
    from the start all begin at the oldest retained event, and the partition's properties say
    where it begins now. Sequence numbers carry on."""
    from host_tools.cloud.hub.store import Store
    with running_hub(tmp_path / "hub", extra_args=("--retention-hours", "1")) as hub:
        cs = connection_strings(hub)
        key = hub.add_device("r1")
        part = partition_of("r1", cs["partitions"])
        store = Store(hub.data_dir + "/hub.sqlite3", create=False)
        old = [store.add_event("r1", {}, {}, b"old%d" % i, now=time.time() - 2 * 3600, partition=part)
               for i in range(3)]
        store.close()
        peer = Peer(hub, "r1", key)
        assert peer.connect() == 0
        for i in range(2):
            peer.publish("devices/r1/messages/events/", b"new%d" % i)
        peer.close()
        wait_for(lambda: consumer(cs).get_partition_properties(str(part))["last_enqueued_sequence_number"] == 4,
                 20, what="five stored events")
        hub.restart()                                    # the first retention pass runs at start
        wait_for(lambda: consumer(cs).get_partition_properties(str(part))["beginning_sequence_number"] == 3,
                 20, what="the expired events removed")
        props = consumer(cs).get_partition_properties(str(part))
        assert props["last_enqueued_sequence_number"] == 4 and not props["is_empty"]
        for position, inclusive in ((0, True), (str(old[0]), True), (str(old[1]), False), ("-1", False)):
            reader = Reader(consumer(cs), partition_id=str(part), starting_position=position,
                            starting_position_inclusive=inclusive)
            try:
                reader.wait(2)
                got = [(e.sequence_number, e.body_as_str()) for _, e in reader.events]
                assert got == [(3, "new0"), (4, "new1")], position
            finally:
                reader.close()


def raw_c2d(cs, hub, device_id, count, body=b"x"):
    """Send `count` C2D messages over one proton link; returns the outcomes (local state, condition)."""
    host = "127.0.0.1"
    key = policy_key(hub, "service")
    token = sas.token(host, key, int(time.time()) + 600, policy="service")
    conn = proton_client(cs)
    try:
        receiver = conn.create_receiver("$cbs", name="cbs-in")
        conn.create_sender("$cbs", name="cbs-out").send(AmqpMessage(body=token, id=1, reply_to="$cbs", properties={
            "operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": "https://" + host}))
        assert receiver.receive(timeout=20).properties["status-code"] == 200
        sender = conn.create_sender("/messages/devicebound", name="c2d")
        outcomes = []
        for i in range(count):
            try:
                sender.send(AmqpMessage(body=body, inferred=True, id="m%d" % i,
                                        address="/devices/%s/messages/devicebound" % device_id))
                outcomes.append(("accepted", None))
            except SendException as exc:  # carries the remote state
                outcomes.append(("refused", exc))
        return outcomes
    finally:
        conn.close()


def test_the_51st_queued_message_gets_the_real_error(hub):
    cs = connection_strings(hub)
    hub.add_device("full-1")
    rm = registry(cs)
    for i in range(50):
        rm.send_c2d_message("full-1", "m%d" % i, {})
    with pytest.raises(Exception, match="C2D message send failure"):
        rm.send_c2d_message("full-1", "m50", {})
    # what is on the wire: rejected, amqp:resource-limit-exceeded (IoT Hub's 403004)
    outcome = raw_c2d(cs, hub, "full-1", 1)[0]
    assert outcome[0] == "refused"
    assert hub.service.get_device("full-1")  # the device is still there, its queue intact
    log = open(hub.stderr_path).read()
    assert "Device Queue depth cannot exceed 50 messages" in log
    # an unknown device: rejected as not found; over 64 KB: message-size-exceeded
    with pytest.raises(Exception):
        rm.send_c2d_message("nobody", "x", {})
    assert "Device nobody not found" in open(hub.stderr_path).read()


@pytest.mark.parametrize("case", ["wrong key", "expired", "wrong policy", "no such policy"])
def test_refused_tokens_on_both_endpoints(hub, case):
    cs = connection_strings(hub)
    good = policy_key(hub, "service")
    from host_tools.cloud.hub.store import new_key
    wrong = new_key()
    policy, key, ttl = "service", good, 600
    if case == "wrong key":
        key = wrong
    elif case == "expired":
        ttl = -10
    elif case == "wrong policy":
        policy, key = "registryRead", policy_key(hub, "registryRead")
    else:
        policy = "nosuchpolicy"
    # IoT Hub side ($cbs audience https://host): the raw answer is 401
    token = sas.token("127.0.0.1", key, int(time.time()) + ttl, policy=policy)
    status, description = put_token(hub, cs, "https://127.0.0.1", token)
    assert status == 401, description
    # Event Hubs side (audience sb://host/hub): 401 too
    import base64
    eh_key = base64.b64encode(key.encode()).decode()  # Event Hubs signs with the key's text
    audience = "sb://127.0.0.1/" + cs["eventHubName"]
    eh_token = sas.token(audience, eh_key, int(time.time()) + ttl, policy=policy)
    status, description = put_token(hub, cs, audience, eh_token)
    assert status == 401, description
    # and the SDKs fail with their authentication errors
    if case != "expired":
        conn_str = with_key(cs["eventHub"], key=key, policy=policy)
        with pytest.raises((AuthenticationError, ConnectError, EventHubError)):
            consumer(cs, conn_str).get_partition_ids()
        rm = registry(cs, with_key(cs["service"], key=key, policy=policy))
        hub.add_device("tok-" + case.replace(" ", "-"))
        with pytest.raises(Exception):
            rm.send_c2d_message("tok-" + case.replace(" ", "-"), "x", {})
    else:
        client = EventHubConsumerClient(
            "127.0.0.1", cs["eventHubName"], "$Default", AzureSasCredential(eh_token),
            connection_verify=cs["caFile"], custom_endpoint_address=cs["eventHubEndpoint"], retry_total=0,
            transport_type=TransportType.Amqp)
        with pytest.raises((AuthenticationError, ConnectError, EventHubError)):
            client.get_partition_ids()


def test_good_token_is_accepted(hub):
    cs = connection_strings(hub)
    key = policy_key(hub, "service")
    token = sas.token("127.0.0.1", key, int(time.time()) + 600, policy="service")
    assert put_token(hub, cs, "https://127.0.0.1", token) == (200, "OK")


def test_partitions_are_chosen_at_creation_and_fixed(tmp_path):
    from tests.cloud.hub.conftest import HubHandle
    handle = HubHandle(tmp_path / "hub4", partitions=4).start()
    try:
        cs = connection_strings(handle)
        assert cs["partitions"] == 4
        assert consumer(cs).get_partition_ids() == ["0", "1", "2", "3"]
        assert cs["service"].startswith("HostName=127.0.0.1:%d;SharedAccessKeyName=service;SharedAccessKey=" % handle.api_port)
        assert cs["eventHub"].startswith("Endpoint=sb://127.0.0.1/;SharedAccessKeyName=service;SharedAccessKey=")
        assert cs["eventHub"].endswith(";EntityPath=" + cs["eventHubName"])
    finally:
        handle.stop()
    out = subprocess.run([sys.executable, "-m", "host_tools", "hub", "--data", handle.data_dir, "--mqtt-port", "0",
                          "--api-port", "0", "--amqp-port", "0", "--partitions", "2"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "created with 4 partitions" in out.stderr
