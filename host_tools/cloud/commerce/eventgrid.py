"""Event Grid schema, both sides of the wire. Pure: no clock, no sockets.

Publisher (the commerce backend) builds each status change as an Event Grid event, delivered
one event per request as a JSON array (Event Grid's default batch of one), with the headers
Event Grid sends; a new webhook subscription is first sent a SubscriptionValidationEvent and
is only active once the endpoint echoed the validation code back. A delivery is retried with
backoff until the endpoint answers 2xx; 400, 401, 403 and 413 are not retried (Event Grid
dead-letters those), everything else (5xx, 404, 429, no answer) is.

Subscriber (the orchestrator's webhook) uses `read_delivery` to tell a validation handshake
from notifications and `validation_response` to answer it.

Event Grid does not promise order: a subscriber must tolerate a later status arriving first.
"""
import uuid
from datetime import datetime, timezone

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
HEADER_EVENT_TYPE = "aeg-event-type"
HEADER_SUBSCRIPTION = "aeg-subscription-name"
HEADER_DELIVERY_COUNT = "aeg-delivery-count"
NOTIFICATION = "Notification"
SUBSCRIPTION_VALIDATION = "SubscriptionValidation"
DATA_VERSION = "1.0"
METADATA_VERSION = "1"
NOT_RETRIED = frozenset((400, 401, 403, 413))


class BadDelivery(ValueError):
    """A request to the webhook that is not an Event Grid delivery."""


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def event(topic, subject, event_type, data, at, event_id=None):
    return {"id": event_id or str(uuid.uuid4()), "topic": topic, "subject": subject,
            "eventType": event_type, "eventTime": iso(at), "data": data,
            "dataVersion": DATA_VERSION, "metadataVersion": METADATA_VERSION}


def validation_event(topic, code, at, validation_url=None):
    return event(topic, "", VALIDATION_EVENT,
                 {"validationCode": code, "validationUrl": validation_url}, at)


def headers(kind, subscription, delivery_count=0):
    return {"Content-Type": "application/json", HEADER_EVENT_TYPE: kind,
            HEADER_SUBSCRIPTION: subscription.upper(),
            HEADER_DELIVERY_COUNT: str(delivery_count),
            "aeg-data-version": DATA_VERSION, "aeg-metadata-version": METADATA_VERSION}


def outcome(status):
    """'delivered' (2xx), 'dead' (not retried) or 'retry' for an HTTP answer (None: no answer)."""
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status in NOT_RETRIED:
        return "dead"
    return "retry"


def retry_delay(attempts, base, cap):
    """Seconds before the next try after `attempts` failed ones: base, 2 base, 4 base ... cap."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


def validation_code_from(response_body):
    """The code a subscriber echoed ({"validationResponse": code}), or None."""
    if isinstance(response_body, dict):
        code = response_body.get("validationResponse")
        return code if isinstance(code, str) else None
    return None


# -- subscriber side ----------------------------------------------------------------------
def read_delivery(headers_, body):
    """('validation', code) or ('events', [event, ...]) for a decoded JSON body; BadDelivery
    when it is neither."""
    if not isinstance(body, list) or not body or not all(isinstance(e, dict) for e in body):
        raise BadDelivery("expected a JSON array of Event Grid events")
    kind = headers_.get(HEADER_EVENT_TYPE) or headers_.get(HEADER_EVENT_TYPE.title())
    first = body[0]
    if first.get("eventType") == VALIDATION_EVENT:
        if kind not in (None, SUBSCRIPTION_VALIDATION):
            raise BadDelivery(f"validation event with {HEADER_EVENT_TYPE}: {kind}")
        code = (first.get("data") or {}).get("validationCode")
        if not isinstance(code, str) or not code:
            raise BadDelivery("validation event without a validationCode")
        return "validation", code
    for item in body:
        for field in ("id", "eventType", "subject", "eventTime"):
            if not isinstance(item.get(field), str):
                raise BadDelivery(f"event without {field}")
        if not isinstance(item.get("data"), dict):
            raise BadDelivery("event without a data object")
    return "events", body


def validation_response(code):
    return {"validationResponse": code}
