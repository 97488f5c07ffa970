# Which firmware runs: the one the device was flashed with ("factory": frozen on an ESP32,
# the code folder on unix) or an update installed over the air into DIR/fw/<version>/
# (firmware/runtime/ota.py). main.py calls select() before any firmware module is imported,
# then drops this module; this file is never replaced by an update.
#
# DIR/fw/boot.json (written atomically: temp + rename) is the one switch:
#   {"active": "1.1" or null (factory), "previous": ..., "trial": 1, "boots": 0}
# A trial version gets one boot. If that boot does not confirm (connected and read its twin
# within the trial period: firmware/runtime/ota.py writes "trial": 0), the next boot goes back
# to "previous" here, before any firmware module is imported: a crash, a hang the watchdog
# ends, or a power cut during the trial all come back to the version that worked.
# Anything unreadable here means the factory firmware: this code never stops a boot.
import json
import os
import sys

_DEFAULT_DIR = "/data"  # the ESP32's storage folder; unix: $ORDER_DEVICE_DIR (firmware/hal/unix.py)


def folder():
    get = getattr(os, "getenv", None)
    return (get("ORDER_DEVICE_DIR") or ".local/device") if get else _DEFAULT_DIR


def read(path):
    for p in (path, path + ".tmp"):
        try:
            with open(p) as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            pass
    return None


def write(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj))
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    try:
        os.rename(tmp, path)
    except OSError:     # a filesystem that will not rename over a file; read() falls back to .tmp
        os.remove(path)
        os.rename(tmp, path)


def rolled_back(b, reason):
    # boot.json after a trial of b["active"] failed: back to the previous version, and the
    # failed one named so the runtime reports it and does not install it again.
    return {"active": b.get("previous"), "previous": None, "trial": 0,
            "rolledBack": b.get("active"), "reason": reason}


def select(base=None):
    # Put the chosen version's folder first on sys.path (before .frozen), before any firmware
    # module is imported. -> (the version, None for the factory; whether a trial or a rollback
    # is pending), for device.run().
    base = base or folder()
    v, pending = choose(base)
    if v:
        sys.path.insert(0, base + "/fw/" + v)
    return v, pending


def choose(base):
    # (the version to run (None: factory), trial or rollback pending), counting this boot of a
    # version on trial.
    path = base + "/fw/boot.json"
    try:
        b = read(path)
        if type(b) is not dict:
            return None, False
        if b.get("trial"):
            if b.get("boots", 0) >= 1:
                b = rolled_back(b, "trial boot did not confirm")
            else:
                b["boots"] = 1
            write(path, b)
        pending = bool(b.get("trial") or b.get("rolledBack"))
        v = b.get("active")
        if type(v) is str and v:
            os.stat(base + "/fw/" + v + "/manifest.json")   # installed whole (written before the switch)
            return v, pending
        return None, pending
    except Exception as e:  # noqa: BLE001  anything: run the factory firmware
        print("ota_boot: factory firmware (%r)" % e)
    return None, False
