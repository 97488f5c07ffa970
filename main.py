# The order button. On the unix port: MICROPYPATH=.frozen:$PWD/.mplib:$PWD micropython main.py
import gc
import sys

import ota_boot

boot = ota_boot.select()    # which firmware version (factory or an update), before any of it loads
del ota_boot, sys.modules["ota_boot"]   # not needed again: the heap is small
gc.collect()                # its garbage goes before the firmware's code fills the heap
from firmware.runtime import device  # noqa: E402

device.run(boot)
