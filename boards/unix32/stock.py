# The 32-bit unix build standing for a STOCK ESP32_GENERIC v1.26.1 image, on which `deploy`
# installs the firmware as .mpy files (host_tools/bench/build32.sh --stock; make bench runs the
# .mpy rows on it). No firmware frozen: its names (qstrs) are interned in the heap when the .mpy
# files load, as on such a board. Of what the stock image freezes (ports/esp32/boards/manifest.py:
# the port's modules, asyncio, bundle-networking, umqtt.simple/robust and a few drivers), only
# what the firmware imports: ssl (boards/unix32/ssl.py stands in for micropython-lib's; Debian's
# source package has none), umqtt.simple and urequests (the tested versions from .mplib stand in
# for the image's). deploy puts the tested copies in /lib, which boot.py puts ahead of .frozen, so
# the frozen ones here only contribute their names, as the image's do. ntptime (ESP32 HAL only)
# and the rest are left out: their names are not in this image, so the figure errs high.
module("ssl.py")
package("umqtt", base_path="../../.mplib")
package("urequests", base_path="../../.mplib")
