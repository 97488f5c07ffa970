# An ESP32 image for the order button: MicroPython v1.26.1, ports/esp32, any ESP32 board
# (README, "On a real ESP32"). What the stock image freezes, less micropython-lib's umqtt
# packages (the firmware's manifest freezes the tested umqtt.simple) and the drivers the button
# does not use; plus the whole firmware.
freeze("$(PORT_DIR)/modules")            # _boot, flash set-up, inisetup: the port's own
include("$(MPY_DIR)/extmod/asyncio")
require("bundle-networking")             # ssl, ntptime, requests, mip, webrepl
include("../../firmware/manifest.py")
