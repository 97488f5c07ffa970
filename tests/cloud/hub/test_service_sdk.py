"""The official azure-iot-hub service SDK (IoTHubRegistryManager) against the hub's service API."""
import threading

import pytest

from tests.cloud.hub.mqtt_peer import Peer

hub_sdk = pytest.importorskip("azure.iot.hub")
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties  # noqa: E402
from msrest.exceptions import HttpOperationError  # noqa: E402


@pytest.fixture
def registry(hub, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", hub.ca_pem)
    return IoTHubRegistryManager.from_connection_string(hub.service_connection_string())


def _key():
    import base64
    import os
    return base64.b64encode(os.urandom(32)).decode()


def test_create_get_delete_device(hub, registry):
    primary, secondary = _key(), _key()
    dev = registry.create_device_with_sas("svc-1", primary, secondary, "enabled")
    assert dev.device_id == "svc-1"
    assert dev.authentication.symmetric_key.primary_key == primary
    assert dev.status == "enabled"

    got = registry.get_device("svc-1")
    assert got.device_id == "svc-1" and got.connection_state == "Disconnected"
    # the key given through the SDK is the one the hub accepts
    peer = Peer(hub, "svc-1", key=primary)
    assert peer.connect() == 0
    assert registry.get_device("svc-1").connection_state == "Connected"
    peer.close()

    registry.delete_device("svc-1")
    with pytest.raises(HttpOperationError) as err:
        registry.get_device("svc-1")
    assert err.value.response.status_code == 404


def test_duplicate_device_is_updated_not_duplicated(hub, registry):
    registry.create_device_with_sas("svc-2", _key(), _key(), "enabled")
    dev = registry.create_device_with_sas("svc-2", _key(), _key(), "disabled")
    assert dev.status == "disabled"


def test_twin_get_and_update(hub, registry):
    key = hub.add_device("svc-twin")
    peer = Peer(hub, "svc-twin", key=key)
    assert peer.connect() == 0
    peer.subscribe("$iothub/twin/PATCH/properties/desired/#", qos=0)

    twin = registry.get_twin("svc-twin")
    assert twin.device_id == "svc-twin"
    assert twin.properties.desired["$version"] == 1

    patch = Twin(properties=TwinProperties(desired={"ledBrightness": 70}), tags={"site": "lab"})
    updated = registry.update_twin("svc-twin", patch, twin.etag)
    assert updated.properties.desired["ledBrightness"] == 70
    assert updated.tags == {"site": "lab"}
    topic, body, _ = peer.wait_message("$iothub/twin/PATCH/properties/desired/")
    assert topic.endswith("?$version=2")
    assert b'"ledBrightness": 70' in body
    peer.close()


def test_invoke_device_method(hub, registry):
    key = hub.add_device("svc-m")
    peer = Peer(hub, "svc-m", key=key)
    assert peer.connect() == 0
    peer.subscribe("$iothub/methods/POST/#", qos=0)

    def answer():
        topic, body, _ = peer.wait_message("$iothub/methods/POST/ping/")
        rid = topic.split("$rid=")[1]
        peer.publish("$iothub/methods/res/201/?$rid=" + rid, b'{"pong": ' + body + b"}", qos=0)

    t = threading.Thread(target=answer)
    t.start()
    result = registry.invoke_device_method(
        "svc-m", CloudToDeviceMethod(method_name="ping", payload={"n": 1}, response_timeout_in_seconds=10))
    t.join()
    assert result.status == 201
    assert result.payload == {"pong": {"n": 1}}
    peer.close()


def test_invoke_method_on_offline_device_is_404(hub, registry):
    hub.add_device("svc-off")
    with pytest.raises(HttpOperationError) as err:
        registry.invoke_device_method("svc-off", CloudToDeviceMethod(method_name="x", response_timeout_in_seconds=5))
    assert err.value.response.status_code == 404


def test_anonymous_and_wrong_key_requests_are_401(hub):
    import requests
    url = "https://%s:%d/devices?api-version=2021-04-12" % (hub.host, hub.api_port)
    assert requests.get(url, verify=hub.ca_pem, timeout=10).status_code == 401
    from host_tools.cloud.hub.service_client import ServiceClient, ServiceError
    bad = ServiceClient(hub.host, hub.api_port, _key(), hub.ca_pem)
    with pytest.raises(ServiceError) as err:
        bad.list_devices()
    assert err.value.status == 401


def test_method_timeout_is_504(hub):
    from host_tools.cloud.hub.service_client import ServiceError
    key = hub.add_device("svc-slow")
    peer = Peer(hub, "svc-slow", key=key)
    assert peer.connect() == 0
    peer.subscribe("$iothub/methods/POST/#", qos=0)
    with pytest.raises(ServiceError) as err:
        hub.service.invoke_method("svc-slow", "never", None, timeout=5)
    assert err.value.status == 504
    peer.close()
