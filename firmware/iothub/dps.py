# DPS registration over MQTT as pure decisions: its topics, the request body, and what an answer
# means.
#
#   register -> 202 {"operationId", "status": "assigning"} &retry-after=N
#   poll     -> 200 {"status": "assigned", "registrationState": {"assignedHub", "deviceId"}}
#            or 200 {"status": "assigning"} (poll again), "disabled" / "failed" (refused)
#   401 (bad key, unknown registration), 400/403/404: refused; 429 and 5xx: try again later.
# answer() turns (status, retry-after, body bytes) into one of
#   ("wait", operation_id, seconds)   poll after `seconds` (retry-after honoured, bounded)
#   ("assigned", hub host, device id)
#   ("refused", reason)               the enrollment will not have us: back off for long
#   ("retry", seconds or None)        the service is busy or broken: start again later, not
#                                     before `seconds` (retry_s) when DPS said (429 throttled)
import json

from firmware.iothub.sas import quote
from firmware.iothub.topics import number, rid_of, split_query

DPS_API_VERSION = "2019-03-31"
# DPS's topic prefixes once: the device formats and parses with these, and the local DPS
# (host_tools/cloud/dps/topics.py) builds its mirror image from the same names.
DPS_REGISTER = "$dps/registrations/PUT/iotdps-register/"
DPS_STATUS = "$dps/registrations/GET/iotdps-get-operationstatus/"
DPS_RES = "$dps/registrations/res/"
DPS_RES_FILTER = DPS_RES + "#"

DEFAULT_POLL_S = 2     # the SDKs' polling interval when DPS sends no retry-after
MAX_POLL_S = 30        # a retry-after beyond this is treated as this (a device must not hang)
MAX_RETRY_S = 300      # likewise for the retry-after of a throttled (429) or failed (5xx) request


def dps_resource(id_scope, registration_id):
    return id_scope + "/registrations/" + registration_id


def dps_username(id_scope, registration_id):
    return dps_resource(id_scope, registration_id) + "/api-version=" + DPS_API_VERSION


def dps_register(rid):
    return DPS_REGISTER + "?$rid=" + quote(rid)


def dps_status(rid, operation_id):
    return (DPS_STATUS + "?$rid=" + quote(rid)
            + "&operationId=" + quote(operation_id))


def parse_dps_response(topic):
    # "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]" -> (status, rid, retry_after)
    # None for a topic that is not DPS's; topics.TopicError for one that is, malformed.
    if not topic.startswith(DPS_RES):
        return None
    status, bag = split_query(topic[len(DPS_RES):], "DPS response")
    retry = bag.get("retry-after")
    return (number(status, "DPS status"), rid_of(bag, "DPS response"),
            None if retry is None else number(retry, "retry-after"))


def register_body(registration_id):
    return json.dumps({"registrationId": registration_id})


def _poll_s(retry_after):
    if retry_after is None or retry_after < 1:
        return DEFAULT_POLL_S
    return min(retry_after, MAX_POLL_S)


def retry_s(retry_after, rand):
    # After a busy answer that says when (429 throttled, 5xx with retry-after): at least that,
    # at most MAX_RETRY_S, plus up to a quarter more (rand in [0, 1)) so a fleet told the same
    # figure (all powered on together) does not come back in step. None when DPS did not say.
    if retry_after is None or retry_after < 1:
        return None
    s = min(retry_after, MAX_RETRY_S)
    return s + s * rand / 4


def _text(v):
    return isinstance(v, str) and 0 < len(v) <= 256


def answer(status, retry_after, body):
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    if status in (200, 202):
        st = doc.get("status")
        if st == "assigned":
            rs = doc.get("registrationState")
            if isinstance(rs, dict) and _text(rs.get("assignedHub")) and _text(rs.get("deviceId")):
                return ("assigned", rs["assignedHub"], rs["deviceId"])
            return ("retry", None)          # assigned without a hub: a broken answer
        if st in ("disabled", "failed"):
            return ("refused", st)
        op = doc.get("operationId")
        if _text(op) and (st in (None, "assigning", "unassigned") or status == 202):
            return ("wait", op, _poll_s(retry_after))
        return ("retry", None)
    if status == 429 or status >= 500:
        return ("retry", retry_after)
    if status == 401:
        return ("refused", "unauthorized")
    return ("refused", "status %d" % status)
