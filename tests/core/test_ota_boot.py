# Which firmware version boots (ota_boot.choose): the states a power cut or a failed trial
# leaves on flash. Runs under pytest and the unix MicroPython.
import json
import os

import ota_boot
from firmware.runtime.ota import rmtree

_N = [0]


def _dir():
    _N[0] += 1
    base = "/tmp/ota-boot-test-%d" % _N[0]
    rmtree(base)
    for p in (base, base + "/fw"):
        try:
            os.mkdir(p)
        except OSError:
            pass
    return base


def _put(path, text):
    with open(path, "w") as f:
        f.write(text)


def _slot(base, v):
    os.mkdir(base + "/fw/" + v)
    _put(base + "/fw/" + v + "/manifest.json", "{}")


def _boot(base):
    with open(base + "/fw/boot.json") as f:
        return json.loads(f.read())


def test_factory_when_nothing_or_garbage():
    base = _dir()
    assert ota_boot.choose(base)[0] is None
    _put(base + "/fw/boot.json", "{not json")
    assert ota_boot.choose(base)[0] is None
    _put(base + "/fw/boot.json", json.dumps({"active": "1.1"}))   # no such slot
    assert ota_boot.choose(base)[0] is None


def test_a_confirmed_version_runs():
    base = _dir()
    _slot(base, "1.1")
    _put(base + "/fw/boot.json", json.dumps({"active": "1.1", "previous": None, "trial": 0}))
    assert ota_boot.choose(base)[0] == "1.1" and ota_boot.choose(base)[0] == "1.1"


def test_a_trial_gets_one_boot_then_goes_back():
    base = _dir()
    _slot(base, "1.1")
    _slot(base, "1.2")
    _put(base + "/fw/boot.json", json.dumps({"active": "1.2", "previous": "1.1", "trial": 1, "boots": 0}))
    assert ota_boot.choose(base)[0] == "1.2"
    assert _boot(base)["boots"] == 1
    assert ota_boot.choose(base) == ("1.1", True)     # that boot never confirmed: a rollback to report
    b = _boot(base)
    assert b["rolledBack"] == "1.2" and b["active"] == "1.1" and not b["trial"]
    assert ota_boot.choose(base)[0] == "1.1"


def test_a_trial_from_the_factory_goes_back_to_the_factory():
    base = _dir()
    _slot(base, "1.1")
    _put(base + "/fw/boot.json", json.dumps({"active": "1.1", "previous": None, "trial": 1, "boots": 1}))
    assert ota_boot.choose(base)[0] is None and _boot(base)["rolledBack"] == "1.1"


def test_a_cut_switch_keeps_the_old_choice():
    base = _dir()
    _slot(base, "1.1")
    _put(base + "/fw/boot.json", json.dumps({"active": None}))
    _put(base + "/fw/boot.json.tmp", '{"active": "1.1", "prev')     # cut mid-write
    assert ota_boot.choose(base)[0] is None
    os.remove(base + "/fw/boot.json")       # cut after the old one went (a FAT rename), the new one whole
    _put(base + "/fw/boot.json.tmp", json.dumps({"active": "1.1", "trial": 0}))
    assert ota_boot.choose(base)[0] == "1.1"
