# What every platform's HAL shares: the clock as Unix seconds, randomness, free heap.
import gc
import os
import time

_SANE = 1704067200  # 2024-01-01 in Unix seconds: an earlier clock was never set


class BaseHal:
    _offset = 0  # added to time.time() to get Unix seconds (the port's epoch, or a test shift)

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
