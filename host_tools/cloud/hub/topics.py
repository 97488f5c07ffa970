"""Hub-side IoT Hub MQTT topic grammar, built on firmware.iothub.topics (one bag codec).

The device library formats what a device publishes and parses what it receives; this module
is the mirror image: parse what a device publishes, format what the hub sends.
"""
from firmware.iothub.sas import quote
from firmware.iothub.topics import TopicError, decode_bag, encode_bag

__all__ = ["TopicError", "parse_publish", "allowed_filter", "split_properties", "c2d",
           "twin_response", "desired_patch", "method_request"]

# bag key -> systemProperties name (the names IoT Hub's service side uses)
SYSTEM_PROPS = {
    "$.mid": "messageId", "$.cid": "correlationId", "$.ct": "contentType",
    "$.ce": "contentEncoding", "$.uid": "userId", "$.ctime": "creationTimeUtc",
    "$.exp": "expiryTimeUtc", "$.to": "to", "$.ifid": "interfaceId",
}

_TWIN_GET = "$iothub/twin/GET/"
_TWIN_REPORTED = "$iothub/twin/PATCH/properties/reported/"
_METHOD_RES = "$iothub/methods/res/"


def _rid_of(rest, what):
    if not rest.startswith("?"):
        raise TopicError(what + " topic has no ?$rid")
    rid = decode_bag(rest[1:]).get("$rid")
    if not rid:
        raise TopicError(what + " topic has no $rid")
    return rid


def parse_publish(topic, device_id):
    """What a device publishes -> ("telemetry", bag) | ("twin_get", rid) |
    ("twin_reported", rid) | ("method_res", status, rid) | None (not allowed for this device).
    A topic of an allowed kind that is malformed raises TopicError."""
    events = "devices/" + device_id + "/messages/events"
    if topic == events:
        return ("telemetry", {})
    if topic.startswith(events + "/"):
        return ("telemetry", decode_bag(topic[len(events) + 1:]))
    if topic.startswith(_TWIN_GET):
        return ("twin_get", _rid_of(topic[len(_TWIN_GET):], "twin GET"))
    if topic.startswith(_TWIN_REPORTED):
        return ("twin_reported", _rid_of(topic[len(_TWIN_REPORTED):], "twin PATCH"))
    if topic.startswith(_METHOD_RES):
        rest = topic[len(_METHOD_RES):]
        i = rest.find("/")
        if i <= 0:
            raise TopicError("method response topic has no status")
        try:
            status = int(rest[:i])
        except ValueError:
            raise TopicError("method response status is not a number") from None
        return ("method_res", status, _rid_of(rest[i + 1:], "method response"))
    return None


def allowed_filter(topic_filter, device_id):
    """The subscriptions IoT Hub lets a device make (its own C2D, twin, methods)."""
    c2d = "devices/" + device_id + "/messages/devicebound/"
    return topic_filter in (
        c2d + "#", c2d + "+", c2d[:-1],
        "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#",
        "$iothub/twin/#", "$iothub/methods/POST/#",
    )


def is_c2d_filter(topic_filter, device_id):
    return topic_filter.startswith("devices/" + device_id + "/messages/devicebound")


def split_properties(bag):
    """Telemetry bag -> (systemProperties, application properties)."""
    system, app = {}, {}
    for k, v in bag.items():
        if k in SYSTEM_PROPS:
            system[SYSTEM_PROPS[k]] = v
        elif k.startswith("$."):
            system[k[2:]] = v
        else:
            app[k] = v
    return system, app


def c2d(device_id, props):
    return "devices/" + device_id + "/messages/devicebound/" + encode_bag(props)


def twin_response(status, rid, version=None):
    t = "$iothub/twin/res/" + str(int(status)) + "/?$rid=" + quote(rid)
    if version is not None:
        t += "&$version=" + str(int(version))
    return t


def desired_patch(version):
    return "$iothub/twin/PATCH/properties/desired/?$version=" + str(int(version))


def method_request(name, rid):
    return "$iothub/methods/POST/" + quote(name) + "/?$rid=" + quote(rid)


def decode_bag_safe(s):
    try:
        return decode_bag(s)
    except TopicError:
        return {}
