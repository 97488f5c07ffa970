"""When an order moves on by itself: seconds after creation for each status on the happy path.

The same spec as the order service always took, so `make demo --timeline` means what it did:
  "payment_authorized=2,shipped=4,delivered=6"   inline (the default)
  "manual"                                       nothing moves by itself (`commerce advance`)
  "payment_authorized=1"                         a prefix: the rest waits for `advance`
  path/to/timeline.json                          {"payment_authorized": 2, "shipped": 4, ...}
"""
import os

from host_tools.cloud.commerce import lifecycle
from host_tools.files import load_json

AUTOMATIC = lifecycle.PROGRESS[1:]
DEFAULT_SPEC = "payment_authorized=2,shipped=4,delivered=6"


class ScheduleError(ValueError):
    pass


class Schedule:
    def __init__(self, offsets):
        self.offsets = dict(offsets)

    @classmethod
    def from_dict(cls, data, source="timeline"):
        if not isinstance(data, dict):
            raise ScheduleError(f"{source}: expected an object such as {{\"shipped\": 4}}")
        offsets = {}
        for status, seconds in data.items():
            if status not in AUTOMATIC:
                raise ScheduleError(f"{source}: unknown status {status!r}; use "
                                    + ", ".join(AUTOMATIC))
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                    or seconds != seconds or seconds < 0 or seconds == float("inf"):
                raise ScheduleError(f"{source}: {status} must be a number of seconds >= 0")
            offsets[status] = seconds
        listed = [s for s in AUTOMATIC if s in offsets]
        if listed != list(AUTOMATIC[:len(listed)]):
            raise ScheduleError(f"{source}: statuses must be given in order without gaps: "
                                + " < ".join(AUTOMATIC))
        times = [offsets[s] for s in listed]
        if times != sorted(times):
            raise ScheduleError(f"{source}: offsets must not decrease along " + " < ".join(listed))
        return cls(offsets)

    def as_dict(self):
        return {s: self.offsets[s] for s in AUTOMATIC if s in self.offsets}

    def next_step(self, status, placed_at):
        """(next status, due time) for an order now in `status`, or (None, None)."""
        nxt = lifecycle.next_progress(status)
        if nxt is None or nxt not in self.offsets:
            return None, None
        return nxt, placed_at + self.offsets[nxt]

    def eta(self, placed_at):
        seconds = self.offsets.get(lifecycle.DELIVERED)
        return None if seconds is None else placed_at + seconds


def _inline(spec):
    data = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ScheduleError(f"timeline: {part!r} should look like shipped=4")
        try:
            seconds = float(value)
        except ValueError:
            raise ScheduleError(f"timeline: {value.strip()!r} in {part!r} is not a number") from None
        data[name.strip()] = int(seconds) if seconds.is_integer() else seconds
    return data


def parse(spec):
    spec = (spec or DEFAULT_SPEC).strip()
    if spec == "manual":
        return Schedule({})
    if spec.endswith(".json") or os.path.sep in spec or os.path.exists(spec):
        return Schedule.from_dict(load_json(spec, "timeline file", ScheduleError), spec)
    return Schedule.from_dict(_inline(spec))
