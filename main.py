# The order button. On the unix port: MICROPYPATH=.frozen:$PWD/.mplib:$PWD micropython main.py
# ota_boot picks the firmware version (factory or an over-the-air update) and runs it.
import ota_boot

ota_boot.run()
