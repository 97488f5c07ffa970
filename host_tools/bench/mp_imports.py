# Heap the firmware's code keeps resident once imported (run by host_tools/bench on MicroPython).
# On the unix port .mpy bytecode lives in the GC heap; frozen into an ESP32 image it lives in
# flash, and only the modules' globals and function objects stay in RAM.
import gc
import json

gc.collect()
base = gc.mem_alloc()
from firmware.runtime import device  # noqa: E402,F401  (pulls in iothub, app, hal, link, umqtt)

gc.collect()
print(json.dumps({"code_resident": gc.mem_alloc() - base}))
