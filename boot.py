# Runs first on the ESP32 (main.py next). Tiny on purpose: an error here locks out the REPL.
# Hold the button while powering on to skip the app (safe mode, checked in the HAL).
#
# Files on the board come before the image's frozen modules: `deploy` puts the tested
# umqtt.simple in /lib, and a stock image freezes another version that would win otherwise
# (its path is ['', '.frozen', '/lib']). An image built with firmware/manifest.py freezes the
# tested one, and deploy --frozen leaves no copy on the filesystem to shadow it.
import gc
import sys

if ".frozen" in sys.path:
    sys.path.remove(".frozen")
    sys.path.append(".frozen")
gc.collect()
