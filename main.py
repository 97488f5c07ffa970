# The order button. On the unix port: MICROPYPATH=.frozen:$PWD/.mplib:$PWD micropython main.py
from firmware.runtime import device

device.run()
