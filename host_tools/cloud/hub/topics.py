"""Hub-side IoT Hub MQTT topic grammar, built on firmware.iothub.topics (one bag codec).

The device library formats what a device publishes and parses what it receives; this module
is the mirror image: parse what a device publishes, format what the hub sends.
"""
from firmware.iothub import dps as device_dps
from firmware.iothub import topics as device
from firmware.iothub.sas import quote
from firmware.iothub.topics import TopicError, decode_bag, encode_bag

__all__ = ["TopicError", "parse_username", "parse_publish", "allowed_filter", "split_properties",
           "c2d", "twin_response", "desired_patch", "method_request"]

# bag key -> systemProperties name (the names IoT Hub's service side uses)
SYSTEM_PROPS = {
    "$.mid": "messageId", "$.cid": "correlationId", "$.ct": "contentType",
    "$.ce": "contentEncoding", "$.uid": "userId", "$.ctime": "creationTimeUtc",
    "$.exp": "expiryTimeUtc", "$.to": "to", "$.ifid": "interfaceId",
}
_API_VERSION = "api-version"


def parse_username(username):
    """A CONNECT user name -> ("hub", host, device_id, query bag) for IoT Hub
    (`{host}/{deviceId}/?api-version=...`, what device.username() builds) or
    ("dps", id_scope, registration_id, query bag) for the Device Provisioning Service
    (`{idScope}/registrations/{registrationId}/api-version=...`, what device_dps.dps_username() builds).
    Anything else raises TopicError."""
    head, sep, query = username.partition("/?")
    if sep:
        host, _, device_id = head.rpartition("/")
        bag = decode_bag(query)
        if host and device_id and _API_VERSION in bag:
            return ("hub", host, device_id, bag)
    resource, sep, query = username.partition("/" + _API_VERSION + "=")
    scope, _, registration_id = resource.partition("/")
    registration_id = registration_id.partition("/")[2]
    if sep and scope and registration_id and device_dps.dps_resource(scope, registration_id) == resource:
        return ("dps", scope, registration_id, decode_bag(_API_VERSION + "=" + query))
    raise TopicError("user name is neither {host}/{deviceId}/?api-version=... (IoT Hub) "
                     "nor {idScope}/registrations/{registrationId}/api-version=... (DPS)")


def _rid_after(topic, prefix, what):
    # "{prefix}?$rid=..." -> rid
    path, bag = device.split_query("/" + topic[len(prefix):], what)
    if path:
        raise TopicError(what + " topic has a path after " + prefix)
    return device.rid_of(bag, what)


def parse_publish(topic, device_id):
    """What a device publishes -> ("telemetry", bag) | ("twin_get", rid) |
    ("twin_reported", rid) | ("method_res", status, rid) | None (not allowed for this device).
    A topic of an allowed kind that is malformed raises TopicError."""
    events = device.events_topic(device_id)
    if topic == events:
        return ("telemetry", {})
    if topic.startswith(events + "/"):
        return ("telemetry", decode_bag(topic[len(events) + 1:]))
    if topic.startswith(device.TWIN_GET):
        return ("twin_get", _rid_after(topic, device.TWIN_GET, "twin GET"))
    if topic.startswith(device.TWIN_REPORTED):
        return ("twin_reported", _rid_after(topic, device.TWIN_REPORTED, "twin PATCH"))
    if topic.startswith(device.METHOD_RES):
        status, bag = device.split_query(topic[len(device.METHOD_RES):], "method response")
        if not status:
            raise TopicError("method response topic has no status")
        try:
            status = int(status)
        except ValueError:
            raise TopicError("method response status is not a number") from None
        return ("method_res", status, device.rid_of(bag, "method response"))
    return None


def allowed_filter(topic_filter, device_id):
    """The subscriptions IoT Hub lets a device make (its own C2D, twin, methods): only the documented
    filters ("it only supports the documented topic names and topic filters")."""
    return topic_filter in (
        device.c2d_filter(device_id),
        device.TWIN_RES_FILTER, device.TWIN_DESIRED_FILTER, device.METHODS_FILTER,
    )


def is_c2d_filter(topic_filter, device_id):
    return topic_filter.startswith(device.c2d_topic(device_id))


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
    return device.c2d_topic(device_id) + "/" + encode_bag(props)


def twin_response(status, rid, version=None):
    t = device.TWIN_RES + str(int(status)) + "/?$rid=" + quote(rid)
    if version is not None:
        t += "&$version=" + str(int(version))
    return t


def desired_patch(version):
    return device.TWIN_DESIRED + "?$version=" + str(int(version))


def method_request(name, rid):
    return device.METHOD_POST + quote(name) + "/?$rid=" + quote(rid)
