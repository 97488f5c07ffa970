"""The official azure-iot-device ProvisioningDeviceClient against the local DPS, then the
official IoTHubDeviceClient with what it was given: what works against Azure works here."""
import time
import uuid

import pytest

from host_tools.cloud import tokens
from tests.cloud.dps.conftest import cli, enroll
from tests.cloud.hub.conftest import wait_for

pytest.importorskip("azure.iot.device")
from azure.iot.device import IoTHubDeviceClient, Message, ProvisioningDeviceClient  # noqa: E402
from azure.iot.device.exceptions import ClientError  # noqa: E402


def _ca(hub):
    with open(hub.ca_pem) as f:
        return f.read()


def shutdown_provisioning(client):
    """End a ProvisioningDeviceClient's pipeline: connection, reconnect timer, threads.

    register() shuts the pipeline down only after an assignment. After a refusal (401, disabled)
    it stays connected, and once the hub goes away its reconnect timer fires while the
    interpreter exits: "RuntimeError: cannot schedule new futures after shutdown" tracebacks at
    the end of the run. azure-iot-device 2.x has no public shutdown() on this client (3.x adds
    one), so this runs the pipeline's own shutdown, as register() does after an assignment."""
    from azure.iot.device.common.evented_callback import EventedCallback
    from azure.iot.device.common.pipeline.pipeline_exceptions import PipelineNotRunning
    done = EventedCallback()
    try:
        client._pipeline.shutdown(callback=done)
    except PipelineNotRunning:
        return          # register() already did (an assignment)
    done.wait_for_completion()


@pytest.fixture
def register(dps_hub):
    """register(scope, reg_id, key) -> the official client's RegistrationResult; every client
    made is shut down when the test ends, whatever register() did."""
    clients = []

    def run(scope, reg_id, key):
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host="127.0.0.1", registration_id=reg_id, id_scope=scope, symmetric_key=key,
            server_verification_cert=_ca(dps_hub))
        clients.append(client)
        return client.register()   # connects, registers, polls; disconnects only when assigned

    yield run
    for client in clients:
        shutdown_provisioning(client)


def _connect_and_send(hub, result, key):
    state = result.registration_state
    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id,
        server_verification_cert=_ca(hub))
    try:
        client.connect()
        body = '{"hello":"%s"}' % uuid.uuid4().hex
        client.send_message(Message(body))
        event = hub.service.wait_event(lambda e: e["body"] == body.encode(), timeout=10,
                                       device_id=state.device_id)
        assert event is not None, "telemetry of the provisioned device not recorded"
    finally:
        client.shutdown()


def _why(exc):
    """The SDK wraps the service's answer: ClientError('Unexpected failure') from ServiceError(..)."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__
    return " <- ".join(parts)


def _rid(prefix):
    return prefix + "-" + uuid.uuid4().hex[:8]


def test_group_enrollment_registers_with_a_derived_key_and_the_device_connects(dps_hub, register):
    group = enroll(dps_hub, "group", _rid("shop"))
    reg_id = _rid("button")
    key = tokens.derive_key(group["primaryKey"], reg_id)
    result = register(group["idScope"], reg_id, key)
    assert result.status == "assigned"
    assert result.registration_state.assigned_hub == "127.0.0.1"
    assert result.registration_state.device_id == reg_id
    assert dps_hub.service.get_device(reg_id)["authentication"]["symmetricKey"]["primaryKey"] == key
    _connect_and_send(dps_hub, result, key)


def test_group_secondary_key_also_registers(dps_hub, register):
    group = enroll(dps_hub, "group", _rid("shop"))
    reg_id = _rid("button")
    key = tokens.derive_key(group["secondaryKey"], reg_id)
    result = register(group["idScope"], reg_id, key)
    assert result.status == "assigned"
    _connect_and_send(dps_hub, result, key)


def test_individual_enrollment_registers_to_its_device_id(dps_hub, register):
    reg_id, device_id = _rid("single"), _rid("dev")
    ind = enroll(dps_hub, "individual", reg_id, "--device-id", device_id)
    result = register(ind["idScope"], reg_id, ind["primaryKey"])
    assert result.status == "assigned"
    assert result.registration_state.device_id == device_id
    _connect_and_send(dps_hub, result, ind["primaryKey"])


def test_re_registration_returns_the_same_assignment(dps_hub, register):
    group = enroll(dps_hub, "group", _rid("shop"))
    reg_id = _rid("button")
    key = tokens.derive_key(group["primaryKey"], reg_id)
    first = register(group["idScope"], reg_id, key)
    second = register(group["idScope"], reg_id, key)
    assert second.status == "assigned"
    assert (second.registration_state.assigned_hub, second.registration_state.device_id) == \
        (first.registration_state.assigned_hub, first.registration_state.device_id)
    assert second.registration_state.created_date_time == first.registration_state.created_date_time
    assert len([d for d in dps_hub.service.list_devices() if d["deviceId"] == reg_id]) == 1
    _connect_and_send(dps_hub, second, key)


def test_disabled_enrollment_is_refused_and_creates_no_device(dps_hub, register):
    reg_id = _rid("off")
    ind = enroll(dps_hub, "individual", reg_id)
    rc, _, err = cli("dps", "disable", reg_id, "--data", dps_hub.data_dir)
    assert rc == 0, err
    with pytest.raises(ClientError) as exc:
        register(ind["idScope"], reg_id, ind["primaryKey"])
    assert "status disabled" in _why(exc.value)
    assert all(d["deviceId"] != reg_id for d in dps_hub.service.list_devices())


def test_disabled_group_is_refused(dps_hub, register):
    name = _rid("shop")
    group = enroll(dps_hub, "group", name)
    assert cli("dps", "disable", name, "--data", dps_hub.data_dir)[0] == 0
    reg_id = _rid("button")
    with pytest.raises(ClientError) as exc:
        register(group["idScope"], reg_id, tokens.derive_key(group["primaryKey"], reg_id))
    assert "status disabled" in _why(exc.value)


@pytest.mark.parametrize("case", ["wrong key", "group key itself", "unknown registration", "other scope"])
def test_bad_credentials_are_unauthorized(dps_hub, register, case):
    group = enroll(dps_hub, "group", _rid("shop"))
    scope, reg_id = group["idScope"], _rid("button")
    key = tokens.derive_key(group["primaryKey"], reg_id)
    if case == "wrong key":
        key = tokens.derive_key(group["primaryKey"], reg_id + "x")
    elif case == "group key itself":
        key = group["primaryKey"]
    elif case == "unknown registration":
        cli("dps", "remove", group["groupName"], "--data", dps_hub.data_dir)
    else:
        scope = "0ne00000000"
    with pytest.raises(ClientError) as exc:
        register(scope, reg_id, key)
    assert "status code 401" in _why(exc.value)
    assert all(d["deviceId"] != reg_id for d in dps_hub.service.list_devices())


def test_throttled_register_and_poll_are_retried_after_retry_after(dps_hub, register):
    # DPS over its rate limits answers 429 with a retry-after: the official client waits that
    # long and sends the same request again, on the same connection, until it is served
    from tests.cloud.dps.conftest import RETRY_AFTER
    group = enroll(dps_hub, "group", _rid("shop"))
    reg_id = _rid("button")
    key = tokens.derive_key(group["primaryKey"], reg_id)
    dps_hub.service.inject_faults(["dps_register=429:2", "dps_status=429:1"])
    t0 = time.monotonic()
    result = register(group["idScope"], reg_id, key)
    waited = time.monotonic() - t0
    assert result.status == "assigned" and result.registration_state.device_id == reg_id
    assert dps_hub.service.faults() == {}             # all three throttled answers were used
    # two throttled registers, the 202's retry-after, one throttled poll: each waited
    assert waited >= 4 * RETRY_AFTER, waited
    _connect_and_send(dps_hub, result, key)
