"""Fault injection, test tooling: make the hub give the answers IoT Hub gives under load or failure,
so device code that handles them can be exercised. Never on by default.

    twin_get=STATUS[:N]    the next N twin GETs of any device are answered STATUS (429, 500, 503...)
    twin_patch=STATUS[:N]  likewise for reported-property PATCHes
    connect=CODE[:N]       the next N CONNECTs get CONNACK CODE (3 = server unavailable)
    c2d_lock=N             the next N C2D PUBACKs are lost: the message stays locked and comes back
                           when its lock expires, as when a PUBACK never reaches IoT Hub
    drop=N                 the next N device PUBLISHes make the hub close that connection at once,
                           unanswered (the connection dies mid-stream)
    dps_register=STATUS[:N]  the next N DPS register requests are answered STATUS before any check
                           (429: throttled, as DPS answers over its rate limits; 5xx), with the
                           DPS's retry-after (`hub --dps-retry-after`) when STATUS is 429 or 5xx
    dps_status=STATUS[:N]  likewise for DPS operation-status polls
    KIND=off               disarm

N defaults to 1. Set on the command line (`hub --inject SPEC`, repeatable) or on a running hub
(`python -m host_tools hub inject SPEC`, through the service API's test-only endpoint).
"""

STATUS_KINDS = {"twin_get": (400, 599), "twin_patch": (400, 599), "connect": (1, 5),
                "dps_register": (400, 599), "dps_status": (400, 599)}
COUNT_KINDS = ("c2d_lock", "drop")
KINDS = tuple(STATUS_KINDS) + COUNT_KINDS


class FaultSpecError(ValueError):
    pass


def parse(spec):
    """'twin_get=429:3' -> ('twin_get', 429, 3); 'drop=2' -> ('drop', None, 2); 'drop=off' -> ('drop', None, 0)."""
    kind, sep, value = (spec or "").partition("=")
    kind = kind.strip()
    if not sep or kind not in KINDS:
        raise FaultSpecError("fault %r: expected KIND=VALUE with KIND one of %s" % (spec, ", ".join(KINDS)))
    value = value.strip()
    if value == "off":
        return kind, None, 0
    try:
        if kind in STATUS_KINDS:
            status, _, count = value.partition(":")
            status, count = int(status), int(count or "1")
            low, high = STATUS_KINDS[kind]
            if not low <= status <= high:
                raise FaultSpecError("fault %s: %d is not between %d and %d" % (kind, status, low, high))
        else:
            status, count = None, int(value)
    except ValueError as exc:
        if isinstance(exc, FaultSpecError):
            raise
        raise FaultSpecError("fault %r: expected %s" % (
            spec, "%s=STATUS[:COUNT]" % kind if kind in STATUS_KINDS else "%s=COUNT" % kind)) from None
    if count < 0:
        raise FaultSpecError("fault %r: the count cannot be negative" % spec)
    return kind, status, count


class Faults:
    def __init__(self):
        self._armed = {}  # kind -> [value, remaining]

    def arm(self, kind, value, count):
        if count:
            self._armed[kind] = [value, count]
        else:
            self._armed.pop(kind, None)

    def arm_spec(self, spec):
        self.arm(*parse(spec))

    def take(self, kind):
        """Consume one shot of `kind`: its value (True for count kinds), or None when not armed."""
        slot = self._armed.get(kind)
        if not slot:
            return None
        slot[1] -= 1
        if slot[1] <= 0:
            del self._armed[kind]
        return True if slot[0] is None else slot[0]

    def state(self):
        return {k: ({"count": n} if v is None else {"value": v, "count": n}) for k, (v, n) in self._armed.items()}
