# What a MicroPython image freezes for this firmware: the whole firmware package, ota_boot, and
# the micropython-lib packages it needs at the versions the tests run (.mplib/, from `make setup`):
# umqtt.simple, urequests and the ussl shim. Include it from a board manifest (boards/esp32/manifest.py,
# boards/unix32/manifest.py); that manifest must not freeze another umqtt.simple.
#
# MicroPython's manifest tool runs this file with its own folder (firmware/) as the current
# directory. Every .py file of the package is frozen except this one, so a new module needs no
# edit here (tests/host/test_manifest.py checks the list against what the firmware imports).
import os

package("firmware", base_path="..", files=sorted(
    os.path.relpath(os.path.join(folder, name), ".")
    for folder, _, names in os.walk(".")
    for name in names
    if name.endswith(".py") and name != "manifest.py"))
module("ota_boot.py", base_path="..")   # main.py's version selector (over-the-air updates)
package("umqtt", base_path="../.mplib")
package("urequests", base_path="../.mplib")   # over-the-air downloads (firmware/runtime/ota.py)
module("ussl.py", base_path="../.mplib")      # the shim urequests 0.9.1 imports
