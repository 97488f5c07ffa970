# IoT Hub MQTT topic strings, built and parsed without I/O (device side). DPS's topics are in
# firmware/iothub/dps.py, imported only by a device that registers with DPS.
#
# Parsers answer None for a topic of another feature ("not mine"), so a receive handler can
# try C2D, then methods, then twin; a topic that is theirs but malformed raises TopicError.
# Property bags: "k1=v1&k2=v2", keys and values url-encoded (never "+"), a bare key means None.
from firmware.iothub.sas import quote, unquote

API_VERSION = "2021-04-12"
# IoT Hub times a connection out at 1.5 x keep-alive but never later than 1767 s: a longer
# keep-alive would let it drop a healthy idle device before the device pings.
MAX_KEEPALIVE_S = 1177

# Every topic prefix once; the device formats and parses with these, and the local hub builds its
# mirror-image grammar (host_tools/cloud/hub/topics.py) from the same names. The MQTT client id
# is the device id.
TWIN_GET = "$iothub/twin/GET/"
TWIN_RES = "$iothub/twin/res/"
TWIN_REPORTED = "$iothub/twin/PATCH/properties/reported/"
TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/"
METHOD_POST = "$iothub/methods/POST/"
METHOD_RES = "$iothub/methods/res/"

TWIN_RES_FILTER = TWIN_RES + "#"
TWIN_DESIRED_FILTER = TWIN_DESIRED + "#"
METHODS_FILTER = METHOD_POST + "#"


class TopicError(ValueError):
    """A topic of this feature that is malformed."""


def username(host, device_id, model_id=None):
    u = host + "/" + device_id + "/?api-version=" + API_VERSION
    if model_id:
        u += "&model-id=" + quote(model_id)
    return u


def encode_bag(pairs):
    if not pairs:
        return ""
    if isinstance(pairs, dict):
        pairs = pairs.items()
    out = []
    for k, v in pairs:
        out.append(quote(k) if v is None else quote(k) + "=" + quote(v))
    return "&".join(out)


def decode_bag(s):
    bag = {}
    if not s:
        return bag
    try:
        for entry in s.split("&"):
            if not entry:
                continue
            i = entry.find("=")
            if i < 0:
                bag[unquote(entry)] = None
            else:
                bag[unquote(entry[:i])] = unquote(entry[i + 1:])
    except ValueError as e:
        raise TopicError("bad property bag: " + str(e))
    return bag


def events_topic(device_id):
    # Telemetry goes to this topic, or to it + "/" + a property bag.
    return "devices/" + device_id + "/messages/events"


def c2d_topic(device_id):
    # C2D messages arrive on this topic + "/" + their property bag.
    return "devices/" + device_id + "/messages/devicebound"


def telemetry(device_id, props=None):
    return events_topic(device_id) + "/" + encode_bag(props)


def c2d_filter(device_id):
    return c2d_topic(device_id) + "/#"


def parse_c2d(topic, device_id):
    prefix = c2d_topic(device_id)
    if topic == prefix:
        return {}
    if not topic.startswith(prefix + "/"):
        return None
    return decode_bag(topic[len(prefix) + 1:])


def split_query(rest, what):
    # "path/?bag" -> (path, bag dict)
    i = rest.find("/?")
    if i < 0:
        raise TopicError(what + " topic has no ?$rid")
    return rest[:i], decode_bag(rest[i + 2:])


def number(s, what):
    try:
        return int(s)
    except (TypeError, ValueError):
        raise TopicError(what + " is not a number")


def rid_of(bag, what):
    rid = bag.get("$rid")
    if not rid:
        raise TopicError(what + " topic has no $rid")
    return rid


def parse_twin_response(topic):
    # "$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]" -> (status, rid, version or None)
    if not topic.startswith(TWIN_RES):
        return None
    status, bag = split_query(topic[len(TWIN_RES):], "twin response")
    version = bag.get("$version")
    return (number(status, "twin status"), rid_of(bag, "twin response"),
            None if version is None else number(version, "twin $version"))


def parse_desired_patch(topic):
    # "$iothub/twin/PATCH/properties/desired/?$version={v}" -> v
    if not topic.startswith(TWIN_DESIRED):
        return None
    rest = topic[len(TWIN_DESIRED):]
    if not rest.startswith("?"):
        raise TopicError("desired patch topic has no $version")
    return number(decode_bag(rest[1:]).get("$version"), "desired $version")


def parse_method_request(topic):
    # "$iothub/methods/POST/{name}/?$rid={rid}" -> (name, rid)
    if not topic.startswith(METHOD_POST):
        return None
    name, bag = split_query(topic[len(METHOD_POST):], "method request")
    try:
        name = unquote(name)
    except ValueError:
        raise TopicError("method name is not url-encoded")
    if not name:
        raise TopicError("method request has no name")
    return name, rid_of(bag, "method request")


def twin_get(rid):
    return TWIN_GET + "?$rid=" + quote(rid)


def twin_patch_reported(rid):
    return TWIN_REPORTED + "?$rid=" + quote(rid)


def method_response(rid, status):
    return METHOD_RES + str(int(status)) + "/?$rid=" + quote(rid)
