"""When an order moves on by itself: seconds after placement for each status on the happy path.

The first status (`accepted`) is immediate. A timeline may stop early: the statuses it leaves
out wait for `orders advance`. The commerce backend moves its own orders by the same rules on
its own statuses (host_tools/cloud/commerce/schedule.py: a Timeline with another PROGRESS).
Specs:
  "payment_authorized=2,shipped=4,delivered=6"   inline
  "manual"                                       nothing moves by itself after accepted
  path/to/timeline.json                          {"payment_authorized": 2, "shipped": 4, ...}
"""
import os

from host_tools.files import load_json
from host_tools.cloud.orders import lifecycle

DEFAULT_SPEC = "payment_authorized=2,shipped=4,delivered=6"


class TimelineError(ValueError):
    pass


class Timeline:
    PROGRESS = lifecycle.PROGRESS   # the happy path, by rank; all but the first move by themselves

    def __init__(self, offsets):
        """offsets: {status: seconds after placement}; validated by `from_dict`."""
        self.offsets = dict(offsets)

    @classmethod
    def from_dict(cls, data, source="timeline"):
        if not isinstance(data, dict):
            raise TimelineError(f"{source}: expected an object such as {{\"shipped\": 4}}")
        offsets = {}
        first, automatic = cls.PROGRESS[0], cls.PROGRESS[1:]
        for status, seconds in data.items():
            if status == first:
                if seconds != 0:
                    raise TimelineError(f"{source}: {first} is always immediate (0 s)")
                continue
            if status not in automatic:
                raise TimelineError(f"{source}: unknown status {status!r}; use "
                                    + ", ".join(automatic))
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                    or seconds != seconds or seconds < 0 or seconds == float("inf"):
                raise TimelineError(f"{source}: {status} must be a number of seconds >= 0")
            offsets[status] = seconds
        listed = [s for s in automatic if s in offsets]
        if listed != list(automatic[:len(listed)]):
            raise TimelineError(f"{source}: statuses must be given in order without gaps: "
                                + " < ".join(automatic))
        times = [offsets[s] for s in listed]
        if times != sorted(times):
            raise TimelineError(f"{source}: offsets must not decrease along "
                                + " < ".join(listed))
        return cls(offsets)

    def as_dict(self):
        return {s: self.offsets[s] for s in self.PROGRESS[1:] if s in self.offsets}

    def due(self, status, placed_at):
        """When an order placed at `placed_at` reaches `status` by itself, or None (manual)."""
        seconds = self.offsets.get(status)
        return None if seconds is None else placed_at + seconds

    def next_step(self, status, placed_at):
        """(next status, due time) for an order now in `status`, or (None, None)."""
        path = self.PROGRESS
        nxt = path[path.index(status) + 1] if status in path[:-1] else None
        if nxt is None:
            return None, None
        due = self.due(nxt, placed_at)
        return (nxt, due) if due is not None else (None, None)

    def eta(self, placed_at):
        """Expected delivery time, when the timeline delivers by itself."""
        return self.due(self.PROGRESS[-1], placed_at)


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


def parse(spec, kind=Timeline):
    """A Timeline (or `kind`, a subclass with another PROGRESS) from a CLI spec: inline pairs,
    "manual", or a JSON file path."""
    spec = (spec or DEFAULT_SPEC).strip()
    if spec == "manual":
        return kind({})
    if spec.endswith(".json") or os.path.sep in spec or os.path.exists(spec):
        return kind.from_dict(load_json(spec, "timeline file", TimelineError), spec)
    return kind.from_dict(parse_inline(spec))
