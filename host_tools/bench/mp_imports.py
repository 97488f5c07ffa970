# Heap the firmware's code keeps resident once imported (run by host_tools/bench on MicroPython).
# On the unix port .mpy bytecode lives in the GC heap; frozen into an ESP32 image it lives in
# flash, and only the modules' globals and function objects stay in RAM.
# Prints {"code_resident": bytes, "modules": {name: bytes}, "files": [...]}: each module imported
# after what it imports (gc.collect() between), so its figure is its own code; what device.py
# pulls in that is not listed counts as device's. Start-up-only modules (runtime.storage,
# runtime.start, app.stored) are not listed: the device drops them once booted; nor are those
# loaded for one event and dropped after it (app.settings for a twin, app.methods for a direct
# method). "files" are the __file__ of every module the imports loaded (the bench counts the
# bytecode of those that are .mpy files).
# Before the first import and after the last, micropython.qstr_info() prints its line
# ("qstr pool: ..., n_total_bytes=N"): the names interned in the heap, before and after.
import gc
import json
import micropython
import sys

_ORDER = ("firmware.iothub.sas", "firmware.iothub.retry", "firmware.iothub.topics",
          "firmware.iothub.mqtt", "umqtt.simple", "firmware.runtime.link",
          "firmware.runtime.files", "firmware.app.schemas", "firmware.app.screens",
          "firmware.app.orders", "firmware.app.gestures",
          "firmware.hal", "firmware.runtime.device")

present = list(sys.modules)
gc.collect()
micropython.qstr_info()
base = last = gc.mem_alloc()
modules = {}
for name in _ORDER:
    __import__(name)
    gc.collect()
    now = gc.mem_alloc()
    modules[name] = now - last
    last = now
micropython.qstr_info()
files = [getattr(m, "__file__", "") for n, m in sys.modules.items() if n not in present]
print(json.dumps({"code_resident": last - base, "modules": modules, "files": files}))
