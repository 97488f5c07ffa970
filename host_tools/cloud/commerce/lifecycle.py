"""The commerce system's order statuses, what moves an order between them, and the Event Grid
event type each status change is published as. Pure: no clock, no storage.

    created -> payment_authorized -> shipped -> delivered
    created -> payment_declined                       (authorisation refused the payment token)
    created | payment_authorized -> cancelled         (the cancellation rule: before shipment)

These are the commerce system's own names; the orchestrator maps them to the device's order
statuses (host_tools/cloud/orders), as the article's Logic App does.
"""

CREATED = "created"
PAYMENT_AUTHORIZED = "payment_authorized"
PAYMENT_DECLINED = "payment_declined"
SHIPPED = "shipped"
DELIVERED = "delivered"
CANCELLED = "cancelled"

PROGRESS = (CREATED, PAYMENT_AUTHORIZED, SHIPPED, DELIVERED)
STATUSES = PROGRESS + (PAYMENT_DECLINED, CANCELLED)
TERMINAL = frozenset((DELIVERED, PAYMENT_DECLINED, CANCELLED))
CANCELLABLE = frozenset((CREATED, PAYMENT_AUTHORIZED))

# A payment token starting with this is declined at authorisation (demo and tests).
DECLINED_TOKEN_PREFIX = "tok_declined"

EVENT_TYPES = {
    CREATED: "Commerce.Order.Created",
    PAYMENT_AUTHORIZED: "Commerce.Order.PaymentAuthorized",
    PAYMENT_DECLINED: "Commerce.Order.PaymentDeclined",
    SHIPPED: "Commerce.Order.Shipped",
    DELIVERED: "Commerce.Order.Delivered",
    CANCELLED: "Commerce.Order.Cancelled",
}
STATUS_OF_EVENT = {v: k for k, v in EVENT_TYPES.items()}


class IllegalTransition(ValueError):
    def __init__(self, status, action):
        super().__init__(f"cannot {action} an order that is {status}")
        self.status, self.action = status, action


def next_progress(status):
    """The next status on the happy path, or None at its end or when terminal."""
    if status in TERMINAL:
        return None
    i = PROGRESS.index(status)
    return PROGRESS[i + 1] if i + 1 < len(PROGRESS) else None


def advance(status, payment_token):
    """(next status, reason) when the order moves on; authorisation may decline instead."""
    nxt = next_progress(status)
    if nxt is None:
        raise IllegalTransition(status, "advance")
    if nxt == PAYMENT_AUTHORIZED and authorisation_refused(payment_token):
        return PAYMENT_DECLINED, "payment declined"
    return nxt, None


def authorisation_refused(payment_token):
    return not payment_token or payment_token.startswith(DECLINED_TOKEN_PREFIX)


def path_to(status, target):
    """The statuses passed when advancing from `status` up to `target` (included); the first
    step may turn into a decline at authorisation, which the caller handles."""
    if target not in PROGRESS or status not in PROGRESS \
            or PROGRESS.index(target) <= PROGRESS.index(status):
        raise IllegalTransition(status, "advance to " + str(target))
    return list(PROGRESS[PROGRESS.index(status) + 1:PROGRESS.index(target) + 1])


def can_cancel(status):
    return status in CANCELLABLE


CANCEL_REFUSED = "cancel refused: already shipped"
