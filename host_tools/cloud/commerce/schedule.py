"""When a commerce order moves on by itself: the order service's timeline rules
(host_tools/cloud/orders/timeline.py, one implementation) on the commerce system's own statuses,
created -> payment_authorized -> shipped -> delivered. The same specs, so `make demo`'s
--timeline means what it did:
  "payment_authorized=2,shipped=4,delivered=6"   inline (the default)
  "manual"                                       nothing moves by itself (`commerce advance`)
  "payment_authorized=1"                         a prefix: the rest waits for `advance`
  path/to/timeline.json                          {"payment_authorized": 2, "shipped": 4, ...}
"""
from host_tools.cloud.commerce import lifecycle
from host_tools.cloud.orders import timeline

DEFAULT_SPEC = timeline.DEFAULT_SPEC
ScheduleError = timeline.TimelineError


class Schedule(timeline.Timeline):
    PROGRESS = lifecycle.PROGRESS


def parse(spec):
    return timeline.parse(spec, Schedule)
