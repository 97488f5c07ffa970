# MicroPython side of the DPS figures (run by host_tools/bench, never imported by CPython): a
# device folder with a "dps" section registers with the firmware's own DPS client, then connects
# to the hub it was assigned with the firmware's link, as a fresh device does at first boot.
# Prints one JSON line. Usage: micropython mp_dps.py DEVICE_DIR
import gc
import json
import random
import sys
import time

from firmware.runtime import storage
from firmware.runtime.dps import Dps
from firmware.runtime.link import Link

folder = sys.argv[1]
cfg = storage.load_config(folder)
ca = storage.load_ca(folder, cfg)
key = storage.load_secrets(folder)["device_key"]
waited = [0]


def wait(seconds):
    waited[0] += seconds
    time.sleep(seconds)
    return True


gc.collect()
t0 = time.ticks_us()
res = Dps(cfg["dps"], key, ca).register(time.time(), wait)
registration_us = time.ticks_diff(time.ticks_us(), t0)
if res[0] != "assigned":
    print("mp_dps: not assigned:", res)
    sys.exit(1)
gc.collect()
link = Link(res[1], cfg["port"], res[2], key, ca, random.random)
t1 = time.ticks_us()
while not link.online():
    if time.ticks_diff(time.ticks_us(), t1) > 20000000:
        print("mp_dps: not online after 20 s:", link.stats)
        sys.exit(1)
    link.step(time.time(), lambda ev: None)
    if not link.online():
        time.sleep_ms(10)
link.close()
print(json.dumps({"registration_us": registration_us, "retry_after_waited_s": waited[0],
                  "hub": res[1], "device_id": res[2]}))
