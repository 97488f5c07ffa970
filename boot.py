# Runs first on the ESP32 (main.py next). Tiny on purpose: an error here locks out the REPL.
# Hold the button while powering on to skip the app (safe mode, checked in the HAL).
import gc

gc.collect()
