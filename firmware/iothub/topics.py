# IoT Hub and DPS MQTT topic strings, built and parsed without I/O (device side).
#
# Parsers answer None for a topic of another feature ("not mine"), so a receive handler can
# try C2D, then methods, then twin; a topic that is theirs but malformed raises TopicError.
# Property bags: "k1=v1&k2=v2", keys and values url-encoded (never "+"), a bare key means None.
from firmware.iothub.sas import quote, unquote

API_VERSION = "2021-04-12"
DPS_API_VERSION = "2019-03-31"

TWIN_RES_FILTER = "$iothub/twin/res/#"
TWIN_DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"
METHODS_FILTER = "$iothub/methods/POST/#"
DPS_RES_FILTER = "$dps/registrations/res/#"

_TWIN_RES = "$iothub/twin/res/"
_TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/"
_METHOD_POST = "$iothub/methods/POST/"
_DPS_RES = "$dps/registrations/res/"


class TopicError(ValueError):
    """A topic of this feature that is malformed."""


def username(host, device_id, model_id=None):
    u = host + "/" + device_id + "/?api-version=" + API_VERSION
    if model_id:
        u += "&model-id=" + quote(model_id)
    return u


def client_id(device_id):
    return device_id


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


def _base(device_id):
    return "devices/" + device_id + "/messages/"


def telemetry(device_id, props=None):
    return _base(device_id) + "events/" + encode_bag(props)


def c2d_filter(device_id):
    return _base(device_id) + "devicebound/#"


def parse_c2d(topic, device_id):
    prefix = _base(device_id) + "devicebound"
    if topic == prefix:
        return {}
    if not topic.startswith(prefix + "/"):
        return None
    return decode_bag(topic[len(prefix) + 1:])


def _split_query(rest, what):
    # "path/?bag" -> (path, bag dict)
    i = rest.find("/?")
    if i < 0:
        raise TopicError(what + " topic has no ?$rid")
    return rest[:i], decode_bag(rest[i + 2:])


def _int(s, what):
    try:
        return int(s)
    except (TypeError, ValueError):
        raise TopicError(what + " is not a number")


def _rid(bag, what):
    rid = bag.get("$rid")
    if not rid:
        raise TopicError(what + " topic has no $rid")
    return rid


def parse_twin_response(topic):
    # "$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]" -> (status, rid, version or None)
    if not topic.startswith(_TWIN_RES):
        return None
    status, bag = _split_query(topic[len(_TWIN_RES):], "twin response")
    version = bag.get("$version")
    return (_int(status, "twin status"), _rid(bag, "twin response"),
            None if version is None else _int(version, "twin $version"))


def parse_desired_patch(topic):
    # "$iothub/twin/PATCH/properties/desired/?$version={v}" -> v
    if not topic.startswith(_TWIN_DESIRED):
        return None
    rest = topic[len(_TWIN_DESIRED):]
    if not rest.startswith("?"):
        raise TopicError("desired patch topic has no $version")
    return _int(decode_bag(rest[1:]).get("$version"), "desired $version")


def parse_method_request(topic):
    # "$iothub/methods/POST/{name}/?$rid={rid}" -> (name, rid)
    if not topic.startswith(_METHOD_POST):
        return None
    name, bag = _split_query(topic[len(_METHOD_POST):], "method request")
    try:
        name = unquote(name)
    except ValueError:
        raise TopicError("method name is not url-encoded")
    if not name:
        raise TopicError("method request has no name")
    return name, _rid(bag, "method request")


def twin_get(rid):
    return "$iothub/twin/GET/?$rid=" + quote(rid)


def twin_patch_reported(rid):
    return "$iothub/twin/PATCH/properties/reported/?$rid=" + quote(rid)


def method_response(status, rid):
    return "$iothub/methods/res/" + str(int(status)) + "/?$rid=" + quote(rid)


def dps_resource(id_scope, registration_id):
    return id_scope + "/registrations/" + registration_id


def dps_username(id_scope, registration_id):
    return dps_resource(id_scope, registration_id) + "/api-version=" + DPS_API_VERSION


def dps_register(rid):
    return "$dps/registrations/PUT/iotdps-register/?$rid=" + quote(rid)


def dps_status(rid, operation_id):
    return ("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=" + quote(rid)
            + "&operationId=" + quote(operation_id))


def parse_dps_response(topic):
    # "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]" -> (status, rid, retry_after)
    if not topic.startswith(_DPS_RES):
        return None
    status, bag = _split_query(topic[len(_DPS_RES):], "DPS response")
    retry = bag.get("retry-after")
    return (_int(status, "DPS status"), _rid(bag, "DPS response"),
            None if retry is None else _int(retry, "retry-after"))
