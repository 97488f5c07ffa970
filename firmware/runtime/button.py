# Press, long press and double press from raw button levels. Pure: the caller samples the
# pin and passes (pressed, ticks_ms); a test feeds levels directly.
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_DEBOUNCE_MS = const(30)   # a level must hold this long to count
_LONG_MS = const(1500)     # held this long = long press (reported while still held)
_DOUBLE_MS = const(400)    # a second press released within this = double press
_PERIOD = const(0x40000000)  # ticks_ms wraps at 2**30 on MicroPython ports


def _diff(a, b):
    return ((a - b + _PERIOD // 2) % _PERIOD) - _PERIOD // 2


class Gestures:
    def __init__(self):
        self._raw = False
        self._changed = 0
        self._down = False
        self._down_at = 0
        self._long_sent = False
        self._single_at = None   # ticks of the release that may still become a double

    def update(self, pressed, ms):
        # Returns "press", "long", "double" or None.
        out = None
        if pressed != self._raw:
            self._raw = pressed
            self._changed = ms
        if self._raw != self._down and _diff(ms, self._changed) >= _DEBOUNCE_MS:
            self._down = self._raw
            if self._down:
                self._down_at = self._changed
                self._long_sent = False
            elif not self._long_sent:
                if self._single_at is not None:
                    self._single_at = None
                    out = "double"
                else:
                    self._single_at = self._changed
        if self._down and not self._long_sent and _diff(ms, self._down_at) >= _LONG_MS:
            self._long_sent = True
            self._single_at = None
            out = "long"
        if (self._single_at is not None and not self._down
                and _diff(ms, self._single_at) >= _DOUBLE_MS):
            self._single_at = None
            out = "press"
        return out

    def busy(self):
        # True while a gesture is in progress (the loop should keep sampling quickly).
        return self._down or self._raw or self._single_at is not None
