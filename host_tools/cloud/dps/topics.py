"""DPS's MQTT grammar as the service sees it: what a device publishes, what the service answers.
Mirror image of the device helpers in firmware/iothub/dps.py (dps_register, dps_status,
parse_dps_response), from the same prefixes; the CONNECT user name is parsed by the hub's one
parser (host_tools/cloud/hub/topics.parse_username)."""
from firmware.iothub import dps as device
from firmware.iothub.sas import quote
from firmware.iothub.topics import TopicError, rid_of, split_query


def allowed_filter(topic_filter):
    return topic_filter == device.DPS_RES_FILTER


def parse_publish(topic):
    """-> ("register", rid) | ("status", rid, operation_id) | None (not a DPS request).
    A request of a known kind without $rid (or operationId) raises TopicError."""
    for prefix, kind in ((device.DPS_REGISTER, "register"), (device.DPS_STATUS, "status")):
        if topic.startswith(prefix):
            path, bag = split_query("/" + topic[len(prefix):], "DPS request")
            if path:
                raise TopicError("DPS request topic has a path after " + prefix)
            rid = rid_of(bag, "DPS request")
            if kind == "register":
                return ("register", rid)
            op = bag.get("operationId")
            if not op:
                raise TopicError("operation status request has no operationId")
            return ("status", rid, op)
    return None


def response(status, rid, retry_after=None):
    t = device.DPS_RES + "%d/?$rid=%s" % (int(status), quote(rid))
    if retry_after is not None:
        t += "&retry-after=%d" % int(retry_after)
    return t
