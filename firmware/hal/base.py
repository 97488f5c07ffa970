# What every platform's HAL shares: the clock as Unix seconds, randomness, free heap, which
# socket wait() wakes on, and how a screen is drawn into the 128x64 display's framebuf.
import gc
import os
import select
import time

_SANE = 1704067200  # 2024-01-01 in Unix seconds: an earlier clock was never set


def draw(fb, lines):
    # A screen as the SSD1306 shows it: up to 4 lines of 16 8x8 characters, one every 16 px.
    fb.fill(0)
    for i, s in enumerate(lines):
        fb.text(s, 0, i * 16 + 4, 1)


class BaseHal:
    # A port's __init__ sets self._poll = select.poll() (unix also registers stdin in it).
    _offset = 0  # added to time.time() to get Unix seconds (the port's epoch, or a test shift)
    _wake = None  # the one socket in self._poll that wait() wakes on (the link's, or None)
    _poll: "select.poll"  # made in the port's __init__ (an annotation only: no attribute)

    def now(self):
        return time.time() + self._offset

    def time_ok(self):
        return self.now() >= _SANE

    def rand(self):
        b = os.urandom(4)
        return (b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]) / 4294967296

    def random_bytes(self, n):
        return os.urandom(n)

    def mem_free(self):
        gc.collect()
        return gc.mem_free()

    def _watch(self, wake):
        # Make `wake` (or nothing) the socket in self._poll, leaving the rest of it alone.
        if wake is self._wake:
            return
        if self._wake is not None:
            try:
                self._poll.unregister(self._wake)
            except (OSError, ValueError):
                pass    # already closed: nothing left to unregister
        if wake is not None:
            self._poll.register(wake, select.POLLIN)
        self._wake = wake
