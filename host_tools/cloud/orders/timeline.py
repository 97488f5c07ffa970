"""When an order moves on by itself: seconds after placement for each status on the happy path.

`accepted` is immediate. A timeline may stop early: the statuses it leaves out wait for
`orders advance`. Specs:
  "payment_authorized=2,shipped=4,delivered=6"   inline
  "manual"                                       nothing moves by itself after accepted
  path/to/timeline.json                          {"payment_authorized": 2, "shipped": 4, ...}
"""
import os

from host_tools.files import load_json
from host_tools.cloud.orders import lifecycle

_AUTOMATIC = lifecycle.PROGRESS[1:]  # payment_authorized, shipped, delivered
DEFAULT_SPEC = "payment_authorized=2,shipped=4,delivered=6"


class TimelineError(ValueError):
    pass


class Timeline:
    def __init__(self, offsets):
        """offsets: {status: seconds after placement}; validated by `from_dict`."""
        self.offsets = dict(offsets)

    @classmethod
    def from_dict(cls, data, source="timeline"):
        if not isinstance(data, dict):
            raise TimelineError(f"{source}: expected an object such as {{\"shipped\": 4}}")
        offsets = {}
        for status, seconds in data.items():
            if status == lifecycle.ACCEPTED:
                if seconds != 0:
                    raise TimelineError(f"{source}: accepted is always immediate (0 s)")
                continue
            if status not in _AUTOMATIC:
                raise TimelineError(f"{source}: unknown status {status!r}; use "
                                    + ", ".join(_AUTOMATIC))
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                    or seconds != seconds or seconds < 0 or seconds == float("inf"):
                raise TimelineError(f"{source}: {status} must be a number of seconds >= 0")
            offsets[status] = seconds
        listed = [s for s in _AUTOMATIC if s in offsets]
        if listed != list(_AUTOMATIC[:len(listed)]):
            raise TimelineError(f"{source}: statuses must be given in order without gaps: "
                                + " < ".join(_AUTOMATIC))
        times = [offsets[s] for s in listed]
        if times != sorted(times):
            raise TimelineError(f"{source}: offsets must not decrease along "
                                + " < ".join(listed))
        return cls(offsets)

    def as_dict(self):
        return {s: self.offsets[s] for s in _AUTOMATIC if s in self.offsets}

    def due(self, status, placed_at):
        """When an order placed at `placed_at` reaches `status` by itself, or None (manual)."""
        seconds = self.offsets.get(status)
        return None if seconds is None else placed_at + seconds

    def next_step(self, status, placed_at):
        """(next status, due time) for an order now in `status`, or (None, None)."""
        nxt = lifecycle.next_progress(status)
        if nxt is None:
            return None, None
        due = self.due(nxt, placed_at)
        return (nxt, due) if due is not None else (None, None)

    def eta(self, placed_at):
        """Expected delivery time, when the timeline delivers by itself."""
        return self.due(lifecycle.DELIVERED, placed_at)


def parse_inline(spec):
    data = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise TimelineError(f"timeline: {part!r} should look like shipped=4")
        try:
            seconds = float(value)
        except ValueError:
            raise TimelineError(f"timeline: {value.strip()!r} in {part!r} is not a number") from None
        data[name.strip()] = int(seconds) if seconds.is_integer() else seconds
    return data


def parse(spec):
    """A Timeline from a CLI spec: inline pairs, "manual", or a JSON file path."""
    spec = (spec or DEFAULT_SPEC).strip()
    if spec == "manual":
        return Timeline({})
    if spec.endswith(".json") or os.path.sep in spec or os.path.exists(spec):
        return Timeline.from_dict(load_json(spec, "timeline file", TimelineError), spec)
    return Timeline.from_dict(parse_inline(spec))
