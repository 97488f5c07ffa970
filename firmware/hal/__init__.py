# The hardware of the platform we run on. The only place that reads sys.platform:
# `from firmware.hal import Hal` gives the right one; nothing else knows which.
import sys

if sys.platform == "esp32":
    from firmware.hal.esp32 import Hal, PLATFORM
else:
    from firmware.hal.unix import Hal, PLATFORM
