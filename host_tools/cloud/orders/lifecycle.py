"""Order statuses and the transitions between them, as data.

The wire contract in firmware/app/README.md is the source.

accepted < payment_authorized < shipped < delivered; cancelled and failed are terminal and may
follow any non-terminal status; a cancel is honoured only before shipment.
"""

from firmware.app import schemas

# the statuses and their rule come from the contract the device uses (firmware/app/schemas.py)
STATUSES = schemas.STATUSES
ACCEPTED, PAYMENT_AUTHORIZED, SHIPPED, DELIVERED, CANCELLED, FAILED = STATUSES
PROGRESS = (ACCEPTED, PAYMENT_AUTHORIZED, SHIPPED, DELIVERED)   # the happy path, by rank
TERMINAL = frozenset(s for s in STATUSES if schemas.is_final(s))

ADVANCE = "advance"
CANCEL = "cancel"
FAIL = "fail"

CANCEL_REFUSED = "cancel refused: already shipped"

# (status, event) -> next status. Anything not listed is illegal.
_TRANSITIONS = {
    (ACCEPTED, ADVANCE): PAYMENT_AUTHORIZED,
    (PAYMENT_AUTHORIZED, ADVANCE): SHIPPED,
    (SHIPPED, ADVANCE): DELIVERED,
    (ACCEPTED, CANCEL): CANCELLED,
    (PAYMENT_AUTHORIZED, CANCEL): CANCELLED,
    (ACCEPTED, FAIL): FAILED,
    (PAYMENT_AUTHORIZED, FAIL): FAILED,
    (SHIPPED, FAIL): FAILED,
}


class IllegalTransition(ValueError):
    def __init__(self, status, event):
        super().__init__(f"cannot {event} an order that is {status}")
        self.status, self.event = status, event


def transition(status, event):
    """The status after `event`; raises IllegalTransition (nothing changes) when not allowed."""
    try:
        return _TRANSITIONS[(status, event)]
    except KeyError:
        raise IllegalTransition(status, event) from None


def can(status, event):
    return (status, event) in _TRANSITIONS


def next_progress(status):
    """The next status on the happy path, or None at the end of it or when terminal."""
    return _TRANSITIONS.get((status, ADVANCE))


def path_to(status, target):
    """The statuses to pass through to advance from `status` to `target` (target included).

    Raises IllegalTransition when target is not ahead of status on the happy path.
    """
    steps = []
    current = status
    while current != target:
        current = transition(current, ADVANCE) if can(current, ADVANCE) else None
        if current is None:
            raise IllegalTransition(status, ADVANCE + " to " + target)
        steps.append(current)
    if not steps:
        raise IllegalTransition(status, ADVANCE + " to " + target)
    return steps


# What a cancel request does, by current status.
CANCEL_APPLY = "apply"        # -> cancelled
CANCEL_REFUSE = "refuse"      # re-send the current status with reason CANCEL_REFUSED
CANCEL_REPEAT = "repeat"      # already cancelled or failed: re-send the current status


def cancel_outcome(status):
    if can(status, CANCEL):
        return CANCEL_APPLY
    if status in (SHIPPED, DELIVERED):
        return CANCEL_REFUSE
    return CANCEL_REPEAT

