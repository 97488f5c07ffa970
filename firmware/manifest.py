# What a MicroPython image freezes for this firmware: the whole firmware package, and the one
# micropython-lib package it needs, umqtt.simple at the version the tests run (.mplib/, from
# `make setup`). Include it from a board manifest (boards/esp32/manifest.py,
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
package("umqtt", base_path="../.mplib")
