# Button gestures from level samples: "press" (order), "long" (cancel), "double" (status).
# Pure: the runtime polls the pin (or timestamps its edges) and feeds levels with a ms clock;
# a test feeds the same thing. Debouncing is separate from the gesture machine.
#
#   g = gestures.new()
#   for gesture in gestures.feed(g, level, now_ms): ...   # level: 1 = pressed
#
# Call feed every 5-20 ms (or at each edge with the edge's time and then periodically).
# now_ms is any ms counter; differences are taken modulo 2**30, so time.ticks_ms() works
# as is on ESP32 and `time.ticks_ms() & 0x3FFFFFFF` works everywhere.
#
# Gestures: "long" fires while the button is still held, once it has been down LONG_MS, so the
# user feels when to let go; "double" fires at the second press when it starts at most
# DOUBLE_MS after the first release; "press" fires DOUBLE_MS after a release with no second
# press (a single press waits that long to be sure it is not a double).

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

DEBOUNCE_MS = 30
LONG_MS = 1500
DOUBLE_MS = 400

_MASK = const(0x3FFFFFFF)

# phases
IDLE = const(0)
DOWN = const(1)      # first press held
GAP = const(2)       # released, waiting for a second press
DOWN2 = const(3)     # second press held (double already reported)
HELD = const(4)      # long already reported, waiting for release
# inputs
_PRESS = const(0)
_RELEASE = const(1)
_LONG = const(2)     # DOWN lasted LONG_MS
_GAP_END = const(3)  # GAP lasted DOUBLE_MS

# The whole machine: (phase, input) -> (next phase, gesture or None).
# Any other pair is not a transition and leaves the phase unchanged.
_T = {
    (IDLE, _PRESS): (DOWN, None),
    (DOWN, _RELEASE): (GAP, None),
    (DOWN, _LONG): (HELD, "long"),
    (HELD, _RELEASE): (IDLE, None),
    (GAP, _PRESS): (DOWN2, "double"),
    (GAP, _GAP_END): (IDLE, "press"),
    (DOWN2, _RELEASE): (IDLE, None),
}


def new(debounce_ms=DEBOUNCE_MS, long_ms=LONG_MS, double_ms=DOUBLE_MS):
    # level None: the first sample is taken as it is (a button held at boot is no gesture).
    return {"phase": IDLE, "since": 0, "level": None, "raw": None, "raw_t": 0,
            "ms": (debounce_ms, long_ms, double_ms)}


def _elapsed(now, then):
    return (now - then) & _MASK


def _step(g, inp, t):
    nxt = _T.get((g["phase"], inp))
    if nxt is None:
        return None
    g["phase"] = nxt[0]
    g["since"] = t
    return nxt[1]


def _timeout(g, t):
    ph = g["phase"]
    if ph == DOWN and _elapsed(t, g["since"]) >= g["ms"][1]:
        return _step(g, _LONG, t)
    if ph == GAP and _elapsed(t, g["since"]) >= g["ms"][2]:
        return _step(g, _GAP_END, t)
    return None


def _settle(g, now):
    # Confirm a raw level that has lasted the debounce time, then run the timers up to now.
    # A pending (unconfirmed) edge holds the timers at its time: a late poll must not let the
    # double-press gap expire before a press that really came inside it.
    out = ()
    if g["raw"] != g["level"]:
        t = g["raw_t"]   # the edge happened when the raw level first changed
        x = _timeout(g, t)
        if x:
            out += (x,)
        if _elapsed(now, t) < g["ms"][0]:
            return out
        g["level"] = g["raw"]
        x = _step(g, _PRESS if g["level"] else _RELEASE, t)
        if x:
            out += (x,)
    x = _timeout(g, now)
    if x:
        out += (x,)
    return out


def feed(g, level, now):
    # -> () or a tuple of gestures in the order they happened. Allocates nothing when idle.
    level = 1 if level else 0
    if g["level"] is None:
        g["level"] = g["raw"] = level
        g["raw_t"] = now
        return ()
    out = ()
    if level != g["raw"]:
        out = _settle(g, now)   # the previous raw level may have lasted long enough
        g["raw"] = level
        g["raw_t"] = now
    return out + _settle(g, now)
