# When to try again: exponential backoff with jitter, and what a CONNACK code or a hub
# status means for retrying. Pure: the random value is an argument (0 <= rand < 1).

# What an answer means for retrying (small numbers: compared, never shown)
OK = 0
SOON = 1    # transient: network blip, server error
LATER = 2   # the hub says slow down: unavailable, throttled
AUTH = 3    # credentials refused: a human must act; retry rarely, never hammer
FATAL = 4   # the request itself is wrong; retrying the same thing will not help soon


def delay(attempt, rand, base=1, cap=300):
    # Seconds before attempt number `attempt` (0 = first retry): base * 2**attempt capped,
    # half fixed and half jitter, so it is never zero and a fleet never retries in step.
    d = base * (1 << min(attempt, 20))
    if d > cap:
        d = cap
    return d / 2 + d / 2 * rand


def delay_for(kind, attempt, rand):
    # (base seconds, cap seconds) for delay(), indexed by kind: SOON, LATER, AUTH, FATAL (also
    # for a kind not known here)
    base, cap = (None, (1, 60), (15, 300), (60, 900), (300, 3600))[
        kind if kind in (SOON, LATER, AUTH) else FATAL]
    return delay(attempt, rand, base, cap)


def classify_connack(code):
    # MQTT 3.1.1 CONNACK return codes.
    if code == 0:
        return OK
    if code == 3:      # server unavailable
        return LATER
    if code in (4, 5):  # bad user name or password / not authorized
        return AUTH
    return FATAL       # 1 protocol version, 2 identifier rejected, anything unknown


def classify_status(status):
    # Twin and method response statuses, HTTP-like.
    if 200 <= status < 300:
        return OK
    if status in (429, 503):
        return LATER
    if status in (401, 403):
        return AUTH
    if status >= 500:
        return SOON
    return FATAL


class Backoff:
    # One request the hub must answer with success (a twin GET, a reported patch), retried
    # with backoff and jitter by what its status means. `due` is when to send it again (0:
    # nothing due); `attempt` counts the failures since the last success.

    def __init__(self):
        self.due = 0
        self.attempt = 0

    def fail(self, now, status, rand):
        # The hub answered `status` (429, 5xx...): -> seconds until the request goes again.
        wait = delay_for(classify_status(status), self.attempt, rand)
        self.attempt += 1
        self.due = now + wait
        return wait

    def ok(self):
        self.due = 0
        self.attempt = 0
