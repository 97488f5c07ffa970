# Freeze firmware/app into a MicroPython build as the package firmware.app:
#   include("<repo>/firmware/app/manifest.py") from the board manifest
# (firmware/__init__.py belongs to whoever freezes the firmware package itself).
for name in ("__init__", "gestures", "schemas", "settings", "screens", "orders"):
    module("firmware/app/%s.py" % name, base_path="../..")
