# The order button. On the unix port: MICROPYPATH=.frozen:$PWD/.mplib:$PWD micropython main.py
import sys

import ota_boot

boot = ota_boot.select()    # which firmware version (factory or an update), before any of it loads
del ota_boot, sys.modules["ota_boot"]   # its code is not needed again: the heap is small
from firmware.runtime import device  # noqa: E402

device.run(boot)
