"""Hub-side topic grammar: mirror image of firmware.iothub.topics (what one formats, the other parses)."""
import pytest

from firmware.iothub import dps as device_dps
from firmware.iothub import topics as device
from host_tools.cloud.hub import topics as hub


def test_telemetry_published_by_the_device_library_parses_back():
    t = device.telemetry("d1", [("$.mid", "m 1"), ("$.ct", "application/json"), ("$.ce", "utf-8"),
                                ("kind", "order"), ("a&b", "c=d"), ("flag", None)])
    kind, bag = hub.parse_publish(t, "d1")
    assert kind == "telemetry"
    system, app = hub.split_properties(bag)
    assert system == {"messageId": "m 1", "contentType": "application/json", "contentEncoding": "utf-8"}
    assert app == {"kind": "order", "a&b": "c=d", "flag": None}


def test_sdk_style_topics():
    # as written by azure-iot-device 2.14.0 ($ as %24)
    kind, bag = hub.parse_publish("devices/d1/messages/events/%24.mid=msg-1&%24.ct=application%2Fjson", "d1")
    assert hub.split_properties(bag)[0] == {"messageId": "msg-1", "contentType": "application/json"}
    assert hub.parse_publish("devices/d1/messages/events/", "d1") == ("telemetry", {})
    assert hub.parse_publish("$iothub/twin/GET/?$rid=abc", "d1") == ("twin_get", "abc")
    assert hub.parse_publish("$iothub/twin/GET/?%24rid=abc", "d1") == ("twin_get", "abc")
    assert hub.parse_publish(device.twin_patch_reported("7"), "d1") == ("twin_reported", "7")
    assert hub.parse_publish(device.method_response("r9", 200), "d1") == ("method_res", 200, "r9")


@pytest.mark.parametrize("topic", [
    "devices/d2/messages/events/", "devices/d1x/messages/events/", "devices/d1/messages/devicebound/x",
    "$iothub/twin/res/200/?$rid=1", "$iothub/methods/POST/x/?$rid=1", "d1", "",
])
def test_topics_a_device_may_not_publish(topic):
    assert hub.parse_publish(topic, "d1") is None


@pytest.mark.parametrize("topic", [
    "devices/d1/messages/events/%zz=1", "$iothub/twin/GET/", "$iothub/twin/GET/?x=1",
    "$iothub/methods/res/abc/?$rid=1", "$iothub/methods/res//?$rid=1",
])
def test_malformed_topics_of_allowed_kinds_raise(topic):
    with pytest.raises(hub.TopicError):
        hub.parse_publish(topic, "d1")


def test_allowed_subscriptions():
    for f in (device.c2d_filter("d1"), device.TWIN_RES_FILTER, device.TWIN_DESIRED_FILTER, device.METHODS_FILTER):
        assert hub.allowed_filter(f, "d1")
    for f in ("#", "+/#", "devices/d2/messages/devicebound/#", "devices/+/messages/devicebound/#",
              "$iothub/#", "devices/d1/messages/events/#", "$iothub/twin/#",
              "devices/d1/messages/devicebound/+", "devices/d1/messages/devicebound"):
        assert not hub.allowed_filter(f, "d1")


def test_hub_formatted_topics_parse_with_the_device_library():
    props = [("$.mid", "m/1"), ("$.to", "/devices/d1/messages/deviceBound"), ("$.ct", "application/json"),
             ("order id", "o&1"), ("empty", ""), ("null", None)]
    assert device.parse_c2d(hub.c2d("d1", props), "d1") == dict(props)
    assert device.parse_twin_response(hub.twin_response(204, "r 1", 5)) == (204, "r 1", 5)
    assert device.parse_twin_response(hub.twin_response(200, "x")) == (200, "x", None)
    assert device.parse_desired_patch(hub.desired_patch(12)) == 12
    assert device.parse_method_request(hub.method_request("re boot", "a1")) == ("re boot", "a1")


def test_usernames_the_device_library_and_the_sdks_build_parse_back():
    assert hub.parse_username(device.username("h.example", "d1")) == \
        ("hub", "h.example", "d1", {"api-version": device.API_VERSION})
    sdk = "127.0.0.1/d1/?api-version=2019-10-01&DeviceClientType=py-azure-iot-device%2F2.14.0"
    assert hub.parse_username(sdk)[:3] == ("hub", "127.0.0.1", "d1")
    assert hub.parse_username(device_dps.dps_username("0ne00ABC", "reg-1")) == \
        ("dps", "0ne00ABC", "reg-1", {"api-version": device_dps.DPS_API_VERSION})
    sdk_dps = "0ne00ABC/registrations/reg-1/api-version=2019-03-31&ClientVersion=py%2F2.14.0"
    assert hub.parse_username(sdk_dps)[:3] == ("dps", "0ne00ABC", "reg-1")


@pytest.mark.parametrize("name", [
    "", "d1", "h/d1", "h/d1/", "h/d1/?x=1", "/d1/?api-version=1", "h//?api-version=1",
    "s/registrations/r", "s/registrations//api-version=1", "s/other/r/api-version=1",
    "/registrations/r/api-version=1", "h/d1/?api-version=%zz",
])
def test_usernames_of_neither_kind_raise(name):
    with pytest.raises(hub.TopicError):
        hub.parse_username(name)


def test_request_topics_with_a_path_before_the_query_are_malformed():
    for t in ("$iothub/twin/GET/x/?$rid=1", "$iothub/twin/PATCH/properties/reported/x/?$rid=1"):
        with pytest.raises(hub.TopicError):
            hub.parse_publish(t, "d1")
