# The order button. On the unix port: MICROPYPATH=.frozen:$PWD/.mplib:$PWD micropython main.py
import gc
import sys

import ota_boot

boot = ota_boot.select()    # which firmware version (factory or an update), before any of it loads
del ota_boot, sys.modules["ota_boot"]   # not needed again: the heap is small
gc.collect()                # its garbage goes before the firmware's code fills the heap
# Loading the firmware's .mpy files leaves garbage between the code it keeps; collected only
# when the heap is full, those holes stay too small for TLS (32-bit, .mpy: the flow needed 4 KiB
# more). Collecting every 2 KB while it loads keeps the code packed.
gc.threshold(2048)
from firmware.runtime import device  # noqa: E402
gc.threshold(-1)            # back to collecting only when an allocation fails

device.run(boot)
