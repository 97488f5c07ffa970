"""DPS's MQTT grammar as the service sees it: the CONNECT user name, what a device publishes,
what the service answers. Mirror image of the device helpers in firmware/iothub/topics.py
(dps_username, dps_register, dps_status, parse_dps_response), on the same bag codec."""
from firmware.iothub.sas import quote
from firmware.iothub.topics import DPS_RES_FILTER, TopicError, decode_bag

_REGISTER = "$dps/registrations/PUT/iotdps-register/"
_STATUS = "$dps/registrations/GET/iotdps-get-operationstatus/"


def parse_username(username):
    """`{idScope}/registrations/{registrationId}/api-version=...[&ClientVersion=...]` ->
    (id_scope, registration_id, bag), or None when it is not a DPS user name."""
    parts = (username or "").split("/")
    if len(parts) != 4 or parts[1] != "registrations" or not parts[0] or not parts[2]:
        return None
    bag = parts[3][1:] if parts[3].startswith("?") else parts[3]
    try:
        bag = decode_bag(bag)
    except TopicError:
        return None
    if not bag.get("api-version"):
        return None
    return parts[0], parts[2], bag


def allowed_filter(topic_filter):
    return topic_filter == DPS_RES_FILTER


def parse_publish(topic):
    """-> ("register", rid) | ("status", rid, operation_id) | None (not a DPS request).
    A request of a known kind without $rid (or operationId) raises TopicError."""
    for prefix, kind in ((_REGISTER, "register"), (_STATUS, "status")):
        if topic.startswith(prefix):
            rest = topic[len(prefix):]
            if not rest.startswith("?"):
                raise TopicError("DPS request topic has no ?$rid")
            bag = decode_bag(rest[1:])
            rid = bag.get("$rid")
            if not rid:
                raise TopicError("DPS request topic has no $rid")
            if kind == "register":
                return ("register", rid)
            op = bag.get("operationId")
            if not op:
                raise TopicError("operation status request has no operationId")
            return ("status", rid, op)
    return None


def response(status, rid, retry_after=None):
    t = "$dps/registrations/res/%d/?$rid=%s" % (int(status), quote(rid))
    if retry_after is not None:
        t += "&retry-after=%d" % int(retry_after)
    return t
